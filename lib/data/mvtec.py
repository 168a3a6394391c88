"""Inspection data in the MVTec AD layout (Bergmann et al., CVPR 2019), read as it is laid out:

    ROOT/<category>/train/good/*                    normal training images
    ROOT/<category>/test/good/*                     normal test images
    ROOT/<category>/test/<defect>/<name>.<ext>      defective test images, one folder per kind of defect
    ROOT/<category>/ground_truth/<defect>/<name>_mask.png   where each defect is (non-zero pixels)

Owns checking that layout (every defective image has its mask, every mask its image, at the image's
size) and decoding it: images as lib/data/folders.py decodes them, each mask cropped and resized the
same way with the nearest pixel, so that it stays 0 or 1 and covers what its image shows.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .folders import check_images_fit, image_files, read_image

GOOD = "good"
MASK_SUFFIX = "_mask"
LAYOUT = ("<category>/train/good/*, <category>/test/good/*, <category>/test/<defect>/<name>.png and "
          "<category>/ground_truth/<defect>/<name>_mask.png")


@dataclass
class Inspection:
    """A category's images (uint8, N x C x isize x isize), its defective images' masks (uint8 0/1,
    N x isize x isize) and the kind of defect of each."""
    train: torch.Tensor
    test_normal: torch.Tensor
    abnormal: torch.Tensor
    masks: torch.Tensor
    defects: list[str]
    root: Path


def categories(dataroot: Path) -> list[str]:
    """The folders of `dataroot` laid out as a category (holding train/good)."""
    if not dataroot.is_dir():
        return []
    return sorted(p.name for p in dataroot.iterdir() if (p / "train" / GOOD).is_dir() and not p.name.startswith("."))


def category_root(dataroot: Path, category: str | None) -> Path:
    """The category's folder; refused, naming the categories there, when it is not one."""
    found = categories(dataroot)
    listing = f"the categories in {dataroot} are: {', '.join(found)}" if found else \
        f"{dataroot} holds no category (a folder with train/good/); lay it out as {LAYOUT}"
    if category is None:
        raise UserError(f"--dataset mvtec needs --category: {listing}")
    if category not in found:
        raise UserError(f"unknown category {category!r}: {listing}")
    return dataroot / category


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except Exception as err:  # PIL plugins raise many error types for damaged files
        raise UserError(f"cannot read image {str(path)!r} ({' '.join(str(err).split())}); fix or remove it") from err


def _keyed(files: list[Path], folder: Path, suffix: str = "") -> dict[str, Path]:
    """{name below `folder` without extension (and `suffix`): file}; two files of one name (000.png and
    000.bmp) are refused, as one mask would stand for both."""
    keyed = {}
    for path in files:
        relative = path.relative_to(folder)
        key = str(relative.parent / relative.stem.removesuffix(suffix))
        if key in keyed:
            raise UserError(f"{keyed[key]} and {path} have one name: an image and its mask are matched by name "
                            "without extension; rename or remove one of them")
        keyed[key] = path
    return keyed


def defect_files(root: Path) -> list[tuple[str, Path, Path]]:
    """(defect, image, mask) of each defective test image, sorted; a mask without an image, an image
    without a mask, two files of one name and a mask of another size than its image are refused. A
    good image may have a mask (some converted datasets ship them) if it marks nothing."""
    test, truth = root / "test", root / "ground_truth"
    if not test.is_dir():
        raise UserError(f"{test} is missing; an inspection category needs {LAYOUT}")
    found = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir() and not p.name.startswith(".")):
        masks = _keyed(image_files(truth / folder.name), truth / folder.name, MASK_SUFFIX) \
            if (truth / folder.name).is_dir() else {}
        images = _keyed(image_files(folder), folder)
        for name, mask in sorted(masks.items()):
            if name not in images:
                raise UserError(f"{mask} is a mask without an image: its image would be {folder / name}.png "
                                f"(named as the mask without {MASK_SUFFIX}); add the image or remove the mask")
            if folder.name == GOOD and read_mask(mask, 8, full=True).any():
                raise UserError(f"{mask} marks a defect in a good image ({images[name]}): move the image to "
                                "test/<defect>/ and its mask to ground_truth/<defect>/, or clear the mask")
        if folder.name == GOOD:
            continue
        for name, image in sorted(images.items()):
            if name not in masks:
                raise UserError(f"{image} has no mask: add {truth / folder.name / (name + MASK_SUFFIX + '.png')} "
                                f"(white where the defect is), or move the image out of {test}")
            found.append((folder.name, image, masks[name]))
    for mask in (image_files(truth) if truth.is_dir() else []):
        if not (test / mask.relative_to(truth).parts[0]).is_dir():
            raise UserError(f"{mask} is a mask without an image: {test / mask.relative_to(truth).parts[0]} is "
                            "missing; add the images or remove the masks")
    for _, image, mask in found:
        check_mask_size(mask, image)
    return found


