"""experiments/run_*.sh and tools.collect_results: class sweeps and the README's results table."""
import json
import os
import subprocess
import sys

import pytest

from lib.errors import run_cli
from lib.training import checkpoint
from tests.conftest import make_cifar, make_idx
from tests.helpers import ONE_EPOCH, ROOT, STUB_START, one_line_error, process, read_csv, tool
from tools import collect_results

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# script -> (flags every run gets, its classes); --display where the original's scripts pass it (and in run_fmnist.sh,
# ours, as in run_mnist.sh)
SCRIPTS = {
    "run_cifar_wskip.sh": (["--dataset", "cifar10", "--niter", "15", "--model", "w_skipganomaly", "--w_con", "50",
                            "--display"], CIFAR),
    "run_cifar_skip.sh": (["--dataset", "cifar10", "--niter", "25", "--model", "skipganomaly", "--w_con", "50"],
                          CIFAR),
    "run_mnist.sh": (["--dataset", "mnist", "--nc", "1", "--niter", "15", "--model", "w_skipganomaly", "--display"],
                     [str(i) for i in range(10)]),
    "run_fmnist.sh": (["--dataset", "fashion-mnist", "--nc", "1", "--model", "w_skipganomaly", "--display"],
                      FASHION),
}
# Stands in for python: records the arguments of each train.py run; fails for the class in STUB_FAIL.
STUB = STUB_START + """with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1 if os.environ.get("STUB_FAIL") in sys.argv else 0)
"""


def run_script(script, args=(), env=None, tmp_path=None):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    log = tmp_path / "runs.log"
    log.unlink(missing_ok=True)
    full_env = {**os.environ, "PYTHON": f"{sys.executable} {stub}", "STUB_LOG": str(log), **(env or {})}
    done = subprocess.run(["bash", str(ROOT / "experiments" / script), *args], env=full_env,
                          capture_output=True, text=True, timeout=60)
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, runs


