"""A search space checked as train.py checks its command line, before Ray starts.

Owns: the values a searched option can draw (a range: its ends and points between), the
combinations the space can draw (every grid and choice value with every other, ranges at their
ends), what train.py would refuse in each (lib/options/checks.py, a flag of another model, a dataset
neither built in nor in --dataroot, a batch that --ngpu cannot split, a generator that --n_critic
would never update), and the train.py command that reproduces a trial, parsed back by train.py's
own `options.parse`: it must give the trial's options. Torch is imported only for a check that
needs the data (the number of steps).
"""
import functools
import itertools
import json
import math
from pathlib import Path

from .. import options
from ..classes import DATASETS, builtin_dataset, class_names, inspection_dataset
from ..errors import UserError
from ..original import applies
from .space import TIE, followers, free, values_of
from .trials import NOT_IN_COMMAND, command_tokens, trial_options

# Integer ranges of up to MAX_CHECKED values are checked value by value, wider ones at PROBES points.
MAX_CHECKED = 4096
PROBES = 64
MAX_CONTEXTS = 64  # combinations of the other options a value that fails alone is tried with
# Combinations are checked one by one, about 20 ms each (train.py's parser is built about ten times):
# a space that draws more than this is refused rather than checked for minutes.
MAX_COMBINATIONS = 1024


# What only training applies: a control (--niter 0) records it and never uses it.
TRAINING_ONLY = {"lr", "beta1", "w_adv", "w_con", "w_lat", "w_enc", "n_critic", "lambda_gp", "clip_value", "wgan",
                 "noise_std", "lr_policy", "lr_decay_iters", "niter_decay"}


def check_space(path, space: dict, base: dict, explicit: set, actions: dict) -> None:
    """Refuse, in one line, a space that could draw a run train.py would refuse or train differently."""
    where = f"space file '{path}'"
    both = [name for name in space if name in explicit]
    if both:  # the trial's value would silently replace the flag's
        raise UserError(f"--{both[0]} is given on the command line and {where} searches it: drop one of them")
    alone = refusal(base, {}, explicit, actions)  # the command line's own problem, said as train.py says it
    models = set(values_of(space, "model")) if "model" in space else {base["model"]}
    owners = options.model_option_names()
    for name in space:
        users = [model for model, names in owners.items() if name in names]
        if users and not models & set(users):
            raise UserError(f"{where}: '{name}' only applies to --model {' or '.join(users)}, and this search trains "
                            f"{', '.join(sorted(models))}: drop it or search --model")
    for name, (kind, values) in free(space).items():
        _check_values(where, space, name, kind, values, base, explicit, alone)
    _check_combinations(where, space, base, explicit, actions, alone)


def refusal(base: dict, config: dict, explicit: set, actions: dict | None = None):
    """What train.py would refuse in the trial of `config` (a UserError), or None. With `actions`,
    the trial's reproducing command is also parsed back as train.py parses it."""
    try:
        opt = trial_options(base, config)
        applied_only_by_training = sorted(TRAINING_ONLY & set(config))
        if opt.niter == 0 and applied_only_by_training:  # recorded in each trial, never used: the trials alike
            raise UserError("--niter 0 builds the untrained control, which never applies "
                            f"{', '.join('--' + name for name in applied_only_by_training)}: search that over trained "
                            "runs (a search of controls may vary what a control has: seeds, models, networks, scores)")
        if opt.load_weights is None:  # as options.parse: loaded weights name the model
            options.check_model_options(opt, explicit | set(config))
        if opt.ngpu > 1:
            from ..parallel.distributed import check_batch_splits
            check_batch_splits(opt.batchsize, opt.ngpu)
        if {"dataset", "dataroot"} & set(config):  # else the command line's, checked by check_search
            check_data(opt)
        check_generator_steps(opt)
        if actions is not None:
            reproduce_argv(opt, actions)
    except UserError as err:
        return err
    return None


def check_data(opt, files: bool = False) -> None:
    """As train.py: a dataset that is not built in must be a folder in --dataroot (or --dataroot itself);
    with `files` (the command line's dataset, once: not for every combination of a space), a built-in
    one's files must be there or downloadable (fetched now, not by every trial)."""
    root = Path(opt.dataroot)
    if class_names(opt.dataset) and builtin_dataset(opt.dataset):
        if files:
            from ..data.builtin import check_available
            check_available(opt.dataset, root)
    elif inspection_dataset(opt.dataset):  # a category of --dataroot (refused naming the ones there)
        from ..data.mvtec import category_root
        category_root(root, opt.category)
    elif not class_names(opt.dataset) and not ((root / opt.dataset).is_dir() or (root / "train").is_dir()):
        raise UserError(f"dataset '{opt.dataset}' is not built in ({', '.join(DATASETS)}) and "
                        f"'{root / opt.dataset}' does not exist: give --dataroot the folder that holds it")


def check_generator_steps(opt) -> None:
    """As train.py: a model whose generator learns every --n_critic steps must take that many steps."""
    epochs = opt.niter - opt.iter
    # At least one step an epoch (train.py refuses a batch larger than the data): only --n_critic
    # above the epochs needs the number of batches, and so the data.
    if "n_critic" not in options.model_option_names().get(opt.model, ()) or opt.n_critic <= epochs:
        return
    from ..runs.setup import check_generator_updates
    check_generator_updates(opt, _training_images(opt.dataset, opt.dataroot, opt.isize, opt.nc, opt.abnormal_class,
                                                  opt.normal_class, opt.val_ratio, opt.workers, opt.category))


