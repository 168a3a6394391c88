"""The search's own options (train_tune.py's beyond train.py's) and the checks made before Ray starts.

What every trial's train.py options must pass is lib/tune/checks.py's; here, the search's
settings: resources Ray could grant, a scheduler that fits the space, the original's search.
"""
import argparse
import math
from pathlib import Path

from .. import options
from ..errors import UserError
from ..original import applies
from .checks import check_data
from .space import largest, values_of

# The default spaces are package data (an installed train_tune finds them); experiments/ links to them.
SPACES = Path(__file__).resolve().parent
DEFAULT_SPACE = SPACES / "tune_space.json"
# Without the validation_selection fix (--original), the original's search: w_con x one weight for
# w_adv and w_lat, each grid point twice, trials ranked on the test set.
ORIGINAL_SPACE = SPACES / "tune_space_original.json"
ORIGINAL_SAMPLES = 2
RESOURCE_STEP = 1e-4  # Ray counts CPUs and GPUs in steps of 0.0001
# A search over these compares different problems: ASHA would stop the hard ones, not the poor trials.
PROBLEM_OPTIONS = ("dataset", "abnormal_class", "normal_class")



def add_tune_arguments(parser) -> None:
    group = parser.add_argument_group("Ray Tune search (train_tune.py only; --overwrite deletes the search folder)")
    a = group.add_argument
    a("--space", default=None, help="JSON search space: option -> {grid|choice|uniform|loguniform|randint: [...]}, "
      'or {"same": "OTHER"} to give it the value OTHER takes in each trial (docs/tuning.md); '
      f"unset: experiments/{DEFAULT_SPACE.name}, with --original experiments/{ORIGINAL_SPACE.name}")
    a("--num_samples", type=int, default=None, help="samples of the space (each grid point this many times); "
      f"unset: 1, with --original {ORIGINAL_SAMPLES} as the original")
    a("--cpus_per_trial", type=float, default=1, help="CPUs reserved for each trial (unset with --ngpu N: N)")
    a("--gpus_per_trial", type=float, default=None,
      help="GPUs per trial; a fraction packs several trials on one GPU; unset: --ngpu (1 by default) with "
           "--device gpu when the cluster has GPUs, else 0")
    a("--scheduler", default="fifo", choices=("fifo", "asha"), help="asha stops poor trials early")
    a("--grace_period", type=int, default=1, help="asha: epochs every trial runs before it can be stopped")
    a("--address", default=None, help="Ray cluster to join (HOST:6379, ray://HOST:10001 or auto); "
      "unset: start Ray on this machine")
    a("--num_cpus", type=int, default=None, help="CPUs a Ray started on this machine may use; unset: all")
    a("--restore", action="store_true", help="continue the interrupted search named by --name")


def tune_only_parser() -> argparse.ArgumentParser:
    # Abbreviations are safe here: the full parser has already refused any that is ambiguous.
    parser = argparse.ArgumentParser(add_help=False)
    add_tune_arguments(parser)
    return parser


def given_tune_options(argv) -> set[str]:
    """Names of the search options the command line sets explicitly."""
    parser = tune_only_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


# ------------------------------------------------------------------ resources

def check_resources(args) -> None:
    """Counts Ray could never grant, refused before it starts."""
    for flag in ("num_samples", "grace_period", "num_cpus"):
        value = getattr(args, flag)
        if value is not None and not 1 <= value <= options.C_INT_MAX:
            raise UserError(f"--{flag} must be a whole number from 1 to {options.C_INT_MAX} (got {value})")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (flag == "cpus_per_trial" and value == 0):
            least = "above 0" if flag == "cpus_per_trial" else "0 or more"
            raise UserError(f"--{flag} must be a number {least} (got {value:g}), e.g. 1 or 0.5")
        if abs(value / RESOURCE_STEP - round(value / RESOURCE_STEP)) > 1e-6:
            raise UserError(f"--{flag} {value:g}: Ray counts resources in steps of {RESOURCE_STEP:g}; round it")
    gpus = args.gpus_per_trial
    if gpus is not None and gpus > 1 and not float(gpus).is_integer():
        raise UserError(f"--gpus_per_trial {gpus:g}: use a fraction below 1 (e.g. 0.25) or a whole number")


# ------------------------------------------------------------------ the command line