def has(argv, *flags):
    """`flags` appear in `argv` in this order, next to each other."""
    n = len(flags)
    return any(argv[i:i + n] == list(flags) for i in range(len(argv) - n + 1))


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_runs_every_class_with_the_device_and_extra_flags_passed_through(script, tmp_path):
    flags, classes = SCRIPTS[script]
    done, runs = run_script(script, ["--niter", "1", "--outf", "somewhere"], {"DEVICE": "cpu"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert [argv[argv.index("--abnormal_class") + 1] for argv in runs] == classes
    for argv in runs:
        assert argv[0] == str(ROOT / "train.py")
        assert all(flag in argv for flag in flags)
        assert ("--display" in argv) == ("--display" in flags)
        assert all(has(argv, flag, value) for flag, value in zip(flags, flags[1:]) if not value.startswith("--"))
        assert has(argv, "--device", "cpu")
        assert argv[-4:] == ["--niter", "1", "--outf", "somewhere"]  # last, so they override the script's


def test_a_failed_run_does_not_stop_the_sweep_but_makes_the_script_fail(tmp_path):
    done, runs = run_script("run_cifar_wskip.sh", [], {"STUB_FAIL": "cat"}, tmp_path)
    assert done.returncode == 1
    assert len(runs) == 10 and "failed: cat" in done.stderr
    assert not any("--device" in argv for argv in runs)  # no DEVICE: train.py's default


def test_classes_and_seeds_come_from_the_environment_and_seeds_get_their_own_run_folders(tmp_path):
    done, runs = run_script("run_mnist.sh", [], {"CLASSES": "3 7", "SEEDS": "0 1"}, tmp_path)
    assert done.returncode == 0, done.stderr
    names = [argv[argv.index("--name") + 1] for argv in runs]
    assert names == ["w_skipganomaly/mnist/3/seed0", "w_skipganomaly/mnist/3/seed1",
                     "w_skipganomaly/mnist/7/seed0", "w_skipganomaly/mnist/7/seed1"]
    assert [argv[argv.index("--manualseed") + 1] for argv in runs] == ["0", "1", "0", "1"]

    # Each variant lands in train.py's own folder for it, never over the main sweep's runs; untrained
    # controls (--niter 0) beside the trained runs.
    for flags, name in [(["--no_skip"], "w_skipganomaly-no_skip"), (["--wgan", "clip"], "w_skipganomaly-clip"),
                        (["--original"], "w_skipganomaly-original"), (["--niter", "0"], "w_skipganomaly-control"),
                        (["--no_skip", "--niter", "0"], "w_skipganomaly-no_skip-control")]:
        done, runs = run_script("run_mnist.sh", flags, {"CLASSES": "3", "SEEDS": "0"}, tmp_path)
        assert done.returncode == 0, done.stderr
        assert [argv[argv.index("--name") + 1] for argv in runs] == [f"{name}/mnist/3/seed0"]
    # A class name as train.py writes it in its run names.
    done, runs = run_script("run_fmnist.sh", [], {"CLASSES": "T-shirt/top Ankle_boot", "SEEDS": "2"}, tmp_path)
    assert [argv[argv.index("--name") + 1] for argv in runs] == ["w_skipganomaly/fashion-mnist/T-shirt-top/seed2",
                                                                 "w_skipganomaly/fashion-mnist/Ankle_boot/seed2"]


@pytest.mark.parametrize("seeds", [{"SEEDS": "0 1"}, {}])
@pytest.mark.parametrize("args,env,named", [
    (["--no_such_flag"], {"CLASSES": "3 7"}, "unrecognized arguments: --no_such_flag"),
    ([], {"CLASSES": "3 11"}, "unknown class '11'"),
    ([], {"CLASSES": "3 03"}, "two classes the run name 'w_skipganomaly/mnist/3'"),
    (["--config", "named.txt"], {"CLASSES": "1 2"}, "two classes the run name 'mine'")])
def test_a_sweep_refuses_what_train_py_refuses_before_any_run(args, env, named, seeds, tmp_path):
    """Before any run, with or without SEEDS: refused flags, and classes that would share one run folder
    (one class named twice, a --config replaying its run's own --name)."""
    (tmp_path / "named.txt").write_text("------------ Options -------------\ndataset: mnist\t[default: cifar10]\n"
                                        "name: mine\t[default: None]\n-------------- End ----------------\n")
    done, runs = run_script("run_mnist.sh", [a if a != "named.txt" else str(tmp_path / a) for a in args],
                            {**env, **seeds}, tmp_path)
    assert runs == [] and done.stdout == ""
    one_line_error(done, named)


@pytest.mark.slow
def test_a_real_tiny_sweep_through_a_script_lands_in_the_collected_table(tmp_path):
    make_idx(tmp_path / "data", "MNIST/raw", n_train=200, n_test=60)
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "CLASSES": "4"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "run_mnist.sh"), "--dataroot", str(tmp_path / "data"),
                           "--outf", str(tmp_path / "out"), "--niter", "1", "--isize", "8", "--ngf", "8",
                           "--ndf", "8", "--nz", "8", "--batchsize", "32",
                           "--display_port", "9"],  # no dashboard there: the run goes on without one
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "w_skipganomaly" / "mnist" / "4" / "results.json").read_text())
    table, _ = collect(tmp_path / "out")
    label = "Skip-WGANomaly (batchsize 32, isize 8, ndf 8, ngf 8, niter 1, nz 8)"
    assert f"| **{label}** | {results['best']['test']['auroc']:.3f} |" in table


@pytest.mark.slow
def test_a_sweep_given_original_reproduces_the_original_in_every_run(tmp_path):
    make_cifar(tmp_path / "data", n_per_class_train=20, n_per_class_test=4)
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "CLASSES": "bird"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "run_cifar_wskip.sh"), "--original",
                           "--dataroot", str(tmp_path / "data"), "--outf", str(tmp_path / "out"), "--niter", "1",
                           "--isize", "8", "--ngf", "8", "--ndf", "8", "--nz", "8", "--batchsize", "32",
                           "--display_port", "9"],  # no dashboard there: the run goes on without one
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "out" / "w_skipganomaly-original" / "cifar10" / "bird"
    assert "original: True\t[default: False]" in (run / "opt.txt").read_text().splitlines()
    assert checkpoint.load(run)["options"]["original"] is True
    assert "max AUC:" in (run / "loss_log.txt").read_text()  # the original's own log line


# ------------------------------------------------------------------ the collector

