"""Checkpoints and result files: atomic writes and safe loading.

Every file is written to a temporary name and renamed, so a crash leaves the
old file or the new one, never a torn one. Loading trusts nothing in the file:
its zip archive is measured before anything is inflated (a small file cannot
claim gigabytes of memory), it is read with `weights_only=True` (a crafted file
cannot run code), and every entry is checked for the type, shape and range this
tool writes before a network, optimiser or random generator is given it.
"""
import argparse
import math
import pickle
import warnings
from pathlib import Path

import torch

from lib.errors import UserError
from lib.files import atomic_write
from lib.models import MODELS, build_model
from lib.options import C_INT_MAX, option_actions, value_problem
from lib.scoring.functions import stats_problem
from lib.training import archive

FORMAT = "skip-wganomaly/1"


def save(path, checkpoint: dict) -> None:
    """Write a checkpoint atomically: a full disk raises WriteFailed (lib/files.py) and leaves the old file."""
    def write(tmp):
        # Through a Python file: torch's own file writer reports a full disk without its errno.
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **checkpoint}, f)
    atomic_write(path, write)


# --- loading: nothing in the file is trusted (lib/training/archive.py measures the zip first) ---------
# Options that describe one invocation, not the run: a stored copy is not checked against the others.
INVOCATION_OPTIONS = ("overwrite", "phase", "load_weights", "tune", "verbose")


def find(path, which: str = "last") -> Path:
    """A checkpoint file from a file, a run folder or its weights folder."""
    path = Path(path)
    for candidate in (path, path / f"{which}.pt", path / "train" / "weights" / f"{which}.pt"):
        if candidate.is_file():
            return candidate
    fix = f"give a .pt file or a run folder containing train/weights/{which}.pt"
    if not path.exists():
        raise UserError(f"no checkpoint at '{path}': it does not exist; {fix}")
    if not path.is_dir():
        raise UserError(f"no checkpoint at '{path}': it is not a regular file or a folder; {fix}")
    others = sorted(p.name for folder in (path, path / "train" / "weights") if folder.is_dir()
                    for p in folder.glob("*.pt") if p.is_file())
    hint = f" (it holds {', '.join(others)}: give that file itself)" if others else ""
    raise UserError(f"no checkpoint at '{path}': the folder has no {which}.pt or train/weights/{which}.pt{hint}; {fix}")


def load(path, which: str = "last", *, defaults: dict | None = None, validate=None) -> dict:
    """Load a checkpoint safely; UserError for anything that is not a whole one of ours.

    `defaults` (every option's default) and `validate` (options.validate) let `check` test
    the stored options as the command line would be tested.
    """
    file = find(path, which)
    try:
        f = open(file, "rb")
    except OSError as err:
        raise UserError(f"cannot read checkpoint '{file}' ({err.strerror})") from None
    with f:
        archive.check(f, file)
        f.seek(0)
        try:
            with warnings.catch_warnings():  # torch warns about old pickle protocols; the error says enough
                warnings.simplefilter("ignore")
                ckpt = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "unsafe content")
            raise UserError(f"refusing to load '{file}': it holds more than plain weights ({reason[:120]}); "
                            "only load checkpoints written by this tool") from None
        except Exception as err:  # truncated, edited, or not a torch file at all
            first = (str(err).strip().splitlines() or [""])[0]
            raise UserError(f"cannot read checkpoint '{file}': {type(err).__name__}: {first[:160]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"'{file}' is not a skip-wganomaly checkpoint (format {FORMAT} expected)")
    check(ckpt, file, defaults, validate)
    ckpt["path"] = str(file)
    return ckpt


# --- what a checkpoint of ours holds ------------------------------------------------------
def damaged(file, problem: str) -> UserError:
    return UserError(f"checkpoint '{file}' is damaged: {problem}; it was edited, or not written by this "
                     "version of the tool")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _rng_tensor(value, template: torch.Tensor) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == template.dtype and value.shape == template.shape
            and value.layout == torch.strided)


