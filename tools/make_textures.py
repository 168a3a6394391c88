"""Small inspection categories in the MVTec AD layout, drawn from a seed: test data and a study set.

    python -m tools.make_textures --out DIR [--seed S] [--size N] [--train N] [--test N]

Writes DIR/<category>/train/good/, test/good/, test/<defect>/ and ground_truth/<defect>/<name>_mask.png
(0 or 255) for two textures and one object: `weave` (colour), `grain` (grey) and `washer` (a colour ring
on a dark background). Each defect is drawn as a set of pixels first and only those pixels are changed,
so a mask is exactly the pixels a defect altered. Same seed and flags, same bytes. The images are synthetic
(NumPy + Pillow): they exercise the layout and the pixel metrics, and say nothing about MVTec AD itself.
"""
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lib.errors import OneLineParser, UserError, run_cli
from lib.runs.folder import refuse_inside_run

MAX_SIZE = 2048  # pixels a side (MVTec AD's are 700 to 1024): larger would need gigabytes to draw
# category -> (its defects, whether it is grey)
CATEGORIES = {"weave": (("scratch", "spot", "crack"), False),
              "grain": (("scratch", "spot", "crack"), True),
              "washer": (("missing", "colour", "scratch"), False)}


def _grid(size: int):
    return np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")


def weave(rng, size: int) -> np.ndarray:
    """(size, size, 3) in [0, 1]: two crossed gratings, orientation and phase jittered, a tint, noise."""
    y, x = _grid(size)
    angle, period = rng.uniform(-0.1, 0.1), size / 8
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    phase = rng.uniform(0, 2 * np.pi, 2)
    across = np.sign(np.sin(2 * np.pi * v / period + phase[1]))  # the crossing threads flip the grating
    pattern = 0.5 + 0.22 * np.sin(2 * np.pi * u / period + phase[0]) * across
    tint = np.array([0.55, 0.7, 0.9]) + rng.uniform(-0.03, 0.03, 3)
    return np.clip(pattern[..., None] * tint / 0.7 + rng.normal(0, 0.03, (size, size, 3)), 0, 1)


def grain(rng, size: int) -> np.ndarray:
    """(size, size, 1) in [0, 1]: wood-like rings bent by slow waves, and noise."""
    y, x = _grid(size)
    bend = sum(rng.uniform(1, 3) * np.sin(2 * np.pi * (y * rng.uniform(0.5, 2) / size + rng.uniform(0, 1)))
               for _ in range(3))
    values = 0.45 + 0.2 * np.sin(2 * np.pi * (x + bend) / (size / 6) + rng.uniform(0, 2 * np.pi))
    return np.clip(values + rng.normal(0, 0.03, (size, size)), 0, 1)[..., None]