def fake_run(root, name, model, cls, seed, auroc, changed=(), dataset="cifar10"):
    """A run folder as train.py leaves it: results.json and opt.txt (only what the collector reads)."""
    folder = root / name
    folder.mkdir(parents=True)
    metrics = {"auroc": auroc, "auprc": auroc / 2, "f1": 0.5, "eer": 0.3}
    folder.joinpath("results.json").write_text(json.dumps({
        "run": name, "model": model, "dataset": dataset, "abnormal_class": cls, "normal_class": None,
        "metric": "auroc", "seed": seed, "epochs": 15,
        "last": {"epoch": 15, "test": {**metrics, "auroc": 0.0}, "val": metrics},
        "best": {"epoch": 7, "selected_by": "val_auroc", "test": metrics, "val": metrics},
        "best_on_test_optimistic": {"epoch": 9, "test": {**metrics, "auroc": 1.0}}, "threshold": {}}))
    lines = ["------------ Options -------------", f"abnormal_class: {cls}\t[default: None]",
             f"manualseed: {seed}\t[default: -1]", f"model: {model}\t[default: skipganomaly]", "niter: 15",
             *(f"{key}: {value}\t[default: x]" for key, value in changed), "-------------- End ----------------"]
    folder.joinpath("opt.txt").write_text("\n".join(lines) + "\n")


def collect(root, *args, out=None):
    out = out or root.parent / "table"
    assert run_cli(collect_results.main, [str(root), "--out", str(out), *args]) == 0
    return out.with_suffix(".md").read_text(), read_csv(out.with_suffix(".csv"))


def test_the_collector_builds_the_readme_table_with_means_and_seed_spread(tmp_path):
    root = tmp_path / "output"
    for seed, (bird, cat) in enumerate([(0.70, 0.60), (0.80, 0.64)]):
        fake_run(root, f"w/bird/seed{seed}", "w_skipganomaly", "bird", seed, bird)
        fake_run(root, f"w/cat/seed{seed}", "w_skipganomaly", "cat", seed, cat)
    fake_run(root, "noskip/bird", "w_skipganomaly", "bird", 3, 0.466, [("no_skip", "True")])
    fake_run(root, "skip/cat", "skipganomaly", "cat", 4, 0.5,
             [("device", "cpu"), ("overwrite", "True"), ("w_con", "25.0")])

    table, rows = collect(root)
    assert "| Model | bird | cat | mean |" in table
    assert "| **Skip-WGANomaly** | 0.750 ± 0.071 | 0.620 ± 0.028 | 0.685 ± 0.049 |" in table
    assert "| **Skip-WGANomaly (no skip connections)** | 0.466 | – | 0.466 |" in table
    assert "| **Skip-GANomaly (w_con 25.0)** | – | 0.500 | 0.500 |" in table  # --device, --overwrite: no setting
    row = next(r for r in rows if r["model"] == "Skip-WGANomaly")
    assert (float(row["bird"]), float(row["cat"]), float(row["mean"])) == pytest.approx((0.75, 0.62, 0.685))
    assert row["bird runs"] == "2" and float(row["mean std"]) == pytest.approx(0.04949, abs=1e-4)


def test_the_collector_reads_the_chosen_metric_and_epoch(tmp_path):
    root = tmp_path / "output"
    fake_run(root, "w/bird", "w_skipganomaly", "bird", 0, 0.8)
    assert "| **Skip-WGANomaly** | 0.400 | 0.400 |" in collect(root, "--metric", "auprc")[0]
    assert "| **Skip-WGANomaly** | 0.000 | 0.000 |" in collect(root, "--select", "last")[0]
    assert "| **Skip-WGANomaly** | 1.000 | 1.000 |" in collect(root, "--select", "optimistic")[0]


def test_the_collector_leaves_out_a_stopped_run_and_says_so(tmp_path, capsys):
    """results.json is written every epoch: a run stopped after 1 of 15 epochs once stood in the table as
    its setting's result, unmarked."""
    root = tmp_path / "output"
    fake_run(root, "w/bird/seed0", "w_skipganomaly", "bird", 0, 0.8)
    fake_run(root, "w/bird/seed1", "w_skipganomaly", "bird", 1, 0.2)
    stopped = json.loads((root / "w/bird/seed1/results.json").read_text())
    (root / "w/bird/seed1/results.json").write_text(json.dumps({**stopped, "epochs": 1}))
    table, _ = collect(root)
    assert "| **Skip-WGANomaly** | 0.800 | 0.800 |" in table
    err = capsys.readouterr().err
    assert f"seed1/results.json: stopped after epoch 1 of 15: finish it with train.py --resume {root}/w/bird/seed1" \
        in err, err


