"""A model's scoring pass as ONNX graphs: what `predict.py` computes with the networks, traced once.

`measure.onnx` maps a float batch (N, C, H, W, normalised as `lib.images.to_float` does) to the
reconstruction "fake" and the measurements the run's score needs, by running the model's own
`outputs` (lib/models/base.py): only the networks that pass touches are in it. `located.onnx`, for a
distance score, is the model's `embedding_by_location`, which predict.py's maps split the score with.
The batch size stays free. Everything after the graphs (the score function and its statistics) stays
in numpy: lib/export/runtime.py applies the run's own `Scoring` to the graph's outputs.
"""
import contextlib
import io
import warnings

import torch
from torch import nn

from ..errors import UserError
from ..scoring.located import DISTANCES
from ..scoring.measures import FAKE

INPUT = "images"
LOCATED = "parts"  # located.onnx's output: the embedding split over the locations of its feature map
OPSET = 18  # OpenVINO's ONNX reader takes it; onnxruntime since 1.14


class Measure(nn.Module):
    """`model.outputs(images, needs)` as a module: the reconstruction, then the measurements, in `names`' order.
    The networks are registered as submodules so that the exporter stores their weights as initialisers."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names
        self.networks = nn.ModuleDict(model.networks)

    def forward(self, images):
        parts = self.model.outputs(images, frozenset([FAKE, *self.names]))  # FAKE: the strips draw G(x)
        return tuple(parts[name].float() for name in [FAKE, *self.names])


class Located(nn.Module):
    """`model.embedding_by_location(images, measurement)`: (N, D, h, w) parts that sum to the embedding."""

    def __init__(self, model, measurement: str):
        super().__init__()
        self.model, self.measurement = model, measurement
        self.networks = nn.ModuleDict(model.networks)

    def forward(self, images):
        return self.model.embedding_by_location(images, self.measurement).float()


def networks_used(model, images: torch.Tensor) -> list[str]:
    """The names of the model's networks that its scoring pass runs (what the graph holds)."""
    ran, hooks = set(), []
    for name, net in model.networks.items():  # every layer: a model may call a network's other methods than forward
        hooks += [layer.register_forward_hook(lambda module, args, out, name=name: ran.add(name))
                  for layer in net.modules()]
    try:
        with torch.no_grad():
            Measure(model, sorted(model.scoring.needs)).eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return [name for name in model.networks if name in ran]


def located_measurement(model, images: torch.Tensor) -> str | None:
    """The embedding the run's score splits over locations for its maps (None: no such map for this score or model)."""
    measurement = DISTANCES.get(model.scoring.name)
    if measurement is None:
        return None
    with torch.no_grad():
        return measurement if model.embedding_by_location(images, measurement) is not None else None


def to_onnx(module: nn.Module, example: torch.Tensor, outputs: list[str], what: str) -> bytes:
    """The ONNX bytes of `module` (eval mode, fp32) with a free batch size; a UserError naming `what` where the
    exporter cannot take it."""
    module.eval()
    batch = torch.export.Dim.DYNAMIC
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals; a failure raises
            # Traced by dynamo (strict): it keeps the batch size symbolic where the scoring code takes len(images).
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=True)
            # chunk/split by a symbolic size would become SplitToSequence, which OpenVINO cannot read and the
            # ONNX optimiser cannot fold: decomposed into slices first.
            from torch._decomp import get_decompositions
            program = program.run_decompositions(get_decompositions([torch.ops.aten.split.Tensor]))
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[INPUT],
                                             output_names=outputs, opset_version=OPSET, optimize=True, verbose=False)
            return onnx_program.model_proto.SerializeToString()
    except Exception as err:  # the exporter raises many kinds; each means the same to the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"cannot export {what}: the ONNX exporter failed ({type(err).__name__}: {first}); score "
                        "with the run itself (predict.py --weights RUN)") from err


def graphs(model, example: torch.Tensor) -> tuple[dict[str, bytes], dict]:
    """{file name: ONNX bytes} of the scoring pass of `model` (plain, fp32, eval mode) and what the manifest
    says of them: the graphs' outputs, the networks they hold, the embedding the maps split."""
    needs = sorted(model.scoring.needs)
    what = f"--model {model.name} with the score {model.scoring.name}"
    files = {"measure.onnx": to_onnx(Measure(model, needs), example, [FAKE, *needs], what)}
    measurement = located_measurement(model, example)
    if measurement is not None:
        files["located.onnx"] = to_onnx(Located(model, measurement), example, [LOCATED], f"{what}'s maps")
    with torch.no_grad():  # each output's shape but the batch: a reader checks the graph it loads against them
        shapes = dict(zip([FAKE, *needs], (list(t.shape[1:]) for t in Measure(model, needs).eval()(example))))
        if measurement is not None:
            shapes[LOCATED] = list(Located(model, measurement)(example).shape[1:])
    about = {"outputs": [FAKE, *needs], "shapes": shapes, "networks": networks_used(model, example),
             "located": measurement, "opset": OPSET}
    return files, about
