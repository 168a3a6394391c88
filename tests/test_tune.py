"""train_tune.py: Ray Tune searches on a real local Ray (2 CPUs) and tiny data."""
import json
import math
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import train
import train_tune
from lib.errors import run_cli
from lib.runs.collect import changed_options
from lib.tune.space import ray_space
from tests.conftest import make_cifar
from tests.helpers import ROOT, read_csv, tiny, without_searched

CPUS = str(min(2, len(os.sched_getaffinity(0))))
# TINY with anomaly class 0, logging at train.py's default intervals.
TRAIN_ARGS = tiny(abnormal_class=0, print_freq=None, save_image_freq=None)
SEARCH = [*TRAIN_ARGS, "--num_cpus", CPUS]

def write_space(tmp_path, space, name="space.json"):
    path = tmp_path / name
    path.write_text(space if isinstance(space, str) else json.dumps(space))
    return str(path)


def search(argv, capsys):
    """Run train_tune.py in this process; returns (exit code, stdout)."""
    code = run_cli(train_tune.main, argv)
    return code, capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
def test_a_search_ranks_trials_on_validation_and_prints_a_command_that_reproduces_the_best(tmp_path, capsys,
                                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # train.py also writes ./histogram.csv
    out = tmp_path / "out"
    space = write_space(tmp_path, {"w_con": {"grid": [1, 200]}})
    code, stdout = search(SEARCH + ["--niter", "2", "--lr", "0.005", "--outf", str(out), "--name", "wcon",
                                  "--space", space, "--scheduler", "asha", "--grace_period", "2"], capsys)
    assert code == 0
    rows = read_csv(out / "tune" / "wcon" / "results.csv")
    assert sorted(float(r["w_con"]) for r in rows) == [1, 200]
    for row in rows:
        assert row["status"] == "done" and row["epochs"] == "2" and float(row["time_s"]) > 0
        assert 0 <= float(row["val_auroc"]) <= 1 and 0 <= float(row["test_auroc"]) <= 1
    assert float(rows[0]["val_auroc"]) >= float(rows[1]["val_auroc"])  # best first
    # Quiet by default: a line per trial as it ends, then the summary; none of Ray's or Tune's console.
    lines = stdout.splitlines()
    assert sum(line.startswith("trial ") and " done: val_auroc " in line for line in lines) == 2, stdout
    summary = lines.index("2 trials: " + str(out / "tune" / "wcon" / "results.csv"))
    assert lines[summary + 1].split() == ["trial", "w_con", "val_auroc", "(epoch)", "test_auroc", "status"]
    assert [line.split()[-1] for line in lines[summary + 2:summary + 4]] == ["done", "done"]
    assert len(lines) <= 12 and "Trial status" not in stdout and "(run_trial pid=" not in stdout, stdout

    # Each trial trained in its own run folder, through train.py's loop, with its own w_con.
    losses = {}
    for row in rows:
        results = json.loads((Path(row["run"]) / "results.json").read_text())
        assert results["epochs"] == 2 and results["best"]["selected_by"] == "val_auroc"
        losses[row["w_con"]] = read_csv(Path(row["run"]) / "metrics.csv")[-1]
    low, high = (losses[k] for k in sorted(losses, key=float))
    assert float(low["g_con"]) != pytest.approx(float(high["g_con"]), rel=1e-4)
    assert float(low["g"]) != pytest.approx(float(high["g"]), rel=1e-2)

    # The printed command is train.py's and gives the best trial's validation metric again.
    command = next(line for line in stdout.splitlines() if line.startswith("reproduce: "))
    argv = shlex.split(command.removeprefix("reproduce: "))
    assert argv[:2] == ["python", "train.py"] and "--w_con" in argv and "--manualseed" in argv
    assert (out / "tune" / "wcon" / "best_command.txt").read_text().strip() == command.removeprefix("reproduce: ")
    again = tmp_path / "again"
    # Bit for bit with the trial's thread count: Ray gives a 1-CPU trial one thread, and float sums
    # split over more threads differ in the last bits, enough to move an AUROC by the second epoch.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train.main(argv[2:] + ["--outf", str(again)]) == 0
    finally:
        torch.set_num_threads(threads)
    history = read_csv(next(again.rglob("metrics.csv")))
    best = rows[0]
    assert float(history[int(best["best_epoch"]) - 1]["val_auroc"]) == pytest.approx(float(best["val_auroc"]))


@pytest.mark.ray
@pytest.mark.slow
def test_a_class_sweep_is_one_command_with_one_row_per_class(tmp_path, capsys):
    # The original README's command with a space that sweeps the anomaly class (so without its --abnormal_class:
    # a flag the space also searches is refused, tests/test_misuse.py).
    make_cifar(tmp_path / "data", n_per_class_train=6, n_per_class_test=3)
    space = write_space(tmp_path, {"abnormal_class": {"grid": ["bird", "cat"]}})
    code, stdout = search(["--dataset", "cifar10", "--tune", "True", "--display",
                           "--model", "w_skipganomaly",
                           "--dataroot", str(tmp_path / "data"), "--outf", str(tmp_path / "out"),
                           "--isize", "8", "--ngf", "8", "--ndf", "8", "--nz", "8", "--batchsize", "16",
                           "--niter", "1", "--n_critic", "2", "--device", "cpu", "--num_cpus", CPUS, "--space", space,
                           "--verbose"], capsys)
    assert code == 0
    assert "Trial status" in stdout  # --verbose: Tune's own tables too
    [folder] = (tmp_path / "out" / "tune").iterdir()
    assert folder.name.startswith("w_skipganomaly_cifar10_classes_")
    rows = read_csv(folder / "results.csv")
    assert sorted(r["abnormal_class"] for r in rows) == ["bird", "cat"]
    for row in rows:
        results = json.loads((Path(row["run"]) / "results.json").read_text())
        assert results["abnormal_class"] == row["abnormal_class"] and results["model"] == "w_skipganomaly"
        assert not math.isnan(float(row["val_auroc"]))
    assert "--abnormal_class" in stdout.split("reproduce: ")[1]


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_with_ngpu_2_trains_in_two_processes_as_one_process_trains_the_whole_batch(tmp_path, capsys,
                                                                                          monkeypatch):
    """--ngpu 2: each trial holds two CPUs (on a GPU machine, two GPUs) and is rank 0 of two
    processes (lib/tune/ranks.py); its epochs match train.py's one-process run to float rounding,
    as train.py --ngpu 2 does (tests/test_distributed.py), and no process outlives the search."""
    monkeypatch.chdir(tmp_path)
    # fp32: in bf16 (Skip-GANomaly's default on a CPU with native bf16) half-batch sums round far beyond 1e-4.
    args = [*tiny(abnormal_class=0, niter=2, print_freq=1000, save_image_freq=1000), "--model", "skipganomaly",
            "--no-amp"]
    space = write_space(tmp_path, {"w_con": {"grid": [40]}})
    code, stdout = search([*args, "--num_cpus", "2", "--outf", str(tmp_path / "out"), "--name", "two",
                           "--space", space, "--ngpu", "2"], capsys)
    assert code == 0
    assert "(val_auroc, fifo, 2 CPU + 0 GPU per trial, 2 processes)" in stdout
    [row] = read_csv(tmp_path / "out" / "tune" / "two" / "results.csv")
    assert row["status"] == "done" and row["epochs"] == "2"
    run = Path(row["run"])
    assert "processes: 2" in (run / "opt.txt").read_text()
    two = read_csv(run / "metrics.csv")
    assert [r["processes"] for r in two] == ["2", "2"] and [r["threads"] for r in two] == ["1", "1"]

    assert run_cli(train.main, [*args, "--w_con", "40", "--outf", str(tmp_path / "one")]) == 0
    one = read_csv(tmp_path / "one" / "skipganomaly" / "digits" / "0" / "metrics.csv")
    for a, b in zip(one, two, strict=True):
        assert a["processes"] == "1" and b["train_images"] == a["train_images"]
        for key in ("g", "d", "val_auroc", "test_auroc"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
    leftover = subprocess.run(["pgrep", "-f", "lib.tune.ranks"], capture_output=True, text=True).stdout
    assert leftover == ""


@pytest.mark.parametrize("flags, message", [
    (["--ngpu", "2", "--batchsize", "63"], "--batchsize 63 does not split into 2 processes"),
    (["--ngpu", "2", "--cpus_per_trial", "1"], "give each process a core, --cpus_per_trial 2 or more"),
    (["--ngpu", "2", "--original"], "--ngpu 2 with the original's training-mode scoring"),
])
def test_ngpu_a_trial_cannot_take_is_refused_before_ray_starts(tmp_path, flags, message):
    proc = subprocess.run([sys.executable, "train_tune.py", *tiny(abnormal_class=0, manualseed=None),
                           "--outf", str(tmp_path), *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr
    assert not (tmp_path / "tune").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_overwrite_replaces_a_finished_search_and_its_trials_start_afresh(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = SEARCH + ["--niter", "1", "--outf", str(out), "--name", "again",
                   "--space", write_space(tmp_path, {"w_con": {"grid": [1]}})]
    assert search(argv, capsys)[0] == 0
    folder = out / "tune" / "again"
    [first] = read_csv(folder / "results.csv")
    code, stdout = search(argv + ["--overwrite"], capsys)
    assert code == 0
    [second] = read_csv(folder / "results.csv")
    assert second["trial"] != first["trial"] and not Path(first["run"]).exists() and Path(second["run"]).is_dir()
    assert "--overwrite" not in stdout.split("reproduce: ")[1]  # it was for the search, not for train.py


@pytest.mark.ray
@pytest.mark.slow
def test_original_ranks_trials_on_the_test_set_and_a_tied_option_trains_with_the_value_it_follows(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    space = write_space(tmp_path, {"w_lat": {"same": "w_adv"}, "w_adv": {"grid": [0.5, 2]}})
    code, stdout = search(SEARCH + ["--original", "--niter", "2", "--num_samples", "1", "--outf", str(out),
                                    "--name", "tied", "--space", space], capsys)
    assert code == 0
    assert "trials are ranked on the TEST set (test_auroc" in stdout and "as the original did" in stdout
    rows = read_csv(out / "tune" / "tied" / "results.csv")
    assert "val_auroc" not in rows[0]
    assert sorted(float(r["w_adv"]) for r in rows) == [0.5, 2]
    assert float(rows[0]["test_auroc"]) >= float(rows[1]["test_auroc"])  # best test AUROC first
    for row in rows:
        # What the trial trained with, as its run folder records it: the tie and no validation split.
        trained = changed_options(Path(row["run"]) / "opt.txt")
        assert float(trained["w_lat"]) == float(trained["w_adv"]) == float(row["w_lat"]) == float(row["w_adv"])
        assert float(trained["val_ratio"]) == 0
        # The row shows the epoch the test set selects, the one the trial's run kept.
        best = json.loads((Path(row["run"]) / "results.json").read_text())["best"]
        assert best["selected_by"] == "test_auroc" and best["epoch"] == int(row["best_epoch"])
        history = read_csv(Path(row["run"]) / "metrics.csv")
        assert float(row["test_auroc"]) == max(float(epoch["test_auroc"]) for epoch in history)
    assert "--val_ratio" not in stdout.split("reproduce: ")[1]  # train.py --original holds nothing out itself


class Expanded(Exception):
    """Raised in place of a search: the trials were expanded, none trained."""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("flags, objective, trials", [
    (["--original"], "test_auroc", {(c, w, w): 2 for c in (25, 50, 75) for w in (0.5, 1, 2)}),
    ([], "val_auroc", {(c, adv, lat): 1 for c in (25, 50, 75) for adv in (0.5, 1, 2) for lat in (0.5, 1, 2)}),
], ids=["original", "ours"])
def test_original_searches_the_originals_grid_twice_with_one_weight_for_w_adv_and_w_lat(
        tmp_path, capsys, monkeypatch, flags, objective, trials):
    # 18 tiny trainings take minutes here: Ray's own variant generator expands what train_tune.py hands
    # the Tuner (on a real local Ray), and the search stops there.
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants
    handed = {}

    class Tuner:
        def __init__(self, trainable, param_space, tune_config, run_config):
            handed.update(space=param_space, config=tune_config)

        def fit(self):
            raise Expanded

    monkeypatch.setattr(tune, "Tuner", Tuner)
    with pytest.raises(Expanded):
        train_tune.main(tiny(abnormal_class=0, manualseed=None) + flags + ["--num_cpus", CPUS,
                                                                           "--outf", str(tmp_path)])
    config = handed["config"]
    assert config.metric == objective and config.mode == "max"
    expanded = [spec["config"] for _ in range(config.num_samples)
                for _, spec in generate_variants({"config": handed["space"]})]
    assert Counter((t["w_con"], t["w_adv"], t["w_lat"]) for t in expanded) == trials
    ranked_on_test = "trials are ranked on the TEST set" in capsys.readouterr().out
    assert ranked_on_test == (objective == "test_auroc")


def test_a_tied_option_takes_the_drawn_value_of_a_random_option_in_ray():
    from ray.tune.search.variant_generator import generate_variants
    space = ray_space({"w_con": ("grid", [25, 75]), "w_lat": ("same", "w_adv"), "w_adv": ("uniform", [0.5, 2]),
                       "lr": ("choice", [1e-4, 2e-4, 4e-4]), "beta1": ("same", "lr")})
    trials = [spec["config"] for _ in range(5) for _, spec in generate_variants({"config": space})]
    assert len(trials) == 10 and len({t["w_adv"] for t in trials}) == 10
    assert all(t["w_lat"] == t["w_adv"] and t["beta1"] == t["lr"] for t in trials)


BAD_SPACES = {
    "unknown option": ('{"w_conn": {"grid": [1, 2]}}', "unknown option 'w_conn'"),
    "range with one bound": ('{"lr": {"uniform": [0.1]}}', "needs [low, high]"),
    "range upside down": ('{"lr": {"loguniform": [0.1, 0.001]}}', "low must be below high"),
    "log range from zero": ('{"lr": {"loguniform": [0, 0.1]}}', "loguniform needs low > 0"),
    "unknown kind": ('{"lr": {"normal": [0, 1]}}', "needs one of"),
    "empty grid": ('{"w_adv": {"grid": []}}', "non-empty list"),
    "fractional epochs": ('{"niter": {"uniform": [1, 5]}}', "use randint"),
    "unknown class": ('{"abnormal_class": {"choice": ["0", "eleven"]}}', "unknown class 'eleven'"),
    "bad image size": ('{"isize": {"grid": [8, 12]}}', "--isize 12 is not supported"),
    "not searchable": ('{"outf": {"grid": ["a", "b"]}}', "cannot be searched"),
    "bad JSON": ('{"lr": {"uniform": [0.1, 0.2]}', "is not valid JSON"),
    "not an object": ('[1, 2]', "must hold one JSON object"),
    "a tie to an option not searched": ('{"w_lat": {"same": "w_adv"}}', "'w_adv' is not searched in this space"),
    "a circle of ties": ('{"w_adv": {"same": "w_lat"}, "w_lat": {"same": "w_adv"}}', "follow each other in a circle"),
}


def test_bad_space_files_fail_before_ray_starts_with_one_line(tmp_path):
    cases = {name: without_searched(SEARCH, ["--space", space]) + ["--outf", str(tmp_path / "out"), "--space", space]
             for i, (name, (text, _)) in enumerate(BAD_SPACES.items())
             for space in [write_space(tmp_path, text, f"{i}.json")]}
    cases["missing file"] = SEARCH + ["--space", str(tmp_path / "none.json")]
    script = f"""
import contextlib, io, json, sys
import train_tune
from lib.errors import run_cli
report = {{}}
for name, argv in json.loads({json.dumps(json.dumps(cases))}).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            run_cli(train_tune.main, argv)
            code = 0
        except SystemExit as stop:
            code = stop.code
    report[name] = [code, err.getvalue()]
report["ray imported"] = "ray" in sys.modules
print(json.dumps(report))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report.pop("ray imported") is False
    expected = {name: fragment for name, (_, fragment) in BAD_SPACES.items()} | {"missing file": "cannot read"}
    for name, (code, stderr) in report.items():
        assert code == 2, name
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, (name, stderr)
        assert expected[name] in stderr, (name, stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tune_false_trains_once_and_neither_script_imports_ray(tmp_path):
    # One process for both checks: starting Python with torch costs seconds.
    script = ("import sys, train; assert 'ray' not in sys.modules, 'train.py imports ray'; "
              "import train_tune; from lib.errors import run_cli; "
              f"code = run_cli(train_tune.main, {TRAIN_ARGS + ['--niter', '1', '--outf', str(tmp_path)]!r} "
              "+ ['--tune', 'False']); assert 'ray' not in sys.modules, '--tune False imports ray'; "
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "skipganomaly" / "digits" / "0" / "results.json").read_text())["epochs"] == 1
    assert not (tmp_path / "tune").exists()
