"""The registry of models: the single source of model names and of their own flags.

A model is a module (lib/models/<name>.py) holding one class registered with
`@register`, whose `name` is the module's last part; `MODELS` lists the modules.

A model declares, as plain data at the top of its file, its name in tables (a
literal `LABEL`, e.g. "Skip-GANomaly") and the flags only it reads (a literal
`OPTIONS` list). The registry reads them from the file's text
(`ast.literal_eval`: nothing is executed), so the command line is parsed and
checked without importing the model, and torch with it: 3-4 s on our CPUs, for
every refused command line and every `--help`. The model's class is imported
only when a model is built.

An `OPTIONS` entry: {"flag": "--n_critic", "type": "int" | "float" | "str" |
"bool" (a switch, off by default), "default": 5, "help": "...", optional
"choices": [...], "min": N (refused below; 0: "must not be negative", 1: "must
be positive"), "above": N (refused at N or below), "run_name": {value: suffix} (added to the default run name when
the flag has that value), "only_with": {other flag: [values]} (read only when the
other flag has one of them, e.g. --lambda_gp with --wgan gp: refused otherwise)}.
The default has the declared type (a float's is 10.0, not 10), as the value of
the flag given on the command line has: a run's options keep one type whether
given or not. An entry {"extends": "<model>"} takes that
model's flags too (Skip-WGANomaly reads all of Skip-GANomaly's).
"""
import argparse
import ast
import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from functools import cache

from ..errors import UserError

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_CLASSES: dict = {}  # name -> class, filled by @register as model modules are imported


def register(cls):
    """Class decorator: the model class of its module (checked complete, here, at import)."""
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"model {cls.__name__} does not implement {missing}")
    if not cls.name:
        raise TypeError(f"model {cls.__name__} needs a name")
    _CLASSES[cls.name] = cls
    return cls


class Registry(Mapping):
    """name -> model class, loading a model's module only when its class is asked for."""

    def __init__(self, *modules: str):
        self.modules = {module.rsplit(".", 1)[-1]: module for module in modules}

    def add(self, module: str) -> None:
        """Register one more model module (the toy model of the tests does this)."""
        self.modules[module.rsplit(".", 1)[-1]] = module

    def __getitem__(self, name: str):
        if name not in self.modules:
            raise KeyError(name)
        importlib.import_module(self.modules[name])
        if name not in _CLASSES:
            raise TypeError(f"{self.modules[name]} registers no model named '{name}' (@register, name = '{name}')")
        return _CLASSES[name]

    def __iter__(self):
        return iter(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def label(self, name: str) -> str:
        """The model's name in tables and figures: its file's literal `LABEL` (e.g. "Skip-WGANomaly"), else `name`."""
        return _literal(self.modules[name], "LABEL") or name

    def options(self, name: str) -> tuple[dict, ...]:
        """The model's `OPTIONS`, read from its file without importing it; an `extends` entry's model's first."""
        found = []
        for entry in _declared_options(self.modules[name]):
            found += self.options(entry["extends"]) if "extends" in entry else [entry]
        return tuple(found)


@cache
def _literal(module: str, variable: str):
    """The literal value of the module's top-level `variable`, read from its text (nothing executed), or None."""
    spec = importlib.util.find_spec(module)
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _declared_options(module: str) -> tuple[dict, ...]:
    return tuple(_typed(module, entry) for entry in _literal(module, "OPTIONS") or ())


def _typed(module: str, entry: dict) -> dict:
    """The entry, checked: its default has its declared type (a model's mistake, refused where it is made)."""
    if "extends" in entry:
        return entry
    switch = entry.get("type") == "bool"  # a switch is off unless given
    kind, default = _TYPES[entry.get("type", "str")], entry.get("default", False if switch else None)
    if default is not None and type(default) is not kind:
        raise TypeError(f"{module}: OPTIONS declares {entry['flag']} {kind.__name__} and its default is "
                        f"{type(default).__name__} {default!r}: write {kind(default)!r}")
    return entry


def _dest(entry: dict) -> str:
    return entry["flag"].lstrip("-")


def add_model_options(parser: argparse.ArgumentParser, models: Registry) -> None:
    """Every model's own flags, one --help section per model; a flag two models share is added once."""
    known = {action.dest for action in parser._actions}
    for name in models:
        group = parser.add_argument_group(f"--model {name}")
        for entry in models.options(name):
            if _dest(entry) in known:
                continue
            known.add(_dest(entry))
            if entry.get("type") == "bool":
                group.add_argument(entry["flag"], action="store_true", help=entry.get("help"))
                continue
            kwargs = {k: entry[k] for k in ("default", "choices", "help") if k in entry}
            group.add_argument(entry["flag"], type=_TYPES[entry.get("type", "str")], **kwargs)


def model_options(models: Registry) -> dict[str, tuple[str, ...]]:
    """{model: the option names only it (and models sharing them) reads}."""
    return {name: tuple(_dest(e) for e in models.options(name)) for name in models}


def check_model_options(opt, explicit: set[str], models: Registry) -> None:
    """Refuse a flag that only other models read (given to this model it would be ignored)."""
    owners: dict[str, list[str]] = {}
    for name in models:
        for entry in models.options(name):
            owners.setdefault(_dest(entry), []).append(name)
    foreign = [dest for dest in owners if dest in explicit and opt.model not in owners[dest]]  # declared order
    if foreign:
        models_named = sorted({m for dest in foreign for m in owners[dest]})
        given = ", ".join(f"--{dest}" for dest in foreign)
        one = len(foreign) == 1
        raise UserError(f"{given} only appl{'ies' if one else 'y'} to --model {' or '.join(models_named)}, "
                        f"not --model {opt.model}: drop {'it' if one else 'them'} or change --model")


def only_with(model: str, models: Registry) -> dict[str, tuple[str, tuple]]:
    """{flag: (other flag, the values under which it is read)} of the model's `only_with` entries."""
    return {_dest(e): (other, tuple(values)) for e in models.options(model) for other, values in
            e.get("only_with", {}).items()}


def check_values(opt, models: Registry) -> None:
    """The bounds the model's `OPTIONS` declare, for the model `opt` names."""
    for entry in models.options(opt.model):
        dest = _dest(entry)
        value = getattr(opt, dest)
        if "above" in entry and value <= entry["above"]:
            raise UserError(f"--{dest} must be above {entry['above']} (got {value})")
        if "min" not in entry:
            continue
        low = entry["min"]
        if value < low:
            rule = ("must not be negative" if low == 0 else "must be positive" if low == 1 and entry["type"] == "int"
                    else f"must be at least {low}")
            raise UserError(f"--{dest} {rule} (got {value})")


def run_name_suffix(opt, models: Registry) -> str:
    """What the model's flags add to the default run name (e.g. -clip)."""
    return "".join(entry.get("run_name", {}).get(getattr(opt, _dest(entry)), "")
                   for entry in models.options(opt.model))


def model_class(name: str, models: Registry):
    if name not in models:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(models)}")
    return models[name]