def check(ckpt: dict, file, defaults: dict | None = None, validate=None) -> None:
    """UserError naming the first entry of `ckpt` that this tool would not have written.

    Types, ranges and the random generators' state sizes; with `defaults` and `validate`,
    the stored options as the command line checks them. What depends on the networks
    (tensor shapes) is `check_networks`'s.
    """
    def need(key, ok, what, where=ckpt, prefix=""):
        if key not in where:
            raise damaged(file, f"'{prefix}{key}' is missing")
        if not ok(where[key]):
            raise damaged(file, f"'{prefix}{key}' is {_shown(where[key])}, not {what}")
        return where[key]

    options = need("options", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
                   "a dict of options")
    need("model", lambda v: v == options.get("model"), "the model its options name")
    need("epoch", lambda v: _integer(v) and 0 <= v <= C_INT_MAX, "a count of epochs")
    need("batch", lambda v: _integer(v) and 0 <= v <= C_INT_MAX, "a count of batches")
    history = need("history", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
                   "a list of epoch rows")
    for row in history:
        if not _integer(row.get("epoch")) or not all(_number(v) for v in row.values()):
            raise damaged(file, f"the history row {_shown(row)} is not an epoch's numbers")
    threshold = need("threshold", lambda v: isinstance(v, dict), "a dict")
    if threshold:
        need("value", lambda v: _number(v) and math.isfinite(v), "a finite number", threshold, "threshold.")
        for key in ("fpr", "f1_optimal_test", "epoch"):
            if key in threshold and not (threshold[key] is None or _number(threshold[key])):
                raise damaged(file, f"'threshold.{key}' is {_shown(threshold[key])}, not a number")
    need("schedulers", lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
         "a list of learning-rate scheduler states")
    generator_state = torch.Generator().get_state()
    for key in ("data_rng", "epoch_data_state"):
        need(key, lambda v: _rng_tensor(v, generator_state), "a random generator's state")
    rng = need("rng", lambda v: isinstance(v, dict), "the random generators' states")
    need("torch", lambda v: _rng_tensor(v, generator_state), "a random generator's state", rng, "rng.")
    if "cuda" in rng and not (isinstance(rng["cuda"], list)
                              and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])):
        raise damaged(file, f"'rng.cuda' is {_shown(rng['cuda'])}, not CUDA generator states")
    state = need("state", lambda v: isinstance(v, dict), "a dict of network and optimiser states")
    # Which networks and optimisers the model has is check_networks' to say; here, their kinds:
    # an optimiser state under optimizer_<name>, a network's tensors under its name.
    for key, value in state.items():
        if key.startswith("optimizer_"):
            need(key, lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                 and isinstance(v.get("param_groups"), list) and all(isinstance(g, dict) for g in v["param_groups"]),
                 "an optimiser state", state, "state.")
        elif isinstance(value, dict) and key != "score_stats":
            for name, tensor in value.items():
                if not isinstance(tensor, torch.Tensor):
                    raise damaged(file, f"'state.{key}.{name}' is {_shown(tensor)}, not a tensor")
    need("step", lambda v: _integer(v) and 0 <= v < 2**63, "a count of steps", state, "state.")
    if "score_weight" in state:
        need("score_weight", lambda v: _number(v) and 0 <= v <= 1, "a weight in [0, 1]", state, "state.")
    if "score" in state or "score_stats" in state:
        problem = stats_problem(state.get("score"), state.get("score_stats"))
        if problem:
            raise damaged(file, problem)
    if defaults is not None:
        check_options(options, file, defaults, validate)


def check_options(stored: dict, file, defaults: dict, validate=None) -> None:
    """UserError unless each stored option is a value its flag takes on the command line (by the flag's
    type and meaning, not by its default's type) and `validate` accepts them."""
    actions = option_actions()
    for key, value in stored.items():
        takes = value_problem(actions[key], value) if key in actions else ""
        if takes:
            raise damaged(file, f"its option '{key}' is {_shown(value)}, not {takes}")
        if isinstance(value, float) and not math.isfinite(value):
            raise damaged(file, f"its option '{key}' is {value}")
    merged = {**defaults, **stored, **{k: defaults[k] for k in INVOCATION_OPTIONS if k in defaults}}
    if merged.get("model") not in MODELS:
        raise damaged(file, f"its option 'model' is {_shown(merged.get('model'))}, not one of {', '.join(MODELS)}")
    if validate is not None:
        try:
            validate(argparse.Namespace(**merged))
        except UserError as err:
            raise damaged(file, f"its options fail this version's checks ({err})") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise damaged(file, f"its options cannot be checked ({type(err).__name__}: {err})") from None


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
            if not (_number(group.get(key)) and math.isfinite(group[key]) and group[key] >= 0):
                raise damaged(file, f"'{where}' has the {key} {_shown(group.get(key))}")
        betas = group.get("betas")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas)):
            raise damaged(file, f"'{where}' has the betas {_shown(betas)}")
        shapes.update(zip(want["params"], (p.shape for p in live["params"])))
    for index, entry in saved["state"].items():
        if index not in shapes or not isinstance(entry, dict):
            raise damaged(file, f"'{where}' holds a state for parameter {_shown(index)}, which the networks lack")
        for name, value in entry.items():
            ok = isinstance(value, torch.Tensor) and value.is_floating_point() and value.layout == torch.strided
            if ok and value.dim() > 0:
                ok = value.shape == shapes[index]
            if ok:
                ok = bool(torch.isfinite(value).all())
            if not ok:
                raise damaged(file, f"'{where}.state.{index}.{name}' does not fit parameter {index} "
                                    f"of shape {tuple(shapes[index])} ({_shown(value)})")


def _check_plain(saved, expected, file, where: str) -> None:
    """`saved` has `expected`'s structure: the same keys, lengths and kinds of values."""
    if isinstance(expected, dict):
        if not isinstance(saved, dict) or set(saved) != set(expected):
            raise damaged(file, f"'{where}' does not have the entries this tool writes")
        for key in expected:
            _check_plain(saved[key], expected[key], file, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(expected):
            raise damaged(file, f"'{where}' is {_shown(saved)}, not a list of {len(expected)}")
        for i, (s, e) in enumerate(zip(saved, expected)):
            _check_plain(s, e, file, f"{where}.{i}")
    elif _number(expected):
        # A non-finite value only where one is normal (ReduceLROnPlateau starts at -inf).
        if not _number(saved) or (not math.isfinite(saved) and math.isfinite(expected)):
            raise damaged(file, f"'{where}' is {_shown(saved)}, not a finite number")
    elif type(saved) is not type(expected):
        raise damaged(file, f"'{where}' is {_shown(saved)}, not {_shown(expected)}")


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
                          else f"'state.{key}' is {_shown(state[key])}, not a dict")
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
