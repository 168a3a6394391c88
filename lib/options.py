"""Command-line options of train.py (and train_tune.py, predict.py); the top-level options.py re-exports them.

Every flag of the original Skip-WGANomaly `options.py` keeps its name; flags the
original parsed but never used now take effect, and the few whose meaning or
default differ are listed in README.md ("Training"). Parsing
only parses and validates: it sets no seed, device or other global state.
`value_problem` says whether a value (a checkpoint's stored option) is one a
flag can take, by the flag's type and meaning: a default has the flag's type.
"""
import argparse
import math
import os
import sys
from pathlib import Path

from lib.classes import DATASETS, builtin_dataset, class_names, resolve_class
from lib.errors import OneLineParser, UserError
from lib.models import MODELS, registry
from lib.original import DEFAULT, FIXES, applies, fixes
from lib.scoring.functions import SCORES

METRICS = ("roc", "auprc", "f1", "f1_score")
LR_POLICIES = ("lambda", "step", "plateau")


def str2bool(value) -> bool:
    """'True'/'False'/'1'/'0'/'yes'/'no' → bool (the original's type=bool made 'False' true)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes", "y", "on"):
        return True
    if value.lower() in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def score_weight(text: str):
    """A weight in [0, 1], or 'val' to choose it on the validation split."""
    if text.strip().lower() == "val":
        return "val"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'val', got {text!r}") from None


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


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Train and evaluate Skip-GANomaly, Skip-WGANomaly and GANomaly.")
    a = p.add_argument
    # Data
    a("--dataset", default="cifar10",
      help=f"{' | '.join(DATASETS)} | the name of a folder dataset in --dataroot")
    a("--dataroot", default="./data", help="folder holding the datasets")
    a("--path", default="", help="image or folder to score with the trained model afterwards "
      "(as predict.py; results in <run>/predict/)")
    a("--batchsize", type=int, default=64, help="input batch size")
    a("--workers", type=int, default=8, help="threads decoding image files of folder datasets")
    a("--droplast", action=argparse.BooleanOptionalAction, default=True,
      help="drop the last incomplete training batch")
    a("--isize", type=int, default=32, help="input image size (a power of two, at least 8)")
    a("--nc", type=int, default=3, help="input image channels (1 grey, 3 colour)")
    a("--abnormal_class", default=None,
      help="leave-one-class-out protocol: this class is the anomaly, the others are normal "
           "(name or index; default: automobile for cifar10, the first class otherwise)")
    a("--normal_class", default=None,
      help="one-class protocol: this class is normal, every other class is an anomaly")
    a("--val_ratio", type=float, default=0.1,
      help="fraction of normal training and of abnormal images held out for validation "
           "(model selection and tuning never look at the test set); 0 disables")
    # Networks
    a("--nz", type=int, default=100, help="size of the discriminator's feature vector")
    a("--ngf", type=int, default=64, help="generator width")
    a("--ndf", type=int, default=64, help="discriminator/critic width")
    a("--extralayers", type=int, default=0, help="extra 3x3 layers in the discriminator/critic")
    a("--model", default="skipganomaly", choices=tuple(MODELS), help="model to train")
    # Hardware
    a("--device", default="gpu", choices=("gpu", "cpu"), help="gpu falls back to cpu without CUDA")
    a("--gpu_ids", default="0", help="gpu ids, e.g. 0 or 0,1 (several: one training process on each, as --ngpu); "
      "-1 for CPU")
    a("--ngpu", type=int, default=1, help="number of GPUs per run (more than 1: one process each, started by "
      "torchrun; README: Several GPUs)")
    a("--fast", action=argparse.BooleanOptionalAction, default=True,
      help="fast training/evaluation path (the same results as --no-fast, the plain reference path, to float "
           "rounding)")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="bf16 autocast on the fast path (default: on with CUDA and on a CPU with native bf16, for a model "
           "measured to keep its AUROC in bf16: Skip-WGANomaly; never under --original; a resumed or loaded run "
           "keeps its own; opt.txt says what was chosen and why)")
    a("--compile", action="store_true",
      help="torch.compile the networks (fast path; minutes of compiling first; not the GP critic)")
    # Run and outputs
    a("--name", default=None, help="run name (default: <model>/<dataset>/<abnormal_class>)")
    a("--outf", default="./output", help="folder for run folders")
    a("--manualseed", type=int, default=-1, help="random seed; -1 picks one and records it")
    a("--metric", default="roc", choices=METRICS,
      help="headline metric: roc (AUROC), auprc, f1 (the best F1 over all thresholds) or f1_score (the "
           "original's: F1 at 0.20 on the scores min-max scaled over the set); all but f1_score are always "
           "recorded")
    a("--print_freq", type=int, default=100,
      help="iterations between loss logs and dashboard points (without the 'outputs' fix: training images, "
           "as the original counted)")
    a("--save_image_freq", type=int, default=100,
      help="iterations between saved image grids (without the 'outputs' fix: training images, as the "
           "original counted)")
    a("--save_test_images", action="store_true", help="save test images and reconstructions")
    a("--load_weights", nargs="?", const="run", default=None, metavar="RUN_OR_FILE",
      help="start from trained weights: a checkpoint or run folder (no value: this run's best)")
    a("--resume", default="", help="run folder or checkpoint to continue training from (in that run's folder)")
    a("--overwrite", action="store_true",
      help="delete the run already in the run folder (train_tune.py: the search folder) and start over; "
           "without it, a folder that holds one is refused")
    a("--phase", default="train", choices=("train", "test"), help="test: only evaluate loaded weights")
    a("--verbose", action="store_true", help="print tracebacks and more detail")
    a("--tune", type=str2bool, nargs="?", const=True, default=False,
      help="train_tune.py: run a Ray Tune search (False: one plain training)")
    # Display
    a("--display", action="store_true", help="show training in Visdom")
    a("--display_server", default="http://localhost", help="Visdom server address")
    a("--display_port", type=int, default=8097, help="Visdom server port")
    a("--display_id", type=int, default=0, help="first Visdom window id")
    # Optimisation
    a("--iter", type=int, default=0, help="first epoch (for the learning-rate schedule)")
    a("--niter", type=int, default=15, help="number of epochs")
    a("--niter_decay", type=int, default=100, help="lambda policy: epochs of linear decay after --niter")
    a("--lr_policy", default="lambda", choices=LR_POLICIES, help="learning-rate schedule")
    a("--lr_decay_iters", type=int, default=50, help="step policy: epochs between x0.1 decays")
    a("--beta1", type=float, default=0.5, help="Adam beta1")
    a("--lr", type=float, default=0.0002, help="Adam learning rate")
    a("--w_adv", type=float, default=1.0, help="weight of the adversarial loss")
    a("--w_con", type=float, default=50.0, help="weight of the contextual (L1) loss")
    a("--score", default=None, metavar="NAME",
      help="the anomaly score: 'val' (the one with the best validation AUROC at every evaluation, never "
           f"the test set) or one of {', '.join(SCORES)}; default: val when there is a validation split "
           "(--val_ratio > 0), else (and with --original, or a --score_weight other than 0.9) the model's own: "
           "Skip-GANomaly's and Skip-WGANomaly's original, GANomaly's latent")
    a("--score_weight", type=score_weight, default=0.9,
      help="the original score = w * image MSE + (1 - w) * feature MSE; 'val': choose w in 0, 0.05, ..., 1 "
           "by validation AUROC at every evaluation (never the test set)")
    # Reproducing the original code (lib/original.py)
    a("--original", action="store_true",
      help="reproduce the original code step for step, its defects included, to check its numbers "
           "(the same as --fixes none; README: Reproducing the original)")
    a("--fixes", default="default",
      help=f"this framework's fixes to apply: default (all but {', '.join(sorted(set(FIXES) - DEFAULT)) or 'none'}, "
           f"which the ablation found no better than the original's way), all, none, or names separated by "
           f"commas ('-name' drops one): {', '.join(FIXES)}")
    registry.add_model_options(p, MODELS)  # each model's own flags, in a section of --help per model
    return p


def check_image_shape(isize: int, nc: int) -> None:
    """Raise UserError unless the networks can take isize x isize images with nc channels."""
    if isize < 8 or 2 ** round(math.log2(isize)) != isize:
        raise UserError(f"--isize {isize} is not supported: use a power of two >= 8 (e.g. 32, 64, 128)")
    if nc not in (1, 3):
        raise UserError(f"--nc {nc} is not supported: use 1 (grey) or 3 (colour)")


C_INT_MAX = 2**31 - 1  # torch, OpenMP and Ray keep counts, seeds and thread numbers in C ints
MAX_WORKERS = 256  # decoding threads: more only costs memory
MAX_EXTRA_LAYERS = 64


def option_actions(prog: str = "train.py") -> dict[str, argparse.Action]:
    """{option name: its argparse action}, every model's own options included."""
    return {a.dest: a for a in build_parser(prog)._actions if a.option_strings and a.dest != "help"}


