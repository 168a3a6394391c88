"""predict.py --masks: the scored images' anomaly maps against their ground-truth masks.

A mask is found as MVTec AD lays it out, by the image's place below --path: the image
<path>/<folders>/<name>.<ext> has the mask <masks>/<folders>/<name>_mask.png, and an image without
one is normal (every pixel 0). So `--path CATEGORY/test --masks CATEGORY/ground_truth` scores a whole
category's test set. The maps are the ones training evaluated (lib/scoring/localise.py): the kind of
map and its smoothing the run chose on its validation masks (an export carries its score's map alone, not
that choice, so --masks needs the run folder); pixel AUROC and PRO over every image, and per kind of defect
(the mask's folder), are printed and written to pixel_metrics.json.
"""
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..data.folders import read_image
from ..data.mvtec import GOOD, MASK_SUFFIX, check_mask_size, read_mask
from ..errors import UserError
from ..files import write_text
from ..scoring.localise import chosen_sigma, evaluate_maps, localising
from ..scoring.located import map_kind
from .out import PIXEL_METRICS


def check_masks(masks: Path, images: list[Path], root: Path, isize: int) -> None:
    """Refused before anything is scored: a --masks that is not a folder, holds no mask of `images`, a mask
    that cannot be read or has another size than its image, or masks that mark no defect at all."""
    if not masks.is_dir():
        raise UserError(f"--masks '{masks}' is not a folder; give the folder of masks laid out as the images "
                        "(e.g. CATEGORY/ground_truth for --path CATEGORY/test)")
    found = masks_found(images, root, masks)
    if not found:
        raise UserError(f"no mask in '{masks}' belongs to an image of '{root}': the mask of {images[0]} would be "
                        f"{mask_of(images[0], root, masks)}; give the masks' folder laid out as the images'")
    marked = False
    for image, mask in found.items():
        check_mask_size(mask, image)
        marked = marked or bool(read_mask(mask, isize).any())
    if not marked:
        raise UserError(f"the {len(found)} mask(s) in '{masks}' of these images mark no pixel as defective: pixel "
                        "AUROC and PRO need defects; give masks white where the defects are")


def masks_found(images: list[Path], root: Path, masks: Path) -> dict[Path, Path]:
    """{image: its mask} of the images that have one. Something else at a mask's place (a folder, a link to a
    device, a broken link) is refused: skipped, it would make a defective image count as normal in silence."""
    found = {}
    for image in images:
        mask = mask_of(image, root, masks)
        if mask.is_file():
            found[image] = mask
        elif os.path.lexists(mask):
            raise UserError(f"mask '{mask}' of image '{image}' is not a readable file: put the image's mask there, "
                            "or remove it to score the image as normal")
    return found


def mask_of(image: Path, root: Path, masks: Path) -> Path:
    relative = image.relative_to(root) if image != root else Path(image.name)
    return masks / relative.parent / f"{relative.stem}{MASK_SUFFIX}.png"


def score_against_masks(model, ckpt, opt, images: list[Path], root: Path, masks: Path, batchsize: int, device,
                        out: Path) -> dict:
    """Pixel AUROC and PRO of the maps of `images` (scored, below `root`) against their masks; written into
    `out`/pixel_metrics.json and printed."""
    found = masks_found(images, root, masks)
    decoded, truth, defects = [], [], []
    for image in images:
        array, _ = read_image(image, nc=opt.nc, isize=opt.isize)
        decoded.append(array)
        if image in found:
            check_mask_size(found[image], image)  # (checked before scoring; a mask changed since is caught here)
            truth.append(read_mask(found[image], opt.isize))
            defects.append(found[image].parent.name if found[image].parent != masks else "defect")
        else:
            truth.append(np.zeros((opt.isize, opt.isize), np.uint8))
            defects.append(GOOD)
    truth, decoded = np.stack(truth), np.stack(decoded)
    decoded = torch.from_numpy(np.ascontiguousarray(decoded[:, None] if opt.nc == 1 else decoded.transpose(0, 3, 1, 2)))
    sigma, source = chosen_sigma(ckpt)
    found_metrics = evaluate_maps(model, decoded, truth, defects, batchsize, device, sigma)
    overall = {k: found_metrics.pop(k) for k in ("pixel_auroc", "pro")}
    kind = map_kind(localising(model).name)
    metrics = {**overall, "map": kind, "map_sigma": sigma, "images": len(images), "with_masks": len(found),
               "by_defect": found_metrics}
    write_text(out / PIXEL_METRICS, json.dumps(metrics, indent=2) + "\n")
    print(f"pixel auroc {metrics['pixel_auroc']:.4f}, pro {metrics['pro']:.4f} over {len(images)} image(s), "
          f"{len(found)} with a mask in {masks}; the {kind} map, smoothed with sigma {sigma:g} ({source})")
    unmasked = [image for image in images if image not in found and image.parent.name != GOOD]
    if unmasked:  # documented (an image without a mask is normal), but in a defect's folder likely a lost mask
        print(f"notice: {len(unmasked)} image(s) outside '{GOOD}' folders have no mask and count as normal, e.g. "
              f"{unmasked[0]} (its mask would be {found.get(unmasked[0]) or mask_of(unmasked[0], root, masks)})")
    if not truth.size or truth.all():
        print("notice: pixel AUROC and PRO are undefined (nan): the masks leave no pixel of these images normal")
    print(f"outputs: {out / PIXEL_METRICS}")
    return metrics
