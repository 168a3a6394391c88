"""Whether a checkpoint fits the networks, optimisers and schedules a run builds.

lib/training/checkpoint.py has checked each entry's kind and range; here, against the model
that the options describe: every tensor's shape and dtype, the optimiser states, the learning-rate
schedules. Loading another architecture's weights is refused in one line, not inside torch.
"""
import argparse
import math

import torch

from ..errors import UserError
from ..models import build_model
from .checkpoint import damaged, is_number, shown


def networks_template(opt):
    """The model `opt` describes, on the meta device: its shapes, without allocating its weights.

    Built without the speed layer: speed changes no shape, and a template is never run.
    """
    meta = argparse.Namespace(**{**vars(opt), "fast": False, "compile": False, "amp": False})
    with torch.device("meta"):  # parameters are created without storage, not moved there
        return build_model(meta, torch.device("meta"))


def check_same_networks(ckpt: dict, opt) -> None:
    """UserError unless the checkpoint's networks have the shapes of the networks `opt` builds:
    loading weights into another architecture (e.g. --original's discriminator, whose classifier
    has no bias, from a default run) must be refused in one line, not fail inside torch."""
    template = networks_template(opt)
    for name, net in template.networks.items():
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        saved = {k: tuple(v.shape) for k, v in ckpt["state"].get(name, {}).items()}
        if saved != expected:
            differ = sorted(set(saved) ^ set(expected) | {k for k in saved.keys() & expected.keys()
                                                         if saved[k] != expected[k]})
            saved_opt = ckpt["options"]
            made_with = "--original" if saved_opt.get("original") else f"--fixes {saved_opt.get('fixes', 'all')}"
            raise UserError(f"checkpoint '{ckpt['path']}': its {name} does not fit this run's "
                            f"({', '.join(differ[:2])} differ{'s' if len(differ) == 1 else ''}): it was trained "
                            f"with {made_with}; give the same --original/--fixes")


def _check_tensors(saved: dict, expected: dict, file, where: str) -> None:
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing or extra:
        names = ", ".join([*(f"'{k}' is missing" for k in missing[:2]), *(f"'{k}' is unexpected" for k in extra[:2])])
        raise damaged(file, f"its {where} does not match the networks its options describe ({names})")
    for key, want in expected.items():
        got = saved[key]
        if got.shape != want.shape or got.dtype != want.dtype or got.layout != torch.strided:
            raise damaged(file, f"'{where}.{key}' is a {got.dtype} tensor of shape {tuple(got.shape)}; the networks "
                                f"its options describe need {want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise damaged(file, f"'{where}.{key}' holds NaN or infinite values")


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, file, where: str) -> None:
    groups = optimizer.param_groups
    expected = optimizer.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(groups):
        raise damaged(file, f"'{where}' has {len(saved['param_groups'])} parameter groups, not {len(groups)}")
    shapes = {}
    for group, want, live in zip(saved["param_groups"], expected, groups):
        if group.get("params") != want["params"]:
            raise damaged(file, f"'{where}' optimises other parameters than the networks have")
        for key in ("lr", "eps", "weight_decay"):
            if not (is_number(group.get(key)) and math.isfinite(group[key]) and group[key] >= 0):
                raise damaged(file, f"'{where}' has the {key} {shown(group.get(key))}")
        betas = group.get("betas")
        pair = isinstance(betas, (tuple, list)) and len(betas) == 2
        if not (pair and all(is_number(b) and 0 <= b < 1 for b in betas)):
            raise damaged(file, f"'{where}' has the betas {shown(betas)}")
        shapes.update(zip(want["params"], (p.shape for p in live["params"])))
    for index, entry in saved["state"].items():
        if index not in shapes or not isinstance(entry, dict):
            raise damaged(file, f"'{where}' holds a state for parameter {shown(index)}, which the networks lack")
        for name, value in entry.items():
            ok = isinstance(value, torch.Tensor) and value.is_floating_point() and value.layout == torch.strided
            if ok and value.dim() > 0:
                ok = value.shape == shapes[index]
            if ok:
                ok = bool(torch.isfinite(value).all())
            if not ok:
                raise damaged(file, f"'{where}.state.{index}.{name}' does not fit parameter {index} "
                                    f"of shape {tuple(shapes[index])} ({shown(value)})")


