"""Whether the values of the options can be used: by the networks, the data, the loop and the libraries.

`validate` refuses, in one line, what a command line (or a loaded run's options) cannot mean;
`value_problem` says whether a value (a checkpoint's stored option) is one a flag can take, by the
flag's type and meaning: a default has the flag's type.
"""
import argparse
import math
import os
from pathlib import Path

from ..classes import DATASETS, INSPECTION, builtin_dataset, class_names, inspection_dataset, resolve_class
from ..errors import UserError
from ..models import MODELS, registry
from ..original import FIXES, applies, fixes
from ..scoring.functions import SCORES
from .parser import build_parser, score_weight, str2bool


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value_problem(action: argparse.Action, value) -> str:
    """'' if the command line can give `action`'s option `value`, else what the option takes.

    Judged by the action's type and meaning, never by the type of its default: a float option
    holds 1.0 from `--w_adv 1`, and a stored whole number (older runs kept an int default) is as good.
    """
    if value is None and action.default is None:  # not given, decided later (--amp, --name, ...)
        return ""
    if action.nargs == 0 or action.type is str2bool:  # a switch
        ok, takes = isinstance(value, bool), "true or false"
    elif action.type is int:
        ok, takes = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif action.type is float:
        ok, takes = _finite_number(value), "a finite number"
    elif action.type is score_weight:
        ok, takes = value == "val" or _finite_number(value), "a finite number or 'val'"
    elif action.type in (None, str):
        ok, takes = isinstance(value, str), "text"
    else:
        raise TypeError(f"--{action.dest}: value_problem does not know its type {action.type!r}; add it")
    if action.choices is not None:
        ok, takes = ok and value in action.choices, f"one of {', '.join(map(str, action.choices))}"
    if action.default is None:
        takes += " or None"
    return "" if ok else takes


def check_image_shape(isize: int, nc: int) -> None:
    """Raise UserError unless the networks can take isize x isize images with nc channels."""
    if isize < 8 or 2 ** round(math.log2(isize)) != isize:
        raise UserError(f"--isize {isize} is not supported: use a power of two >= 8 (e.g. 32, 64, 128)")
    if nc not in (1, 3):
        raise UserError(f"--nc {nc} is not supported: use 1 (grey) or 3 (colour)")


C_INT_MAX = 2**31 - 1  # torch, OpenMP and Ray keep counts, seeds and thread numbers in C ints
MAX_WORKERS = 256  # decoding threads: more only costs memory
MAX_EXTRA_LAYERS = 64


def _typed_options(kind) -> tuple[str, ...]:
    """Every option of that type, the models' own included (so a new model's flags are checked too)."""
    return tuple(a.dest for a in build_parser()._actions if a.type is kind)


def model_option_names() -> dict[str, tuple[str, ...]]:
    """{model: the flags only it reads} (each model's OPTIONS): given to another they would be ignored."""
    return registry.model_options(MODELS)


# A flag read only under one value of another: given explicitly under another, it would be ignored.
# Each model's own such flags are declared in its OPTIONS ("only_with").
ONLY_WITH = {"niter_decay": ("lr_policy", ("lambda",)), "lr_decay_iters": ("lr_policy", ("step",))}


def check_model_options(opt, explicit: set[str]) -> None:
    """Refuse a flag given explicitly that only another model reads, or that the run's other flags leave unread."""
    registry.check_model_options(opt, explicit, MODELS)
    only = {**ONLY_WITH, **registry.only_with(opt.model, MODELS)}
    for flag, (other, values) in only.items():
        if flag in explicit and getattr(opt, other) not in values:
            raise UserError(f"--{flag} is read only with --{other} {' or '.join(values)}, and this run has --{other} "
                            f"{getattr(opt, other)}: drop --{flag}, or change --{other}")


def check_numbers(opt) -> None:
    """Raise UserError for NaN/infinite floats and integers beyond what the libraries take."""
    for name in _typed_options(float):
        if not math.isfinite(getattr(opt, name)):
            raise UserError(f"--{name} must be a finite number (got {getattr(opt, name)})")
    # Integers must fit a C int (the libraries below are C); the seed and the port have ranges of their own.
    for name in _typed_options(int):
        if name in ("manualseed", "display_port"):
            continue
        if abs(getattr(opt, name)) > C_INT_MAX:
            raise UserError(f"--{name} {getattr(opt, name)} is out of range (at most {C_INT_MAX})")
    if not -1 <= opt.manualseed < 2**64:
        raise UserError(f"--manualseed must be -1 (pick one) or in [0, 2^64) (got {opt.manualseed})")
    if not 1 <= opt.display_port <= 65535:
        raise UserError(f"--display_port must be a TCP port, 1 to 65535 (got {opt.display_port})")
    if not str(opt.display_server).strip() or has_control_characters(str(opt.display_server)):
        raise UserError(f"--display_server {str(opt.display_server)!a} is empty or holds control characters: give "
                        "the Visdom server's address, e.g. http://localhost")
    if opt.workers > MAX_WORKERS:
        raise UserError(f"--workers {opt.workers}: at most {MAX_WORKERS} decoding threads")
    if opt.extralayers > MAX_EXTRA_LAYERS:
        raise UserError(f"--extralayers {opt.extralayers}: at most {MAX_EXTRA_LAYERS}")


