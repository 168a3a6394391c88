"""Data for Skip-WGANomaly (Unsupervised Image Anomaly Detection Based in WGAN).

Owns: bringing CIFAR-10, MNIST, Fashion-MNIST, scikit-learn's digits (lib/data/builtin.py reads their
files), folder datasets (lib/data/folders.py decodes those) and inspection data with masks
(lib/data/mvtec.py) into memory as uint8 (N, C, H, W) tensors at `isize` x `isize` with `nc` channels; the
leave-one-class-out and one-class protocols; the validation hold-out that keeps model
selection off the test set; batch index lists. (A batch becomes floats in lib/images.py.)
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import DATASETS, builtin_dataset, class_names, inspection_dataset, resolve_class  # noqa: F401
from ..errors import UserError
from .builtin import SYSTEM_FASHION_MNIST, read_arrays  # noqa: F401 (SYSTEM_FASHION_MNIST: tests)
from .folders import check_images_fit, read_folder_dataset
from .mvtec import GOOD, read_inspection

_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, the weights PIL's convert("L") uses
_CHUNK_VALUES = 1 << 24  # bounds the working memory of array conversion to ~64 MB


@dataclass
class Split:
    """Normal training images plus labelled validation and test sets (0 normal, 1 abnormal)."""
    train: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    # Inspection data only (--dataset mvtec): where each image is abnormal (uint8 0/1, N x H x W; all 0 for a
    # normal image) and its kind of defect ("good" for a normal image).
    val_masks: torch.Tensor | None = None
    test_masks: torch.Tensor | None = None
    val_defects: list[str] | None = None
    test_defects: list[str] | None = None

    def digest(self) -> str:
        """sha256 of every image, label and mask of every part, in order: what a run was trained and
        evaluated on, so that a resume can tell the same data from data changed since."""
        found = hashlib.sha256()
        for part in (self.train, self.val_images, self.val_labels, self.test_images, self.test_labels,
                     self.val_masks, self.test_masks):
            if part is not None:
                found.update(str(tuple(part.shape)).encode())
                found.update(part.contiguous().numpy().tobytes())
        return found.hexdigest()

    def counts(self) -> str:
        """One line: how many normal/abnormal images each part holds."""
        def part(labels):
            abnormal = int(labels.sum())
            return f"{len(labels) - abnormal} normal + {abnormal} abnormal"
        return (f"train {len(self.train)} normal | val {part(self.val_labels)}"
                f" | test {part(self.test_labels)}")


def load_split(dataset, dataroot="./data", isize=32, nc=3, abnormal_class=None, normal_class=None,
               val_ratio=0.1, seed=0, workers=0, log=print, category=None) -> Split:
    """Load `dataset` into memory and split it into train / val / test by the chosen protocol (`category`:
    the one of inspection data to read)."""
    if not isinstance(isize, int) or isize < 1:
        raise UserError(f"isize must be a positive integer, got {isize!r}")
    if nc not in (1, 3):
        raise UserError(f"nc must be 1 (grey) or 3 (RGB), got {nc!r}")
    if not 0 <= val_ratio < 1:
        raise UserError(f"val_ratio must be in [0, 1), got {val_ratio!r}; 0 disables validation")
    generator = torch.Generator().manual_seed(seed)
    builtin = builtin_dataset(dataset)
    if builtin:
        if (abnormal_class is None) == (normal_class is None):
            raise UserError(f"{builtin} needs exactly one of --abnormal_class "
                            f"(leave-one-class-out) or --normal_class (one-class)")
        # Resolve before reading so a typo fails in milliseconds, not after loading the data.
        one_class = normal_class is not None
        target = resolve_class(builtin, normal_class if one_class else abnormal_class)
        x_train, y_train, x_test, y_test, source = read_arrays(builtin, Path(dataroot))
        x_train, x_test = _fit_arrays(builtin, x_train, x_test, nc, isize, log)
        if one_class:
            normal, test_normal = x_train[y_train == target], x_test[y_test == target]
            abnormal = x_test[y_test != target]
        else:
            normal, test_normal = x_train[y_train != target], x_test[y_test != target]
            # The original's protocol: every abnormal-class image, training ones too, is tested.
            abnormal = torch.cat([x_train[y_train == target], x_test[y_test == target]])
    elif inspection_dataset(dataset):
        inspection = read_inspection(Path(dataroot), category, nc, isize, workers, log)
        normal, test_normal, abnormal = inspection.train, inspection.test_normal, inspection.abnormal
        source = inspection.root
    else:
        normal, test_normal, abnormal, source = read_folder_dataset(
            dataset, Path(dataroot), nc, isize, workers, log)
    val_normal, train = _hold_out(normal, val_ratio, generator)
    # Indices, so that the masks and kinds of defect follow their images (the same draw as holding out images).
    val_index, test_index = _hold_out(torch.arange(len(abnormal)), val_ratio, generator)
    split = Split(train, *_labelled(val_normal, abnormal[val_index]),
                  *_labelled(test_normal, abnormal[test_index]), class_names(dataset))
    if inspection_dataset(dataset):
        split.val_masks, split.val_defects = _located(inspection, len(val_normal), val_index)
        split.test_masks, split.test_defects = _located(inspection, len(test_normal), test_index)
    log(f"{builtin or dataset} from {source}: {split.counts()}")
    return split


def _located(inspection, n_normal: int, index: torch.Tensor):
    """(masks, kinds of defect) of `n_normal` normal images followed by the defective images `index`."""
    empty = torch.zeros((n_normal, *inspection.masks.shape[1:]), dtype=torch.uint8)
    return (torch.cat([empty, inspection.masks[index]]),
            [GOOD] * n_normal + [inspection.defects[i] for i in index.tolist()])


def batches(n: int, batchsize: int, shuffle: bool, drop_last: bool,
            generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index tensors covering range(n), shuffled only by `generator` (torch's global if None)."""
    if batchsize < 1:
        raise UserError(f"batchsize must be at least 1, got {batchsize}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    chunks = list(order.split(batchsize))
    if drop_last and chunks and len(chunks[-1]) < batchsize:
        chunks.pop()
    return chunks


# ---------------------------------------------------------------- splitting helpers

def _hold_out(images, ratio, generator):
    """Move a random `ratio` of `images` out: returns (held_out, kept), each in original order."""
    n = len(images)
    # At least one image each side when possible, so a tiny set still gets a validation AUC.
    k = 0 if ratio == 0 or n < 2 else min(max(round(n * ratio), 1), n - 1)
    order = torch.randperm(n, generator=generator)
    return images[order[:k].sort().values], images[order[k:].sort().values]


def _labelled(normal, abnormal):
    """Concatenate normal and abnormal images with labels 0 and 1."""
    labels = torch.cat([torch.zeros(len(normal), dtype=torch.int64),
                        torch.ones(len(abnormal), dtype=torch.int64)])
    return torch.cat([normal, abnormal]), labels


def _fit_arrays(dataset, x_train, x_test, nc, isize, log):
    """Both parts at `nc` channels and `isize` x `isize`; one notice if channels change."""
    check_images_fit(len(x_train) + len(x_test), nc, isize)
    if x_train.shape[1] != nc:
        log(f"notice: {dataset} has {x_train.shape[1]}-channel images; converting all "
            f"{len(x_train) + len(x_test)} to nc={nc}")
    return _fit(x_train, nc, isize), _fit(x_test, nc, isize)


def _fit(x, nc, isize):
    """Luma/repeat to `nc` channels and bilinear antialiased resize, in chunks to bound memory."""
    n, c, h, w = x.shape
    if c == nc and h == w == isize:
        return x
    out = torch.empty((n, nc, isize, isize), dtype=torch.uint8)
    step = max(1, _CHUNK_VALUES // (max(c, nc) * max(h * w, isize * isize)))
    for start in range(0, n, step):
        chunk = x[start:start + step]
        if c == 3 and nc == 1:  # before resizing: a third of the work
            luma = (chunk.float() * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
            chunk = luma.round_().clamp_(0, 255).to(torch.uint8)
        if (h, w) != (isize, isize):
            # torch resizes uint8 directly, several times faster than via float32, within 1 level.
            chunk = F.interpolate(chunk, size=(isize, isize), mode="bilinear",
                                  align_corners=False, antialias=True)
        out[start:start + step] = chunk  # a 1-channel chunk broadcasts into 3 channels
    return out