def _check_plain(saved, expected, file, where: str) -> None:
    """`saved` has `expected`'s structure: the same keys, lengths and kinds of values."""
    if isinstance(expected, dict):
        if not isinstance(saved, dict) or set(saved) != set(expected):
            raise damaged(file, f"'{where}' does not have the entries this tool writes")
        for key in expected:
            _check_plain(saved[key], expected[key], file, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(expected):
            raise damaged(file, f"'{where}' is {shown(saved)}, not a list of {len(expected)}")
        for i, (s, e) in enumerate(zip(saved, expected)):
            _check_plain(s, e, file, f"{where}.{i}")
    elif is_number(expected):
        # A non-finite value only where one is normal (ReduceLROnPlateau starts at -inf).
        if not is_number(saved) or (not math.isfinite(saved) and math.isfinite(expected)):
            raise damaged(file, f"'{where}' is {shown(saved)}, not a finite number")
    elif type(saved) is not type(expected):
        raise damaged(file, f"'{where}' is {shown(saved)}, not {shown(expected)}")


def check_networks(ckpt: dict, template, schedulers=None) -> None:
    """UserError unless `ckpt`'s states fit `template` (from `networks_template`) exactly.

    Network tensors must have the template's names, shapes and dtypes and finite values;
    optimiser moments the shapes of their parameters. With `schedulers` (built on the
    template's optimisers), the stored scheduler states must have their structure too.
    """
    file, state = ckpt.get("path", "?"), ckpt["state"]
    expected = {**{name: (net.state_dict(), _check_tensors) for name, net in template.networks.items()},
                **{f"optimizer_{name}": (o, _check_optimizer) for name, o in template.optimizers.items()}}
    for key, (want, check_entry) in expected.items():
        if not isinstance(state.get(key), dict):
            raise damaged(file, f"'state.{key}' is missing" if key not in state
                          else f"'state.{key}' is {shown(state[key])}, not a dict")
        check_entry(state[key], want, file, f"state.{key}")
    if schedulers is not None:
        saved = ckpt["schedulers"]
        if len(saved) != len(schedulers):
            raise damaged(file, f"it holds {len(saved)} scheduler states for {len(schedulers)} optimisers")
        for i, (entry, scheduler) in enumerate(zip(saved, schedulers)):
            expected = scheduler.state_dict()
            # Entries of another torch version are harmless, unless they would replace the
            # scheduler's own attributes (its optimiser, say) when loaded.
            foreign = [k for k in entry if k not in expected and k in vars(scheduler)]
            missing = [k for k in expected if k not in entry]
            if missing:
                raise damaged(file, f"'schedulers.{i}' lacks {', '.join(map(repr, missing[:3]))}")
            if foreign:
                raise damaged(file, f"'schedulers.{i}' sets {', '.join(map(repr, foreign[:3]))}, which is no "
                                    "scheduler state")
            _check_plain({k: entry[k] for k in expected}, expected, file, f"schedulers.{i}")


def check_states(ckpt: dict, opt, make_schedulers=None) -> None:
    """UserError unless `ckpt`'s states fit the networks, optimisers and schedulers its options describe.

    `opt` fills in options the checkpoint lacks; `make_schedulers(opt, optimizers)` (lib/training/schedules.py's)
    builds the schedulers whose structure the stored ones must have.
    """
    stored = argparse.Namespace(**{**vars(opt), **ckpt["options"]})
    template = networks_template(stored)
    schedulers = make_schedulers(stored, template.optimizers) if make_schedulers is not None else None
    check_networks(ckpt, template, schedulers)
