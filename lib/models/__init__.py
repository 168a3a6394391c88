"""The models. A new model is one file in this folder plus one line in MODELS below.

Importing this package loads no model and no torch: see registry.py.
"""
from . import registry
from .registry import register  # noqa: F401  (what a model file uses)

MODELS = registry.Registry(
    f"{__name__}.skipganomaly",
    f"{__name__}.w_skipganomaly",
    f"{__name__}.ganomaly",
)


def model_class(name: str):
    """The class of `--model name` (imports its module, and torch)."""
    return registry.model_class(name, MODELS)


def model_label(name: str) -> str:
    """How tables and figures name `--model name` ("w_skipganomaly" -> "Skip-WGANomaly"); an unknown name as it is."""
    return MODELS.label(name) if name in MODELS else name


def build_model(opt, device, **speed):
    """The model named by `opt.model`, on `device` (`speed`: fast, amp, compile, recorded; see lib.fast)."""
    return model_class(opt.model)(opt, device, **speed)
