"""tools.benchmark reports what it promises and refuses what it cannot measure."""
import json
from types import SimpleNamespace

import pytest
import torch

from lib.errors import UserError
from lib.models import build_model
from tests.helpers import ROOT, make_opt, tool
from tools import benchmark


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """benchmark.main sets torch's thread count for the whole process: the tests after this one would
    train with one thread, and no longer do their arithmetic as train.py in a process of its own does."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("amp", ["--no-amp", "--amp"])
def test_benchmark_compares_the_three_paths_in_one_json_object(capsys, monkeypatch, amp):
    def in_this_process(path, argv):  # the fresh process per path costs seconds of imports
        args = benchmark.parse([*argv, "--path", path])
        device = torch.device(args.device)
        return benchmark.peak_memory(benchmark.build(path, args, device), benchmark.make_data(args, device),
                                     args, device)
    monkeypatch.setattr(benchmark, "memory_in_fresh_process", in_this_process)
    benchmark.main(["--compare", "--model", "w_skipganomaly", "--isize", "8", "--ngf", "4", "--ndf", "4",
                    "--nz", "4", "--batchsize", "4", "--n_critic", "2", "--steps", "2", "--reps", "1",
                    "--warmup", "0", "--eval_batches", "1", "--threads", "1", amp])
    out = json.loads(capsys.readouterr().out)
    assert set(out["paths"]) == {"original", "plain", "fast"}
    for path in out["paths"].values():
        assert path["train_img_per_s"] > 0 and path["eval_img_per_s"] > 0
        assert {"peak_mem_mb", "peak_mem_method"} <= set(path)  # in-process here, blind to growth: see below
        assert path["gflop_per_img"]["train_step"] > path["gflop_per_img"]["eval"] > 0
    assert {"train", "eval"} <= set(out["ratios"]["fast/original"])
    assert out["settings"]["batchsize"] == 4
    # The roofline: each path's rate against a large matrix product's in the precision it computes
    # in (only the fast path autocasts to bf16, with --amp), and the ceiling it implies.
    roof = out["roofline"]
    precisions = {"original": "fp32", "plain": "fp32", "fast": "bf16" if amp == "--amp" else "fp32"}
    assert out["settings"]["fast_path"]["bf16"] == (amp == "--amp")
    assert {k for k in roof if k.startswith("matmul_")} == {f"matmul_{p}_gflop_per_s" for p in precisions.values()}
    for name, path in out["paths"].items():
        assert roof["paths"][name]["precision"] == precisions[name]
        matmul = roof[f"matmul_{precisions[name]}_gflop_per_s"]
        assert matmul > 0
        for phase in ("train", "eval"):
            entry = roof["paths"][name][phase]
            gflop = path["gflop_per_img"]["train_step" if phase == "train" else "eval"]
            assert entry["gflop_per_s"] == pytest.approx(path[f"{phase}_img_per_s"] * gflop, rel=0.01, abs=0.1)
            assert entry["ceiling_img_per_s"] == pytest.approx(matmul / gflop, rel=0.01)
    ceiling = roof["paths"]["fast"]["eval"]["ceiling_img_per_s"] / out["paths"]["original"]["eval_img_per_s"]
    assert roof["ceiling/original"]["eval"] == pytest.approx(ceiling, rel=0.01)


def test_on_a_cpu_favouring_bf16_a_model_not_measured_safe_in_it_is_benchmarked_and_reported_in_fp32(
        capsys, monkeypatch):
    from lib.fast import hardware
    monkeypatch.setattr(hardware, "cpu_bf16", lambda: hardware.Choice(True, "bf16: pinned"))
    monkeypatch.setattr(benchmark, "memory_in_fresh_process", lambda path, argv: {})
    benchmark.main(["--path", "fast", "--model", "ganomaly", "--isize", "8", "--ngf", "4", "--ndf", "4",
                    "--nz", "4", "--batchsize", "4", "--steps", "1", "--reps", "1", "--warmup", "0",
                    "--eval_batches", "1", "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    assert not out["settings"]["fast_path"]["bf16"] and out["settings"]["fast_path"]["why"][0].startswith("fp32")
    assert out["roofline"]["paths"]["fast"]["precision"] == "fp32" and "matmul_bf16_gflop_per_s" not in out["roofline"]


@pytest.mark.slow
def test_peak_memory_measured_in_a_fresh_process_counts_what_the_first_step_allocates():
    """Gradients and both Adam moments: three times the weights, activations aside. The reported value is
    floored at zero, so only one clearly above it shows the measurement sees the steps."""
    size = {"isize": 32, "ngf": 64, "ndf": 64, "nz": 100}  # the defaults: 68 MiB of weights
    proc = tool("tools.benchmark", ["--memory_only", "--path", "fast", "--model", "skipganomaly", "--batchsize", "16",
                                    "--threads", "1", *(f"--{k}={v}" for k, v in size.items())], ROOT)
    assert proc.returncode == 0, proc.stderr
    model = build_model(make_opt(model="skipganomaly", **size), torch.device("cpu"))
    weights_mb = sum(p.numel() * p.element_size() for net in model.networks.values() for p in net.parameters()) / 2**20
    assert json.loads(proc.stdout)["peak_mem_mb"] > 3 * weights_mb


def test_loader_benchmark_reports_images_per_second(capsys):
    benchmark.main(["--loader", "--loader_images", "256", "--batchsize", "32", "--reps", "1", "--threads", "1"])
    assert json.loads(capsys.readouterr().out)["loader_img_per_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [(["--isize", "12"], "--isize 12 is not supported"),
                                          (["--nc", "2"], "--nc 2 is not supported")])
def test_benchmark_refuses_an_image_shape_the_networks_cannot_take(args, message):
    proc = tool("tools.benchmark", args, ROOT)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}: " + \
        ("use a power of two >= 8 (e.g. 32, 64, 128)" if "isize" in message else "use 1 (grey) or 3 (colour)")


def test_the_originals_step_exists_only_for_the_two_models_the_original_code_had():
    with pytest.raises(UserError, match="^--model no_such_model with the original path: the original code has no "
                                        "model no_such_model; benchmark --model skipganomaly or w_skipganomaly"):
        benchmark.Original(SimpleNamespace(name="no_such_model"))


@pytest.mark.slow
def test_the_originals_own_code_is_timed_taking_turns_with_ours(capsys):
    """--original-code: `original` is the original's optimize_params() and test() in a process of its
    own, which really trains (its own losses come back and change) and answers in turn."""
    from tests.test_original_runner import ORIGINAL_CODE
    from tools.original.timing import OriginalCode
    if ORIGINAL_CODE is None:
        pytest.skip("needs the original code: set ORIGINAL_CODE")
    tiny = ["--isize", "32", "--ngf", "4", "--ndf", "4", "--nz", "4", "--batchsize", "5", "--warmup", "1"]
    args = benchmark.parse([*tiny, "--model", "w_skipganomaly", "--original-code", str(ORIGINAL_CODE)])
    original = OriginalCode(args.original_code, args, threads=1)
    try:
        assert original.ready["peak_mem_mb"] >= 0
        losses = []
        for _ in range(2):
            wall, cpu = original.time_train(5)
            assert wall > 0 and cpu > 0
            losses.append(original.last["err_d"])
        assert losses[0] != losses[1]
        assert original.time_eval(2)[0] > 0
    finally:
        original.close()
    benchmark.main(["--compare", *tiny, "--steps", "1", "--reps", "2", "--eval_batches", "2", "--threads", "1",
                    "--original-code", str(ORIGINAL_CODE)])
    out = json.loads(capsys.readouterr().out)
    assert out["original"].startswith("the original's own code")
    assert out["paths"]["original"]["gflop_per_img"] is None and out["paths"]["original"]["peak_mem_mb"] >= 0
    assert out["ratios"]["fast/original"]["train"] > 0 and "original" not in out["roofline"]["paths"]


@pytest.mark.parametrize("args,message", [
    (["--wgan", "clip", "--model", "w_skipganomaly"], "gradient penalty and 5 critic steps"),
    (["--profile"], "--loader and --profile measure our code"),
    (["--batchsize", "4"], "fails on smaller batches"),
    (["--nc", "1"], "colour images only"),
])
def test_settings_the_originals_code_cannot_run_are_refused_in_one_line(args, message):
    from tests.test_original_runner import ORIGINAL_CODE
    if ORIGINAL_CODE is None:
        pytest.skip("needs the original code: set ORIGINAL_CODE")
    proc = tool("tools.benchmark", [*args, "--original-code", str(ORIGINAL_CODE)], ROOT)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_folder_that_is_not_the_original_code_is_refused(tmp_path):
    proc = tool("tools.benchmark", ["--compare", "--original-code", str(tmp_path)], ROOT)
    assert proc.returncode == 2 and "is not the original Skip-WGANomaly code" in proc.stderr