def has_control_characters(text: str) -> bool:
    """A newline, a tab, an escape...: what splits a one-line message or a file's line."""
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def dataset_folder_around(opt, path) -> Path | None:
    """The folder dataset's folder if `path` lies in it (None for a built-in dataset, or outside): a run
    written among a dataset's images would be read as data by the next run, or by itself when resumed."""
    if builtin_dataset(opt.dataset):
        return None
    name = getattr(opt, "category", None) if inspection_dataset(opt.dataset) else opt.dataset
    if not name:
        return None
    folder = Path(opt.dataroot) / name
    data, inner = os.path.realpath(folder), os.path.realpath(path)
    return folder if inner == data or inner.startswith(data + os.sep) else None


def check_names(opt) -> None:
    """--outf and --name name folders this tool creates: text, and --name inside --outf. A built-in
    dataset is named as its loader knows it ('DIGITS ' is digits), so its runs land in one folder."""
    if not str(opt.dataset).strip():
        raise UserError("--dataset is empty: name a dataset (cifar10, mnist, fashion-mnist, digits) or a folder "
                        "dataset under --dataroot")
    builtin = builtin_dataset(opt.dataset)
    if builtin:
        opt.dataset = builtin
    folder = dataset_folder_around(opt, opt.outf or ".")
    if folder is not None:
        raise UserError(f"--outf {opt.outf} is inside the dataset's folder {folder}, where the run's images "
                        "would be read as data: choose an --outf outside it")
    for flag in ("outf", "name"):
        value = getattr(opt, flag)
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"--{flag} holds bytes that are not UTF-8 text ({value!a}): the run folder's name "
                            "goes into its files and the dashboard; use a UTF-8 name") from None
        if not value.strip():
            raise UserError(f"--{flag} is empty: give a folder name")
        if has_control_characters(value):
            raise UserError(f"--{flag} {value!a} holds control characters (a newline, a tab...): use a plain name")
    if opt.name is not None and (Path(opt.name).is_absolute() or ".." in Path(opt.name).parts):
        raise UserError(f"--name {opt.name!r} must be a relative folder inside --outf (no '..', not absolute); "
                        "to write elsewhere, set --outf")


def check_choices(opt, prog: str = "train.py") -> None:
    """Values argparse would have refused, for options that did not come from a command line."""
    for action in build_parser(prog)._actions:
        value = getattr(opt, action.dest, None)
        if action.choices is not None and value is not None and value not in action.choices:
            raise UserError(f"--{action.dest} {value!r} is not one of: {', '.join(map(str, action.choices))}")


def check_control(opt) -> None:
    """--niter 0, the untrained control (lib/training/control.py): a new run of its own, in one process."""
    for given, what in ((opt.resume, f"--resume {opt.resume}"), (opt.load_weights, "--load_weights"),
                        (opt.iter, f"--iter {opt.iter}"), (opt.ngpu > 1, f"--ngpu {opt.ngpu}")):
        if given:
            raise UserError(f"--niter 0 builds the untrained control, a new run in one process: drop {what}, "
                            "or give --niter the epochs to train")


def check_fixes_concern(opt) -> None:
    """A fix named alone (not through default/all/none) must concern the run's model: one it does not read
    would be recorded as a difference from the original that the run does not have."""
    for item in str(opt.fixes).split(","):
        name = item.strip().lstrip("-")
        if name in FIXES and not FIXES[name].concerns(opt.model):
            models = ", ".join(FIXES[name].models)
            raise UserError(f"--fixes {opt.fixes}: {name} concerns {models} only, and this run's model is "
                            f"{opt.model}: drop {item.strip()}")