def test_the_collector_says_so_when_there_is_nothing_to_collect(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(SystemExit) as stop:
            run_cli(collect_results.main, [str(folder)])
        assert stop.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("args, fragment", [
    (["--models", "bogus"], "--models bogus is not a model"),
    (["--report", "--out", "empty"], "no finished fp32/bf16 pairs under 'empty'"),
    (["--classes", "Sock"], "Sock"),
])
def test_the_bf16_study_refuses_what_would_run_nothing(tmp_path, args, fragment):
    one_line_error(tool("experiments.bf16_default", args, tmp_path), fragment)


def test_the_bf16_study_tables_each_pair_of_twins_with_its_paired_difference(tmp_path):
    """Its report from real twin runs (tiny ones here, in the study's folder layout), never touching docs/."""
    for precision, flag in (("fp32", "--no-amp"), ("bf16", "--amp")):
        proc = process("train.py", [*ONE_EPOCH, flag, "--outf", "out", "--name",
                                    f"one-class/skipganomaly/Bag/seed0/{precision}"], tmp_path)
        assert proc.returncode == 0, proc.stderr
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    proc = tool("experiments.bf16_default", ["--report", "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| Skip-GANomaly | one-class | Bag"))
    fp32, bf16, diff = (float(cell.strip()) for cell in row.split("|")[5:8])
    assert abs(bf16 - fp32 - diff) < 1.5e-3  # rounded to 3 places each
    pairs = read_csv(tmp_path / "out" / "pairs.csv")
    assert len(pairs) == 1 and float(pairs[0]["fp32_train_img_per_s"]) > 0
    assert (ROOT / "docs" / "benchmarks.md").read_text() == page  # only --publish writes docs/


def test_a_sweeps_python_may_be_one_file_whose_path_holds_spaces(tmp_path):
    wrapper = tmp_path / "my env" / "python"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "stub.py"}" "$@"\n')
    wrapper.chmod(0o755)
    done, runs = run_script("run_mnist.sh", ["--niter", "1"], {"PYTHON": str(wrapper), "CLASSES": "1"}, tmp_path)
    assert done.returncode == 0 and len(runs) == 1, done.stderr


def test_a_sweep_linked_from_another_folder_finds_its_common_part(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "run_mnist.sh").symlink_to(ROOT / "experiments" / "run_mnist.sh")
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    env = {**os.environ, "PYTHON": f"{sys.executable} {stub}", "STUB_LOG": str(tmp_path / "runs.log"), "CLASSES": "1"}
    done = subprocess.run(["bash", "bin/run_mnist.sh", "--niter", "1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and len((tmp_path / "runs.log").read_text().splitlines()) == 1, done.stderr


def test_eval_cost_times_each_pass_in_turns_and_refuses_what_it_cannot_time(tmp_path):
    proc = tool("experiments.eval_cost", ["--models", "ganomaly", "--isize", "8", "--images", "16", "--rounds", "1",
                                         "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "ganomaly" and all(v > 0 for v in result["ms_per_image"].values())
    ms = result["ms_per_image"]  # the ratio from the per-image times and the default counts (1 500, 4 096, 9 100)
    ratio = (1500 * ms["validation, every candidate"] + 4096 * ms["bank"]) / (9100 * ms["test, the original's score"])
    assert result["choice_over_original"] == pytest.approx(ratio, rel=0.03, abs=0.01)
    one_line_error(tool("experiments.eval_cost", ["--models", "bogus"], tmp_path), "--models bogus is not a model")
    one_line_error(tool("experiments.eval_cost", ["--isize", "12"], tmp_path), "--isize one of")
    for flags, fragment in ((["--test", "0"], "--test must be positive"), (["--val", "-5"], "--val, --bank"),
                            (["--threads", "100000"], "--threads 100000: use 1 to"),
                            (["--isize", "128", "--images", "100000000"], "give fewer --images")):
        one_line_error(tool("experiments.eval_cost", flags, tmp_path), fragment)


def test_the_bf16_reports_leaves_out_a_pair_it_cannot_read_and_refuses_seeds_it_cannot_repeat(tmp_path):
    for seed, content in (("seed1", '{"epochs": []}'), ("seedX", "{}")):  # a stopped run, a folder of another kind
        for precision in ("fp32", "bf16"):
            run = tmp_path / "out" / "one-class" / "skipganomaly" / "Bag" / seed / precision
            run.mkdir(parents=True)
            (run / "results.json").write_text(content)
    proc = tool("experiments.bf16_default", ["--report", "--out", "out"], tmp_path)
    notice, error = proc.stderr.strip().splitlines()  # what was left out, then why nothing is tabled
    assert proc.returncode == 2 and notice.startswith("notice: 2 pair(s) left out"), proc.stderr
    assert error.startswith("error: no finished fp32/bf16 pairs under 'out'")
    for seeds in (["-1"], ["4294967296"]):
        one_line_error(tool("experiments.bf16_default", ["--seeds", *seeds], tmp_path), "--seeds must be whole numbers")
