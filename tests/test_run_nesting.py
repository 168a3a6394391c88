"""Run folders never nest: no run, evaluation, predictions or search is made inside another run's
folder or around one, so no command writes or deletes another run's files; and one predict.py at a
time writes into an --out.

Each refusal is one line, exit 2, with nothing created. The concurrent predict.py runs are real processes.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.commands import predict
from lib.errors import UserError
from lib.predict.out import OutFolder
from lib.runs.folder import enclosing_run, is_run_folder, runs_inside
from lib.tune.trials import check_search_place
from tests.helpers import ONE_EPOCH, ROOT, RUN, one_line_error, process, read_csv, run_main, train_cli


def tree(folder: Path) -> dict:
    """Every path below `folder` -> its bytes (a folder: "dir")."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir")
            for p in sorted(Path(folder).rglob("*"))}


def refused(result, *fragments) -> None:
    """An in-process command refused as every script must: exit 2, one `error:` line naming `fragments`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def images(folder: Path, n: int) -> Path:
    """`n` small grey PNGs in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture
def run(trained_run_copy, tmp_path):
    """(working directory, run folder): the session's trained run, copied to ./out/skipganomaly/digits/3."""
    return tmp_path, trained_run_copy


# ------------------------------------------------------------------ train.py

@pytest.mark.parametrize("name", [f"{RUN}/test", f"{RUN}/deeper/still"])
def test_a_run_inside_another_runs_folder_is_refused_before_anything_is_created(run, name):
    cwd, _ = run
    before = tree(cwd)
    result = train_cli([*ONE_EPOCH, "--outf", "out", "--name", name], cwd, check=False)
    refused(result, f"'out/{RUN}' is a run folder and 'out/{name}' would be inside it", "choose another --name/--outf")
    assert tree(cwd) == before


def test_a_run_inside_a_searchs_trial_folder_is_refused(run):
    cwd, folder = run
    trial = cwd / "out" / "tune" / "search" / "runs" / "a1b2c_00000"
    shutil.copytree(folder, trial)
    before = tree(cwd)
    result = train_cli([*ONE_EPOCH, "--outf", trial, "--name", "mine"], cwd, check=False)
    refused(result, "'out/tune/search/runs/a1b2c_00000' is a run folder", "would be inside it")
    assert tree(cwd) == before


@pytest.mark.parametrize("outf, name, folder", [("out", "skipganomaly", "out/skipganomaly"), ("out", ".", "out")])
def test_a_run_around_another_run_is_refused_name_dot_included(run, outf, name, folder):
    cwd, _ = run
    before = tree(cwd)
    result = train_cli([*ONE_EPOCH, "--outf", outf, "--name", name], cwd, check=False)
    refused(result, f"'{folder}' holds the run folder 'out/{RUN}' and would be around it")
    assert tree(cwd) == before


def test_overwrite_refuses_to_delete_a_run_that_was_put_inside_its_folder(run):
    cwd, folder = run
    shutil.copytree(folder, folder / "test")  # as `--name <run>/test` could make before
    before = tree(cwd)
    result = train_cli([*ONE_EPOCH, "--outf", "out", "--overwrite"], cwd, check=False)
    refused(result, f"'out/{RUN}/test' is another run inside 'out/{RUN}', and --overwrite would delete it")
    assert tree(cwd) == before


def test_phase_test_refuses_to_write_over_a_run_inside_its_test_folder(run):
    cwd, folder = run
    shutil.copytree(folder, folder / "test" / "inner")
    before = tree(cwd)
    result = train_cli(["--phase", "test", "--load_weights", folder, "--device", "cpu"], cwd, check=False)
    refused(result, f"'{folder / 'test' / 'inner'}' is another run inside '{folder}'",
            "--phase test writes its evaluation into")
    assert tree(cwd) == before


def test_evaluations_predictions_and_a_histogram_copy_are_not_run_folders(tmp_path):
    run = tmp_path / "run"
    (run / "train" / "weights").mkdir(parents=True)
    for name in ("test/opt.txt", "test/histogram.csv", "test/results.json", "predict/predictions.csv"):
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_text("")
    (tmp_path / "histogram.csv").write_text("scores,labels\n")  # the working directory's copy
    assert is_run_folder(run) and not is_run_folder(tmp_path)
    assert not any(is_run_folder(run / sub) for sub in ("train", "test", "predict"))
    assert enclosing_run(run / "test" / "x") == run and enclosing_run(run) is None
    assert list(runs_inside(tmp_path)) == [run] and list(runs_inside(run)) == []


