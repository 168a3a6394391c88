"""The cross-check against anomalib's Ganomaly: anomalib runs in an environment of its own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import anomalib_crosscheck
from lib.errors import run_cli

FASHION = Path("/usr/share/datasets/fashion-mnist")
# A Python with anomalib 2.x (docs/ganomaly.md); the real run is skipped where there is none.
ANOMALIB_PYTHON = Path(os.environ.get("ANOMALIB_PYTHON", "/work/anomalib-venv/bin/python"))


def has_anomalib(python: Path) -> bool:
    """Whether `python` finds anomalib (without importing it: that takes seconds)."""
    if not python.is_file():
        return False
    check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('anomalib') is None)"
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def test_a_python_that_is_not_there_gets_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(anomalib_crosscheck.main, ["--anomalib-python", str(tmp_path / "nope"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: --anomalib-python") and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.skipif(not FASHION.is_dir() or not has_anomalib(ANOMALIB_PYTHON),
                    reason="needs Fashion-MNIST and a Python with anomalib (ANOMALIB_PYTHON)")
def test_both_ganomalies_train_on_the_same_folder_and_reach_the_table(tmp_path, capsys):
    args = ["--anomalib-python", str(ANOMALIB_PYTHON), "--classes", "Bag", "--train_images", "128",
            "--test_images", "60", "--isize", "32", "--ngf", "8", "--nz", "8", "--batchsize", "32",
            "--out", str(tmp_path)]
    assert run_cli(anomalib_crosscheck.main, args) in (0, None)
    table = (tmp_path / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Bag |"))
    assert all(0 <= float(cell) <= 1 for cell in row.strip("| ").split(" | ")[1:])
    capsys.readouterr()
    assert run_cli(anomalib_crosscheck.main, args) in (0, None)  # both runs reused: nothing trains again
    assert "..." not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.skipif(not FASHION.is_dir() or not has_anomalib(ANOMALIB_PYTHON),
                    reason="needs Fashion-MNIST and a Python with anomalib (ANOMALIB_PYTHON)")
def test_undo_runs_anomalib_with_every_difference_undone_into_its_own_table(tmp_path):
    args = ["--anomalib-python", str(ANOMALIB_PYTHON), "--classes", "Bag", "--train_images", "64",
            "--test_images", "40", "--isize", "32", "--ngf", "8", "--nz", "8", "--batchsize", "32",
            "--undo", "all", "--out", str(tmp_path)]
    assert run_cli(anomalib_crosscheck.main, args) in (0, None)
    rows = [line.split(" | ")[1] for line in (tmp_path / "undo.md").read_text().splitlines()
            if line.startswith("| Bag |")]
    assert rows == ["ours", "anomalib", "anomalib undo all"]
    assert not (tmp_path / "table.md").exists()  # the cross-check's own table is left as it was
    run = json.loads((tmp_path / "results" / "bag" / "anomalib_undo_all.json").read_text())
    assert run["undo"] == ["adv_features", "enc_l2", "tanh_range", "reset_d", "dcgan_init"]
    assert "mean=[0.5, 0.5, 0.5]" in run["pre_processor"] and "discriminator_resets" in run


@pytest.mark.slow
@pytest.mark.skipif(not has_anomalib(ANOMALIB_PYTHON), reason="needs a Python with anomalib (ANOMALIB_PYTHON)")
def test_each_undo_changes_what_it_names_in_a_real_training_step(tmp_path):
    rng = np.random.default_rng(0)
    for sub, n in (("train/0.normal", 32), ("test/0.normal", 8), ("test/1.abnormal", 8)):
        (tmp_path / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / sub / f"{i:03d}.png")
    probe = Path(__file__).parent / "anomalib_undo_probe.py"
    proc = subprocess.run([str(ANOMALIB_PYTHON), str(probe), str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "probe passed" in proc.stdout, proc.stderr[-3000:]


def test_an_unknown_undo_gets_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(anomalib_crosscheck.main, ["--anomalib-python", sys.executable, "--undo", "enc_l2,nope",
                                           "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: --undo nope: unknown") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_the_undo_table_pairs_each_variant_with_anomalib_and_ours_by_seed():
    values = {"ours": (0.9, 0.8), "anomalib": (0.7, 0.6), "anomalib undo enc_l2": (0.8, 0.8)}
    results = {("Bag", system, seed): {"auroc": pair[seed]} for system, pair in values.items() for seed in (0, 1)}
    settings = {"train_images": 10, "data_seed": 0, "niter": 1, "batchsize": 8, "isize": 32, "ngf": None, "nz": None}
    text = anomalib_crosscheck.undo_table(results, ["Bag"], [0, 1], settings, ["enc_l2"],
                                          anomalib_crosscheck.runner_undo_names())
    # change from shipped: +0.1, +0.2; left of the gap to ours: +0.1, 0.0
    row = "| Bag | anomalib undo enc_l2 | 0.8000, 0.8000 | 0.8000 ± 0.0000 | 0.1500 ± 0.0707 | 0.0500 ± 0.0707 |"
    assert row in text
    assert "- `enc_l2`: encoder loss: L2 (MSE), not smooth L1" in text


@pytest.mark.parametrize("seeds", ["1,x", "-1", ","])
def test_bad_seeds_get_one_line(tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as stop:
        run_cli(anomalib_crosscheck.main, ["--anomalib-python", "/bin/sh", "--seeds", seeds, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: --seeds") and err.count("\n") == 1


def test_the_table_gives_each_seed_and_the_gap_between_the_systems():
    results = {("Bag", system, seed): {"auroc": value, "anomalib": "2.7.0"}
               for (system, seed), value in {("ours", 0): 0.9, ("ours", 1): 0.8, ("anomalib", 0): 0.8,
                                             ("anomalib", 1): 0.8}.items()}
    settings = {"train_images": 10, "data_seed": 0, "niter": 1, "batchsize": 8, "isize": 32, "ngf": None, "nz": None}
    text = anomalib_crosscheck.table(results, ["Bag"], [0, 1], settings)
    assert "| Bag | 0.9000, 0.8000 | 0.8000, 0.8000 | 0.8500 ± 0.0707 | 0.8000 ± 0.0000 | 0.0500 ± 0.0707 |" in text


@pytest.mark.parametrize("python", ["/bin/true", sys.executable])  # exits 0; a Python without anomalib
def test_a_python_that_does_not_answer_with_anomalibs_version_is_refused_before_any_run(tmp_path, capsys, python):
    with pytest.raises(SystemExit) as stop:
        run_cli(anomalib_crosscheck.main, ["--anomalib-python", python, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "does not import anomalib 2.x" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
