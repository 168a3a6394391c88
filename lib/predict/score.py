"""Scoring new images with a trained Skip-GANomaly, Skip-WGANomaly or GANomaly checkpoint.

Owns: finding the image files to score, rebuilding a model from a checkpoint,
choosing the decision threshold, scoring in batches with the training loop's own
evaluation (lib/scoring/evaluate.py), drawing the input / reconstruction / error-heatmap
strips, and the output folder: earlier predictions are replaced only when asked, and
whole (the strips are written to a hidden folder that becomes maps/ once all are done); one
predict.py at a time writes into it, and never inside, over or around another run's folder.
`predict.py` is its command line.
"""
import argparse
import csv
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from lib.data.folders import image_files, read_image
from lib.errors import UserError
from lib.files import WriteFailed, atomic_write, disk_error
from lib.models import build_model
from lib.resources import check_fits, network_bytes
from lib.runs.adopted import speed_record
from lib.runs.folder import FolderLock, enclosing_run, is_run_folder, runs_inside
from lib.scoring.evaluate import evaluate
from lib.training import checkpoint
from lib.training.schedules import make_schedulers

PREDICTIONS, MAPS = "predictions.csv", "maps"  # what predict.py writes into --out
MAX_TILE = 128  # strips are enlarged (nearest neighbour) to tiles of at most this many pixels
SATURATION = 0.5  # the heatmap is fully hot at an error of half the intensity range
# Anchors of matplotlib's "inferno" colour map: dark for small errors, bright yellow for large.
_INFERNO = torch.tensor([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                         [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=torch.float32) / 255


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


def load_model(weights, defaults: dict, device: torch.device, validate=None):
    """(model ready to score, its checkpoint, its options) from a run folder or a .pt file.

    The whole checkpoint is checked (its options by `validate`, options.validate) before
    the model is built from it.
    """
    ckpt = checkpoint.load(weights, "best", defaults=defaults, validate=validate)
    opt = argparse.Namespace(**{**defaults, **ckpt["options"]})
    checkpoint.check_states(ckpt, opt, make_schedulers)
    model = build_model(opt, device, recorded=speed_record(ckpt))
    model.load_state_dict(ckpt["state"], weights_only=True)
    # predict() measures in eval mode, for runs that scored in training mode (--original) too: an
    # image's score must not depend on the images scored with it (and one image has no batch).
    return model, ckpt, opt


def check_batch_memory(opt, batchsize: int, device) -> None:
    """Refuse a batch whose scoring cannot fit in memory, before any of it is allocated."""
    template = checkpoint.networks_template(opt)
    needed = network_bytes(list(template.networks.values()), (batchsize, opt.nc, opt.isize, opt.isize),
                           training=False)
    check_fits(needed, f"scoring {batchsize} images of {opt.isize}x{opt.isize} at once", "lower --batchsize",
               device)


def check_out(out: Path, images: Path, overwrite: bool, run: Path) -> None:
    """Refuse an --out that is not a folder, holds earlier predictions (unless `overwrite`), holds
    the images, has links where predict.py writes, or lies inside, over or around a run folder
    (inside one only as `run`'s own predict/ folder, `run` being the weights' run folder)."""
    if out.is_symlink() and not out.exists():
        raise UserError(f"--out '{out}' is a symbolic link to nothing: remove it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder: choose a folder (it is created if missing)")
    if images.is_dir() and images.resolve().is_relative_to(out.resolve()):
        raise UserError(f"the images in '{images}' are inside --out '{out}': outputs would mix with them; "
                        "choose another --out")
    for name, kind in ((PREDICTIONS, Path.is_file), (MAPS, Path.is_dir)):
        target = out / name
        if target.is_symlink():
            raise UserError(f"'{target}' is a symbolic link; predict.py never writes through or replaces a link: "
                            "remove it or choose another --out")
        if target.exists() and not kind(target):
            raise UserError(f"'{target}' is not the {'file' if name == PREDICTIONS else 'folder'} predict.py "
                            "writes there: move it away or choose another --out")
    check_out_apart_from_runs(out, run)
    if not overwrite:
        refuse_earlier_predictions(out)


def check_out_apart_from_runs(out: Path, run: Path) -> None:
    """--out is no run's folder, holds none, and lies in none but as `run`'s own predict/ folder."""
    enclosing = enclosing_run(out)
    own = is_run_folder(run) and out.resolve() == (Path(run) / "predict").resolve()
    if enclosing is not None and not own:
        raise UserError(f"'{enclosing}' is a run folder and --out '{out}' would be inside it: choose an --out "
                        "outside it (inside a run, predict.py writes only to that run's own predict/, the default)")
    if is_run_folder(out):
        raise UserError(f"--out '{out}' is a run folder: choose another --out (predictions never go over a run)")
    inner = next(runs_inside(out), None)
    if inner is not None:
        raise UserError(f"--out '{out}' holds the run folder '{inner}': choose an --out that holds no run")


def refuse_earlier_predictions(out: Path) -> None:
    earlier = [name for name in (PREDICTIONS, MAPS) if (out / name).exists()]
    if earlier:
        raise UserError(f"--out '{out}' already holds earlier predictions ({' and '.join(earlier)}): pass "
                        "--overwrite to replace them, or choose another --out")


class OutFolder(FolderLock):
    """predict.py's claim on --out while it scores and writes: a second one is refused, not mixed in.
    The lock file goes with the claim, so --out ends as predictions.csv and maps/ alone."""
    BUSY_FIX = "wait for it to end, or choose another --out"
    UNWRITABLE_FIX = "choose another --out"
    KEEPS_LOCK_FILE = False


def open_out(out: Path, overwrite: bool, strips: bool) -> tuple[bool, Path | None, OutFolder]:
    """Create `out` if needed and lock it; (whether it was created, a hidden folder in it for the
    strips, the held lock: `close_out` gives it back).

    Under the lock, earlier predictions are looked for again: another predict.py may have written
    them since `check_out`. Creating the hidden folder (or a probe file) proves `out` writable
    before any scoring.
    """
    created = not out.exists()
    try:
        claim = OutFolder(out).acquire("predict.py")
    except UserError:
        if created:
            remove_if_empty(out)
        raise
    try:
        if not overwrite:
            refuse_earlier_predictions(out)
        if strips:
            return created, Path(tempfile.mkdtemp(dir=out, prefix=".maps-")), claim
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
        return created, None, claim
    except OSError as err:
        close_out(out, created, claim)
        raise UserError(f"cannot write the output folder '{out}' ({err.strerror}): choose another --out") from None
    except BaseException:
        close_out(out, created, claim)
        raise


def close_out(out: Path, created: bool, claim: OutFolder) -> None:
    """Give back `out`'s lock; an `out` this run created and left empty goes too."""
    claim.release()
    if created:
        remove_if_empty(out)


def remove_if_empty(folder: Path) -> None:
    """Leave no trace of an output folder that received nothing."""
    try:
        folder.rmdir()
    except OSError:
        pass


def publish(out: Path, staging: Path | None, rows: list[dict]) -> None:
    """Replace out's predictions.csv and maps/ with these: the strips' folder is renamed into place."""
    maps, old = out / MAPS, None
    try:
        if maps.is_dir():  # earlier strips (--overwrite): moved aside, removed once the new ones are in place
            old = Path(tempfile.mkdtemp(dir=out, prefix=".maps-old-"))
            os.rename(maps, old / MAPS)
        if staging is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; maps/ is an ordinary folder
            os.rename(staging, maps)
        text = predictions_csv(rows)

        def write(tmp):
            # A file name of bytes that are not UTF-8 is written back as those same bytes.
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write(text)
        atomic_write(out / PREDICTIONS, write)
    except OSError as err:
        earlier = f"the earlier ones, if any, are {old / MAPS if old else 'unchanged'}"
        error = disk_error(err)
        if error is not None:  # a full disk: name the file and the space left, as every write does
            path = err.path if isinstance(err, WriteFailed) else out
            raise WriteFailed(path, error, f"then run the command again; {earlier}") from None
        raise UserError(f"cannot write the outputs into '{out}' ({err.strerror}); {earlier}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def map_name(path: Path, root: Path) -> Path:
    """The strip's path below maps/: the image's path below `root` with '.png' appended.

    Keeping subfolders and the original extension keeps names unique (a/x.png, b/x.png, b/x.jpg).
    """
    relative = path.relative_to(root) if path != root else Path(path.name)
    return relative.with_name(relative.name + ".png")


def heatmap(error: torch.Tensor) -> torch.Tensor:
    """(3, H, W) colours in [0, 1] of an (H, W) error in [0, 1] through the inferno colour map."""
    position = (error / SATURATION).clamp(0, 1) * (len(_INFERNO) - 1)
    low = position.floor().long().clamp(max=len(_INFERNO) - 2)
    frac = (position - low).unsqueeze(-1)
    colours = _INFERNO[low] * (1 - frac) + _INFERNO[low + 1] * frac
    return colours.permute(2, 0, 1)


def strip(real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 strip: input | reconstruction | |x − G(x)| heatmap over the input.

    `real` and `fake` are one (C, H, W) CPU image in [-1, 1]. The heatmap uses a fixed scale
    (SATURATION), so strips of different images are comparable.
    """
    real, fake = real.float(), fake.float()
    error = (real - fake).abs().mean(0) / 2  # per pixel, as a fraction of the intensity range
    shown_real, shown_fake = (((x + 1) / 2).clamp(0, 1).expand(3, -1, -1) for x in (real, fake))
    # Small errors let the input show through; large errors cover it with the heat colour.
    alpha = (error / SATURATION).clamp(0, 1)
    overlay = shown_real * (1 - alpha) + heatmap(error) * alpha
    gap = torch.ones(3, real.shape[1], max(1, real.shape[2] // 16))
    picture = torch.cat([shown_real, gap, shown_fake, gap, overlay], dim=2)
    scale = max(1, MAX_TILE // real.shape[1])
    picture = picture.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return (picture * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(path: Path, pixels: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


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
    drawn = {}  # the batch's inputs and reconstructions, from the pass that scores it

    def keep(real, parts):
        drawn.update(real=real.cpu(), fake=parts["fake"].float().cpu())
    bar = tqdm(total=len(files), desc="scoring", unit="img", dynamic_ncols=True, disable=None)
    for start in range(0, len(files), batchsize):
        images, kept = _read_batch(files[start:start + batchsize], opt.nc, opt.isize, result.unreadable)
        bar.update(min(batchsize, len(files) - start))
        if images is None:
            continue
        parts = evaluate(model, images, len(images), device, on_batch=keep if maps_dir is not None else None)
        for i, path in enumerate(kept):
            score = float(parts["score"][i])
            row = {"path": str(path), **{name: float(values[i]) for name, values in parts.items() if values.ndim == 1},
                   "decision": "abnormal" if score >= threshold else "normal", "map": ""}
            if maps_dir is not None:
                name = map_name(path, root)
                save_png(maps_dir / name, strip(drawn["real"][i], drawn["fake"][i]))
                row["map"] = str((listed_as or maps_dir) / name)
            result.rows.append(row)
    bar.close()
    return result


def predictions_csv(rows: list[dict]) -> str:
    """predictions.csv, columns in the rows' order: scores written with every digit, so they compare exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = list(rows[0]) if rows else ["path", "score", "decision", "map"]
    writer.writerow(columns)
    for r in rows:
        writer.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    return out.getvalue()
