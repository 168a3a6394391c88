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

from .. import options as flags
from ..errors import UserError
from ..files import atomic_write
from ..models import MODELS
from ..options import C_INT_MAX
from ..scoring.functions import stats_problem
from . import archive

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
    if path.is_symlink() and path.is_file():  # a link to a run's checkpoint names that run, not the link's folder
        return path.resolve()
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


def load(path, which: str = "last") -> dict:
    """Load a checkpoint safely; UserError for anything that is not a whole one of ours (its stored
    options included, tested as the command line would be)."""
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
    check(ckpt, file)
    ckpt["path"] = str(file)
    return ckpt


# --- what a checkpoint of ours holds ------------------------------------------------------
def damaged(file, problem: str) -> UserError:
    return UserError(f"checkpoint '{file}' is damaged: {problem}; it was edited, or not written by this "
                     "version of the tool")


def is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _rng_tensor(value, template: torch.Tensor) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == template.dtype and value.shape == template.shape
            and value.layout == torch.strided)


def check(ckpt: dict, file) -> None:
    """UserError naming the first entry of `ckpt` that this tool would not have written.

    Types, ranges and the random generators' state sizes, and the stored options as the command
    line checks them. What depends on the networks (tensor shapes) is lib/training/checkpoint_fit.py's.
    """
    def need(key, ok, what, where=ckpt, prefix=""):
        if key not in where:
            raise damaged(file, f"'{prefix}{key}' is missing")
        if not ok(where[key]):
            raise damaged(file, f"'{prefix}{key}' is {shown(where[key])}, not {what}")
        return where[key]

    options = need("options", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
                   "a dict of options")
    need("model", lambda v: v == options.get("model"), "the model its options name")
    need("epoch", lambda v: is_integer(v) and 0 <= v <= C_INT_MAX, "a count of epochs")
    need("batch", lambda v: is_integer(v) and 0 <= v <= C_INT_MAX, "a count of batches")
    history = need("history", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
                   "a list of epoch rows")
    for row in history:
        if not is_integer(row.get("epoch")) or not all(is_number(v) for v in row.values()):
            raise damaged(file, f"the history row {shown(row)} is not an epoch's numbers")
    threshold = need("threshold", lambda v: isinstance(v, dict), "a dict")
    if threshold:
        need("value", lambda v: is_number(v) and math.isfinite(v), "a finite number", threshold, "threshold.")
        for key in ("fpr", "f1_optimal_test", "epoch"):
            if key in threshold and not (threshold[key] is None or is_number(threshold[key])):
                raise damaged(file, f"'threshold.{key}' is {shown(threshold[key])}, not a number")
    need("schedulers", lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
         "a list of learning-rate scheduler states")
    if "data_digest" in ckpt:  # (TrainingState.data_digest; older checkpoints have none)
        need("data_digest", lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
             "a sha256 in hex")
    generator_state = torch.Generator().get_state()
    for key in ("data_rng", "epoch_data_state"):
        need(key, lambda v: _rng_tensor(v, generator_state), "a random generator's state")
    rng = need("rng", lambda v: isinstance(v, dict), "the random generators' states")
    need("torch", lambda v: _rng_tensor(v, generator_state), "a random generator's state", rng, "rng.")
    if "cuda" in rng and not (isinstance(rng["cuda"], list)
                              and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])):
        raise damaged(file, f"'rng.cuda' is {shown(rng['cuda'])}, not CUDA generator states")
    state = need("state", lambda v: isinstance(v, dict), "a dict of network and optimiser states")
    # Which networks and optimisers the model has is check_networks' to say; here, their kinds:
    # an optimiser state under optimizer_<name>, a network's tensors under its name.
    for key, value in state.items():
        if key.startswith("optimizer_"):
            need(key, lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                 and isinstance(v.get("param_groups"), list) and all(isinstance(g, dict) for g in v["param_groups"]),
                 "an optimiser state", state, "state.")
        elif isinstance(value, dict) and key not in ("score_stats", "map_stats"):
            for name, tensor in value.items():
                if not isinstance(tensor, torch.Tensor):
                    raise damaged(file, f"'state.{key}.{name}' is {shown(tensor)}, not a tensor")
    need("step", lambda v: is_integer(v) and 0 <= v < 2**63, "a count of steps", state, "state.")
    if "score_weight" in state:
        need("score_weight", lambda v: is_number(v) and 0 <= v <= 1, "a weight in [0, 1]", state, "state.")
    for score, stats in (("score", "score_stats"), ("map_score", "map_stats")):  # the image's, the map's
        if score in state or stats in state:
            problem = stats_problem(state.get(score), state.get(stats))
            if problem:
                raise damaged(file, problem)
    check_options(options, file)


def check_options(stored: dict, file) -> None:
    """UserError unless each stored option is a value its flag takes on the command line (by the flag's
    type and meaning, not by its default's type) and the command line's checks accept them."""
    actions, defaults = flags.option_actions(), flags.defaults()
    for key, value in stored.items():
        takes = flags.value_problem(actions[key], value) if key in actions else ""
        if takes:
            raise damaged(file, f"its option '{key}' is {shown(value)}, not {takes}")
        if isinstance(value, float) and not math.isfinite(value):
            raise damaged(file, f"its option '{key}' is {value}")
    merged = {**defaults, **stored, **{k: defaults[k] for k in INVOCATION_OPTIONS if k in defaults}}
    if merged.get("model") not in MODELS:
        raise damaged(file, f"its option 'model' is {shown(merged.get('model'))}, not one of {', '.join(MODELS)}")
    try:
        flags.validate(argparse.Namespace(**merged))
    except UserError as err:
        raise damaged(file, f"its options fail this version's checks ({err})") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise damaged(file, f"its options cannot be checked ({type(err).__name__}: {err})") from None
