"""Anomaly maps: one strip per image, input | reconstruction | the score's map over the input, captioned.

The caption says which image, its score against the threshold, the decision, and what the map
shows: the score's own per-location form where it has one (lib/scoring/located.py), else the
pixel error, saying that the score has none.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import NAME_MAX, atomic_write, fit_name
from ..images import heat_overlay, labelled_columns, pixels, shown, with_caption
from ..scoring.located import PIXEL_FULL

MAX_TILE = 128  # strips are enlarged (nearest neighbour) to tiles of at most this many pixels
PANELS = ["input x", "reconstruction G(x)"]  # and the map's own label


def map_name(path: Path, root: Path) -> Path:
    """The strip's path below maps/: the image's path below `root` with '.png' appended.

    Keeping subfolders and the original extension keeps names unique (a/x.png, b/x.png, b/x.jpg).
    A name that '.png' would take past NAME_MAX is shortened instead (`short_name`).
    """
    relative = path.relative_to(root) if path != root else Path(path.name)
    name = relative.name + ".png"
    return relative.with_name(name if len(os.fsencode(name)) <= NAME_MAX else short_name(relative.name))


def short_name(name: str) -> str:
    """'<start of name>~<hash of the whole name>.png', NAME_MAX bytes at most: unique in its folder,
    and never another image's strip name, which ends '.<image type>.png', never '~<hex>.png'."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    tail = f"~{digest}.png"
    return fit_name(name, NAME_MAX - len(tail)) + tail


def strip(real: torch.Tensor, fake: torch.Tensor, heat: torch.Tensor | None = None) -> np.ndarray:
    """HxWx3 uint8 strip: input | reconstruction | `heat` (H, W, in [0, 1]) over the input.

    `real` and `fake` are one (C, H, W) CPU image in [-1, 1]. Without `heat`, the pixel error
    |x − G(x)| on a fixed scale (PIXEL_FULL), so strips of different images are comparable.
    """
    real, fake = real.float(), fake.float()
    if heat is None:
        heat = (real - fake).abs().mean(0) / 2 / PIXEL_FULL  # per pixel, as a fraction of the intensity range
    shown_real, shown_fake = shown(real[None])[0], shown(fake[None])[0]
    overlay = heat_overlay(shown_real, heat)
    gap = torch.ones(3, real.shape[1], max(1, real.shape[2] // 16))
    picture = torch.cat([shown_real, gap, shown_fake, gap, overlay], dim=2)
    scale = max(1, MAX_TILE // real.shape[1])
    return pixels(picture.repeat_interleave(scale, 1).repeat_interleave(scale, 2))


def caption(name: str, score: float, threshold: float, decision: str, score_name: str, shown) -> list[str]:
    """The lines above a strip: the image, its score against the threshold and the decision, what the map
    (a located.ScoreMap) shows and its colour scale, fixed so that strips compare."""
    side = ">=" if decision == "abnormal" else "<"
    return [f"image: {name}",
            f"{decision.upper()}: score {score:.6g} {side} threshold {threshold:.6g} (score: {score_name})",
            f"map: {shown.label}",
            f"colour: none at 0, full at {shown.full:.3g}: {shown.scale}"]


def captioned(picture: np.ndarray, lines: list[str], isize: int, map_panel: str) -> np.ndarray:
    """`strip`'s picture with a label above each of its three panels (the map's: `map_panel`), `lines` above all."""
    scale = max(1, MAX_TILE // isize)
    tile, gap = isize * scale, max(1, isize // 16) * scale
    panels = [picture[:, k * (tile + gap):k * (tile + gap) + tile] for k in range(3)]
    return with_caption(labelled_columns(panels, [*PANELS, f"map: {map_panel}"], gap), lines)


def save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
