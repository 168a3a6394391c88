"""The search-space file of train_tune.py (SPACE.json), read and checked before Ray starts.

Owns: reading the file (its form, each value in its option's type, the ties) and the space as
Ray Tune search objects. Whether every run a space can draw is one train.py takes is
lib/tune/checks.py's. Ray is imported only in ray_space, so reading a space needs no Ray.

A space file maps train.py options to values: {"grid": [...]} (every value, in every
sample), {"choice": [...]}, {"uniform": [low, high]}, {"loguniform": [low, high]},
{"randint": [low, high]} (both bounds included), or {"same": "OTHER"}: the option takes
OTHER's value in every trial, as the original tied w_adv and w_lat to one "w_latadv"
(experiments/tune_space_original.json). OTHER must be searched in the same file, with
values of its own, and take values of the same type.
"""
import argparse
import codecs
import json
import math
import os
import stat
import sys

from .. import options
from ..errors import UserError
from .trials import PATH_OPTIONS, Follow

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "same")
TIE = "same"  # the kind that gives an option another searched option's value

# Options a search sets itself, or that would make trials incomparable.
NOT_SEARCHABLE = {
    "tune": "train_tune.py sets it",
    "name": "each trial gets its own run folder",
    "outf": "one search writes under one --outf",
    "resume": "a search continues with --restore",
    "load_weights": "give it as a fixed flag", "phase": "a search trains",
    "path": "a search trains and scores no images: score them with predict.py --weights RUN afterwards",
    "metric": "the objective must be the same for every trial",
    "val_ratio": "trials are compared on one validation split",
    "ngpu": "a trial's processes are its resources, the same for every trial: give --ngpu on the command line",
    "overwrite": "every trial's run folder is new; the search's own --overwrite is a flag of the command",
    "verbose": "it changes what is printed, not the run: give it as a flag",
}
# A search space is a small hand-written file; anything larger was given by mistake.
MAX_SPACE_BYTES = 1 << 20
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
C_INT_MAX = options.C_INT_MAX  # Ray draws randint values as C integers
EXPECTED = {int: "a whole number", float: "a number"}


def read_space(path, actions: dict) -> dict[str, tuple]:
    """Read SPACE.json; returns {option: (kind, values)} with values in the option's type,
    or ("same", OTHER) for an option tied to OTHER (values_of gives its values).

    Checked here: the file's form, each value's type and each tie; whether every run the
    space can draw is one train.py takes is lib.tune.checks'.
    """
    where = f"space file '{path}'"
    raw = _parse_json(_read_text(path, where), where)
    if not isinstance(raw, dict):
        raise UserError(f'{where} must hold one JSON object, e.g. {{"w_con": {{"grid": [25, 50, 75]}}}}')
    space, ties = {}, {}
    for key, spec in raw.items():
        name = key.lstrip("-")
        if name not in actions:
            raise UserError(f"{where}: unknown option '{key}' (options are train.py's: see python train.py -h)")
        if name in NOT_SEARCHABLE:
            raise UserError(f"{where}: '{name}' cannot be searched ({NOT_SEARCHABLE[name]})")
        if name in space:
            raise UserError(f"{where}: '{name}' is given twice: give each option once")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
            raise UserError(f"{where}: '{name}' needs one of " + ", ".join(f'{{"{k}": ...}}' for k in KINDS)
                            + f", got {_shown(spec)}")
        kind, values = next(iter(spec.items()))
        shown = f"{where}: \"{name}\": {{\"{kind}\": {_shown(values)}}}"
        if kind == TIE:  # checked once every option of the file is known: the target may come later
            if not isinstance(values, str):
                raise UserError(f'{shown} needs the name of the searched option it follows, e.g. {{"same": "w_adv"}}')
            space[name], ties[name] = (TIE, values.lstrip("-")), shown
            continue
        values = _check_values(shown, name, kind, values, actions[name])
        if name in PATH_OPTIONS:  # trials run in their own working directory
            values = [os.path.abspath(v) if v else v for v in values]
        space[name] = (kind, values)
    for name, shown in ties.items():
        _check_tie(shown, name, space, actions)
    return space


def _check_tie(shown, name, space: dict, actions: dict) -> None:
    """A tied option follows an option of the same type that the space searches with values of its own."""
    target = space[name][1]
    if target == name:
        raise UserError(f"{shown}: an option cannot follow itself: give '{name}' values of its own")
    if target not in actions:
        raise UserError(f"{shown}: unknown option '{target}' (options are train.py's: see python train.py -h)")
    if target in NOT_SEARCHABLE:
        raise UserError(f"{shown}: '{target}' cannot be searched ({NOT_SEARCHABLE[target]}), so nothing can follow it")
    if target not in space:
        raise UserError(f"{shown}: '{target}' is not searched in this space: add it with values of its own, "
                        f"or drop '{name}' and give --{name} on the command line")
    if space[target][0] == TIE:
        chain, after = [name], target
        while after in space and space[after][0] == TIE and after not in chain:
            chain, after = chain + [after], space[after][1]
        if after in chain:
            circle = ", ".join(f"'{n}'" for n in chain[chain.index(after):])
            raise UserError(f"{shown}: {circle} follow each other in a circle: give one of them values of its own")
        fix = f"make '{name}' follow '{after}' directly" if after in space else "tie each to an option with values"
        raise UserError(f"{shown}: '{target}' itself follows '{space[target][1]}': {fix}")
    ours, theirs = _value_type(actions[name]), _value_type(actions[target])
    if ours != theirs:
        raise UserError(f"{shown}: '{name}' takes {ours} and '{target}' takes {theirs}: tie options of one type")
    kind, values = space[target]
    if kind in ("grid", "choice"):  # e.g. a value the target accepts and the tied option does not
        for value in values:
            _coerce(shown, actions[name], value)