def validate(opt) -> None:
    """Raise UserError for values the networks, data or loop cannot take."""
    check_choices(opt)
    check_numbers(opt)
    check_names(opt)
    check_image_shape(opt.isize, opt.nc)
    registry.check_values(opt, MODELS)
    for name in ("w_adv", "w_con", "extralayers", "iter", "workers"):
        if getattr(opt, name) < 0:
            raise UserError(f"--{name} must not be negative (got {getattr(opt, name)})")
    for name in ("lr", "batchsize", "nz", "ngf", "ndf", "print_freq",
                 "save_image_freq", "ngpu", "lr_decay_iters", "niter_decay"):
        if getattr(opt, name) <= 0:
            raise UserError(f"--{name} must be positive (got {getattr(opt, name)})")
    ids = str(opt.gpu_ids).replace(" ", "").split(",")
    if not all(i.lstrip("-").isdigit() and -1 <= int(i) <= C_INT_MAX for i in ids):
        raise UserError(f"--gpu_ids {opt.gpu_ids!r}: give GPU numbers separated by commas (e.g. 0 or 0,1), or -1 "
                        "for the CPU")
    world = os.environ.get("WORLD_SIZE", "1")  # torchrun's: the processes of this run (lib/parallel/distributed.py
    world = int(world) if world.strip().isdigit() else 1  # checks the whole set, and refuses one like this)
    if world > 1 and opt.ngpu not in (1, world):
        raise UserError(f"--ngpu {opt.ngpu} under torchrun with {world} processes: give --ngpu {world}, or drop it "
                        "(torchrun's --nproc-per-node decides)")
    if opt.score_weight != "val" and not 0 <= opt.score_weight <= 1:
        raise UserError(f"--score_weight must be in [0, 1] or 'val' (got {opt.score_weight})")
    if not 0 <= opt.val_ratio < 1:
        raise UserError(f"--val_ratio must be in [0, 1) (got {opt.val_ratio})")
    fixes(opt)  # an unknown fix name is refused here
    check_fixes_concern(opt)
    if opt.original and opt.fixes != "default":
        raise UserError(f"--original applies no fix and --fixes {opt.fixes} names some: give one of them")
    if opt.extralayers and not fixes(opt) and opt.model in ("skipganomaly", "w_skipganomaly"):  # the original's
        given = "--original" if opt.original else f"--fixes {opt.fixes}"
        raise UserError(f"--extralayers {opt.extralayers}: the original code accepts this flag but ignores it, so "
                        f"{given} cannot reproduce a run with it; drop --extralayers or drop {given}")
    if opt.score not in (None, "val") and opt.score not in SCORES:
        raise UserError(f"--score {opt.score!r} is unknown; give 'val' or one of {', '.join(SCORES)}")
    if opt.score not in (None, "original") and not applies(opt, "eval_mode_scoring"):
        raise UserError(f"--score {opt.score} scores in eval mode, and these fixes score in training mode as the "
                        "original did; give --score original, or keep the eval_mode_scoring fix")
    if opt.score == "val" and opt.val_ratio == 0:
        raise UserError("--score val chooses the score on the validation split; give --val_ratio > 0 or name a score")
    if opt.score_weight == "val" and opt.val_ratio == 0:
        raise UserError("--score_weight val chooses the weight on the validation split; give --val_ratio > 0 "
                        "or a fixed --score_weight")
    if not 0 < opt.beta1 < 1:
        raise UserError(f"--beta1 must be in (0, 1) (got {opt.beta1})")
    if opt.niter < 0:
        raise UserError(f"--niter must not be negative (got {opt.niter}); 0 builds the untrained control")
    if opt.niter == 0 and opt.phase == "train":
        check_control(opt)
    elif opt.iter >= opt.niter and opt.phase == "train" and not opt.resume:
        raise UserError(f"--iter {opt.iter} must be below --niter {opt.niter}")
    # The generator's loss weights: the shared two and the model's own (its w_* flags: w_lat, w_enc).
    weights = ["w_adv", "w_con", *(d for d in model_option_names().get(opt.model, ()) if d.startswith("w_"))]
    if all(getattr(opt, w) == 0 for w in weights):
        raise UserError(f"{', '.join('--' + w for w in weights)} are all 0: the generator would never learn; "
                        "give one a weight")
    if opt.overwrite and opt.resume:
        raise UserError("--overwrite starts the run over and --resume continues it: give one of them")
    if opt.resume and opt.load_weights is not None:  # (the record would name weights that were not used)
        raise UserError("--resume loads a run's last.pt and --load_weights other weights: give one of them")
    if opt.abnormal_class is not None and opt.normal_class is not None:
        raise UserError("give either --abnormal_class (leave-one-class-out) or --normal_class (one-class), not both")
    if opt.category is not None and not inspection_dataset(opt.dataset):
        raise UserError(f"--category is read only with --dataset {INSPECTION} (inspection data in the MVTec AD "
                        f"layout), and this run has --dataset {opt.dataset}: drop --category, or give --dataset "
                        f"{INSPECTION}")
    names = class_names(opt.dataset)
    if not names:  # a folder dataset or inspection data: its folders say what is normal
        folders = ("train/good, test/good, test/<defect>" if inspection_dataset(opt.dataset)
                   else "train/0.normal, test/0.normal, test/1.abnormal")
        for flag in ("abnormal_class", "normal_class"):
            if getattr(opt, flag) is not None:
                raise UserError(f"--{flag} does not apply to '{opt.dataset}': it is not a built-in dataset "
                                f"({', '.join(DATASETS)}), and its split comes from its folders ({folders}): check "
                                f"the name, or drop --{flag}")
    if names:
        for flag in ("abnormal_class", "normal_class"):
            if getattr(opt, flag) is not None:
                index = resolve_class(opt.dataset, getattr(opt, flag))
                setattr(opt, flag, names[index])
        if opt.abnormal_class is None and opt.normal_class is None:
            opt.abnormal_class = "automobile" if opt.dataset == "cifar10" else names[0]