def check_mask_size(mask: Path, image: Path) -> None:
    """A mask must be its image's size: a UserError naming both sizes."""
    if image_size(mask) != image_size(image):
        raise UserError(f"{mask} is {'x'.join(map(str, image_size(mask)))} pixels and its image {image} "
                        f"{'x'.join(map(str, image_size(image)))}: a mask must have its image's size; save it at "
                        "that size")


def read_mask(path: Path, isize: int, full: bool = False) -> np.ndarray:
    """(isize, isize) uint8 0/1: the mask's non-zero pixels, cropped and resized as read_image crops its image
    (`full`: the whole mask at its own size)."""
    try:
        with Image.open(path) as img:
            img = img.convert("L")
            w, h = img.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            if not full and img.size != (isize, isize):
                img = img.resize((isize, isize), Image.Resampling.NEAREST, box=box)
            return (np.asarray(img) > 0).astype(np.uint8)
    except Exception as err:
        raise UserError(f"cannot read mask {str(path)!r} ({' '.join(str(err).split())}); fix or remove it") from err


def _decode(paths, nc, isize, workers):
    """uint8 (N, C, isize, isize) images and how many were converted to `nc` channels."""
    def decode(p):
        return read_image(p, nc=nc, isize=isize)
    if workers > 0:  # PIL releases the GIL while decoding and resizing, so threads scale
        with ThreadPoolExecutor(workers) as pool:
            decoded = list(pool.map(decode, paths))
    else:
        decoded = [decode(p) for p in paths]
    images = np.stack([array for array, _ in decoded]) if decoded else np.zeros((0, isize, isize, nc), np.uint8)
    images = images[:, None] if nc == 1 else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(images)), sum(native != nc for _, native in decoded)


def read_inspection(dataroot: Path, category: str | None, nc: int, isize: int, workers: int, log) -> Inspection:
    """A category of `dataroot` in the MVTec AD layout, checked, then decoded."""
    root = category_root(dataroot, category)
    train_files = image_files(root / "train" / GOOD)
    if not train_files:
        raise UserError(f"{root / 'train' / GOOD} holds no readable images; add the normal training images "
                        "(png, jpg, ...)")
    good = image_files(root / "test" / GOOD) if (root / "test" / GOOD).is_dir() else []
    defects = defect_files(root)
    if not good:  # (without them no test image is normal: every image-level metric would be NaN)
        raise UserError(f"{root / 'test' / GOOD} holds no images: add normal test images there, beside the "
                        "defective ones in test/<defect>/")
    if not defects:
        raise UserError(f"{root / 'test'} holds no defective images: add a folder test/<defect>/ of them, with "
                        "their masks in ground_truth/<defect>/")
    check_images_fit(len(train_files) + len(good) + len(defects), nc, isize)
    train, converted = _decode(train_files, nc, isize, workers)
    test_normal, more = _decode(good, nc, isize, workers)
    abnormal, most = _decode([image for _, image, _ in defects], nc, isize, workers)
    if converted + more + most:
        log(f"notice: converted {converted + more + most} images in {root} to nc={nc}")
    masks = torch.from_numpy(np.stack([read_mask(mask, isize) for _, _, mask in defects]))
    return Inspection(train, test_normal, abnormal, masks, [defect for defect, _, _ in defects], root)
