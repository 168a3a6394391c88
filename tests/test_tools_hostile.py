"""Hostile input to the developer tools and experiment scripts: one line, exit code 2, nothing lost.

Each case runs the script as a real process, as a user would, and fails before any heavy work:
numbers argparse takes but nothing underneath can (NaN, 10**20, zero counts, sizes beyond memory),
partial results met by the collectors, undecodable names, and flags passed through to train.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import fmnist_report, fmnist_study
from tests.helpers import ROOT, STUB_START, default_interrupts, one_line_error, read_csv, tool
from tests.test_experiments import fake_run

BIG = "99999999999999999999"  # beyond int64
FASHION = Path("/usr/share/datasets/fashion-mnist")


def refused(proc, fragment: str, code: int = 2) -> str:
    """The process ended with `code` and exactly one stderr line, an error naming `fragment`."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    return lines[0]


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ tools.benchmark

@pytest.mark.slow
@pytest.mark.parametrize("args,fragment", [
    (["--reps", "0"], "--reps 0: use a whole number from 1"),
    (["--steps", "0"], "--steps 0: use a whole number from 1"),
    (["--warmup", "-1"], "--warmup -1: use a whole number from 0"),
    (["--n_critic", BIG], f"--n_critic {BIG}: use a whole number from 1 to 2147483647"),
    (["--threads", "0"], "--threads 0: use 1 to"),
    (["--threads", BIG], f"--threads {BIG}"),
    (["--seed", BIG], f"--seed {BIG}: use a whole number from 0 to 2**64 - 1"),
    (["--isize", BIG], f"--isize {BIG} is not supported"),
    (["--isize", "nan"], "argument --isize: invalid int value: 'nan' (see: python -m tools.benchmark -h)"),
    (["--batchsize", "1000000000"], "--batchsize 1000000000 of 3x32x32 images with --ngf 64 --ndf 64 --nz 100 "
                                    "needs at least"),
    (["--isize", str(2**20)], "of memory is free: use a smaller --batchsize"),
    (["--loader", "--loader_images", "10", "--batchsize", "64"], "less than one batch of --batchsize 64"),
    (["--loader", "--loader_images", "2000000000", "--isize", "1024"], "use fewer --loader_images"),
])
def test_benchmark_refuses_numbers_that_pass_argparse_but_break_the_measurement(args, fragment, tmp_path):
    refused(tool("tools.benchmark", args, tmp_path), fragment)
    assert files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_benchmark_on_cuda_without_a_gpu_says_so_in_one_line(tmp_path):
    refused(tool("tools.benchmark", ["--device", "cuda"], tmp_path), "torch sees no CUDA GPU here; use --device cpu")


# ------------------------------------------------------------------ tools.baselines

@pytest.mark.slow
@pytest.mark.parametrize("args,fragment", [
    (["--k", "0"], "--k 0: use a whole number of neighbours"),
    (["--k", BIG], f"--k {BIG}"),
    (["--pca_variance", "nan"], "--pca_variance nan: use a share of the variance in (0, 1]"),
    (["--pca_variance", "1.5"], "--pca_variance 1.5"),
    (["--pca_variance", "0"], "--pca_variance 0.0"),
    (["--val_ratio", "nan"], "--val_ratio nan: use a share in [0, 1)"),
    (["--isize", str(2**20)], f"--isize {2**20} (70000 images of 1x{2**20}x{2**20}) needs at least"),
    (["--isize", "12"], "--isize 12 is not supported"),
    (["--classes", "bag", "hat"], "unknown class 'hat' for fashion-mnist"),
    (["--dataset", "my_folder"], "--dataset my_folder: baselines need a dataset with classes"),
    (["--k", "five"], "argument --k: invalid int value: 'five' (see: python -m tools.baselines -h)"),
])
def test_baselines_refuse_values_with_no_meaningful_result_before_loading_anything(args, fragment, tmp_path):
    refused(tool("tools.baselines", [*args, "--out", tmp_path / "b.csv"], tmp_path), fragment)
    assert files(tmp_path) == []


