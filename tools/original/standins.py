"""Stand-ins for what the original code imports or calls but its training never needs.

The original imports Visdom, Ray Tune, seaborn, matplotlib (which it configures for LaTeX) and
imageio at module level, draws a histogram figure in every test() and calls Visdom from its
Visualizer even without --display. None of that changes a loss, a weight or a score, so the
runner replaces it with modules and methods that do nothing. `install()` must run before the
original is imported; `patch_original()` after. Each replacement is listed in PATCHES, which the
runner writes into its output so that a reader knows exactly what was not the original's code.
"""
import sys
import types

import numpy as np
import pandas

PATCHES = [
    "modules visdom, ray, ray.tune, seaborn, matplotlib, matplotlib.pyplot and imageio are stand-ins "
    "whose functions do nothing (plots, Visdom windows, Ray reports)",
    "Visualizer's Visdom methods (plot_current_errors, plot_current_AUC, plot_performance, "
    "display_current_images, display_real_fake_airplane) do nothing: without --display they would "
    "crash on the missing Visdom client",
    "test()'s histogram DataFrame gets numpy arrays instead of torch tensors: pandas 3 takes a tensor for "
    "a scalar in DataFrame.from_dict and would fail after the AUC is computed",
]

# The Visualizer methods that use the Visdom client, which exists only with --display.
VISDOM_METHODS = ("plot_current_errors", "plot_current_AUC", "plot_performance",
                  "display_current_images", "display_real_fake_airplane")


def _nothing(*args, **kwargs):
    return None


class _InertModule(types.ModuleType):
    """A module whose every public attribute is a function that does nothing."""

    def __getattr__(self, name):
        if name.startswith("__"):  # the import machinery probes dunders: answer as a plain module does
            raise AttributeError(name)
        return _nothing


def _module(name: str, **attributes) -> types.ModuleType:
    module = _InertModule(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def install() -> None:
    """Put the stand-in modules into sys.modules (before the original is imported)."""
    _module("visdom", Visdom=_nothing)
    _module("ray", tune=_module("ray.tune"))
    _module("seaborn")
    _module("imageio")
    # test() unpacks `fig, ax = plt.subplots(...)`.
    _module("matplotlib", pyplot=_module("matplotlib.pyplot", subplots=lambda *a, **k: (None, None)))


def _from_dict_of_tensors(data: dict) -> pandas.DataFrame:
    return pandas.DataFrame({key: np.asarray(value) for key, value in data.items()})


def patch_original() -> None:
    """Make the imported original run without a display and under pandas 3 (see PATCHES)."""
    from lib.visualizer import Visualizer

    from lib.models import skipganomaly, w_skipganomaly  # the original's package named lib

    for name in VISDOM_METHODS:
        setattr(Visualizer, name, _nothing)
    tolerant_pandas = types.SimpleNamespace(DataFrame=types.SimpleNamespace(from_dict=_from_dict_of_tensors))
    for module in (skipganomaly, w_skipganomaly):
        module.pd = tolerant_pandas
