"""The command line of train.py (and train_tune.py, predict.py): every flag, its type and default.

Every flag of the original Skip-WGANomaly `options.py` keeps its name; flags the original parsed
but never used now take effect, and the few whose meaning or default differ are listed in
docs/training.md. Each model adds its own flags (lib/models/registry.py).
"""
import argparse

from ..classes import DATASETS
from ..errors import OneLineParser
from ..models import MODELS, registry
from ..original import DEFAULT, FIXES
from ..scoring.functions import SCORES

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


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description="Train and evaluate Skip-GANomaly, Skip-WGANomaly and GANomaly.")
    a = p.add_argument
    # Data
    a("--dataset", default="cifar10",
      help=f"{' | '.join(DATASETS)} | mvtec (inspection data with masks; --category) | the name of a folder "
           "dataset in --dataroot")
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
    a("--category", default=None,
      help="--dataset mvtec: the category to read, a folder of --dataroot in the MVTec AD layout (docs/inspection.md)")
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
      "torchrun; docs/distributed.md)")
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
    a("--niter", type=int, default=15,
      help="number of epochs; 0: the untrained control, the same networks and scoring without training (BatchNorm's "
           "statistics alone follow the training images; run name suffix -control)")
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
           "(the same as --fixes none; docs/original.md)")
    a("--fixes", default="default",
      help=f"this framework's fixes to apply: default (all but {', '.join(sorted(set(FIXES) - DEFAULT)) or 'none'}, "
           f"which the ablation found no better than the original's way), all, none, or names separated by "
           f"commas ('-name' drops one): {', '.join(FIXES)}")
    # Read by options.with_config before parsing, so never stored in a run's options.
    a("--config", default=argparse.SUPPRESS, metavar="RUN_OR_OPT_TXT",
      help="replay the options a recorded run changed (its opt.txt, or its run folder); flags given on the command "
           "line override them")
    a("--print_config", action="store_true", default=argparse.SUPPRESS,
      help="print the effective options (opt.txt's format) and exit, creating nothing")
    registry.add_model_options(p, MODELS)  # each model's own flags, in a section of --help per model
    return p


def option_actions(prog: str = "train.py") -> dict[str, argparse.Action]:
    """{option name: its argparse action}, every model's own options included."""
    return run_options(build_parser(prog))


def run_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{option name: its action} of `parser`'s options of a run: not -h, --config and --print_config, which
    direct the command (their default is SUPPRESS: never stored)."""
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.dest != "help" and a.default is not argparse.SUPPRESS}


def defaults(prog: str = "train.py") -> dict:
    """Every option's default value (opt.txt marks the values that differ)."""
    return vars(build_parser(prog).parse_args([]))


def explicit_options(argv, prog: str = "train.py") -> set[str]:
    """Names of the options the command line set explicitly."""
    parser = build_parser(prog)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))
