"""Ray Tune searches over train.py's options (Skip-GANomaly / Skip-WGANomaly).

Owns: the search-space file (read and checked before Ray starts), the trial that
trains one configuration through lib.run's loop and reports every epoch, the
results table of a search and the train.py command that reproduces a trial.
Ray is imported only inside the trial, so checking a space needs no Ray.
"""
import argparse
import json
import math
import shlex
import shutil
from pathlib import Path

import options
from lib.errors import UserError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")

# Options a search sets itself, or that would make trials incomparable.
NOT_SEARCHABLE = {
    "tune": "train_tune.py sets it",
    "name": "each trial gets its own run folder",
    "outf": "one search writes under one --outf",
    "resume": "a search continues with --restore",
    "load_weights": "give it as a fixed flag",
    "phase": "a search trains",
    "metric": "the objective must be the same for every trial",
    "val_ratio": "trials are compared on one validation split",
}
# Left out of a reproducing command line: train.py derives or ignores them.
NOT_IN_COMMAND = {"name", "tune", "resume"}


def train_actions(parser) -> dict:
    """train.py's options by name (dest), as `parser` defines them."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def trial_options(base: dict, config: dict) -> argparse.Namespace:
    """The options of one trial: the command line's, with `config` on top, validated."""
    opt = argparse.Namespace(**{**base, **config})
    options.validate(opt)
    return opt


# ------------------------------------------------------------------ the space file