def _typed_options(kind) -> tuple[str, ...]:
    """Every option of that type, the models' own included (so a new model's flags are checked too)."""
    return tuple(a.dest for a in build_parser()._actions if a.type is kind)


def model_option_names() -> dict[str, tuple[str, ...]]:
    """{model: the flags only it reads} (each model's OPTIONS): given to another they would be ignored."""
    return registry.model_options(MODELS)


def check_model_options(opt, explicit: set[str]) -> None:
    """Refuse a flag given explicitly that only another model reads."""
    registry.check_model_options(opt, explicit, MODELS)


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
    if opt.workers > MAX_WORKERS:
        raise UserError(f"--workers {opt.workers}: at most {MAX_WORKERS} decoding threads")
    if opt.extralayers > MAX_EXTRA_LAYERS:
        raise UserError(f"--extralayers {opt.extralayers}: at most {MAX_EXTRA_LAYERS}")


def check_names(opt) -> None:
    """--outf and --name name folders this tool creates: text, and --name inside --outf. A built-in
    dataset is named as its loader knows it ('DIGITS ' is digits), so its runs land in one folder."""
    builtin = builtin_dataset(opt.dataset)
    if builtin:
        opt.dataset = builtin
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
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
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
    for name in ("lr", "batchsize", "niter", "nz", "ngf", "ndf", "print_freq",
                 "save_image_freq", "ngpu", "lr_decay_iters", "niter_decay"):
        if getattr(opt, name) <= 0:
            raise UserError(f"--{name} must be positive (got {getattr(opt, name)})")
    ids = str(opt.gpu_ids).replace(" ", "").split(",")
    if not all(i.lstrip("-").isdigit() and -1 <= int(i) <= C_INT_MAX for i in ids):
        raise UserError(f"--gpu_ids {opt.gpu_ids!r}: give GPU numbers separated by commas (e.g. 0 or 0,1), or -1 "
                        "for the CPU")
    world = int(os.environ.get("WORLD_SIZE", 1))  # torchrun's: the processes of this run (lib/parallel/distributed.py)
    if world > 1 and opt.ngpu not in (1, world):
        raise UserError(f"--ngpu {opt.ngpu} under torchrun with {world} processes: give --ngpu {world}, or drop it "
                        "(torchrun's --nproc-per-node decides)")
    if opt.score_weight != "val" and not 0 <= opt.score_weight <= 1:
        raise UserError(f"--score_weight must be in [0, 1] or 'val' (got {opt.score_weight})")
    if not 0 <= opt.val_ratio < 1:
        raise UserError(f"--val_ratio must be in [0, 1) (got {opt.val_ratio})")
    fixes(opt)  # an unknown fix name is refused here
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
    if opt.iter >= opt.niter and opt.phase == "train" and not opt.resume:
        raise UserError(f"--iter {opt.iter} must be below --niter {opt.niter}")
    if opt.w_adv == 0 and opt.w_con == 0 and opt.w_lat == 0:
        raise UserError("--w_adv, --w_con and --w_lat are all 0: the generator would never learn; give one a weight")
    if opt.overwrite and opt.resume:
        raise UserError("--overwrite starts the run over and --resume continues it: give one of them")
    if opt.abnormal_class is not None and opt.normal_class is not None:
        raise UserError("give either --abnormal_class (leave-one-class-out) or --normal_class (one-class), not both")
    names = class_names(opt.dataset)
    if not names:  # a folder dataset: its folders say what is normal
        for flag in ("abnormal_class", "normal_class"):
            if getattr(opt, flag) is not None:
                raise UserError(f"--{flag} does not apply to '{opt.dataset}': it is not a built-in dataset "
                                f"({', '.join(DATASETS)}), and a folder dataset's split comes from its folders "
                                f"(train/0.normal, test/0.normal, test/1.abnormal): check the name, or drop --{flag}")
    if names:
        for flag in ("abnormal_class", "normal_class"):
            if getattr(opt, flag) is not None:
                index = resolve_class(opt.dataset, getattr(opt, flag))
                setattr(opt, flag, names[index])
        if opt.abnormal_class is None and opt.normal_class is None:
            opt.abnormal_class = "automobile" if opt.dataset == "cifar10" else names[0]