def washer(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """((size, size, 3) in [0, 1], the ring's pixels): a shaded ring, its centre jittered, on dark noise."""
    y, x = _grid(size)
    cy, cx = size / 2 + rng.uniform(-size / 32, size / 32, 2)
    r = np.hypot(y - cy, x - cx)
    ring = (r >= 0.16 * size) & (r <= 0.38 * size)
    shade = 0.75 + 0.15 * (x - y) / size
    image = np.full((size, size, 3), 0.12) + rng.normal(0, 0.02, (size, size, 3))
    image[ring] = shade[ring, None] * np.array([0.85, 0.85, 0.9]) + rng.normal(0, 0.02, (int(ring.sum()), 3))
    return np.clip(image, 0, 1), ring


def _segment(size: int, start, end, width: float) -> np.ndarray:
    """Pixels within `width` / 2 of the segment start-end."""
    y, x = _grid(size)
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((y - y0) * dy + (x - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
    return np.hypot(y - y0 - t * dy, x - x0 - t * dx) <= width / 2


def scratch(rng, size: int) -> np.ndarray:
    start = rng.uniform(0.2 * size, 0.8 * size, 2)
    angle, length = rng.uniform(0, np.pi), rng.uniform(0.25, 0.5) * size
    return _segment(size, start, start + length * np.array([np.sin(angle), np.cos(angle)]), 1.5)


def spot(rng, size: int) -> np.ndarray:
    y, x = _grid(size)
    cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
    ry, rx = rng.uniform(0.04, 0.09, 2) * size
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def crack(rng, size: int) -> np.ndarray:
    """A random walk of short segments: a jagged line."""
    mask = np.zeros((size, size), bool)
    point, angle = rng.uniform(0.3 * size, 0.7 * size, 2), rng.uniform(0, 2 * np.pi)
    for _ in range(6):
        angle += rng.uniform(-0.8, 0.8)
        step = point + rng.uniform(0.05, 0.1) * size * np.array([np.sin(angle), np.cos(angle)])
        mask |= _segment(size, point, step, 1.2)
        point = step
    return mask


def _defect_pixels(rng, defect: str, size: int) -> np.ndarray:
    if defect == "missing":  # a wedge around the image's centre
        y, x = _grid(size)
        start = rng.uniform(-np.pi, np.pi)
        return np.mod(np.arctan2(y - size / 2, x - size / 2) - start, 2 * np.pi) < rng.uniform(0.6, 1.2)
    return {"scratch": scratch, "spot": spot, "crack": crack, "colour": spot}[defect](rng, size)


def defective(rng, category: str, defect: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) of one defective image: the defect's pixels, and only they, changed."""
    if category == "washer":
        image, ring = washer(rng, size)
    else:
        image, ring = (weave if category == "weave" else grain)(rng, size), np.ones((size, size), bool)
    mask = np.zeros_like(ring)
    while mask.sum() < 4:  # a defect may miss the washer's ring (or be a speck): drawn again until it shows
        mask = ring & _defect_pixels(rng, defect, size)
    if defect == "missing":  # a wedge of the ring broken off: background where it was
        image[mask] = 0.12
    elif defect == "colour":  # a patch of the ring stained orange
        image[mask] = image[mask] * np.array([1.0, 0.55, 0.25])
    else:  # a scratch is bright, a crack dark, a spot rust-coloured (light in grey): far from the normal values
        colour = {"scratch": [1.0, 1.0, 0.95], "crack": [0.0, 0.0, 0.0], "spot": [0.95, 0.3, 0.1]}[defect]
        image[mask] = colour if image.shape[-1] == 3 else colour[0]
    return image, mask


def normal(rng, category: str, size: int) -> np.ndarray:
    return washer(rng, size)[0] if category == "washer" else (weave if category == "weave" else grain)(rng, size)


def save_png(array: np.ndarray, path: Path) -> None:
    """Pillow writes no time stamp into a PNG: the same array gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels).save(path, "PNG")


def make_category(root: Path, category: str, seed: int, size: int, n_train: int, n_test: int) -> None:
    """One category: `n_train` normal training images, `n_test` test images (a third normal, the rest
    shared among the defects)."""
    defects, _ = CATEGORIES[category]
    rng = np.random.default_rng([seed, list(CATEGORIES).index(category)])
    for i in range(n_train):
        save_png(normal(rng, category, size), root / category / "train" / "good" / f"{i:03d}.png")
    n_good = max(1, n_test // 3)
    for i in range(n_good):
        save_png(normal(rng, category, size), root / category / "test" / "good" / f"{i:03d}.png")
    for k, defect in enumerate(defects):
        for i in range((n_test - n_good) // len(defects) + (k < (n_test - n_good) % len(defects))):
            image, mask = defective(rng, category, defect, size)
            save_png(image, root / category / "test" / defect / f"{i:03d}.png")
            save_png(mask[..., None].astype(np.float64),
                     root / category / "ground_truth" / defect / f"{i:03d}_mask.png")


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m tools.make_textures", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to create the categories in (must not hold them yet)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same bytes")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--train", type=int, default=100, help="normal training images per category")
    p.add_argument("--test", type=int, default=40, help="test images per category (a third of them normal)")
    args = p.parse_args(argv)
    if not 16 <= args.size <= MAX_SIZE:
        raise UserError(f"--size {args.size}: give 16 (the least a defect can be drawn at) to {MAX_SIZE} pixels")
    if args.train < 2 or args.test < 1 + len(CATEGORIES["weave"][0]):
        raise UserError(f"--train {args.train} --test {args.test}: give at least 2 training images and "
                        f"{1 + len(CATEGORIES['weave'][0])} test images (one normal, one of each defect)")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed {args.seed}: give a seed in [0, 2^63)")
    out = Path(args.out)
    refuse_inside_run(out)  # a dataset in a run folder is one train.py refuses, its images mixed with the run's
    taken = [c for c in CATEGORIES if (out / c).exists()]
    if out.exists() and not out.is_dir() or taken:
        raise UserError(f"{out / taken[0] if taken else out} already exists: give another --out, or remove it")
    made = [p for p in (out, *out.parents) if not p.exists()]  # what to remove if nothing is written
    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for category in CATEGORIES:  # each written under a hidden name, renamed when whole: never half a category
            staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{category}-"))
            make_category(staging, category, args.seed, args.size, args.train, args.test)
            os.rename(staging / category, out / category)
            shutil.rmtree(staging)
    except OSError as err:  # a full disk, a path through a file, no permission: one line, the file named
        raise UserError(f"cannot write {err.filename or out} ({err.strerror}); give another --out") from None
    finally:  # an error or Ctrl-C: the category being written goes, and folders this made that stay empty
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
    print(f"{', '.join(CATEGORIES)} in {out} (MVTec AD layout): train with "
          f"--dataset mvtec --dataroot {out} --category weave")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