def _value_type(action) -> str:
    """What an option's values are, in words: tied options must agree."""
    if action.nargs == 0 or action.type is options.str2bool:
        return "true or false"
    if action.type in EXPECTED:
        return EXPECTED[action.type].replace("a ", "", 1) + "s"
    if action.type is None:
        return "text"
    return f"values like --{action.dest}'s"


def followers(space: dict, config: dict) -> dict:
    """`config` with every tied option set to the value of the option it follows."""
    return {**config, **{name: config[target] for name, (kind, target) in space.items()
                         if kind == TIE and target in config}}


def values_of(space: dict, name: str) -> list:
    """The values `name` takes in a search (a tied option: those of the option it follows)."""
    kind, values = space[name]
    return space[values][1] if kind == TIE else values


def free(space: dict) -> dict:
    """The options searched with values of their own."""
    return {name: entry for name, entry in space.items() if entry[0] != TIE}


def _read_text(path, where) -> str:
    """The file's text: UTF-8 (a byte-order mark, UTF-8 or UTF-16 as Windows editors write, is honoured)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a named pipe would wait for a writer
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            os.close(fd)
            raise UserError(f"{where} is {kind}, not a regular file: a search space is a small JSON file like "
                            "experiments/tune_space.json")
        with open(fd, "rb") as f:
            data = f.read(MAX_SPACE_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read {where}: {err.strerror or err}") from None
    if len(data) > MAX_SPACE_BYTES:
        raise UserError(f"{where} is over {MAX_SPACE_BYTES >> 20} MiB: a search space is a small JSON file like "
                        "experiments/tune_space.json")
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise UserError(f"{where} is not {encoding.upper().removesuffix('-SIG')} text (byte 0x{data[err.start]:02x} "
                        f"at offset {err.start}): save it as UTF-8") from None


def _not_regular(mode: int) -> str:
    """What a path that is not a regular file is, in words; "" for a regular file."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return "" if stat.S_ISREG(mode) else next((name for test, name in kinds if test(mode)), "a special file")


class _NotAValue(ValueError):
    """A JSON value a search space cannot hold."""


def _parse_json(text: str, where: str):
    """JSON as the standard defines it: no NaN or Infinity (Python's json takes them), no duplicate keys."""
    def constant(name):
        raise _NotAValue(f"{name} is not a number: give finite numbers")

    def number(text):
        value = float(text)
        if not math.isfinite(value):
            raise _NotAValue(f"{text} is too large for a number: give finite numbers")
        return value

    def unique(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotAValue(f"'{key}' is given twice: give each option once")
            seen.add(key)
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=constant, parse_float=number, object_pairs_hook=unique)
    except _NotAValue as err:
        raise UserError(f"{where}: {err}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except ValueError as err:  # e.g. an integer of thousands of digits
        raise UserError(f"{where} is not valid JSON: {str(err).splitlines()[0][:120]}") from None
    except RecursionError:
        raise UserError(f"{where} is not a search space: its values are nested too deeply") from None


def _shown(value) -> str:
    """A JSON value for a message, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_values(shown, name, kind, values, action) -> list:
    """Values of one entry, converted to the option's type: a list, or a range's [low, high]."""
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise UserError(f"{shown} needs a non-empty list of values")
        return [_coerce(shown, action, v) for v in values]
    else:
        if not (isinstance(values, list) and len(values) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise UserError(f"{shown} needs [low, high], two numbers")
        lo, hi = values
        if action.type not in (int, float):
            raise UserError(f"{shown}: '{name}' is not numeric; use grid or choice")
        if kind == "randint" and not all(isinstance(v, int) or v.is_integer() for v in values):
            raise UserError(f"{shown}: randint needs whole-number bounds")
        if kind == "randint" and not all(abs(v) <= C_INT_MAX for v in values):
            raise UserError(f"{shown}: randint bounds must be within -{C_INT_MAX} and {C_INT_MAX}")
        if kind != "randint" and action.type is int:
            raise UserError(f"{shown}: '{name}' takes whole numbers; use randint")
        if not all(abs(v) <= sys.float_info.max for v in values):
            raise UserError(f"{shown}: a bound is too large for a number")
        if not lo < hi:
            raise UserError(f"{shown}: low must be below high")
        if kind == "loguniform" and lo <= 0:
            raise UserError(f"{shown}: loguniform needs low > 0")
        return [int(lo), int(hi)] if kind == "randint" else [float(lo), float(hi)]


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
            raise ValueError(f"expected {EXPECTED.get(action.type, 'a string')}")
        if action.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            value = _number(int, value)
        elif action.type is float:
            value = _number(float, value)
        elif action.type is not None:  # e.g. --score_weight: a number or 'val', parsed as from the command line
            value = action.type(str(value))
        else:
            value = str(value)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise UserError(f"{shown}: {_shown(value)}: {err}") from None
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{shown}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _number(kind, value):
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"expected {EXPECTED[kind]}") from None
    except OverflowError:
        raise ValueError("too large for a number") from None


def ray_space(space: dict):
    """The space as Ray Tune search objects."""
    from ray import tune
    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(v[0], v[1] + 1),  # both bounds included
            TIE: lambda target: tune.sample_from(Follow(target))}
    return {name: make[kind](values) for name, (kind, values) in space.items()}


def largest(space: dict, name: str, fixed):
    """The largest value `name` can take in a search (e.g. epochs, for ASHA's horizon)."""
    if name not in space:
        return fixed
    return max(values_of(space, name))