@functools.cache
def _training_images(dataset, dataroot, isize, nc, abnormal_class, normal_class, val_ratio, workers, category) -> int:
    from ..data.datasets import load_split
    return len(load_split(dataset, dataroot, isize, nc, abnormal_class=abnormal_class, normal_class=normal_class,
                          val_ratio=val_ratio, workers=workers, log=lambda *_: None, category=category).train)


def reproduce_argv(opt, actions: dict) -> list[str]:
    """train.py's arguments for a trial's options `opt`: every option that differs from what train.py
    takes without it. `options.parse` (train.py's) must accept them and give `opt` back."""
    values = vars(opt)
    defaults = dict(_defaults())
    if not applies(opt, "validation_selection"):
        defaults["val_ratio"] = 0.0  # what parse derives for such a run
    compared = [name for name in actions if name not in NOT_IN_COMMAND]
    given = [name for name in compared if values.get(name) != defaults.get(name)]
    while True:
        argv = command_tokens(values, actions, given)
        parsed = vars(options.parse(argv))
        differ = [name for name in compared if parsed.get(name) != values.get(name)]
        if not differ:
            return argv
        if set(differ) <= set(given):  # a value the command line cannot carry: never silently another run
            name = differ[0]
            raise UserError(f"train.py would read --{name} {values.get(name)!r} as {parsed.get(name)!r}: "
                            "give it another way")
        given += [name for name in differ if name not in given]


@functools.cache
def _defaults() -> dict:
    return options.defaults()


def probes(kind: str, values: list) -> list:
    """The values of an option to check: a grid's or a choice's; all of a small integer range; else a
    range's ends, their neighbours and evenly spaced points (train.py's limits are thresholds or sparse)."""
    if kind in ("grid", "choice"):
        return values
    lo, hi = values
    if kind == "randint":
        if hi - lo < MAX_CHECKED:
            return list(range(lo, hi + 1))
        return sorted({lo, lo + 1, hi - 1, hi, *(lo + (hi - lo) * i // PROBES for i in range(1, PROBES))})
    if kind == "loguniform":
        lo_log, hi_log = math.log(lo), math.log(hi)
        inner = [math.exp(lo_log + (hi_log - lo_log) * i / PROBES) for i in range(1, PROBES)]
    else:
        inner = [lo * (1 - i / PROBES) + hi * (i / PROBES) for i in range(1, PROBES)]
    return [lo, *inner, hi]


def _drawn(space: dict) -> dict:
    """Each option's values in combinations: every grid and choice value, a range's two ends."""
    return {name: values if kind in ("grid", "choice") else [values[0], values[-1]]
            for name, (kind, values) in free(space).items()}


def _check_values(where, space, name, kind, values, base, explicit, alone) -> None:
    """Every value an option can draw must make a valid run with some values of the others (with the
    command line's first: an option wrong by itself is named by itself); options tied to it follow it."""
    others = {n: v for n, v in _drawn(space).items() if n != name}
    if math.prod(map(len, others.values())) > MAX_CONTEXTS:
        others = {n: sorted({v[0], v[-1]}, key=v.index) for n, v in others.items()}
    contexts = [dict(zip(others, c)) for c in itertools.islice(itertools.product(*others.values()), MAX_CONTEXTS)]
    tied = [n for n, (k, target) in space.items() if k == TIE and target == name]
    with_tied = f" (with {', '.join(tied)} following it)" if tied else ""
    for value in probes(kind, values):
        err = refusal(base, followers(space, {name: value}), explicit)
        if err is None:
            continue
        reasons = []
        for context in (c for c in contexts if c):
            reason = refusal(base, followers(space, {**context, name: value}), explicit)
            if reason is None:
                break
            reasons.append(reason)
        else:
            err = reasons[0] if reasons else err  # the reason with values the space gives the others
            _raise_from_command_line(err, alone)
            raise UserError(f'{where}: "{name}": {{"{kind}": {_shown(values)}}}: {name} = {_short(value)}{with_tied} '
                            f"is rejected: {err}")


def _check_combinations(where, space, base, explicit, actions, alone) -> None:
    """Every combination of the drawn values, with the options tied to them, is a run train.py takes,
    and its reproducing command gives train.py that run."""
    drawn = _drawn(space)
    count = math.prod(map(len, drawn.values()))
    if count > MAX_COMBINATIONS:
        raise UserError(f"{where} can draw {count} combinations of values (grid and choice values, range ends), "
                        f"and each is checked before Ray starts, at most {MAX_COMBINATIONS}: split the search, or "
                        "give a numeric option a range (uniform, loguniform, randint) instead of many values")
    for values in itertools.product(*drawn.values()):
        config = followers(space, dict(zip(drawn, values)))
        err = refusal(base, config, explicit, actions)
        if err:
            _raise_from_command_line(err, alone)
            shown = ", ".join(f"{name} = {_short(value)}" for name, value in config.items())
            verb = "together are" if len(config) > 1 else "is"
            raise UserError(f"{where}: {shown} {verb} rejected: {err}")


def _raise_from_command_line(err, alone) -> None:
    """A refusal the command line causes by itself is said as train.py says it, without the space."""
    if alone is not None and str(err) == str(alone):
        raise alone


def _shown(value) -> str:
    """A JSON value for a message, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
