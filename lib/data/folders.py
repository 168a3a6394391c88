"""Images read from files: folder datasets (train/0.normal, test/0.normal, test/1.abnormal) and the
single images predict.py scores, decoded to uint8 at `nc` channels and `isize` x `isize`."""
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import torch
from PIL import Image

from ..classes import DATASETS
from ..errors import UserError
from ..resources import check_fits

FOLDERS = ("train/0.normal", "test/0.normal", "test/1.abnormal")
LAYOUT = "<name>/train/0.normal/*, <name>/test/0.normal/*, <name>/test/1.abnormal/*"
# PIL warns (several lines on stderr, from any thread) about images over ~89 M pixels and refuses those
# over twice that. read_image makes the refusal itself, in one line, and reads a large scan below it
# like any other image.
MAX_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = None
_GREY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def check_images_fit(n: int, nc: int, isize: int) -> None:
    """The decoded images, and the split's copies of them, must fit in memory."""
    check_fits(2 * n * nc * isize * isize, f"{n} images at --isize {isize}, --nc {nc}",
               "lower --isize (or use fewer images)")


def read_folder_dataset(dataset, dataroot, nc, isize, workers, log):
    """(train normal, test normal, test abnormal, root) of a train/ test/ image-folder dataset."""
    if not dataroot.is_dir():
        raise UserError(f"dataroot {dataroot} does not exist; create it or pass --dataroot")
    root = dataroot / dataset
    if not root.is_dir():
        if not (dataroot / "train").is_dir():
            raise UserError(f"dataset {dataset!r} is not built in ({', '.join(DATASETS)}) and "
                            f"{root} does not exist; lay a folder dataset out as "
                            f"{dataroot}/{LAYOUT}")
        root = dataroot  # --dataroot may point at the dataset itself
    file_lists = []
    for sub in FOLDERS:
        folder = root / sub
        if not folder.is_dir():
            raise UserError(f"{folder} is missing; a folder dataset needs {LAYOUT}")
        files = image_files(folder)
        if not files:
            raise UserError(f"{folder} holds no readable images; add some (png, jpg, ...)")
        file_lists.append(files)
    check_no_other_folders(root)
    paths = [p for files in file_lists for p in files]
    check_images_fit(len(paths), nc, isize)
    decode = partial(read_image, nc=nc, isize=isize)
    if workers > 0:  # PIL releases the GIL while decoding and resizing, so threads scale
        with ThreadPoolExecutor(workers) as pool:
            decoded = list(pool.map(decode, paths))
    else:
        decoded = [decode(p) for p in paths]
    converted = sum(native != nc for _, native in decoded)
    if converted:
        log(f"notice: converted {converted} of {len(paths)} images in {root} to nc={nc}")
    images = np.stack([array for array, _ in decoded])
    images = images[:, None] if nc == 1 else images.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(images))
    train, test_normal, test_abnormal = images.split([len(f) for f in file_lists])
    return train, test_normal, test_abnormal, root


def check_no_other_folders(root) -> None:
    """Refuse folders beside the layout's (e.g. test/2.abnormal): read silently as nothing, their images
    would be left out of the data the user meant to give."""
    for split, read in (("train", {"0.normal"}), ("test", {"0.normal", "1.abnormal"})):
        other = sorted(p.name for p in (root / split).iterdir()
                       if p.is_dir() and p.name not in read and not p.name.startswith("."))
        if other:
            raise UserError(f"{root / split} holds {', '.join(map(repr, other))}, which a folder dataset does not "
                            f"read: it reads {LAYOUT} (every kind of anomaly goes into test/1.abnormal); move "
                            f"{'it' if len(other) == 1 else 'them'} out")


def image_files(folder):
    """Image files below `folder`, recursively and sorted; hidden or non-image files skipped."""
    extensions = Image.registered_extensions()
    # Hidden entries are editor/OS copies (.ipynb_checkpoints, macOS ._*), not data.
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in extensions
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _grey_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a high-depth grey image to 0..255 by its format's range; never clip silently.

    16-bit images (PNG, TIFF) and 32-bit integer ones (Pillow opens 16-bit PGM as 'I') span
    0..65535 and keep their top 8 bits; float images must hold intensities in [0, 1].
    """
    if mode == "F":
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise ValueError(f"a floating-point image must hold intensities in [0, 1], this one spans "
                             f"{values.min():g} to {values.max():g}; save it as an 8- or 16-bit image")
        return np.round(values * 255).astype(np.uint8)
    if values.min() < 0 or values.max() > 65535:
        raise ValueError(f"a {mode!r} image with values from {values.min()} to {values.max()} has no known "
                         "intensity range; save it as an 8- or 16-bit image")
    return (values.astype(np.uint32) >> 8).astype(np.uint8)


def read_image(path, nc, isize):
    """(uint8 HxW or HxWx3 array, native channel count) of one image, centre-cropped and resized."""
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:  # known from the header, before anything is decoded
                raise ValueError(f"{img.width}x{img.height} is over {MAX_PIXELS:,} pixels, more than any real "
                                 "image needs and what a decompression bomb claims")
            img.load()
            native = 1 if img.mode in _GREY_MODES else 3
            if img.mode.startswith("I") or img.mode == "F":
                img = Image.fromarray(_grey_to_8bit(np.asarray(img), img.mode))
            elif img.mode in ("P", "PA"):  # through RGBA so palette transparency is applied
                img = img.convert("RGBA")
            img = img.convert("L" if nc == 1 else "RGB")
            # Like the original (Resize(isize) + CenterCrop(isize)): keep the aspect ratio,
            # crop the longer side's centre; PIL's bilinear filter antialiases when shrinking.
            if img.size != (isize, isize):
                w, h = img.size
                side = min(w, h)
                box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
                img = img.resize((isize, isize), Image.Resampling.BILINEAR, box=box)
            return np.asarray(img), native
    except Exception as err:  # PIL plugins raise many error types for damaged files
        reason = " ".join(str(err).split())  # one line, whatever the file's name or the decoder says
        raise UserError(f"cannot read image {str(path)!r} ({reason}); fix or remove it") from err
