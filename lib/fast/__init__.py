"""The speed layer: how a model's networks run fast, kept out of the method's code.

A model builds its networks and optimisers plainly; `accelerate` is the one call
that then makes them fast, and the `Speed` it returns is what the model's
generic wrapper (lib/models/base.py) uses around every step and evaluation.
With `fast` off, nothing changes: the networks run as written, which is the
reference the tests hold the fast settings to (tests/reference_steps.py).

What `fast` does, on any device: channels-last networks and inputs (oneDNN's
CPU kernels and tensor cores both prefer it) and fused Adam stepping
channels-last weights in place (`adam.ChannelsLastAdam`). On CPU, the
few-position convolutions run as matrix products (`matmul`); on CUDA, cuDNN
autotunes a kernel per shape. `amp` adds bf16 autocast (losses stay fp32, see
lib/losses.py); `compile` runs torch.compile on the networks that allow it.
"""
import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from lib.fast.adam import ChannelsLastAdam
from lib.fast.matmul import use_matmul_convolutions


@dataclass(frozen=True)
class Speed:
    """The settings a model runs with, and what they mean for its tensors."""
    fast: bool = False
    amp: bool = False
    compiled: bool = False
    device_type: str = "cpu"

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


def settings(opt, device: torch.device, fast=None, amp=None, compile=None) -> Speed:
    """The `Speed` for `device`: arguments first, then the options, then the defaults
    (fast on; amp on with CUDA only, and only when fast; compile off)."""
    def pick(name, value):
        return value if value is not None else getattr(opt, name, None)

    fast = pick("fast", fast)
    fast = True if fast is None else bool(fast)
    amp = pick("amp", amp)
    amp = fast and (device.type == "cuda" if amp is None else bool(amp))
    return Speed(fast=fast, amp=amp, compiled=bool(pick("compile", compile)), device_type=device.type)


def accelerate(speed: Speed, networks: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               compiles=lambda name: True) -> dict[str, torch.optim.Optimizer]:
    """Make `networks` (in place) and `optimizers` (replaced: the returned dict) run at `speed`.

    `compiles(name)` says whether torch.compile can take that network (not one that needs
    a double backward, such as a gradient-penalty critic).
    """
    if speed.fast:
        for net in networks.values():
            net.to(memory_format=torch.channels_last)
            if speed.device_type == "cpu":
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