def check_search(args, given: set, opt, space: dict) -> None:
    """Settings a search cannot use, or that are each valid but make no sense together."""
    niter = largest(space, "niter", opt.niter)
    if args.scheduler == "asha":
        if args.grace_period > niter:
            raise UserError(f"--grace_period {args.grace_period} is more than the {niter} epochs a trial runs: "
                            f"ASHA could never stop one early; give at most {niter}, or use --scheduler fifo")
        searched = [name for name in PROBLEM_OPTIONS if name in space]
        if searched:
            raise UserError(f"--scheduler asha with a search over {', '.join(searched)}: ASHA would compare "
                            "AUROCs of different problems and stop the hard ones; use --scheduler fifo")
    elif "grace_period" in given:
        raise UserError("--grace_period applies to --scheduler asha: add it, or drop --grace_period")
    if (args.num_samples > 1 and opt.manualseed >= 0 and "manualseed" not in space
            and all(kind in ("grid", "same") for kind, _ in space.values())):
        samples = (f"--num_samples {args.num_samples}" if "num_samples" in given
                   else f"--num_samples {args.num_samples} (the original's, the default without validation_selection)")
        raise UserError(f"{samples} with --manualseed {opt.manualseed} and only grid values "
                        "would train identical trials: leave --manualseed unset, or search it "
                        '(e.g. "manualseed": {"grid": [0, 1, 2]}) with --num_samples 1')
    if args.gpus_per_trial and (set(values_of(space, "device")) if "device" in space else {opt.device}) == {"cpu"}:
        raise UserError(f"--gpus_per_trial {args.gpus_per_trial:g} with --device cpu: trials would hold GPUs "
                        "they never use; drop --gpus_per_trial or use --device gpu")
    if opt.load_weights == "run":
        raise UserError("--load_weights without a path would load each trial's own new run: give a checkpoint "
                        "or run folder")
    if opt.load_weights is not None and not Path(opt.load_weights).exists():
        raise UserError(f"--load_weights '{opt.load_weights}' does not exist: give a checkpoint or run folder")
    if opt.load_weights is not None:  # a damaged or crafted checkpoint: refused here, not by every trial
        from ..training import checkpoint
        checkpoint.load(opt.load_weights, "best")
    if not {"dataset", "dataroot"} & set(space):  # (a searched one: each value is checked with the space)
        check_data(opt, files=True)


def check_processes_per_trial(args, given: set, opt) -> None:
    """--ngpu N: each trial trains in N processes on one machine (lib/tune/ranks.py), a GPU or a
    CPU each; what that cannot take is refused here. Unset, --cpus_per_trial becomes N."""
    n = opt.ngpu  # not searched (lib/tune/space.py); a batch it cannot split is lib/tune/checks.py's
    if n <= 1:
        return
    if not applies(opt, "eval_mode_scoring"):
        raise UserError(f"--ngpu {n} with the original's training-mode scoring: rank 0 scores alone; "
                        "drop --original (or keep the eval_mode_scoring fix), or train each trial in one process")
    if "cpus_per_trial" not in given:
        args.cpus_per_trial = max(args.cpus_per_trial, n)
    elif opt.device == "cpu" and args.cpus_per_trial < n:
        raise UserError(f"--cpus_per_trial {args.cpus_per_trial:g} for --ngpu {n} processes on the CPU: give each "
                        f"process a core, --cpus_per_trial {n} or more")
    gpus = args.gpus_per_trial
    if opt.device == "gpu" and gpus is not None and 0 < gpus < n:
        raise UserError(f"--gpus_per_trial {gpus:g} for --ngpu {n}: each process needs a GPU of its own; "
                        f"give --gpus_per_trial {n} (or leave it unset)")


def original_search(args, given: set, raw, explicit: set) -> bool:
    """Whether trials are ranked on the test set, as the original's search did (no validation_selection
    fix); fills in the defaults of that search: its space, its 2 samples and no validation split."""
    on_test = not applies(raw, "validation_selection")
    if on_test and "val_ratio" not in explicit:
        raw.val_ratio = 0.0  # as train.py (lib.options.parse): the original holds nothing out
    if "space" not in given:
        args.space = str(ORIGINAL_SPACE if on_test else DEFAULT_SPACE)
    if "num_samples" not in given:
        args.num_samples = ORIGINAL_SAMPLES if on_test else 1
    return on_test
