"""Anomaly maps: one strip per image, input | reconstruction | error heatmap over the input."""
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lib.files import NAME_MAX, atomic_write, fit_name

MAX_TILE = 128  # strips are enlarged (nearest neighbour) to tiles of at most this many pixels
SATURATION = 0.5  # the heatmap is fully hot at an error of half the intensity range
# Anchors of matplotlib's "inferno" colour map: dark for small errors, bright yellow for large.
_INFERNO = torch.tensor([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                         [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=torch.float32) / 255



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
