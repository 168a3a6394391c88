"""Pixel-level metrics: pure functions of (masks, maps), masks 1 where an image is abnormal.

pixel AUROC ranks every pixel of every image by its map value against its mask. PRO, the per-region
overlap of Bergmann et al., "The MVTec Anomaly Detection Dataset" (IJCV 2021; CVPR 2019), weighs each
connected region of the masks the same, however small: at each threshold, the mean over regions of the
share of the region's pixels at or above it, against the share of normal pixels at or above it (the
false-positive rate); the area under that curve up to a false-positive rate of 0.3, divided by 0.3.
"""
import numpy as np
from scipy import ndimage

from .metrics import roc_auc

PRO_FPR_LIMIT = 0.3  # the MVTec AD paper's: beyond it, a map flags too much of the normal surface to be of use


def pixel_auroc(masks, maps) -> float:
    """AUROC of every pixel's map value against its mask; NaN without both normal and abnormal pixels."""
    return roc_auc(np.asarray(masks).ravel() > 0, np.asarray(maps, dtype=np.float64).ravel())


def regions(masks) -> np.ndarray:
    """(N, H, W) int: each connected abnormal region of each mask numbered 1, 2, ... over the whole set
    (0 = normal). Pixels touching by a corner are one region, as the MVTec AD evaluation code labels them."""
    masks = np.asarray(masks) > 0
    labelled = np.zeros(masks.shape, np.int64)
    count = 0
    for i, mask in enumerate(masks):
        found, n = ndimage.label(mask, structure=np.ones((3, 3), int))
        labelled[i] = np.where(found > 0, found + count, 0)
        count += n
    return labelled


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, per-region overlaps) at every distinct map value, from (0, 0) to (1, 1).

    One sorted pass: a pixel of region r adds 1 / (size of r × number of regions) to the overlap once
    the threshold reaches its value, a normal pixel 1 / (normal pixels) to the false-positive rate.
    """
    labelled = regions(masks).ravel()
    values = np.asarray(maps, dtype=np.float64).ravel()
    if labelled.shape != values.shape:
        raise ValueError(f"masks hold {labelled.size} pixels and maps {values.size}: give maps of the masks' size")
    n_regions, n_normal = int(labelled.max(initial=0)), int((labelled == 0).sum())
    if n_regions == 0 or n_normal == 0:
        return np.array([0.0, 1.0]), np.array([np.nan, np.nan])
    sizes = np.bincount(labelled)
    overlap_weight = np.where(labelled > 0, 1.0 / (sizes[labelled] * n_regions), 0.0)
    order = np.argsort(-values, kind="mergesort")
    sorted_values = values[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_values)), len(values) - 1]
    pro = np.cumsum(overlap_weight[order])[last_of_tie]
    fpr = np.cumsum(labelled[order] == 0)[last_of_tie] / n_normal
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def pro_auc(masks, maps, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (1 is perfect; a map of noise
    scores about `fpr_limit` / 2); NaN without both an abnormal region and a normal pixel."""
    fpr, pro = pro_curve(masks, maps)
    if np.isnan(pro).any():
        return float("nan")
    # The curve is a straight line between thresholds: cut it at the limit.
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:end], pro[:end]
    if end < len(fpr) and x[-1] < fpr_limit:
        share = (fpr_limit - fpr[end - 1]) / (fpr[end] - fpr[end - 1])
        x, y = np.r_[x, fpr_limit], np.r_[y, pro[end - 1] + share * (pro[end] - pro[end - 1])]
    return float(np.trapezoid(y, x) / fpr_limit)
