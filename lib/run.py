"""What a run needs around the training loop: device, seed, run folder, opt.txt."""
import random
from pathlib import Path

import torch

from lib import checkpoint
from lib.checkpoint import write_text
from lib.data import load_split
from lib.errors import UserError
from lib.models import build_model
from lib.trainer import Trainer
from lib.visualizer import make_visualizer

# Options that define the networks: a checkpoint fixes them.
NETWORK_OPTIONS = ("model", "isize", "nc", "nz", "ngf", "ndf", "extralayers", "no_skip")


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
    for key in keys:
        if key not in saved:
            continue
        if key in explicit and getattr(opt, key) != saved[key]:
            if key in NETWORK_OPTIONS:
                raise UserError(f"{source} was made with --{key} {saved[key]}, not {getattr(opt, key)}: "
                                f"drop --{key} or use a checkpoint made with matching settings")
            continue
        setattr(opt, key, saved[key])


# On --resume these come from the command line, never from the checkpoint.
SESSION_OPTIONS = {"resume", "load_weights", "phase", "verbose", "display", "display_server",
                   "display_port", "display_id", "device", "gpu_ids", "ngpu", "workers", "niter"}


def load_checkpoint(opt, explicit: set[str]):
    """The checkpoint named by --resume or --load_weights (or None), with its options adopted."""
    if opt.resume:
        ckpt = checkpoint.load(opt.resume, "last")
        keys = [k for k in ckpt["options"] if k not in SESSION_OPTIONS]
        adopt_checkpoint_options(opt, ckpt["options"], explicit, keys, f"checkpoint '{ckpt['path']}'")
        return ckpt
    if opt.load_weights is not None:
        source = run_dir(opt) if opt.load_weights == "run" else opt.load_weights
        ckpt = checkpoint.load(source, "best")
        adopt_checkpoint_options(opt, ckpt["options"], explicit, NETWORK_OPTIONS,
                                 f"checkpoint '{ckpt['path']}'")
        return ckpt
    if opt.phase == "test":
        raise UserError("--phase test evaluates trained weights: add --load_weights [RUN_OR_FILE]")
    return None


def build_trainer(opt, defaults: dict, ckpt=None, on_epoch=None, log=print) -> Trainer:
    """Device, seed, data, model, run folder and visualizer for `opt`, ready to `fit`.

    `defaults` are the option defaults (opt.txt marks what differs from them).
    """
    device = resolve_device(opt, log)
    seed_everything(opt)
    split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, abnormal_class=opt.abnormal_class,
                       normal_class=opt.normal_class, val_ratio=opt.val_ratio, workers=opt.workers, log=log)
    if opt.phase == "train" and opt.droplast and len(split.train) < opt.batchsize:
        raise UserError(f"--batchsize {opt.batchsize} is larger than the {len(split.train)} training images "
                        "and --droplast drops every batch: lower --batchsize or pass --no-droplast")
    model = build_model(opt, device)
    folder = prepare_run_dir(opt)
    write_options(opt, defaults)
    trainer = Trainer(opt, model, split, device, folder, make_visualizer(opt, opt.name, log=log),
                      log=log, on_epoch=on_epoch)
    if opt.resume:
        trainer.restore(ckpt)
    elif ckpt is not None:
        model.load_state_dict(ckpt["state"], weights_only=True)
    return trainer
