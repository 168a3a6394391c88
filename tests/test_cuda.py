"""What only a CUDA GPU can check; skipped without one (tools/gpu_check.sh runs it on a lent GPU)."""
import subprocess
import sys

import pytest
import torch

from lib.models import MODELS
from tests.helpers import ROOT, make_opt, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def steps(name: str, device: str, amp: bool, **overrides):
    torch.manual_seed(0)
    model = MODELS[name](make_opt(model=name, n_critic=2, **overrides), torch.device(device), amp=amp)
    data = torch.Generator().manual_seed(1)
    losses = [model.train_step((torch.rand(8, 3, 16, 16, generator=data) * 2 - 1).to(device)) for _ in range(4)]
    images = (torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1).to(device)
    return losses, model.score(images).float().cpu()


@pytest.mark.parametrize("name", ["skipganomaly", "w_skipganomaly", "ganomaly"])
def test_cuda_fp32_trains_as_the_cpu_does(name):
    """The same steps on the GPU (fp32, TF32 off) and on the CPU: the same losses and scores to
    float rounding (other kernels, other summation order)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cpu, cpu_scores = steps(name, "cpu", amp=False)
    gpu, gpu_scores = steps(name, "cuda", amp=False)
    for a, b in zip(cpu, gpu, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key
    torch.testing.assert_close(gpu_scores, cpu_scores, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["skipganomaly", "w_skipganomaly"])
def test_cuda_bf16_autocast_trains_close_to_fp32(name):
    fp32, fp32_scores = steps(name, "cuda", amp=False)
    bf16, bf16_scores = steps(name, "cuda", amp=True)
    for a, b in zip(fp32, bf16, strict=True):
        for key in a:
            rel = 0.15 if key in ("gp", "critic") else 0.05  # see tests/test_speed.py
            assert b[key] == pytest.approx(a[key], rel=rel, abs=0.02), key
    torch.testing.assert_close(bf16_scores, fp32_scores, rtol=0.05, atol=1e-3)


def test_train_py_on_the_gpu_writes_a_run_that_predict_py_scores_on_the_cpu(tmp_path):
    args = [a for a in tiny(niter=1) if a not in ("--device", "cpu")]
    train = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--device", "gpu", "--outf", "out"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    run = next((tmp_path / "out").rglob("results.json")).parent
    predict = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--weights", str(run), "--path",
                              str(run / "train" / "images"), "--device", "cpu", "--out", str(tmp_path / "p")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-2000:]


@pytest.mark.parametrize("flags, deterministic", [(["--original"], True), ([], False)])
def test_on_cuda_original_repeats_exactly_and_the_default_is_reported(tmp_path, flags, deterministic):
    """--original asks for deterministic algorithms (cuDNN's, and cuBLAS's workspace): two runs of
    one command give the same scores. The default (bf16, cuDNN autotuning) is not promised to; this
    prints whether it did, for tools/gpu_check.sh's record."""
    args = [a for a in tiny(niter=1) if a not in ("--device", "cpu")] + ["--model", "w_skipganomaly", *flags]
    histograms = []
    for out in ("first", "second"):
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--device", "gpu", "--outf", out],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        histograms.append(next((tmp_path / out).rglob("histogram.csv")).read_bytes())
    print(f"CUDA, {' '.join(flags) or 'default'}: the two runs' histogram.csv are "
          f"{'identical' if histograms[0] == histograms[1] else 'different'}")
    if deterministic:
        assert histograms[0] == histograms[1]