@pytest.mark.slow
def test_baselines_refuse_more_neighbours_than_training_images_and_write_nothing(tmp_path):
    proc = tool("tools.baselines", ["--dataset", "digits", "--classes", "3", "--k", "100000",
                                    "--out", tmp_path / "b.csv"], tmp_path)
    refused(proc, "--k 100000 is more than the")
    assert files(tmp_path) == []


@pytest.mark.slow
def test_baselines_refuse_an_out_file_that_is_a_folder_before_the_work(tmp_path):
    refused(tool("tools.baselines", ["--dataset", "digits", "--out", tmp_path], tmp_path), "is a folder")


# ------------------------------------------------------------------ the collector

def sweep_with_partial_results(root: Path) -> dict[str, bytes]:
    """Two good runs (one in UTF-16) and one bad results.json per kind of damage a sweep meets."""
    fake_run(root, "good/bird", "w_skipganomaly", "bird", 0, 0.7)
    fake_run(root, "utf16/cat", "w_skipganomaly", "cat", 0, 0.6)
    path = root / "utf16/cat/results.json"
    path.write_bytes(path.read_text().encode("utf-16"))
    good = json.loads((root / "good/bird/results.json").read_text())
    bad = {"torn": b'{"best": {"test": {"au',
           "not_utf8": b'{"best": "\xc3\x28"}',
           "missing_key": json.dumps({k: v for k, v in good.items() if k != "dataset"}).encode(),
           "wrong_type": json.dumps({**good, "best": {"test": {"auroc": "high"}}}).encode(),
           "nan": json.dumps({**good, "best": {"test": {"auroc": float("nan")}}}).encode(),
           "list": b"[1, 2]",
           "empty": b""}
    for name, data in bad.items():
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_bytes(data)
    fake_run(root, "latin1_opt/dog", "w_skipganomaly", "dog", 0, 0.5)
    (root / "latin1_opt/dog/opt.txt").write_bytes("w_con: 5\t[default: 50] é".encode("latin-1"))
    bad["latin1_opt"] = b""
    return bad


def test_the_collector_skips_each_damaged_run_with_one_warning_and_tables_the_rest(tmp_path):
    root = tmp_path / "output"
    bad = sweep_with_partial_results(root)
    proc = tool("tools.collect_results", [root], tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = proc.stderr.splitlines()
    assert len(warnings) == len(bad) and all(w.startswith("warning: skipping ") for w in warnings)
    for name in bad:
        assert sum(f"/{name}/" in w for w in warnings) == 1, name
    assert "| **Skip-WGANomaly** | 0.700 | 0.600 | 0.650 |" in proc.stdout  # the UTF-16 file is read
    assert (root / "results.md").is_file() and (root / "results.csv").is_file()


def test_the_collector_fails_in_one_line_after_the_warnings_when_no_run_is_usable(tmp_path):
    root = tmp_path / "output"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text('{"best": ')
    proc = tool("tools.collect_results", [root], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    *warnings, error = proc.stderr.splitlines()
    assert len(warnings) == 2 and error.startswith("error: no readable results.json with a test auroc under")
    assert files(tmp_path) == files(root) and len(files(root)) == 2  # nothing written


def test_the_collector_reads_and_writes_under_names_that_are_not_utf8(tmp_path):
    root = tmp_path / os.fsdecode(b"runs\xff")
    fake_run(root, "w/bird", "w_skipganomaly", "bird", 0, 0.8)
    out = tmp_path / os.fsdecode(b"table\xfe")
    proc = tool("tools.collect_results", [root, "--out", out], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| **Skip-WGANomaly** | 0.800 | 0.800 |" in proc.stdout and "table\\xfe.md" in proc.stdout
    assert Path(f"{out}.md").is_file() and Path(f"{out}.csv").is_file()


@pytest.mark.parametrize("args,fragment", [
    (["{root}", "--out", "{root}/w"], "--out {root}/w.md is a folder"),
    (["{root}", "--out", "{root}/c"], "--out {root}/c.csv is a folder"),  # refused before c.md is written
    (["{root}", "--out", "{root}/w/bird/results.json/t"], "(not a folder): choose another --out"),
    (["{root}", "--metric", "accuracy"], "argument --metric: invalid choice: 'accuracy'"),
    (["{root}/missing"], "no folder '{root}/missing'"),
    ([os.fsdecode(b"missing\xff")], "no folder 'missing\\xff'"),
])
def test_the_collector_refuses_bad_arguments_in_one_line_and_writes_nothing(args, fragment, tmp_path):
    root = tmp_path / "output"
    fake_run(root, "w/bird", "w_skipganomaly", "bird", 0, 0.8)
    (root / "w.md").mkdir()
    (root / "c.csv").mkdir()
    before = files(tmp_path)
    proc = tool("tools.collect_results", [a.format(root=root) for a in args], tmp_path)
    refused(proc, fragment.format(root=root))
    assert files(tmp_path) == before


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in files(folder)}


@pytest.mark.parametrize("out", ["metrics", "histogram", "test/results", None])
def test_the_collector_refuses_to_write_its_tables_inside_a_run_folder(out, tmp_path, trained_run_copy):
    run = trained_run_copy
    before = snapshot(tmp_path)
    args = [tmp_path / "out", "--out", run / out] if out else [run]  # None: the default, RUN/results
    proc = tool("tools.collect_results", args, tmp_path)
    refused(proc, f"would be inside the run folder '{run.relative_to(tmp_path)}'")
    assert snapshot(tmp_path) == before  # the run's metrics.csv and histogram.csv kept, nothing written


def test_the_collector_refuses_to_write_over_a_searchs_own_results_table(tmp_path, trained_run):
    search = tmp_path / "out" / "tune" / "s"
    shutil.copytree(trained_run, search / "runs" / "t1")
    (search / "results.csv").write_text("trial,status\nt1,done\n")
    (search / "tuner.pkl").write_bytes(b"state")
    before = snapshot(tmp_path)
    refused(tool("tools.collect_results", [search], tmp_path), "would be inside the search folder")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ the Fashion-MNIST study's report

def study_result(auroc) -> dict:
    metrics = {"auroc": auroc, "auroc_image_mse": 0.5, "auroc_feature_mse": 0.4}
    return {"epochs": 2, "best": {"epoch": 1, "test": metrics, "val": {"auroc": 0.6}},
            "last": {"test": metrics}, "best_on_test_optimistic": {"epoch": 2, "test": metrics}}


def test_the_study_report_skips_each_unreadable_run_or_file_with_one_warning(tmp_path, capsys):
    out, results = tmp_path / "runs", tmp_path / "results"
    damaged = {"trouser/seed0": json.dumps(study_result(0.9)).encode("utf-16"),  # readable
               "bag/seed0": b'{"best": ', "sandal/seed0": json.dumps(study_result("high")).encode(),
               "shirt/seed0": b"\xc3\x28", "coat/seedX": json.dumps(study_result(0.8)).encode(),
               "dress/seed0": json.dumps({**study_result(0.7), "best": []}).encode()}
    for run, data in damaged.items():
        (out / "skip_ganomaly/one-class" / run).mkdir(parents=True)
        (out / "skip_ganomaly/one-class" / run / "results.json").write_bytes(data)
    curve = out / "skip_ganomaly/curves/bag/seed0"
    curve.mkdir(parents=True)
    (curve / "results.json").write_text(json.dumps(study_result(0.6)))
    (curve / "metrics.csv").write_text("epoch,g_con,val_auroc,test_auroc\n1,0.5\n")
    results.mkdir()
    (results / "baselines_one-class.csv").write_bytes(b"dataset,protocol,class,method,auroc\nx,one-class,Bag,svm,")
    (results / "runs_cpu.csv").write_text("variant,protocol,class,seed,test_auroc\nSkip-GANomaly,one-class,Bag\n"
                                          "No such variant,one-class,Bag,0,0.5\n")

    fmnist_report.write_report(out, results, None, "cpu", "--flags")
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 9 and all(w.startswith("warning: skipping ") for w in warnings), warnings
    runs = (results / "runs_cpu.csv").read_text().splitlines()
    assert len(runs) == 2 and runs[1].startswith("Skip-GANomaly,one-class,Trouser,0,2,1,0.6,0.9,")


# ------------------------------------------------------------------ experiments/*.py

@pytest.mark.parametrize("args,fragment", [
    (["--threads", "0"], "--threads 0: use 1 to"),
    (["--niter", "3"], "--niter: only --isize, --ngf, --ndf, --nz, --batchsize are passed on to tools.benchmark"),
    (["stray"], "stray: only --isize"),
    (["--out", "{tmp}"], "--out {tmp} is a folder"),
    (["--out", "{tmp}/file/x.json"], "(not a folder): choose another --out"),
    (["--isize=nan"], "train.py failed with exit code 2: error: argument --isize: invalid int value: 'nan'"),
    (["--abnormal_class", "unicorn"], "train.py failed with exit code 2: error: unknown class 'unicorn'"),  # hung
    (["--dataroot", "{tmp}/none"], "--dataroot {tmp}/none is not a folder"),  # it measured for minutes first
])
def test_epoch_speed_refuses_bad_flags_in_one_line_before_measuring(args, fragment, tmp_path):
    (tmp_path / "file").write_text("mine")
    proc = tool("experiments.epoch_speed", [a.format(tmp=tmp_path) for a in args], tmp_path)
    refused(proc, fragment.format(tmp=tmp_path))
    assert files(tmp_path) == [tmp_path / "file"]


@pytest.mark.parametrize("args,fragment", [
    (["--budget", "tpu"], "argument --budget: invalid choice: 'tpu'"),
    (["--steps", "everything"], "argument --steps: invalid choice: 'everything'"),
    (["--out", "{tmp}/file"], "--out '{tmp}/file' is a file: give a folder for the study's runs"),
    (["--results", "{tmp}/file/results"], "--results {tmp}/file/results: cannot make that folder"),
])
def test_the_fmnist_study_refuses_bad_arguments_in_one_line(args, fragment, tmp_path):
    (tmp_path / "file").write_text("mine")
    proc = tool("experiments.fmnist_study", [a.format(tmp=tmp_path) for a in args], tmp_path)
    refused(proc, fragment.format(tmp=tmp_path))
    assert files(tmp_path) == [tmp_path / "file"]


def test_the_study_rebuilds_its_docs_page_only_from_the_committed_results_folder(tmp_path, monkeypatch):
    pages = []
    monkeypatch.setattr(fmnist_study, "write_report", lambda out, results, page, *rest: pages.append(page))
    fmnist_study.main(["--steps", "--results", str(tmp_path / "elsewhere"), "--out", str(tmp_path / "runs")])
    assert pages == [None]  # an empty study elsewhere cannot empty the tables of docs/fmnist_study.md
    fmnist_study.main(["--steps", "--out", str(tmp_path / "runs"), "--report"])
    assert pages[-1] == ROOT / "docs" / "fmnist_study.md"


@pytest.mark.slow
@pytest.mark.skipif(FASHION.is_dir(), reason="with Debian's Fashion-MNIST the run would train")
def test_a_failed_run_stops_the_fmnist_study_in_one_line_and_keeps_its_output(tmp_path):
    (tmp_path / "data").write_text("not a folder: train.py cannot find or download Fashion-MNIST")
    proc = tool("experiments.fmnist_study", ["--steps", "one-class", "--out", "runs", "--results", "res"],
                   tmp_path)
    line = refused(proc, "train.py failed for Skip-GANomaly | one-class | T-shirt/top | seed 0 with exit code 2: "
                         "error: fashion-mnist not found")
    log = tmp_path / "runs/skip_ganomaly/one-class/t_shirt_top/seed0.stderr.txt"
    assert str(log.relative_to(tmp_path)) in line and "fashion-mnist not found" in log.read_text()


# ------------------------------------------------------------------ experiments/run_*.sh

# Stands in for python: records each train.py run; exits STUB_CODE for runs of class STUB_FAIL ("*": all).
STUB = STUB_START + """with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
fail = os.environ.get("STUB_FAIL")
sys.exit(int(os.environ.get("STUB_CODE", "1")) if fail == "*" or fail in sys.argv else 0)
"""


def sweep(args, env, tmp_path):
    (tmp_path / "stub.py").write_text(STUB)
    log = tmp_path / "runs.log"
    env = {**os.environ, "PYTHON": f"{sys.executable} {tmp_path / 'stub.py'}", "STUB_LOG": str(log), **env}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "run_mnist.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("args,env,fragment", [
    (["--abnormal_class", "3"], {}, "--abnormal_class: the sweep sets --abnormal_class for each class itself"),
    (["--abnormal=3"], {}, "--abnormal: the sweep sets"),
    (["--normal_class", "3"], {}, "choose the classes with CLASSES="),
    (["--name", "mine"], {}, "--name would put every run of the sweep in one run folder"),
    (["--manualseed", "4"], {"SEEDS": "0 1"}, "--manualseed and SEEDS both set the seed"),
    ([], {"SEEDS": "0 x"}, "'x' is not a seed"),
    ([], {"SEEDS": BIG + "x"}, "is not a seed"),
    ([], {"PYTHON": "/no/such/python"}, 'PYTHON="/no/such/python" cannot be run'),
])
def test_a_sweep_refuses_flags_that_would_break_every_run_before_running_any(args, env, fragment, tmp_path):
    done, runs = sweep(args, env, tmp_path)
    refused(done, fragment)
    assert runs == []


