"""`train.py --original` trains as the original's own code does, end to end, as a user runs it.

Both programs train on the same small folder dataset with the same seed and settings, each in its
own process on one thread: the original's code through tools/original/runner.py's `train`, ours as
`python train.py --original` (the default speed path unless told otherwise). Every training step's
losses, the histogram.csv of the last epoch and each epoch's test AUROC must agree to float precision.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.test_original_parity import original_losses
from tests.test_original_runner import ONE_THREAD, ORIGINAL_CODE, needs_original, write_folder_dataset
from tools.original.launch import run_runner

MODELS = ("skipganomaly", "w_skipganomaly")
# Three epochs of 4 batches: Skip-WGANomaly's generator learns twice (steps 4 and 9), and two epochs
# start after a test pass (which, in training mode, moved BatchNorm's running statistics).
SETTINGS = {"niter": 3, "batchsize": 16, "isize": 32, "seed": 0}
WIDTHS = ["--ngf", "4", "--ndf", "4", "--nz", "8"]
# Measured on an AMD EPYC (torch 2.14, AVX-512, one thread), the largest over both models and the
# 12 steps, against the original:
#   --no-fast:     losses 3.1e-7 relative (6.5e-9 absolute on Skip-WGANomaly's near-zero err_g_adv,
#                  a mean of terms near 1), histogram.csv 9.5e-7, AUROCs equal;
#   default path:  losses 6.5e-7 relative (6.1e-8 absolute on err_g_adv), histogram.csv 2.7e-6
#                  (min-max scaling divides by the scores' span), AUROCs equal.
# That is float32 rounding (eps 1.2e-7) of the same sums in another order (the default path's
# matrix products, our fused passes), grown over a few steps. The tolerances leave 10 to 15 times
# the default path's. A real difference is far above them from the first step: bf16 (--amp) moves
# the first step's losses by 1e-3 to 3e-3 relative and histogram.csv by 1e-2;
# torch.manual_seed(0) called again after the networks are built (the batches change) by 0.15 to 0.46
# and 0.1.
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
SCORE_ATOL = 3e-5  # histogram.csv's scores are min-max scaled to [0, 1]
AUROC_ATOL = 1e-12  # the same ranking gives the same AUROC; only the last bit of its sum may differ

# train.py as its command line runs it, with every training step's losses written to a JSON-lines
# file (argv[1]): the trainer's model is wrapped, once built, to record what train_step returns.
# The run itself keeps no step's losses: --original's loss_log.txt has none (the original never
# wrote them) and metrics.csv has each epoch's means.
RECORDING_TRAIN = """
import json, runpy, sys
import lib.training.trainer
steps_file = sys.argv.pop(1)
build = lib.training.trainer.Trainer.__init__
def recording(trainer, opt, model, *args, **kwargs):
    build(trainer, opt, model, *args, **kwargs)
    train_step = model.train_step
    def step(images):
        losses = train_step(images)
        weights = {"w_adv": model.w_adv, "w_con": model.w_con, "w_lat": model.w_lat}
        with open(steps_file, "a") as f:
            f.write(json.dumps({"losses": losses, "weights": weights}) + "\\n")
        return losses
    model.train_step = step
lib.training.trainer.Trainer.__init__ = recording
sys.argv[0] = train = sys.argv.pop(1)
runpy.run_path(train, run_name="__main__")
"""


def run_ours(data: Path, model: str, out: Path, fast: bool) -> dict:
    """`train.py --original` on the folder dataset `data`: its per-step losses, histogram.csv and metrics.csv."""
    out.mkdir(parents=True)
    steps = out / "steps.jsonl"
    args = ["--original", "--dataset", data.name, "--dataroot", str(data.parent), "--model", model,
            "--niter", str(SETTINGS["niter"]), "--batchsize", str(SETTINGS["batchsize"]),
            "--isize", str(SETTINGS["isize"]), "--manualseed", str(SETTINGS["seed"]), *WIDTHS, "--device", "cpu",
            "--outf", str(out), "--name", "run", *([] if fast else ["--no-fast"])]
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)}
    # In `out`: train.py also writes ./histogram.csv, as the original did.
    proc = subprocess.run([sys.executable, "-c", RECORDING_TRAIN, str(steps), str(ROOT / "train.py"), *args],
                          cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = out / "run"
    with open(run / "metrics.csv", newline="") as f:
        metrics = list(csv.DictReader(f))
    return {"steps": [json.loads(line) for line in steps.read_text().splitlines()],
            "histogram": (run / "histogram.csv").read_text(), "metrics": metrics}


def run_original(data: Path, model: str) -> dict:
    """The original's own training on `data` with the same settings (tools/original/runner.py `train`)."""
    return run_runner(ORIGINAL_CODE, ["train", "--dataroot", str(data), "--model", model,
                                      *(item for name, value in SETTINGS.items() for item in (f"--{name}", str(value))),
                                      "--extra", " ".join(WIDTHS)], env=ONE_THREAD)


