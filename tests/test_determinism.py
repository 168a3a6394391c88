"""A seed fixes a run: the same command gives the same numbers, however busy the machine is.

The speed layer's choices (precision, kernels) are rules of the machine, not timings, and draw no
random number (tests/test_speed.py); here real train.py processes show the whole run follows.
"""
import csv
import multiprocessing
import os

import pytest

from tests.helpers import TINY, process

# What a run writes that must not depend on how long it took (metrics.csv's other columns are times).
TIMING = {"train_seconds", "train_img_per_s", "eval_seconds", "eval_img_per_s"}


def numbers(run) -> dict:
    """Every number of a run but its timings: histogram.csv's bytes (each test image's score) and
    metrics.csv (each epoch's losses and AUROCs, every score's)."""
    with open(run / "metrics.csv", newline="") as f:
        metrics = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    return {"histogram": (run / "histogram.csv").read_bytes(), "metrics": metrics}


def _spin() -> None:
    while True:
        pass


@pytest.fixture
def cpu_hog():
    """A busy loop on every core, as another user's job would be, while the test runs."""
    hogs = [multiprocessing.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(os.cpu_count())]
    for hog in hogs:
        hog.start()
    yield
    for hog in hogs:
        hog.kill()
        hog.join()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["w_skipganomaly", "skipganomaly"])
def test_the_same_command_gives_the_same_numbers_also_on_a_busy_machine(tmp_path, model, request):
    # Skip-WGANomaly draws random numbers at every step (its gradient penalty's mixing weights).
    args = [*TINY, "--model", model, "--niter", "2"]
    quiet = process("train.py", [*args, "--outf", "quiet"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    request.getfixturevalue("cpu_hog")
    busy = process("train.py", [*args, "--outf", "busy"], tmp_path)
    assert busy.returncode == 0, busy.stderr
    run = f"{model}/digits/3"
    first, second = numbers(tmp_path / "quiet" / run), numbers(tmp_path / "busy" / run)
    assert len(first["metrics"]) == 2 and first == second
    # And the choices opt.txt records (its runtime block names no timing).
    assert (tmp_path / "quiet" / run / "opt.txt").read_text().replace("quiet", "busy") == \
        (tmp_path / "busy" / run / "opt.txt").read_text()


@pytest.mark.parametrize("flags", [{"original": True}, {"fixes": "default,-fastest_kernels"}],
                         ids=["--original", "without fastest_kernels"])
def test_without_fastest_kernels_torch_is_asked_for_deterministic_algorithms_and_the_next_run_does_not_inherit_it(
        flags):
    import torch

    from lib import fast
    from lib.runs.setup import seed_everything
    from tests.helpers import make_opt
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    try:
        seed_everything(make_opt(manualseed=0, **flags))
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        assert not fast.settings(make_opt(**flags), torch.device("cuda")).autotune
        seed_everything(make_opt(manualseed=0))
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert fast.settings(make_opt(), torch.device("cuda")).autotune
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


def test_a_runs_recorded_precision_is_reused_by_phase_test_predict_and_resume(tmp_path, monkeypatch):
    """Trained where bf16 is native, the run is scored and resumed in bf16 on a CPU without it,
    with a one-line notice; a resumed run refuses another precision."""
    import torch

    import predict
    from lib.fast import hardware
    from tests.helpers import one_line_error, run_main, train_cli
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    train_cli([*TINY, "--model", "w_skipganomaly", "--niter", "1", "--n_critic", "2", "--outf", "out"], tmp_path)
    run = tmp_path / "out/w_skipganomaly/digits/3"
    assert "precision: bf16: native on this CPU (avx512_bf16)" in (run / "opt.txt").read_text()
    assert torch.load(run / "train/weights/last.pt", weights_only=True)["speed"] == {
        "amp": True, "matmul": True, "device_type": "cpu"}

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # by its rule: fp32
    notice = ("notice: this run was trained in bf16 on a CPU with native bf16; emulated on this CPU, which has no "
              "native bf16: slower (--no-amp runs fp32)")
    tested = train_cli(["--dataset", "digits", "--abnormal_class", "3", "--device", "cpu", "--phase", "test",
                        "--load_weights", run], tmp_path)
    assert notice in tested.stdout
    assert "precision: bf16: as this run was trained (cpu); emulated" in (run / "test/opt.txt").read_text()
    scored = run_main(predict.main, ["--path", run / "train/images", "--weights", run, "--device", "cpu",
                                     "--out", tmp_path / "predicted"], tmp_path)
    assert scored.returncode == 0 and notice in scored.stdout

    refused = train_cli(["--resume", run, "--niter", "2", "--no-amp"], tmp_path, check=False)
    one_line_error(refused, "--no-amp: this run was trained in bf16 and a resumed run continues in it")
    train_cli(["--resume", run, "--niter", "2"], tmp_path)
    assert torch.load(run / "train/weights/last.pt", weights_only=True)["epoch"] == 2
    assert "precision: bf16: as this run was trained (cpu)" in (run / "opt.txt").read_text()