def default_name(opt) -> str:
    """<model>[-no_skip][-clip]/<dataset>/<class>: the runs of a sweep or an ablation never collide."""
    variant = opt.model + registry.run_name_suffix(opt, MODELS)
    variant += fixes_suffix(fixes(opt))
    parts = [variant, opt.dataset]
    if opt.normal_class is not None:
        parts.append(f"normal_{opt.normal_class}")
    elif opt.abnormal_class is not None:
        parts.append(str(opt.abnormal_class))
    return "/".join(p.replace("/", "-").replace(" ", "_") for p in parts)


def fixes_suffix(applied: frozenset[str]) -> str:
    """'' with the default fixes, '-original' with none, else what differs from the default
    ('-with_a-without_b') or, when shorter, the few fixes kept."""
    if applied == DEFAULT:
        return ""
    if not applied:
        return "-original"
    added = [name for name in FIXES if name in applied and name not in DEFAULT]
    dropped = [name for name in FIXES if name in DEFAULT and name not in applied]
    if len(added) + len(dropped) <= len(applied):
        return ("-with_" + "+".join(added) if added else "") + ("-without_" + "+".join(dropped) if dropped else "")
    return "-original_with_" + "+".join(name for name in FIXES if name in applied)


def parse(argv=None, prog: str = "train.py"):
    """Parse and validate; fills in the derived run name."""
    argv = sys.argv[1:] if argv is None else argv
    opt = build_parser(prog).parse_args(argv)
    explicit = explicit_options(argv, prog)
    if "val_ratio" not in explicit and not applies(opt, "validation_selection"):
        opt.val_ratio = 0.0  # the original holds nothing out: its test set is the whole split
    given_classes = {k: getattr(opt, k) for k in ("abnormal_class", "normal_class")}
    validate(opt)
    if (opt.resume or opt.load_weights is not None) and "dataset" not in explicit:
        # A loaded run's classes are its dataset's: named once its options are adopted (lib/runs/adopted.py).
        opt.__dict__.update(given_classes)
    if not opt.resume and opt.load_weights is None:  # otherwise the checkpoint names the model
        check_model_options(opt, explicit)
    if opt.name is None:
        opt.name = default_name(opt)
    return opt


def defaults(prog: str = "train.py") -> dict:
    """Every option's default value (opt.txt marks the values that differ)."""
    return vars(build_parser(prog).parse_args([]))


def explicit_options(argv, prog: str = "train.py") -> set[str]:
    """Names of the options the command line set explicitly."""
    parser = build_parser(prog)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))
