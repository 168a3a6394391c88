"""Scoring new images with a trained Skip-GANomaly, Skip-WGANomaly or GANomaly checkpoint.

Owns: finding the image files to score, rebuilding a model from a checkpoint, choosing the
decision threshold, and scoring in batches with the training loop's own evaluation
(lib/scoring/evaluate.py). The strips are drawn by lib/predict/maps.py, the output folder is
lib/predict/out.py's, and `predict.py` is the command line.
"""
import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import options
from ..data.folders import image_files, read_image
from ..errors import UserError
from ..models import build_model
from ..resources import check_fits, network_bytes
from ..runs.adopted import speed_record
from ..scoring.evaluate import evaluate
from ..scoring.located import score_map
from ..training import checkpoint, checkpoint_fit
from ..training.schedules import make_schedulers
from .maps import caption, captioned, map_name, save_png, strip
from .out import MAPS, PREDICTIONS


@dataclass
class Prediction:
    """Rows of predictions.csv and the files that could not be scored."""
    rows: list[dict] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def find_images(path: Path, exclude: Path | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files at `path` (a file, or a folder walked recursively) and the other files skipped.

    Files are sorted as the training data module sorts them; hidden files and folders are
    ignored, as in training; files inside `exclude` (the output folder) are left out, and so
    are the strips of earlier predictions (a maps/ beside a predictions.csv): they are not data.
    """
    if not path.exists():
        raise UserError(f"--path '{path}' does not exist; give an image file or a folder of images")
    if path.is_file():
        return [path], []
    images = image_files(path)
    known = set(images)
    skipped = [(str(p), f"not an image file type ({p.suffix or 'no extension'})")
               for p in sorted(path.rglob("*"))
               if p.is_file() and p not in known
               and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    outputs = [(p.parent / MAPS).resolve() for p in path.rglob(PREDICTIONS)]
    outputs += [exclude.resolve()] if exclude is not None else []
    if outputs:
        def kept(file) -> bool:
            file = Path(file).resolve()
            return not any(file.is_relative_to(folder) for folder in outputs)
        images = [p for p in images if kept(p)]
        skipped = [s for s in skipped if kept(s[0])]
    if not images:
        raise UserError(f"no images found in '{path}' (searched its subfolders too for .png, .jpg, "
                        ".bmp, .tif and the other types PIL reads)")
    return images, skipped


def load_model(weights, device: torch.device):
    """(model ready to score, its checkpoint, its options) from a run folder or a .pt file.

    The whole checkpoint is checked, its options as the command line's, before the model is built.
    """
    ckpt = checkpoint.load(weights, "best")
    opt = argparse.Namespace(**{**options.defaults(), **ckpt["options"]})
    checkpoint_fit.check_states(ckpt, opt, make_schedulers)
    model = build_model(opt, device, recorded=speed_record(ckpt))
    model.load_state_dict(ckpt["state"], weights_only=True)
    # predict() measures in eval mode, for runs that scored in training mode (--original) too: an
    # image's score must not depend on the images scored with it (and one image has no batch).
    return model, ckpt, opt


def check_batch_memory(opt, batchsize: int, device) -> None:
    """Refuse a batch whose scoring cannot fit in memory, before any of it is allocated."""
    template = checkpoint_fit.networks_template(opt)
    needed = network_bytes(list(template.networks.values()), (batchsize, opt.nc, opt.isize, opt.isize),
                           training=False)
    check_fits(needed, f"scoring {batchsize} images of {opt.isize}x{opt.isize} at once", "lower --batchsize",
               device)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def choose_threshold(stored: dict, override: str | None) -> tuple[float, list[str]]:
    """The decision threshold, and lines saying how it was chosen and what else is stored.

    `override` is None or "normal" (the threshold chosen from normal images at training),
    "f1" (the F1-optimal threshold on the labelled test set) or a number.
    """
    stored = stored or {}
    candidates = {
        "normal": (stored.get("value"), stored.get("method", "chosen from normal images at training")),
        "f1": (stored.get("f1_optimal_test"), "F1-optimal on the labelled test set (optimistic: "
                                               "it saw the test labels)"),
    }
    choice = "normal" if override is None else override.strip()
    if choice in candidates:
        value, how = candidates[choice]
        if not _finite(value):
            raise UserError({"normal": "the checkpoint stores no threshold (training stopped before "
                                       "its first evaluation?); pass --threshold with a number",
                             "f1": "the checkpoint stores no F1-optimal threshold (its test set "
                                   "lacked a class); use --threshold normal or a number"}[choice])
        how = f"stored at training: {how}"
    else:
        try:
            if "_" in choice:  # Python reads "0.5_0" as 0.5: a typo, refused as train.py's numbers are
                raise ValueError(choice)
            value = float(choice)
        except ValueError:
            raise UserError(f"--threshold {choice!r}: give a number, 'normal' or 'f1'") from None
        if not math.isfinite(value):
            raise UserError(f"--threshold must be a finite number, got {choice!r}")
        how = "given by --threshold"
    lines = [f"threshold: {value:.6g}, {how}"]
    lines += [f"  also stored: {v:.6g}, {text} (--threshold {key})"
              for key, (v, text) in candidates.items() if key != choice and _finite(v)]
    return float(value), lines


def _read_batch(paths, nc, isize, unreadable):
    """uint8 (N, C, H, W) images of the readable `paths` (resized as in training) and those paths."""
    arrays, kept = [], []
    for path in paths:
        try:
            array, _ = read_image(path, nc=nc, isize=isize)
        except UserError as err:
            unreadable.append((str(path), str(err.__cause__ or err).splitlines()[0][:200]))
            continue
        arrays.append(array)
        kept.append(path)
    if not arrays:
        return None, kept
    images = np.stack(arrays)
    images = images[:, None] if nc == 1 else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), kept


@torch.no_grad()
def predict(model, opt, files, root: Path, threshold: float, batchsize: int, device,
            maps_dir: Path | None, listed_as: Path | None = None) -> Prediction:
    """Score `files` in batches; writes one strip per image into `maps_dir` unless it is None.

    A row holds the image's path, every part of its score (as lib.scoring.evaluate.evaluate gives
    them), the decision and the strip's path below `listed_as` (default `maps_dir`), where
    it will be found.
    """
    result = Prediction()
    drawn = {}  # the batch's inputs, reconstructions and score maps, from the pass that scores it

    def keep(real, parts):
        drawn.update(real=real.cpu(), fake=parts["fake"].float().cpu(),
                     map=score_map(model, real, parts["fake"], threshold))
    bar = tqdm(total=len(files), desc="scoring", unit="img", dynamic_ncols=True, disable=None)
    for start in range(0, len(files), batchsize):
        images, kept = _read_batch(files[start:start + batchsize], opt.nc, opt.isize, result.unreadable)
        bar.update(min(batchsize, len(files) - start))
        if images is None:
            continue
        parts = evaluate(model, images, len(images), device, on_batch=keep if maps_dir is not None else None)
        for i, path in enumerate(kept):
            score = float(parts["score"][i])
            decision = "abnormal" if score >= threshold else "normal"
            row = {"path": str(path), **{name: float(values[i]) for name, values in parts.items() if values.ndim == 1},
                   "decision": decision, "map": ""}
            if maps_dir is not None:
                name, shown = map_name(path, root), drawn["map"]
                picture = strip(drawn["real"][i], drawn["fake"][i], shown.values[i] / shown.full)
                lines = caption(str(path.relative_to(root)) if path != root else path.name, score, threshold,
                                decision, model.scoring.name, shown)
                save_png(maps_dir / name, captioned(picture, lines, opt.isize, shown.short))
                row["map"] = str((listed_as or maps_dir) / name)
            result.rows.append(row)
    bar.close()
    return result