def test_a_flag_train_py_refuses_stops_the_sweep_at_its_first_run_in_one_line(tmp_path):
    # Flags the options refuse stop it before any run; what only a run finds (missing data) at the first.
    done, runs = sweep(["--niter", "-1"], {}, tmp_path)
    refused(done, "train.py refuses the sweep's runs (--niter must not be negative")
    assert runs == []
    done, runs = sweep([], {"STUB_FAIL": "*", "STUB_CODE": "2"}, tmp_path)
    refused(done, "train.py refused the sweep's first run (class 0; the line above says why)")
    assert len(runs) == 1


def test_a_later_refused_run_is_named_in_the_last_line_and_fails_the_sweep(tmp_path):
    done, runs = sweep([], {"STUB_FAIL": "7", "STUB_CODE": "2", "SEEDS": "0 1"}, tmp_path)
    assert done.returncode == 1 and len(runs) == 20
    assert done.stderr.splitlines() == [
        "failed: 7 (seed 0), 7 (seed 1) (2 of 20 runs): their cells in the collected table "
        "(python -m tools.collect_results) stay empty (–) until they are rerun"]


@pytest.mark.parametrize("args,fragment", [
    (["--weights", "run", "--model", "ganomaly"], "--model describes the untrained control"),  # ignored silently
    (["--weights", "run", "--score", "image", "--isize", "16"], "--isize, --score describe the untrained control"),
    (["--batches", "99999999999"], "at most 4096 images a batch"),  # the allocator's traceback
])
def test_benchmark_predict_refuses_what_it_would_ignore_or_could_not_hold(args, fragment, tmp_path):
    refused(tool("tools.benchmark_predict", args, tmp_path), fragment)
    assert files(tmp_path) == []


