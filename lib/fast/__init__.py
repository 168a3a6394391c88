"""The speed layer: how a model's networks run fast, kept out of the method's code.

A model builds its networks and optimisers plainly; `accelerate` is the one call
that then makes them fast, and the `Speed` it returns is what the model's
generic wrapper (lib/models/base.py) uses around every step and evaluation.
With `fast` off, nothing changes: the networks run as written, which is the
reference the tests hold the fast settings to (tests/reference_steps.py).

What `fast` does, on any device: channels-last networks and inputs (oneDNN's
CPU kernels and tensor cores both prefer it) and fused Adam stepping
channels-last weights in place (`adam.ChannelsLastAdam`). On CPU, the
few-position convolutions run as matrix products (`matmul`) where a probe finds
them faster; on CUDA, cuDNN autotunes a kernel per shape. `amp` adds bf16
autocast (losses stay fp32, see lib/losses.py): by default on CUDA, and on a CPU
with native bf16 where a probe finds it faster (`hardware`). `compile` runs
torch.compile on the networks that allow it.
"""
import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from lib.fast import hardware
from lib.fast.adam import ChannelsLastAdam
from lib.fast.matmul import use_matmul_convolutions


@dataclass(frozen=True)
class Speed:
    """The settings a model runs with, and what they mean for its tensors."""
    fast: bool = False
    amp: bool = False
    compiled: bool = False
    device_type: str = "cpu"
    matmul: bool = False  # CPU: the few-position convolutions as matrix products
    why: tuple[str, ...] = ()  # how amp and matmul were chosen (opt.txt's runtime block)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.fast else torch.contiguous_format

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the networks' memory layout."""
        return images.to(memory_format=self.memory_format) if self.fast else images

    def autocast(self):
        """bf16 autocast with `amp`, else nothing."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def optimizer_loaded(self, optimizer: torch.optim.Optimizer) -> None:
        """After an optimiser state is loaded: a checkpoint's kernel choice must not switch ours."""
        for group in optimizer.param_groups:
            group["fused"] = self.fast
            group["foreach"] = None


def settings(opt, device: torch.device, fast=None, amp=None, compile=None, bf16_safe: bool = True) -> Speed:
    """The `Speed` for `device`: arguments first, then the options, then what the machine does
    fastest (fast on; amp on with CUDA, on a CPU where `hardware` finds bf16 native and faster,
    but only for a model whose detection bf16 was measured not to cost (`bf16_safe`);
    matrix-product convolutions where `hardware` finds them faster; compile off)."""
    def pick(name, value):
        return value if value is not None else getattr(opt, name, None)

    fast = pick("fast", fast)
    fast = True if fast is None else bool(fast)
    amp = pick("amp", amp)
    if not fast:
        amp_choice = hardware.Choice(False, "fp32: --no-fast")
    elif amp is not None:
        amp_choice = hardware.Choice(bool(amp), f"{'bf16' if amp else 'fp32'}: --{'' if amp else 'no-'}amp")
    else:
        amp_choice = hardware.Choice(True, "bf16: CUDA") if device.type == "cuda" else hardware.cpu_bf16()
        if amp_choice.on and not bf16_safe:
            amp_choice = hardware.Choice(False, f"fp32: {'CUDA' if device.type == 'cuda' else 'this CPU'} favours "
                                                "bf16, but it is not measured to keep this model's AUROC "
                                                "(docs/benchmarks.md); --amp turns it on")
    matmul = (hardware.cpu_matmul_convolutions(amp_choice.on) if fast and device.type == "cpu"
              else hardware.Choice(False, "convolution kernels" + (": --no-fast" if not fast else "")))
    return Speed(fast=fast, amp=amp_choice.on, compiled=bool(pick("compile", compile)), device_type=device.type,
                 matmul=matmul.on, why=(amp_choice.why, matmul.why))


def accelerate(speed: Speed, networks: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               compiles=lambda name: True) -> dict[str, torch.optim.Optimizer]:
    """Make `networks` (in place) and `optimizers` (replaced: the returned dict) run at `speed`.

    `compiles(name)` says whether torch.compile can take that network (not one that needs
    a double backward, such as a gradient-penalty critic).
    """
    if speed.fast:
        for net in networks.values():
            net.to(memory_format=torch.channels_last)
            if speed.matmul:
                use_matmul_convolutions(net)
        if speed.device_type == "cuda":
            torch.backends.cudnn.benchmark = True  # process-wide: autotune a kernel per shape
        optimizers = {name: _fused(o) for name, o in optimizers.items()}
    if speed.compiled:
        for name, net in networks.items():
            if compiles(name):
                net.compile()  # nn.Module.compile keeps parameter names: checkpoints stay interchangeable
    return optimizers


def _fused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """A plain Adam as fused `ChannelsLastAdam` (the same updates, fewer copies); others as they are."""
    if type(optimizer) is not torch.optim.Adam or optimizer.state:
        return optimizer
    groups = [{**group, "fused": True, "foreach": None} for group in optimizer.param_groups]
    return ChannelsLastAdam(groups, **{**optimizer.defaults, "fused": True, "foreach": None})