def histogram(text: str) -> tuple[list[float], list[int]]:
    """(scores, labels) of a histogram.csv (pandas' layout: an unnamed index column, scores, labels)."""
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["", "scores", "labels"], rows[0]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return [float(r[1]) for r in rows[1:]], [int(r[2]) for r in rows[1:]]


def assert_same_losses(model: str, ours: list[dict], theirs: list[dict]) -> None:
    """Every step's losses, under the original's names and weighting.

    A loss the original's step did not recompute (Skip-WGANomaly's generator losses between its
    generator updates) keeps its earlier value there and is absent here: only err_d is compared then.
    """
    assert len(ours) == len(theirs)
    for step, (mine, their) in enumerate(zip(ours, theirs), 1):
        assert ("g" in mine["losses"]) == their["generator_updated"], step
        assert not their["discriminator_reinitialised"], step
        named = original_losses(model, mine["losses"], mine["weights"])
        if not their["generator_updated"]:
            named = {"err_d": named["err_d"]}
        for name, value in named.items():
            expected = their["losses"][name]
            assert value == pytest.approx(expected, rel=LOSS_RTOL, abs=LOSS_ATOL), (step, name, value, expected)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Abnormal images only a little brighter: the AUROC lands near 0.4 rather than at 1, so that a
    changed score would change it."""
    return write_folder_dataset(tmp_path_factory.mktemp("e2e") / "data", abnormal_high=164)


@pytest.fixture(scope="module")
def original(dataset) -> dict:
    """The original's own run of each model on `dataset` (one process each, about 5 s)."""
    return {model: run_original(dataset, model) for model in MODELS}


def assert_same_run(model: str, ours: dict, theirs: dict) -> None:
    # Its uninitialised noise buffer, added to every training input: zeros but for a denormal or two,
    # which change no float32 sum; --original adds none.
    assert theirs["noise_after_training"]["max_abs"] < 1e-30
    assert len(theirs["steps"]) == SETTINGS["niter"] * theirs["train_batches_per_epoch"]
    assert_same_losses(model, ours["steps"], theirs["steps"])

    their_scores, their_labels = histogram(theirs["histogram_csv"])
    my_scores, my_labels = histogram(ours["histogram"])
    assert my_labels == their_labels
    assert my_scores == pytest.approx(their_scores, abs=SCORE_ATOL)

    # The test AUROC of every epoch (the original's test() after each).
    my_aucs = [float(row["test_auroc"]) for row in ours["metrics"]]
    assert my_aucs == pytest.approx(theirs["epoch_aucs"], abs=AUROC_ATOL)


@pytest.mark.slow
@needs_original
@pytest.mark.parametrize("model", MODELS)
def test_train_original_on_the_default_path_trains_and_scores_as_the_original_code(model, dataset, original,
                                                                                    tmp_path):
    ours = run_ours(dataset, model, tmp_path / "ours", fast=True)
    assert_same_run(model, ours, original[model])


@pytest.mark.slow
@needs_original
@pytest.mark.parametrize("model", MODELS)
def test_train_original_on_the_plain_path_trains_and_scores_as_the_original_code(model, dataset, original, tmp_path):
    ours = run_ours(dataset, model, tmp_path / "ours", fast=False)
    assert_same_run(model, ours, original[model])
