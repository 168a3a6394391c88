"""The untrained control, `train.py --niter 0`: the run's own networks as initialised, BatchNorm fitted
to the training images, scored exactly as a trained run; every command takes it like any run."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import predict
from lib import options
from lib.models import MODELS, build_model
from lib.runs.collect import collect
from lib.runs.setup import build_trainer
from lib.training import checkpoint
from lib.training.control import calibrate
from tests.helpers import make_opt, one_line_error, process, read_csv, run_main, tiny, train_cli

CONTROL = [*tiny(niter=0), "--outf", "out"]


def control_run(tmp_path, model: str):
    train_cli([*CONTROL, "--model", model], tmp_path)
    return tmp_path / "out" / f"{model}-control" / "digits" / "3"


def is_statistic(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.parametrize("model", list(MODELS))
def test_a_control_is_a_complete_run_of_epoch_0_whose_weights_are_the_trained_runs_first_ones(tmp_path, model):
    run = control_run(tmp_path, model)
    results = json.loads((run / "results.json").read_text())
    assert results["untrained_control"] is True and results["epochs"] == 0 and results["best"]["epoch"] == 0
    assert 0 <= results["best"]["test"]["auroc"] <= 1
    best, last = checkpoint.load(run, "best"), checkpoint.load(run, "last")
    assert best["epoch"] == last["epoch"] == 0 and best["threshold"]["value"] == last["threshold"]["value"]

    # The networks a trained run with the same seed starts from (built as train.py builds them), exactly.
    opt = options.parse([*tiny(niter=1), "--model", model, "--outf", str(tmp_path / "trained")])
    trainer = build_trainer(opt, options.defaults())
    try:
        for name, net in trainer.model.networks.items():
            saved = best["state"][name]
            for key, value in net.state_dict().items():
                if not is_statistic(key):
                    assert torch.equal(saved[key], value), f"{name}.{key} moved"
            # BatchNorm's statistics, and only they, followed the data.
            moved = [key for key in saved if key.endswith("running_mean") and saved[key].abs().sum() > 0]
            assert moved or not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    finally:
        trainer.close()


def test_calibration_makes_running_statistics_the_mean_of_the_batches_statistics():
    opt = make_opt(model="skipganomaly", isize=8, nc=1)
    model = build_model(opt, torch.device("cpu"), fast=False)
    images = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8)
    norm = next(m for m in model.generator.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    hook = norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    momentum = norm.momentum
    images_seen, _ = calibrate(model, images, batchsize=4, device="cpu")  # batches of 4 and 5 (a last 1 joined)
    hook.remove()
    assert images_seen == 9 and sorted({len(x) for x in seen}) == [4, 5]
    # A cumulative mean: every pass through the layer counts once.
    expected = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
    torch.testing.assert_close(norm.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert norm.momentum == momentum  # training's momentum is back


def test_predict_and_phase_test_take_a_control_and_resume_refuses_it_in_one_line(tmp_path):
    run = control_run(tmp_path, "skipganomaly")
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "image.png")
    scored = run_main(predict.main, ["--path", tmp_path / "image.png", "--weights", run, "--out",
                                     tmp_path / "scored", "--device", "cpu"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    tested = train_cli(["--phase", "test", "--load_weights", run, "--device", "cpu"], tmp_path)
    assert "test: auroc" in tested.stdout
    assert json.loads((run / "test" / "results.json").read_text())["epoch"] == 0
    again = train_cli(["--phase", "test", "--resume", run, "--device", "cpu"], tmp_path)  # last.pt: the same
    assert again.stdout.splitlines()[-2] == tested.stdout.splitlines()[-2], again.stdout + again.stderr
    for more in ([], ["--niter", "2"]):
        refused = process("train.py", ["--resume", run, *more, "--device", "cpu"], tmp_path)
        one_line_error(refused, "is an untrained control (--niter 0): there is no training to continue")


@pytest.mark.parametrize("flags, drop", [(["--ngpu", "2"], "--ngpu 2"), (["--iter", "1"], "--iter 1"),
                                         (["--load_weights", "x.pt"], "--load_weights")])
def test_a_control_refuses_what_it_cannot_be_before_writing_anything(tmp_path, flags, drop):
    proc = process("train.py", [*CONTROL, *flags], tmp_path)
    one_line_error(proc, "--niter 0 builds the untrained control", f"drop {drop}")
    assert not (tmp_path / "out").exists()


def test_the_collector_puts_each_trained_setting_beside_its_control_seed_by_seed(tmp_path):
    for seed in ("1", "2"):
        for niter in ("0", "1"):
            train_cli([*tiny(niter=niter, manualseed=seed), "--model", "skipganomaly", "--outf", "out",
                       "--name", f"run{niter}-{seed}"], tmp_path)
    table, _ = collect(tmp_path / "out", warn=lambda line: None)
    rows = {line.split("**")[1]: line for line in table.splitlines() if line.startswith("| **")}
    trained = "Skip-GANomaly (isize 8, ndf 8, ngf 8, niter 1, nz 8)"
    control = "Skip-GANomaly (isize 8, ndf 8, ngf 8, nz 8), untrained control"
    assert set(rows) == {trained, control, f"{trained} − untrained control"}, table

    def value(name, seed):
        run = tmp_path / "out" / name
        return json.loads((run / "results.json").read_text())["best"]["test"]["auroc"]
    differences = [value(f"run1-{s}", s) - value(f"run0-{s}", s) for s in ("1", "2")]
    mean = float(np.mean(differences))
    assert f"| {mean:.3f} ± {float(np.std(differences, ddof=1)):.3f} |" in rows[f"{trained} − untrained control"]


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_of_controls_trains_nothing_and_reports_each(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps({"manualseed": {"grid": [1, 2]}}))
    proc = process("train_tune.py", [*tiny(niter=0, manualseed=None), "--num_cpus", "1", "--name", "c",
                                     "--space", tmp_path / "space.json", "--outf", tmp_path / "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "out" / "tune" / "c" / "results.csv")
    assert [(r["status"], r["epochs"], r["best_epoch"]) for r in rows] == [("done", "0", "0")] * 2
    assert "--niter 0" in proc.stdout.split("reproduce: ")[1]


@pytest.mark.slow
def test_learning_curves_put_each_scores_validation_auroc_per_epoch_beside_its_control(tmp_path):
    """experiments.learning_curves: epoch 0 of each score's curve is its control's validation AUROC and epoch
    N the trained run's; "pays from" is the first epoch beating the control by MARGIN, read on validation."""
    from experiments.learning_curves import MARGIN
    from tests.helpers import tool
    args = ["--class", "Bag", "--epochs", "2", "--isize", "16", "--width", "8", "--nz", "8", "--seeds", "0",
            "--out", "lc"]
    proc = tool("experiments.learning_curves", args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder, = (tmp_path / "lc").iterdir()
    control = read_csv(folder / "control" / "seed0" / "metrics.csv")[-1]
    trained = read_csv(folder / "trained" / "seed0" / "metrics.csv")
    curves = read_csv(folder / "curves.csv")
    scores = sorted(k[len("val_auroc_score_"):] for k in control if k.startswith("val_auroc_score_"))
    assert len(scores) > 5 and {r["score"] for r in curves} == {*scores, "test AUROC of the chosen score"}
    table = (folder / "curves.md").read_text()
    for score in scores:
        curve = {int(r["epoch"]): float(r["seed0"]) for r in curves if r["score"] == score}
        key = f"val_auroc_score_{score}"
        assert curve == {0: float(control[key]), 1: float(trained[0][key]), 2: float(trained[1][key])}
        pays = next((e for e in (1, 2) if curve[e] - curve[0] >= MARGIN), "never")
        assert f"| {score} | {curve[0]:.3f} | {curve[2]:.3f} |" in table and table.split(f"| {score} |")[1] \
            .splitlines()[0].rstrip().endswith(f"| {pays} |"), table
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tool("experiments.learning_curves", [*args, "--report"], tmp_path)  # finished runs are kept
    assert again.returncode == 0 and "control/seed0" not in again.stdout and (folder / "curves.md").read_text() == table


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-the-study"])
def test_learning_curves_stopped_mid_run_continue_it_from_its_checkpoint(tmp_path, stop):
    """results.json is written every epoch: a study stopped mid-run once took that run for finished. The
    curve's long run continues from its last.pt instead, its first epochs kept as they were. Ctrl-C reaches
    the study's whole process group; a SIGTERM sent to the study's pid alone (a supervisor, `kill PID`) was
    once ignored while its train.py trained on to the end, and is now passed on."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT, default_interrupts, tool
    args = ["--class", "Bag", "--epochs", "3", "--isize", "16", "--width", "8", "--nz", "8", "--seeds", "0",
            "--out", "lc"]
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.learning_curves", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_interrupts)
    deadline = time.monotonic() + 300
    metrics = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "lc").glob("*/trained/seed0/metrics.csv"))
        if found and len(read_csv(found[0])) >= 1:
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None, proc.communicate()[1][-2000:]
    if stop == "ctrl-c":
        __import__("os").killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == (130 if stop == "ctrl-c" else 143)
    first = read_csv(metrics)
    assert 1 <= len(first) < 3
    again = tool("experiments.learning_curves", args, tmp_path)
    assert again.returncode == 0 and "trained/seed0 (resumed)" in again.stdout, again.stdout + again.stderr
    rows = read_csv(metrics)
    assert len(rows) == 3 and rows[:len(first)] == first


def test_a_study_takes_a_run_for_finished_only_when_it_has_trained_every_epoch(tmp_path):
    from experiments import finished
    (tmp_path / "results.json").write_text('{"epochs": 1}')
    assert finished(tmp_path, 1) and not finished(tmp_path, 2) and not finished(tmp_path / "none", 0)
    (tmp_path / "results.json").write_text("{broken")
    assert not finished(tmp_path, 1)
