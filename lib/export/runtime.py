"""Scoring with an export folder: its graphs run by onnxruntime or the OpenVINO runtime, as a model predict.py takes.

`ExportedModel` has what predict.py's scoring loop (lib/predict/score.py, lib/scoring/evaluate.py) asks of a
model: `scoring` (the run's score with its fitted statistics, applied in numpy by lib/scoring/functions.py),
`pixel_mean_std`, `score_parts` and `embedding_by_location` (for the maps), so an image goes through the
same reading, normalisation, score function, threshold and strips as with the checkpoint; only the
networks' pass is the runtime's. The runtimes are optional packages, imported only here and only when used.
"""
import argparse
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import options
from ..errors import UserError
from . import manifest as manifests
from .graph import INPUT, LOCATED

EXTRA = "pip install 'skip-wganomaly[export]' (in a checkout: pip install -r requirements.txt)"
PIP_NAMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx": "onnx", "onnxscript": "onnxscript"}


def require(module: str, purpose: str):
    """The optional package `module`, or a UserError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{purpose} needs the package {PIP_NAMES.get(module, module)}, which is not installed "
                        f"({err.name or module}): {EXTRA}") from None


def is_export(weights) -> bool:
    """Whether --weights names an export folder (export.py's manifest.json in it), not a run or a checkpoint."""
    path = Path(weights)
    return path.is_dir() and (path / manifests.MANIFEST).exists()


def version(runtime: str) -> str:
    """The runtime's version as its package is numbered (OpenVINO's own string adds a build tag)."""
    return require(runtime, "scoring with an export").__version__.split("-")[0]


def _cannot_load(runtime: str, file: Path, err: Exception, written: dict) -> UserError:
    # onnxruntime's messages start with the C++ source line and function that raised: not the user's business.
    # OpenVINO's, with lines saying where it was raised and which check failed, before the reason.
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : Load model from .*? failed: ?", "", str(err).strip())
    text = re.sub(r"\S*onnxruntime_src\S*:\d+ .*?\) ", "", text)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("Exception from", "Check '"))]
    first = (lines or [type(err).__name__])[0][:240]
    now, was = version(runtime), written.get(runtime)
    if was and was != now:
        fix = (f"it was written for {runtime} {was}: install that version (pip install -r requirements.txt), or "
               "export the run again in this environment")
    else:
        fix = "the file is damaged or not a graph this runtime reads: export the run again (python export.py)"
    return UserError(f"{runtime} {now} cannot load '{file}' ({first}); {fix}")


def _check_graph(file: Path, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]], want: dict,
                 image) -> None:
    """UserError unless the graph takes one batch of images of this export's size and gives the outputs `want`
    ({name: shape but the batch}), in that order, with those shapes (where the graph states a size)."""
    shape = inputs[0][1] if len(inputs) == 1 and inputs[0][0] == INPUT else None
    fits = [name for name, _ in outputs] == list(want) and all(
        len(dims) == len(want[name]) + 1 and all(not isinstance(d, int) or d == w for d, w in zip(dims[1:], want[name]))
        for name, dims in outputs)
    if shape is None or len(shape) != 4 or list(shape[1:]) != [image["nc"], image["isize"], image["isize"]] or not fits:
        raise UserError(f"'{file}' is not this export's graph (it takes {[name for name, _ in inputs]}, gives "
                        f"{[f'{n} {d}' for n, d in outputs][:6]}; the manifest says {INPUT} -> "
                        f"{[f'{n} {d}' for n, d in want.items()]}): export the run again")


class OnnxGraph:
    """One graph run by onnxruntime on the CPU: a float32 batch in, its named outputs out."""

    def __init__(self, file: Path, want: list[str], image: dict, written: dict):
        ort = require("onnxruntime", "scoring with an ONNX export")
        settings = ort.SessionOptions()
        settings.log_severity_level = 3  # errors only: its warnings would break the one-line console
        try:
            self.session = ort.InferenceSession(str(file), settings, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for a bad file and for an unknown opset
            raise _cannot_load("onnxruntime", file, err, written) from None
        inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        _check_graph(file, inputs, [(o.name, o.shape) for o in self.session.get_outputs()], want, image)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {INPUT: images})))


