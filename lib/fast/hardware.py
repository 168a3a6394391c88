"""What this machine computes fast, found out once per process: the speed layer's defaults.

Nothing here assumes a CPU. bf16 autocast pays on a CPU only where it computes bf16 natively
(AVX512-BF16 or AMX: `avx512_bf16` / `amx_bf16` in /proc/cpuinfo); elsewhere torch converts
every operand and bf16 runs slower than fp32 (the AVX2 development machine: about 2x slower).
So bf16 is the CPU default only where those instructions exist *and* a short probe, one
convolution's forward and backward as the networks run them, is faster with it. The
matrix-product convolutions (lib/fast/matmul.py) are chosen the same way, by a probe of an
innermost layer each way: they replaced oneDNN's kernels because those were slow on the AVX2
machine, and another CPU's kernels may not be. Each choice carries its reason, which opt.txt
records (lib/run.py); metrics.csv records the bf16 choice and the threads beside its speeds.
"""
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
PROBE_REPEATS = 3  # the probes cost about 0.1 s per process on the development machine


@dataclass(frozen=True)
class Choice:
    """One hardware-dependent setting and why it was taken."""
    on: bool
    why: str


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def capability() -> str:
    """torch's name for the vector instructions its CPU kernels use here (e.g. AVX2, AVX512)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def _seconds(step, repeats: int = PROBE_REPEATS) -> float:
    """The fastest of `repeats` runs of `step` (after one untimed): the least disturbed by other work."""
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def _conv_step(conv: nn.Module, x: torch.Tensor, bf16: bool):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().sum().backward()
    return step


@functools.lru_cache(maxsize=None)
def cpu_bf16() -> Choice:
    """bf16 autocast on this CPU: on where it is native and a probe finds it faster than fp32."""
    native = sorted(cpu_flags().intersection(NATIVE_BF16))
    if not native:
        return Choice(False, f"fp32: this CPU ({capability()}) has no native bf16 ({' or '.join(NATIVE_BF16)})")
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 4, 2, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(32, 64, 16, 16).to(memory_format=torch.channels_last)
    try:
        fp32, bf16 = (_seconds(_conv_step(conv, x, on)) for on in (False, True))
    except RuntimeError as err:  # a torch build without CPU bf16 kernels: fp32, and say why
        return Choice(False, f"fp32: the bf16 probe failed ({str(err).splitlines()[0][:80]})")
    # The reasons name no timing: opt.txt stays the same from run to run on one machine.
    if bf16 < fp32:
        return Choice(True, f"bf16: native ({', '.join(native)}) and faster than fp32 in this machine's probe")
    return Choice(False, f"fp32: bf16 is native ({', '.join(native)}) but slower in this machine's probe")


@functools.lru_cache(maxsize=None)
def cpu_matmul_convolutions(bf16: bool) -> Choice:
    """The innermost layers as matrix products on this CPU: where a probe finds them faster than
    torch's convolution kernels (a UNet's innermost pair, 2x2 -> 1x1 and back)."""
    from lib.fast.matmul import use_matmul_convolutions

    def pair():
        return nn.Sequential(nn.Conv2d(128, 128, 4, 2, 1, bias=False),
                             nn.ConvTranspose2d(128, 128, 4, 2, 1, bias=False)).to(memory_format=torch.channels_last)

    torch.manual_seed(0)
    plain, matmul = pair(), use_matmul_convolutions(pair())
    x = torch.randn(16, 128, 2, 2).to(memory_format=torch.channels_last)
    try:
        kernels, products = (_seconds(_conv_step(net, x, bf16)) for net in (plain, matmul))
    except RuntimeError as err:
        return Choice(False, f"convolution kernels: the probe failed ({str(err).splitlines()[0][:80]})")
    if products < kernels:
        return Choice(True, "matrix products for the innermost layers: faster than the convolution kernels "
                            "in this machine's probe")
    return Choice(False, "convolution kernels: the matrix products were slower in this machine's probe")
