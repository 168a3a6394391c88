"""Images between uint8 and the floats the networks see, and image grids as PNG files.

The pixel normalisation lives here, below both the data and the models: a model knows how its
inputs were made (lib/models/base.py) without importing the data. The grids take a few lines of
NumPy and PIL instead of torchvision.utils, whose import pulls in all of torchvision and adds
seconds to every command's start-up.
"""
import math

import numpy as np
import torch
from PIL import Image

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