# ------------------------------------------------------------------ predict.py

def score(cwd, *args):
    return run_main(predict.main, ["--path", "images", "--weights", f"out/{RUN}", "--device", "cpu", *args], cwd)


def test_predictions_go_into_the_runs_own_predict_folder_and_leave_no_lock_behind(run):
    cwd, folder = run
    images(cwd / "images", 5)
    result = score(cwd, "--out", f"out/{RUN}/predict")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(folder / "predict")) == ["maps", "predictions.csv"]


@pytest.mark.parametrize("out, message", [
    (f"out/{RUN}/mine", f"'out/{RUN}' is a run folder and --out 'out/{RUN}/mine' would be inside it"),
    (f"out/{RUN}/predict/deeper", f"'out/{RUN}' is a run folder and --out 'out/{RUN}/predict/deeper' would be"),
    ("out/other/predict", "'out/other' is a run folder and --out 'out/other/predict' would be inside it"),
    (f"out/{RUN}", f"--out 'out/{RUN}' is a run folder: choose another --out"),
    ("out", "--out 'out' holds the run folder 'out/other': choose an --out that holds no run"),
])
def test_predict_out_inside_over_or_around_a_run_is_refused_unless_its_the_runs_own_predict_folder(
        run, out, message):
    cwd, folder = run
    shutil.copytree(folder, cwd / "out" / "other")
    images(cwd / "images", 2)
    before = tree(cwd)
    refused(score(cwd, "--out", out, "--overwrite"), message)
    assert tree(cwd) == before


def test_predict_into_an_out_another_predict_holds_is_refused_and_writes_nothing(run):
    cwd, _ = run
    images(cwd / "images", 2)
    with OutFolder(cwd / "scored").acquire("predict.py (held by the test)"):
        before = tree(cwd)
        refused(score(cwd, "--out", "scored"), "'scored' is in use by predict.py (held by the test), process",
                "wait for it to end, or choose another --out")
        assert tree(cwd) == before
    assert not (cwd / "scored" / ".lock").exists()


@pytest.mark.slow
def test_a_second_predict_into_the_same_out_is_refused_while_the_first_runs_and_the_first_ends_whole(run):
    cwd, _ = run
    n = 200
    images(cwd / "images", n)
    args = ["--path", "images", "--weights", f"out/{RUN}", "--out", "scored", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), *args], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = cwd / "scored" / ".lock"
    try:
        deadline = time.monotonic() + 300
        while f"process {first.pid} " not in (lock.read_text() if lock.is_file() else ""):
            assert first.poll() is None and time.monotonic() < deadline, "the first predict.py never held --out"
            time.sleep(0.002)
        os.kill(first.pid, signal.SIGSTOP)  # the first holds --out, mid-scoring, for as long as the test needs
        second = process("predict.py", args, cwd)
        one_line_error(second, f"'scored' is in use by predict.py, process {first.pid} ")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert sorted(os.listdir(cwd / "scored")) == ["maps", "predictions.csv"]
    rows = read_csv(cwd / "scored" / "predictions.csv")
    assert len(rows) == n and all((cwd / row["map"]).is_file() for row in rows)
    assert len(list((cwd / "scored" / "maps").iterdir())) == n


# ------------------------------------------------------------------ Ray Tune search folders

def test_a_search_folder_inside_a_run_folder_is_refused(run):
    _, folder = run
    search = folder / "tune" / "sweep"
    with pytest.raises(UserError, match=f"'{folder}' is a run folder and the search folder '{search}' would be "
                                        "inside it: choose another --outf"):
        check_search_place(search, replace=False)
    assert not (folder / "tune").exists()


def test_a_search_overwrite_refuses_to_delete_a_run_that_is_not_one_of_its_trials(run, tmp_path):
    _, folder = run
    search = tmp_path / "out" / "tune" / "sweep"
    shutil.copytree(folder, search / "runs" / "a1b2c_00000")
    shutil.copytree(folder, search / "mine")
    with pytest.raises(UserError, match=f"'{search / 'mine'}' is a run that is not one of the search's trials"):
        check_search_place(search, replace=True)
    shutil.rmtree(search / "mine")
    check_search_place(search, replace=True)  # its own trials go with it