class OpenVinoGraph:
    """One graph (an OpenVINO IR .xml with its .bin) compiled for the CPU in fp32."""

    def __init__(self, file: Path, want: list[str], image: dict, written: dict):
        ov = require("openvino", "scoring with an OpenVINO export")
        core = ov.Core()
        try:
            # fp32: on a CPU with bf16 the plugin would otherwise compute in bf16, and scores would drift.
            self.compiled = core.compile_model(core.read_model(str(file)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as err:
            raise _cannot_load("openvino", file, err, written) from None
        def described(port):
            return port.get_any_name(), [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        inputs = [described(i) for i in self.compiled.inputs]
        self.outputs = [o.get_any_name() for o in self.compiled.outputs]
        _check_graph(file, inputs, [described(o) for o in self.compiled.outputs], want, image)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self.compiled({INPUT: images})
        return {name: np.asarray(result[port]) for name, port in zip(self.outputs, self.compiled.outputs)}


GRAPHS = {"onnxruntime": OnnxGraph, "openvino": OpenVinoGraph}


@dataclass(frozen=True)
class Notice:
    """predict.py prints a model's `speed.notice`: here, where the export's numbers may differ from the run's."""
    notice: str = ""


class ExportedModel:
    """An export as predict.py scores with it (see the module docstring); always in eval mode, on the CPU."""

    def __init__(self, folder: Path, manifest: dict):
        graph = GRAPHS[manifest["runtime"]]
        written, image = manifest.get("versions", {}), manifest["image"]
        shapes = manifest["shapes"]
        self.measure = graph(folder / manifest["graphs"]["measure"], {o: shapes[o] for o in manifest["outputs"]},
                             image, written)
        self.located_measurement = manifest["located"]
        self.located = (graph(folder / manifest["graphs"]["located"], {LOCATED: shapes.get(LOCATED)}, image, written)
                        if self.located_measurement else None)
        self.scoring = manifests.read_stats(folder / manifest["stats"], manifest["score"], folder)
        # A distance's statistics (bank, mean, precision) are of the graph's embedding: of another size they are
        # another export's (resealed), and scoring would fail with NumPy's shape error.
        sizes = {int(np.prod(shapes[n])) for n in manifest["outputs"][1:] if n in shapes and len(shapes[n]) >= 1}
        for key, value in self.scoring.stats.items():
            if isinstance(value, torch.Tensor) and value.ndim and sizes and value.shape[-1] not in sizes:
                raise manifests.damaged(folder, f"its statistic '{key}' is of vectors of {value.shape[-1]} values, "
                                                f"and its graph measures {', '.join(map(str, sorted(sizes)))}")
        self.pixel_mean_std = tuple(image["mean_std"])
        self.name = manifest["model"]
        run_precision = manifest.get("precision", {}).get("run", "fp32")
        self.speed = Notice("" if run_precision == "fp32" else
                            f"this run scores in {run_precision} with PyTorch; its export computes in fp32, so its "
                            "scores differ from the run's own in about the third digit")

    @staticmethod
    def _array(images: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(images.detach().float().cpu().numpy())

    def score_parts(self, images: torch.Tensor, train_mode: bool = False, needs=None,
                    reconstruction: bool = True) -> dict[str, torch.Tensor]:
        """The reconstruction and the measurements of a float batch (`train_mode`: an export has none, it
        scores in eval mode; `reconstruction`: its graph makes G(x) whether asked or not)."""
        return {name: torch.from_numpy(values) for name, values in self.measure(self._array(images)).items()}

    def embedding_by_location(self, images: torch.Tensor, measurement: str) -> torch.Tensor | None:
        """As AnomalyModel's: the embedding split over locations, where the export holds that graph."""
        if self.located is None or measurement != self.located_measurement:
            return None
        return torch.from_numpy(self.located(self._array(images))[LOCATED])


def load_export(folder, device=None):
    """(the exported model, what predict.py reads of a checkpoint, the run's options) from an export folder."""
    folder = Path(folder)
    manifest = manifests.read(folder)
    model = ExportedModel(folder, manifest)
    opt = argparse.Namespace(**{**options.defaults(), **manifest["options"]})
    runtime = manifest["runtime"]
    about = {"path": f"{folder} ({runtime} {version(runtime)}, CPU)", "epoch": manifest["epoch"],
             "threshold": manifest["threshold"]}
    return model, about, opt
