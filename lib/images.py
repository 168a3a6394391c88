"""Images between uint8 and the floats the networks see; image grids, heat colours and captions.

The pixel normalisation lives here, below both the data and the models: a model knows how its
inputs were made (lib/models/base.py) without importing the data. The grids take a few lines of
NumPy and PIL instead of torchvision.utils, whose import pulls in all of torchvision and adds
seconds to every command's start-up. The run's grids (lib/training/outputs.py) and predict.py's
strips (lib/predict/maps.py) share the heat colours and the captions drawn here.
"""
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MNIST_MEAN_STD = (0.1307, 0.3081)  # the original's MNIST normalisation (lib/original.py, mnist_range)


def normalisation(dataset: str, mnist_range: bool = True) -> tuple[float, float]:
    """(mean, std) of the pixel normalisation: (0.5, 0.5), which maps images to [-1, 1], the
    generator's tanh range; without the mnist_range fix, MNIST gets the original's statistics."""
    return MNIST_MEAN_STD if dataset == "mnist" and not mnist_range else (0.5, 0.5)


def to_float(batch_uint8: torch.Tensor, device, mean_std: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """Move a uint8 batch to `device` as float32 normalised by `mean_std` (by default to [-1, 1])."""
    # Converting after the move sends a quarter of the bytes to the accelerator. The operations
    # are torchvision's ToTensor and Normalize, so the floats are the original's to the last bit.
    mean, std = mean_std
    return batch_uint8.to(device, non_blocking=True).float().div_(255.0).sub_(mean).div_(std)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] → (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile images into one (H, W, C) uint8 array, `nrow` per row, with a black border."""
    return tile(to_uint8(images), nrow, padding)


def tile(tiles: np.ndarray, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Lay out (N, H, W, C) uint8 tiles `nrow` per row on black, `padding` pixels apart and around."""
    n, h, w, c = tiles.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.uint8)
    for i, image in enumerate(tiles):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        out[top:top + h, left:left + w] = image
    return out


def save_grid(images: torch.Tensor, path, nrow: int = 8) -> None:
    array = grid(images, nrow)
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)


# ------------------------------------------------------------------ heat colours

# Anchors of matplotlib's "inferno" colour map: dark for small values, bright yellow for large.
_INFERNO = torch.tensor([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                         [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=torch.float32) / 255


def heatmap(fraction: torch.Tensor) -> torch.Tensor:
    """(3, H, W) colours in [0, 1] of (H, W) values in [0, 1] through the inferno colour map."""
    position = fraction.float().clamp(0, 1) * (len(_INFERNO) - 1)
    low = position.floor().long().clamp(max=len(_INFERNO) - 2)
    frac = (position - low).unsqueeze(-1)
    colours = _INFERNO[low] * (1 - frac) + _INFERNO[low + 1] * frac
    return colours.permute(2, 0, 1)


def heat_overlay(shown: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """(3, H, W): the image `shown` (in [0, 1]) under the heat colour of `fraction` (H, W, in [0, 1]).

    Small values let the image show through; large ones cover it with their colour, so a map is
    read in place on the image it describes."""
    alpha = fraction.float().clamp(0, 1)
    return shown * (1 - alpha) + heatmap(alpha) * alpha


def shown(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1] of (N, C, H, W) images in [-1, 1] (grey made RGB)."""
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def pixels(picture: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8 of a (3, H, W) picture in [0, 1]."""
    return (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) pixels `factor` times larger (nearest neighbour: no pixel is invented)."""
    return array.repeat(factor, 0).repeat(factor, 1) if factor > 1 else array


# ------------------------------------------------------------------ captions

CAPTION_SIZE = 13  # pixels
PAD = 4


def _font(size: int = CAPTION_SIZE):
    """Pillow's own font (no font file to find on the machine). It has ASCII glyphs only."""
    return ImageFont.load_default(size)


def printable(text: str) -> str:
    """`text` in the characters the caption font draws: other characters (and control ones) become '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def wrap(text: str, width: int, font=None) -> list[str]:
    """`text` in lines of at most `width` pixels, broken between words (inside a word longer than a line)."""
    font = font or _font()
    lines, line = [], ""
    for word in printable(text).split(" "):
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width and len(word) > 1:  # a file name wider than the strip
            cut = 1
            while cut < len(word) and font.getlength(word[:cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + [line] if line or not lines else lines


def text_band(lines: list[str], width: int, align: str = "left") -> np.ndarray:
    """(h, width, 3) uint8: `lines` wrapped to `width`, black on white."""
    font = _font()
    wrapped = [piece for line in lines for piece in wrap(line, width - 2 * PAD, font)]
    step = CAPTION_SIZE + 3
    band = Image.new("RGB", (width, PAD * 2 + step * len(wrapped)), "white")
    draw = ImageDraw.Draw(band)
    for i, line in enumerate(wrapped):
        left = PAD if align == "left" else max(PAD, (width - font.getlength(line)) / 2)
        draw.text((left, PAD + i * step), line, fill="black", font=font)
    return np.asarray(band)


def rgb(array: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of (H, W, 1) or (H, W, 3) pixels."""
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def with_caption(array: np.ndarray, lines: list[str]) -> np.ndarray:
    """(H', W, 3): `lines` above the (H, W, C) pixels."""
    array = rgb(array)
    return np.concatenate([text_band(lines, array.shape[1]), array])


def labelled_columns(panels: list[np.ndarray], labels: list[str], gap: int) -> np.ndarray:
    """(H', W, 3): (H, w, 3) panels side by side `gap` white pixels apart, each with its label above."""
    heads = [text_band([label], panel.shape[1], align="centre") for label, panel in zip(labels, panels)]
    height = max(h.shape[0] for h in heads)
    columns = [np.concatenate([np.pad(head, ((0, height - head.shape[0]), (0, 0), (0, 0)), constant_values=255),
                               rgb(panel)]) for head, panel in zip(heads, panels)]
    spacer = np.full((columns[0].shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([part for column in columns for part in (column, spacer)][:-1], axis=1)


def labelled_rows(rows: list[tuple[str, np.ndarray]], label_width: int = 120) -> np.ndarray:
    """(H, label_width + W, 3): each (h, W, C) row of pixels with its label on its left."""
    out = []
    for label, row in rows:
        head = text_band([label], label_width)
        height = max(head.shape[0], row.shape[0])
        head = np.pad(head, ((0, height - head.shape[0]), (0, 0), (0, 0)), constant_values=255)
        row = np.pad(rgb(row), ((0, height - row.shape[0]), (0, 0), (0, 0)), constant_values=255)
        out.append(np.concatenate([head, row], axis=1))
    return np.concatenate(out)
