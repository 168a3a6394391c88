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
lib/models/losses.py): by default on CUDA and on a CPU with native bf16 (`hardware`).
`compile` runs torch.compile on the networks that allow it. Under --original,
the numerics are the original's: fp32; without the fastest_kernels fix, no autotuning.

None of this draws a random number, and each choice is a rule of the machine and
the options: a seed fixes a run. A checkpoint records the choices (`Speed.record`)
and whatever uses it (--resume, --phase test, predict.py) reuses them.
"""
import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..original import applies, fixes
from . import hardware
from .adam import ChannelsLastAdam
from .matmul import use_matmul_convolutions


@dataclass(frozen=True)
class Speed:
    """The settings a model runs with, and what they mean for its tensors."""
    fast: bool = False
    amp: bool = False
    compiled: bool = False
    device_type: str = "cpu"
    matmul: bool = False  # CPU: the few-position convolutions as matrix products
    autotune: bool = False  # CUDA: cuDNN times its kernels per shape (not without the fastest_kernels fix)
    why: tuple[str, ...] = ()  # how amp and matmul were chosen (opt.txt's runtime block)
    notice: str = ""  # where a checkpoint's recorded choices could not be reused as they were

    def record(self) -> dict:
        """What a checkpoint keeps of these choices, for `settings(recorded=...)` to reuse."""
        return {"amp": self.amp, "matmul": self.matmul, "device_type": self.device_type}

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


def settings(opt, device: torch.device, fast=None, amp=None, compile=None, bf16_safe: bool = True,
             recorded: dict | None = None) -> Speed:
    """The `Speed` for `device`: arguments first, then the options, then the run's `recorded`
    choices (a checkpoint's, see `Speed.record`), then the machine's rule (`hardware`): fast on;
    bf16 with CUDA and on a CPU with native bf16, but only for a model whose detection bf16 was
    measured not to cost (`bf16_safe`), and never under --original (the original's numerics are
    fp32's); matrix-product convolutions on a CPU; compile off. No timing decides anything, so
    every process of a run, and every run of a command, chooses alike."""
    def pick(name, value):
        return value if value is not None else getattr(opt, name, None)

    fast = pick("fast", fast)
    fast = True if fast is None else bool(fast)
    amp = pick("amp", amp)
    original = not fixes(opt)
    recorded = recorded or {}
    same_device = recorded.get("device_type") == device.type
    if not fast:
        amp_choice = hardware.Choice(False, "fp32: --no-fast")
    elif amp is not None:
        amp_choice = hardware.Choice(bool(amp), f"{'bf16' if amp else 'fp32'}: --{'' if amp else 'no-'}amp")
    elif "amp" in recorded:  # precision is part of what a run computes: it follows the run to any device
        amp_choice = hardware.Choice(recorded["amp"], f"{'bf16' if recorded['amp'] else 'fp32'}: as this run "
                                                      f"was trained ({recorded['device_type']})")
        if recorded["amp"] and device.type == "cpu" and not hardware.native_bf16():
            amp_choice = hardware.Choice(True, amp_choice.why + "; emulated on this CPU, which has no native "
                                               "bf16: slower (--no-amp runs fp32)")
    elif original:
        amp_choice = hardware.Choice(False, "fp32: --original computes as the original did")
    else:
        amp_choice = hardware.Choice(True, "bf16: CUDA") if device.type == "cuda" else hardware.cpu_bf16()
        if amp_choice.on and not bf16_safe:
            score = f" with --score {opt.score}" if getattr(opt, "score", None) else ""
            amp_choice = hardware.Choice(False, f"fp32: {'CUDA' if device.type == 'cuda' else 'this CPU'} favours "
                                                f"bf16, but it is not measured to keep this model's AUROC{score} "
                                                "(docs/benchmarks.md); --amp turns it on")
    if not fast:
        matmul = hardware.Choice(False, "convolution kernels: --no-fast")
    elif "matmul" in recorded and same_device:  # kernels are the device's: reused on the same kind
        matmul = hardware.Choice(recorded["matmul"], ("matrix products for the innermost layers" if recorded["matmul"]
                                                      else "convolution kernels") + ": as this run was trained")
    elif device.type == "cpu":
        matmul = hardware.cpu_matmul_convolutions()
    else:
        matmul = hardware.Choice(False, "convolution kernels")
    notice = ""
    if recorded and fast and not same_device:
        notice = (f"this run was trained on {recorded['device_type']}; on {device.type} it keeps its precision "
                  f"({'bf16' if amp_choice.on else 'fp32'}) but runs {device.type}'s kernels: scores may differ in "
                  "the last digits")
    elif recorded and fast and "emulated" in amp_choice.why:
        notice = f"this run was trained in bf16 on a CPU with native bf16; {amp_choice.why.split('; ', 1)[1]}"
    return Speed(fast=fast, amp=amp_choice.on, compiled=bool(pick("compile", compile)), device_type=device.type,
                 matmul=matmul.on, autotune=fast and applies(opt, "fastest_kernels"), why=(amp_choice.why, matmul.why),
                 notice=notice)


def recorded_choices(ckpt: dict, file) -> dict | None:
    """A checkpoint's speed record (see `Speed.record`), checked; None for checkpoints written
    before runs recorded one (their choices are made again, by the rules)."""
    record = ckpt.get("speed")
    if record is None:
        return None
    if not (isinstance(record, dict) and isinstance(record.get("amp"), bool) and isinstance(record.get("matmul"), bool)
            and record.get("device_type") in ("cpu", "cuda", "mps", "xpu")):
        text = repr(record)
        raise UserError(f"checkpoint '{file}' is damaged: its 'speed' is {text[:60]}, not a record of its precision "
                        "and kernels; it was edited, or not written by this version of the tool")
    return record


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
            # Process-wide, so set either way: a run after an --original one in the same process autotunes again.
            torch.backends.cudnn.benchmark = speed.autotune
        optimizers = {name: _fused(o) for name, o in optimizers.items()}
    if speed.compiled:
        # Inductor's C++ build looks for CUDA first and says so on every CPU-only machine: noise, not a problem.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
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