def read_space(path, actions: dict, base: dict) -> dict[str, tuple[str, list]]:
    """Check SPACE.json; returns {option: (kind, values)} with values in the option's type."""
    where = f"space file '{path}'"
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UserError(f"cannot read {where}: {err.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(raw, dict):
        raise UserError(f'{where} must hold one JSON object, e.g. {{"w_con": {{"grid": [25, 50, 75]}}}}')
    space = {}
    for key, spec in raw.items():
        name = key.lstrip("-")
        if name not in actions:
            raise UserError(f"{where}: unknown option '{key}' (options are train.py's: see python train.py -h)")
        if name in NOT_SEARCHABLE:
            raise UserError(f"{where}: '{name}' cannot be searched ({NOT_SEARCHABLE[name]})")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
            raise UserError(f"{where}: '{name}' needs one of " + ", ".join(f'{{"{k}": ...}}' for k in KINDS)
                            + f", got {json.dumps(spec)}")
        kind, values = next(iter(spec.items()))
        space[name] = (kind, _check_values(where, name, kind, values, actions[name], base))
    return space


def _check_values(where, name, kind, values, action, base) -> list:
    """Values of one entry, converted to the option's type and accepted by train.py."""
    shown = f"{where}: \"{name}\": {{\"{kind}\": {json.dumps(values)}}}"
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise UserError(f"{shown} needs a non-empty list of values")
        out = [_coerce(shown, action, v) for v in values]
    else:
        if not (isinstance(values, list) and len(values) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise UserError(f"{shown} needs [low, high], two numbers")
        lo, hi = values
        if action.type not in (int, float):
            raise UserError(f"{shown}: '{name}' is not numeric; use grid or choice")
        if kind == "randint" and not all(float(v).is_integer() for v in values):
            raise UserError(f"{shown}: randint needs whole-number bounds")
        if kind != "randint" and action.type is int:
            raise UserError(f"{shown}: '{name}' takes whole numbers; use randint")
        if not lo < hi:
            raise UserError(f"{shown}: low must be below high")
        if kind == "loguniform" and lo <= 0:
            raise UserError(f"{shown}: loguniform needs low > 0")
        out = [int(lo), int(hi)] if kind == "randint" else [float(lo), float(hi)]
    for value in out:  # every value (each bound of a range) must make a valid train.py run
        try:
            trial_options(base, {name: action.type(value) if action.type in (int, float) else value})
        except UserError as err:
            raise UserError(f"{shown}: {name} = {value!r} is rejected: {err}") from None
    return out


def _coerce(shown, action, value):
    """One JSON value as train.py would parse it for `action`."""
    try:
        if action.nargs == 0 or action.type is options.str2bool:  # on/off flags
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return options.str2bool(value)
            raise ValueError("expected true or false")
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise ValueError(f"expected a {getattr(action.type, '__name__', 'str')}")
        if action.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            value = int(value)
        elif action.type is float:
            value = float(value)
        else:
            value = str(value)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise UserError(f"{shown}: {value!r}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{shown}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def ray_space(space: dict):
    """The space as Ray Tune search objects."""
    from ray import tune
    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(v[0], v[1] + 1)}  # both bounds included
    return {name: make[kind](values) for name, (kind, values) in space.items()}


def largest(space: dict, name: str, fixed):
    """The largest value `name` can take in a search (e.g. epochs, for ASHA's horizon)."""
    if name not in space:
        return fixed
    return max(space[name][1])


# ------------------------------------------------------------------ one trial

def run_trial(config: dict, base: dict, defaults: dict, explicit: set, run_prefix: str) -> None:
    """Train one configuration; report metrics and a checkpoint after every epoch."""
    import ray
    from ray import tune

    from lib.run import build_trainer, load_checkpoint

    opt = trial_options(base, config)
    opt.name = f"{run_prefix}/{tune.get_context().get_trial_id()}"
    if ray.get_gpu_ids():
        opt.gpu_ids = "0"  # Ray shows each trial only its own GPU(s), numbered from 0
    restored = tune.get_checkpoint()
    if restored is None:
        trainer = build_trainer(opt, defaults, load_checkpoint(opt, explicit | set(config)), on_epoch=_report)
    else:  # paused or failed before: continue from the last epoch it reported
        with restored.as_directory() as folder:
            opt.resume = folder
            ckpt = load_checkpoint(opt, explicit | set(config))
            trainer = build_trainer(opt, defaults, ckpt, on_epoch=_report)
            if (Path(folder) / "best.pt").is_file() and not (trainer.weights / "best.pt").is_file():
                shutil.copy(Path(folder) / "best.pt", trainer.weights / "best.pt")
    try:
        trainer.fit()
    finally:
        trainer.vis.close()


def _report(trainer, row: dict) -> None:
    """After each epoch: the epoch's metrics (ASHA decides on them) and the weights folder."""
    from ray import tune
    tune.report({**row, "seed": trainer.opt.manualseed},
                checkpoint=tune.Checkpoint.from_directory(str(trainer.weights)))


# ------------------------------------------------------------------ results

def trial_row(result, objective: str, space: dict, runs) -> dict:
    """One results.csv row: config, the validation-selected epoch's metrics, epochs run, time."""
    trial = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
    row = {"trial": trial, "status": "error" if result.error else "done"}
    row.update({name: result.config.get(name) for name in space})
    row.update({objective: math.nan, "test_auroc": math.nan, "best_epoch": None, "epochs": 0,
                f"last_{objective}": math.nan, "last_test_auroc": math.nan, "time_s": math.nan, "seed": None})
    history = result.metrics_dataframe
    if history is not None and objective in history:
        values = history[objective].astype(float)
        # The epoch train.py would keep: the first with the best validation metric.
        best = history.loc[values.idxmax()] if values.notna().any() else history.iloc[-1]
        last = history.iloc[-1]
        row.update({objective: float(best[objective]), "test_auroc": float(best["test_auroc"]),
                    "best_epoch": int(best["epoch"]), "epochs": int(last["epoch"]),
                    f"last_{objective}": float(last[objective]), "last_test_auroc": float(last["test_auroc"]),
                    "time_s": round(float(last["time_total_s"]), 1), "seed": int(last["seed"])})
    row["run"] = str(Path(runs) / trial)
    row["error"] = str(result.error).strip().splitlines()[-1][:200] if result.error else ""
    return row


def sort_rows(rows: list[dict], objective: str) -> list[dict]:
    """Best validation metric first; trials without one last."""
    def key(row):
        value = row[objective]
        return -value if isinstance(value, float) and not math.isnan(value) else math.inf
    return sorted(rows, key=key)


def command_line(opt: dict, actions: dict, defaults: dict) -> str:
    """`python train.py ...` with every option of `opt` that differs from its default."""
    tokens = []
    for name, action in actions.items():
        value = opt.get(name)
        if name in NOT_IN_COMMAND or value == defaults.get(name):
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            tokens.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:
            tokens.append(flag)
        else:
            tokens += [flag, str(value)]
    return shlex.join(["python", "train.py", *tokens])
