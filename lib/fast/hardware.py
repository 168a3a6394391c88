"""What this machine computes fast: the speed layer's defaults, as a rule of its CPU flags.

A run's choices are a function of the machine (CPU flags, device) and the run's options, never
of a timing: the same command on the same machine makes the same choices in every process, busy
or quiet, so a seed fixes its numbers (an earlier version timed probes in each process and
chose fp32 in one run and bf16 in the next). The rules record what such probes measured
(docs/benchmarks.md; `python -m tools.benchmark` measures a machine again):

- bf16 autocast pays on a CPU only where it computes bf16 natively (AVX512-BF16 or AMX:
  `avx512_bf16` / `amx_bf16` in /proc/cpuinfo): there a convolution's step ran 1.4-1.5x faster
  in bf16; elsewhere torch converts every operand and bf16 ran about 2x slower (AVX2).
- The few-position convolutions as matrix products (lib/fast/matmul.py) ran 2-3x faster than
  oneDNN's kernels on every CPU measured (AVX2; AVX-512 with native bf16), in fp32 and bf16.

Each choice carries its reason, which opt.txt records (lib/runs/setup.py).
"""
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


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


def native_bf16() -> list[str]:
    """This CPU's flags that compute bf16 natively (none: bf16 is emulated, and slower)."""
    return sorted(cpu_flags().intersection(NATIVE_BF16))


def cpu_bf16() -> Choice:
    """bf16 autocast on this CPU: on where it is native."""
    native = native_bf16()
    if not native:
        return Choice(False, f"fp32: this CPU ({capability()}) has no native bf16 ({' or '.join(NATIVE_BF16)})")
    return Choice(True, f"bf16: native on this CPU ({', '.join(native)})")


def cpu_matmul_convolutions() -> Choice:
    """The innermost layers as matrix products on a CPU: faster than oneDNN's kernels on every CPU measured."""
    return Choice(True, "matrix products for the innermost layers (faster than oneDNN's kernels on every CPU "
                        "measured)")
