"""Command-line options of train.py (and train_tune.py, predict.py); the top-level options.py re-exports them.

`parse` parses (lib/options/parser.py) and validates (lib/options/checks.py); it sets no seed,
device or other global state. The run's folder name follows from the options (`default_name`).
"""
import sys

from lib.models import MODELS, registry
from lib.options.checks import (  # noqa: F401 (what callers use as options.<name>)
    C_INT_MAX,
    check_image_shape,
    check_model_options,
    model_option_names,
    validate,
    value_problem,
)
from lib.options.parser import (  # noqa: F401
    LR_POLICIES,
    METRICS,
    build_parser,
    defaults,
    explicit_options,
    option_actions,
    score_weight,
    str2bool,
)
from lib.original import DEFAULT, FIXES, applies, fixes


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


def default_name(opt) -> str:
    """<model>[-no_skip][-clip]/<dataset>/<class>: the runs of a sweep or an ablation never collide."""
    variant = opt.model + registry.run_name_suffix(opt, MODELS)
    variant += fixes_suffix(fixes(opt)) + ("-control" if opt.niter == 0 else "")
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