def test_sample_images_writes_test_images_of_each_class_named_by_class_and_refuses_a_full_out(tmp_path):
    done = tool("tools.sample_images", ["--dataset", "digits", "--out", tmp_path / "new"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [f"{d}_0.png" for d in range(10)]
    from lib.data.builtin import test_arrays
    images, labels = test_arrays("digits", tmp_path)
    first_three = images[labels == 3][0, 0].numpy()
    assert (np.asarray(Image.open(tmp_path / "new" / "3_0.png")) == first_three).all()  # a test image, as stored
    one_line_error(tool("tools.sample_images", ["--dataset", "digits", "--out", tmp_path / "new"], tmp_path),
                   "already holds files")
    twice = tool("tools.sample_images", ["--out", tmp_path / "twice", "--classes", "3", "3", "--count", "4"], tmp_path)
    assert twice.returncode == 0 and len(list((tmp_path / "twice").iterdir())) == 4  # a class named twice: once
    one_line_error(tool("tools.sample_images", ["--dataset", "custom", "--out", tmp_path / "c"], tmp_path),
                   "is not built in")
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------------------ make demo

def make_demo(work: Path, stopped: bool = False) -> subprocess.CompletedProcess:
    """`make demo` in `work` (a copy of the Makefile), its environment taken as installed, its training shortened
    to one small epoch (the flags added after the recipe's win). `stopped`: train.py's run is written but it
    ends as after Ctrl-C (exit 130), so make stops before the recipe's last line."""
    python = work / "python"
    train = f'"{sys.executable}" "{ROOT}/$script" "$@" --niter 1 --ngf 8 --ndf 8 --nz 8 --isize 8'
    python.write_text('#!/bin/sh\nscript="$1"; shift\n'  # this checkout's train.py
                      + (f'{train}\nexit 130\n' if stopped else f'exec {train}\n'))
    python.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["make", "-s", "demo", f"PY={python}", "STAMP=stamp"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def fake_user_run(folder: Path) -> dict[str, bytes]:
    (folder / "train" / "weights").mkdir(parents=True)
    (folder / "train" / "weights" / "best.pt").write_bytes(b"the user's weights")
    (folder / "loss_log.txt").write_text("the user's training log\n")
    (folder / "metrics.csv").write_text("epoch,auroc\n1,0.9\n")
    return snapshot(folder)


def run_files(folder: Path) -> dict[str, bytes]:
    """A run folder's files but train.py's .lock (which a refused train.py leaves, released)."""
    return {name: data for name, data in snapshot(folder).items() if name != ".lock"}


@pytest.mark.slow
def test_make_demo_trains_in_a_folder_of_its_own_and_replaces_only_the_run_it_wrote(tmp_path):
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(ROOT / name, tmp_path)
    (tmp_path / "stamp").touch()  # newer than requirements.txt: nothing is installed
    users = tmp_path / "output/w_skipganomaly/digits/0"  # python train.py --dataset digits --abnormal_class 0 ...
    theirs = fake_user_run(users)
    in_demos = fake_user_run(tmp_path / "output/demo")  # a user's own --name demo
    kept = run_files(tmp_path / "output/demo")
    first = make_demo(tmp_path)
    assert first.returncode != 0 and "output/demo" in first.stderr, first.stdout + first.stderr  # train.py refuses
    assert run_files(tmp_path / "output/demo") == kept and snapshot(users) == theirs
    shutil.rmtree(tmp_path / "output/demo")
    assert make_demo(tmp_path, stopped=True).returncode != 0  # Ctrl-C: a run of the demo's, but no mark of it
    for attempt in ("after Ctrl-C", "again"):  # its own run, replaced by the next make demo
        done = make_demo(tmp_path)
        assert done.returncode == 0 and "outputs: output/demo" in done.stdout, f"{attempt}: {done.stderr}"
    assert not (tmp_path / "output/.make-demo-pending").exists()
    assert snapshot(users) == theirs and in_demos == kept
    with open(tmp_path / "output/demo/loss_log.txt", "a") as log:  # the demo's run trained on by the user
        log.write("epoch 2 ...\n")
    resumed = run_files(tmp_path / "output/demo")
    assert make_demo(tmp_path).returncode != 0 and run_files(tmp_path / "output/demo") == resumed


def test_make_clean_removes_the_demos_own_run_and_no_run_of_the_users(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path)
    theirs = {name: fake_user_run(tmp_path / "output" / name) for name in ("w_skipganomaly/digits/0", "demo")}

    def clean():
        done = subprocess.run(["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    clean()  # output/demo is a user's run here: no marker
    assert {name: snapshot(tmp_path / "output" / name) for name in theirs} == theirs
    demo = tmp_path / "output" / "demo"
    subprocess.run(f"cksum <{demo}/loss_log.txt >{demo}/.made-by-make-demo", shell=True, check=True)  # as make demo
    clean()
    assert not demo.exists() and snapshot(tmp_path / "output/w_skipganomaly/digits/0") == theirs[
        "w_skipganomaly/digits/0"]


# ------------------------------------------------------------------ what a tool may write over

def file_size_limit_zero():
    """In the child before it starts: `ulimit -f 0`, every write to a file fails (EFBIG)."""
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def limited_tool(module: str, args, cwd) -> subprocess.CompletedProcess:
    """`tool` under `ulimit -f 0` (its output goes to pipes, which the limit does not stop)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, preexec_fn=file_size_limit_zero)


def fake_run_folder(folder: Path) -> dict[str, bytes]:
    """A run folder as train.py leaves one (what makes it a run: train/weights), with its metrics.csv."""
    (folder / "train" / "weights").mkdir(parents=True)
    (folder / "loss_log.txt").write_text("epoch 1 ...\n")
    (folder / "metrics.csv").write_text("epoch,auroc\n1,0.9\n")
    return snapshot(folder)


BASELINES = ["--dataset", "digits", "--isize", "8", "--nc", "1", "--classes", "0"]


@pytest.mark.slow
def test_baselines_refuse_an_out_inside_a_run_folder_even_through_a_link_and_keep_its_metrics(tmp_path):
    run = tmp_path / "r"
    kept = fake_run_folder(run)
    (tmp_path / "link.csv").symlink_to(run / "metrics.csv")
    for out in (run / "metrics.csv", run / "tables" / "b.csv", tmp_path / "link.csv"):
        refused(tool("tools.baselines", [*BASELINES, "--out", out, "--overwrite"], tmp_path),
                "would be inside the run folder 'r', whose files it could replace")
    assert snapshot(run) == kept


@pytest.mark.slow
def test_baselines_replace_only_their_own_earlier_table_unless_told_to_overwrite(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("my,notes\n")
    refused(tool("tools.baselines", [*BASELINES, "--out", "notes.csv"], tmp_path),
            "--out notes.csv already exists and is not a table of tools.baselines: give another --out, or add "
            "--overwrite")
    assert notes.read_text() == "my,notes\n"
    table = tmp_path / "b.csv"
    for attempt in ("new", "its own earlier table"):
        done = tool("tools.baselines", [*BASELINES, "--out", "b.csv"], tmp_path)
        assert done.returncode == 0 and table.read_text().startswith("dataset,protocol,class,method,"), attempt
    # An earlier table of other classes is the user's result: kept unless --overwrite.
    refused(tool("tools.baselines", [*BASELINES[:-1], "1", "--out", "b.csv"], tmp_path),
            "--out b.csv holds rows this table would drop (digits leave-one-out 0)")
    assert {row["class"] for row in read_csv(table)} == {"0"}
    replaced = tool("tools.baselines", [*BASELINES, "--out", notes, "--overwrite"], tmp_path)
    assert replaced.returncode == 0 and notes.read_text().startswith("dataset,protocol,class,method,")


@pytest.mark.slow
def test_baselines_under_a_file_size_limit_say_so_in_one_line_without_joblibs_warning(tmp_path):
    proc = limited_tool("tools.baselines", [*BASELINES, "--out", tmp_path / "b.csv"], tmp_path)
    refused(proc, "raise the file-size limit (ulimit -f)")  # the only stderr line
    assert files(tmp_path) == []


def test_sample_images_under_a_file_size_limit_leave_no_half_set_and_the_same_command_then_runs(tmp_path):
    args = ["--dataset", "digits", "--count", "20", "--out", tmp_path / "s"]
    refused(limited_tool("tools.sample_images", args, tmp_path), "(File too large): choose another --out")
    assert list(tmp_path.iterdir()) == []  # no image, no staging folder, no --out
    done = tool("tools.sample_images", args, tmp_path)
    assert done.returncode == 0 and len(files(tmp_path / "s")) == 20, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sample_images_stopped_while_writing_leave_nothing_and_the_same_command_then_runs(signum, tmp_path):
    from tests.conftest import make_idx
    make_idx(tmp_path / "data", "MNIST/raw", n_train=10, n_test=10_000)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "s", tmp_path / "empty"):  # a folder it makes, a folder the user made
        args = ["--dataset", "mnist", "--dataroot", tmp_path / "data", "--count", "10000", "--out", out]
        proc = subprocess.Popen([sys.executable, "-m", "tools.sample_images", *map(str, args)], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_interrupts)
        deadline = time.time() + 120
        while not any(p.suffix == ".png" for p in tmp_path.rglob(".sample_images-*/*")):  # writing, not done
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "data" not in p.parts) == \
            [Path("empty")], err  # the folder the user made stays, empty
    again = tool("tools.sample_images", [*args[:-2], "--count", "20", "--out", tmp_path / "empty"], tmp_path)
    assert again.returncode == 0 and len(files(tmp_path / "empty")) == 20, again.stderr


def test_sample_images_and_make_textures_refuse_an_out_inside_a_run_folder_even_through_a_link(tmp_path):
    kept = fake_run_folder(tmp_path / "r")
    (tmp_path / "r" / "extra").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "r" / "extra")
    for out in (tmp_path / "link", tmp_path / "r" / "new"):
        refused(tool("tools.sample_images", ["--dataset", "digits", "--out", out], tmp_path),
                "would be inside the run folder 'r', whose files it could replace")
        refused(tool("tools.make_textures", ["--out", out, "--size", "16", "--train", "2", "--test", "6"], tmp_path),
                "would be inside the run folder 'r', whose files it could replace")
    assert snapshot(tmp_path / "r") == kept and list((tmp_path / "r" / "extra").iterdir()) == []


def test_sample_images_refuse_a_dataroot_for_the_built_in_digits(tmp_path):
    proc = tool("tools.sample_images", ["--dataset", "digits", "--dataroot", tmp_path / "x", "--out", tmp_path / "d"],
                tmp_path)
    refused(proc, "--dataroot is not read with --dataset digits (scikit-learn's digits are built in): drop it")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ helpers of other environments and studies

def test_the_anomalib_runner_in_a_python_without_anomalib_says_where_it_runs_in_one_line(tmp_path):
    (tmp_path / "train" / "0.normal").mkdir(parents=True)
    proc = tool("tools.anomalib_runner", ["--data", tmp_path, "--out", tmp_path / "a.json"], tmp_path)
    refused(proc, "anomalib is not installed in this Python", code=1)
    assert "experiments.anomalib_crosscheck --anomalib-python" in proc.stderr and not (tmp_path / "a.json").exists()


@pytest.mark.parametrize("seeds,fragment", [
    ("-1", "--seeds '-1': give whole numbers from 0 up"),  # train.py would draw one
    ("0,7", "--seeds 7: the ablation has fp32 twins of seeds"),
])
def test_the_bf16_check_refuses_seeds_without_an_fp32_twin_before_training_or_writing(seeds, fragment, tmp_path):
    tracked = (ROOT / "docs" / "benchmarks.md").read_bytes()
    proc = tool("experiments.bf16_check", ["--seeds", seeds], tmp_path)
    refused(proc, fragment)
    assert proc.stdout == "" and (ROOT / "docs" / "benchmarks.md").read_bytes() == tracked
    assert not list((ROOT / "results" / "bf16").rglob("seed-1.json")) + list((ROOT / "results" / "bf16").rglob(
        "seed7.json"))
