"""What a run needs around the training loop: device, seed, run folder, opt.txt."""
import random
from pathlib import Path

import torch

from lib.checkpoint import write_text
from lib.errors import UserError


def resolve_device(opt, log=print) -> torch.device:
    """`--device gpu` uses CUDA when present, else the CPU with a one-line notice."""
    ids = [int(i) for i in str(opt.gpu_ids).split(",") if i.strip()]
    if opt.device == "cpu" or not ids or ids[0] < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log("notice: CUDA is not available, training on the CPU (--device cpu silences this)")
        return torch.device("cpu")
    if ids[0] >= torch.cuda.device_count():
        raise UserError(f"--gpu_ids {opt.gpu_ids}: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{ids[0]}")


def seed_everything(opt) -> int:
    """Seed torch; -1 picks a seed and records it in opt so opt.txt can reproduce the run."""
    if opt.manualseed < 0:
        opt.manualseed = random.SystemRandom().randrange(2**31)
    torch.manual_seed(opt.manualseed)
    return opt.manualseed


def run_dir(opt) -> Path:
    return Path(opt.outf) / opt.name


def prepare_run_dir(opt) -> Path:
    """Create the run folder, failing early with one line if it cannot be written."""
    path = run_dir(opt)
    try:
        for sub in ("weights", "images"):
            (path / "train" / sub).mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write the output folder '{path}' ({err.strerror}): "
                        "choose a writable --outf") from None
    return path


def options_text(opt, defaults: dict) -> str:
    """The original's opt.txt: every option, with the default beside changed values."""
    lines = ["------------ Options -------------"]
    for key, value in sorted(vars(opt).items()):
        default = defaults.get(key, value)
        mark = f"\t[default: {default}]" if value != default else ""
        lines.append(f"{key}: {value}{mark}")
    lines.append("-------------- End ----------------")
    return "\n".join(lines) + "\n"


def write_options(opt, defaults: dict) -> None:
    write_text(run_dir(opt) / "opt.txt", options_text(opt, defaults))


def adopt_checkpoint_options(opt, saved: dict, explicit: set[str], keys, source: str) -> None:
    """Take `keys` from a checkpoint's options unless given on the command line.

    Network settings given explicitly must match the checkpoint: say which differs.
    """
    from options import NETWORK_OPTIONS  # options imports lib.data; avoid a cycle at import time
    for key in keys:
        if key not in saved:
            continue
        if key in explicit and getattr(opt, key) != saved[key]:
            if key in NETWORK_OPTIONS:
                raise UserError(f"{source} was made with --{key} {saved[key]}, not {getattr(opt, key)}: "
                                f"drop --{key} or use a checkpoint made with matching settings")
            continue
        setattr(opt, key, saved[key])
