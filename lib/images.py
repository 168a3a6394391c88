"""Image grids as PNG files, from float tensors in [-1, 1].

A few lines of NumPy and PIL instead of torchvision.utils, whose import pulls in
all of torchvision and adds seconds to every command's start-up.
"""
import math

import numpy as np
import torch
from PIL import Image


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
