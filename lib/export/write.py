"""Exporting a run: its scoring pass as ONNX (or OpenVINO IR), its score's statistics and a manifest, into a new folder.

The checkpoint is loaded and checked as predict.py loads it, and its networks are rebuilt plainly (no speed
layer, fp32, eval mode) for lib/export/graph.py to trace. The files are written into a hidden folder beside
--out, checked by scoring a batch with the runtime against PyTorch, and only then renamed to --out: a refused
or failed export leaves nothing behind.
"""
import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import fast, options
from ..errors import UserError
from ..models import build_model
from ..runs.adopted import speed_record
from ..runs.folder import enclosing_run, is_run_folder
from ..training import checkpoint, checkpoint_fit
from ..training.schedules import make_schedulers
from . import RUNTIMES, manifest as manifests
from .graph import graphs
from .runtime import load_export, require, version

TOLERANCE = 1e-4  # the largest difference from PyTorch's outputs allowed, relative to their magnitude
CHECK_IMAGES = 3  # random images the runtime scores against PyTorch before the export is published


def check_out(out: Path) -> None:
    """Refuse an --out that holds anything, is a link or a file, or lies in or over a run folder."""
    if out.is_symlink():
        raise UserError(f"--out '{out}' is a symbolic link: choose a new folder (an export is never written through "
                        "one)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file: choose a new folder for the export")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out '{out}' already holds files: choose a new or empty folder (an export never "
                        "replaces files; remove the old export first)")
    run = enclosing_run(out) or (out if is_run_folder(out) else None)
    if run is not None:
        raise UserError(f"--out '{out}' is inside the run folder '{run}': choose a folder outside it (a run "
                        "folder holds only what train.py and predict.py write there)")


def load_plain(weights):
    """(checkpoint, its model rebuilt without the speed layer in eval mode on the CPU, its options)."""
    ckpt = checkpoint.load(weights, "best")
    opt = argparse.Namespace(**{**options.defaults(), **ckpt["options"]})
    checkpoint_fit.check_states(ckpt, opt, make_schedulers)
    model = build_model(opt, torch.device("cpu"), fast=False, amp=False, compile=False)
    model.load_state_dict(ckpt["state"], weights_only=True)
    model.eval()
    return ckpt, model, opt


def run_precision(ckpt, model, opt) -> str:
    """The precision predict.py scores this run in with PyTorch on this machine's CPU (an export: fp32 always)."""
    speed = fast.settings(opt, torch.device("cpu"), recorded=speed_record(ckpt), bf16_safe=model.bf16_safe(opt))
    return "bf16" if speed.amp else "fp32"


def versions(runtime: str) -> dict:
    import onnx
    import onnxscript
    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "numpy": np.__version__,
            runtime: version(runtime)}


def to_openvino(folder: Path, name: str) -> None:
    """Replace `folder/name` (.onnx) by its OpenVINO IR (.xml and .bin), weights kept in fp32."""
    ov = require("openvino", "--format openvino")
    onnx_file = folder / name
    try:
        converted = ov.convert_model(str(onnx_file))
    except Exception as err:  # OpenVINO's reader raises its own types for an operation it lacks
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"OpenVINO cannot read the graph '{name}' ({first}): export with --format onnx") from None
    ov.save_model(converted, str(onnx_file.with_suffix(".xml")), compress_to_fp16=False)
    onnx_file.unlink()


def check_scores(folder: Path, model, example: torch.Tensor) -> None:
    """Score `example` with the written export and with PyTorch; UserError where any output differs."""
    exported, _, _ = load_export(folder)
    want = {k: v.float().numpy() for k, v in model.score_parts(example).items()}
    got = {k: v.numpy() for k, v in exported.score_parts(example).items()}
    want["score"], got["score"] = (np.asarray(model.scoring(want)), np.asarray(exported.scoring(got)))
    for name, values in want.items():
        scale = max(float(np.abs(values).max()), 1e-12)
        off = float(np.abs(got[name] - values).max()) / scale
        if not off <= TOLERANCE:
            raise UserError(f"the exported graph's '{name}' differs from PyTorch's by {off:.2g} of its size (more "
                            f"than {TOLERANCE:g}): this model cannot be exported faithfully; score with the run itself")


def missing_parents(out: Path) -> list[Path]:
    missing = []
    for folder in out.parents:
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def describe(ckpt, model, opt, fmt: str, graph_files: list[str], about: dict) -> dict:
    """The manifest's fields (manifest.write adds the format and the files' hashes)."""
    runtime, suffix = RUNTIMES[fmt], ".xml" if fmt == "openvino" else ".onnx"
    return {
        "runtime": runtime, "model": opt.model, "score": model.scoring.name,
        "graphs": {Path(name).stem: Path(name).stem + suffix for name in graph_files},
        "outputs": about["outputs"], "shapes": about["shapes"], "located": about["located"],
        "networks": about["networks"], "stats": manifests.STATS, "opset": about["opset"],
        "image": {"isize": opt.isize, "nc": opt.nc, "mean_std": list(model.pixel_mean_std),
                  "how": "shorter side scaled to isize, centre-cropped, then (pixel/255 - mean)/std"},
        "precision": {"export": "fp32", "run": run_precision(ckpt, model, opt)},
        "threshold": ckpt.get("threshold") or {}, "epoch": ckpt["epoch"], "options": ckpt["options"],
        "checkpoint": {"path": str(Path(ckpt["path"]).resolve()), "sha256": manifests.sha256(Path(ckpt["path"]))},
        "versions": versions(runtime),
    }


def export(weights, fmt: str, out: Path) -> dict:
    """Write the export of the run (or checkpoint) `weights` into `out`; returns its manifest."""
    runtime = RUNTIMES[fmt]
    check_out(out)
    for module in ("onnx", "onnxscript", runtime):  # torch.onnx needs the first two
        require(module, f"export.py --format {fmt}")
    ckpt, model, opt = load_plain(weights)
    example = torch.rand(CHECK_IMAGES, opt.nc, opt.isize, opt.isize, generator=torch.Generator().manual_seed(0)) * 2 - 1
    files, about = graphs(model, example)
    created = missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.exporting-"))
    except OSError as err:
        _remove_empty(created)
        raise UserError(f"cannot write into '{out.parent}' ({err.strerror}): choose another --out") from None
    try:
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
                if fmt == "openvino":
                    to_openvino(staging, name)
            np.savez(staging / manifests.STATS, **manifests.stats_arrays(model.scoring))
            manifest = manifests.write(staging, describe(ckpt, model, opt, fmt, list(files), about))
        except FileNotFoundError as err:  # the run (its checkpoint, hashed here) deleted or moved meanwhile
            raise UserError(f"'{err.filename}' went away while the export was written (deleted or moved): export "
                            "again from where the run is now") from None
        except OSError as err:  # a full disk, a quota: nothing of the export stays
            raise UserError(f"cannot write the export beside '{out}' ({err.strerror}): free some space or choose "
                            "another --out") from None
        check_scores(staging, model, example)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's folder is private; an export is an ordinary folder
        try:
            os.rename(staging, out)  # onto a missing or empty folder: whole, at once
        except OSError as err:
            raise UserError(f"cannot create --out '{out}' ({err.strerror}): something was put there meanwhile; "
                            "choose a new folder") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return manifest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass
