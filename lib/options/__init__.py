"""Command-line options of train.py (and train_tune.py, predict.py); the top-level options.py re-exports them.

`parse` parses (lib/options/parser.py) and validates (lib/options/checks.py); it sets no seed,
device or other global state. The run's folder name follows from the options (`default_name`).
"""
import argparse
import contextlib
import io
import sys

from ..errors import UserError
from ..models import MODELS, registry
from ..original import DEFAULT, FIXES, applies, fixes
from .checks import (  # noqa: F401 (what callers use as options.<name>)
    C_INT_MAX,
    check_image_shape,
    check_model_options,
    dataset_folder_around,
    model_option_names,
    validate,
    value_problem,
)
from .parser import (  # noqa: F401
    LR_POLICIES,
    METRICS,
    build_parser,
    defaults,
    explicit_options,
    option_actions,
    run_options,
    score_weight,
    str2bool,
)
from .record import changed_options, options_text  # noqa: F401

# A recorded run's --resume and --overwrite say how it was started, not what it is: --config leaves them out.
NOT_REPLAYED = {"resume", "overwrite"}


def parse(argv=None, prog: str = "train.py"):
    """Parse and validate; fills in the derived run name."""
    argv, _ = with_config(sys.argv[1:] if argv is None else argv, prog)
    opt = build_parser(prog).parse_args(argv)
    explicit = explicit_options(argv, prog)
    if "val_ratio" not in explicit and not applies(opt, "validation_selection"):
        opt.val_ratio = 0.0  # the original holds nothing out: its test set is the whole split
    given_classes = {k: getattr(opt, k) for k in ("abnormal_class", "normal_class", "category")}
    if opt.original and "fixes" in explicit:  # even --fixes default: which of the two was meant?
        raise UserError(f"--original applies no fix and --fixes {opt.fixes} names some: give one of them")
    loaded = (opt.resume or opt.load_weights is not None) and "dataset" not in explicit
    if loaded and (opt.resume or opt.phase == "test"):  # the run's dataset, read later: --category checked then
        opt.category = None
    validate(opt)
    if loaded:
        # A loaded run's classes are its dataset's: named once its options are adopted (lib/runs/adopted.py).
        opt.__dict__.update(given_classes)
    if not opt.resume and opt.load_weights is None:  # otherwise the checkpoint names the model
        check_model_options(opt, explicit)
    if opt.name is None:
        opt.name = default_name(opt)
    return opt


def default_name(opt) -> str:
    """<model>[-no_skip][-clip]/<dataset>/<class>: the runs of a sweep or an ablation never collide."""
    variant = opt.model + registry.run_name_suffix(opt, MODELS)
    variant += fixes_suffix(fixes(opt)) + ("-control" if opt.niter == 0 else "")
    parts = [variant, opt.dataset]
    if opt.normal_class is not None:
        parts.append(f"normal_{opt.normal_class}")
    elif opt.abnormal_class is not None:
        parts.append(str(opt.abnormal_class))
    if opt.category is not None:
        parts.append(opt.category)
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


def with_config(argv, prog: str = "train.py") -> tuple[list[str], bool]:
    """(argv with each `--config RUN` replaced by the options that run's opt.txt marks as changed, put
    first so that the command line's own flags override them: argparse keeps a flag's last value;
    whether --print_config was given)."""
    argv, replayed, rest, show = list(argv), [], [], False
    while argv:
        arg = argv.pop(0)
        if arg == "--print_config":
            show = True
        elif arg == "--config" or arg.startswith("--config="):
            if "=" not in arg and not argv:
                raise UserError("--config needs a run's opt.txt or run folder, e.g. --config output/<run>/opt.txt")
            replayed += config_args(arg.partition("=")[2] if "=" in arg else argv.pop(0), prog)
        else:
            rest.append(arg)
    return replayed + rest, show


def recorded_switch(path, key: str, value: str, may_be_none: bool) -> bool | None:
    """An on/off option's value in an opt.txt, as written or edited by hand ("true", a trailing space); a
    UserError for any other word, which once read as "off" and trained the opposite of the record."""
    word = value.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    if may_be_none and word.lower() == "none":
        return None
    allowed = "True, False or None" if may_be_none else "True or False"
    raise UserError(f"--config '{path}': '{key}: {word}' is not on or off: write {allowed}")


def config_args(path: str, prog: str = "train.py") -> list[str]:
    """The command-line flags that set what the run recorded in `path` changed from the defaults."""
    if not path.strip():  # an unset variable in a script, as the parser refuses for every other flag
        raise UserError("--config is empty (an unset variable?): give a run's opt.txt or its run folder, or leave "
                        "--config out")
    actions = option_actions(prog)
    changed = changed_options(path, {key: str(action.default) for key, action in actions.items()})
    unknown = sorted(set(changed) - set(actions))
    if unknown:
        raise UserError(f"--config '{path}' sets {', '.join(unknown)}, which {prog} does not have (a run of another "
                        "version?): edit those lines out of a copy of it, or give the flags yourself")
    args = []
    for key, value in changed.items():
        action = actions[key]
        if key in NOT_REPLAYED:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            on = recorded_switch(path, key, value, action.default is None)
            if on is not None:  # (None: amp's "as the machine suits", its default)
                args.append(flag if on else f"--no-{flag[2:]}")
        elif action.nargs == 0 and action.const is True:  # a switch: given when recorded on
            if recorded_switch(path, key, value, False):
                args.append(flag)
        elif action.nargs == 0:
            if value.strip() == str(action.const):
                args.append(flag)
        else:
            args.append(f"{flag}={value}")
    if "name" in changed:  # a derived name is left to derive again, so overriding a class renames the run
        unnamed = [a for a in args if not a.startswith("--name=")]
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # a flag it refuses is refused once, below
                derived = parse(unnamed, prog).name
        except (UserError, SystemExit):
            derived = None
        if derived == changed["name"]:
            args = unnamed
    return args
