"""Where the anomalies are, measured: a run's anomaly maps against the masks of inspection data.

An image's map is its score's per-location form, the one predict.py draws (lib/scoring/located.py: the
reconstruction error |x − G(x)| for the reconstruction scores, each location's share for a distance),
brought to the masks' size and smoothed by a Gaussian, as the localisation literature does (PaDiM and
PatchCore smooth with σ = 4 pixels at 224 pixels). How much to smooth is chosen among SIGMAS on the
validation split's masks, by PRO, never on the test set. Metrics (lib/scoring/pixel.py) are pixel AUROC
and PRO over a split, and on the test split also over each kind of defect's images alone.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .evaluate import measure
from .located import score_map
from .pixel import pixel_auroc, pro_auc

SIGMAS = (4.0, 2.0, 1.0, 0.0)  # Gaussian widths in pixels at the masks' size; the first when nothing can choose
GOOD = "good"  # the kind of a normal image (lib/data/mvtec.py)


def anomaly_maps(model, images: torch.Tensor, batchsize: int, device, size: tuple[int, int]) -> np.ndarray:
    """(N, *size) float32: the map of `model.scoring` for each uint8 image, scored in eval mode as
    predict.py scores, resized bilinearly to `size` where the images' size differs."""
    maps = []

    def collect(real, parts):
        values = score_map(model, real, parts["fake"], float("nan")).values.float()
        if tuple(values.shape[-2:]) != tuple(size):
            values = F.interpolate(values[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        maps.append(values.cpu().numpy())
    measure(model, images, batchsize, device, needs=set(), on_batch=collect)
    return np.concatenate(maps) if maps else np.zeros((0, *size), np.float32)


def smoothed(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each map blurred by a Gaussian of `sigma` pixels (0: as it is); borders mirrored."""
    if sigma == 0:
        return maps
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)


def located_metrics(masks, maps) -> dict[str, float]:
    return {"pixel_auroc": pixel_auroc(masks, maps), "pro": pro_auc(masks, maps)}


def choose_sigma(masks, maps: np.ndarray) -> tuple[float, dict[str, float]]:
    """The width in SIGMAS whose smoothed maps give the validation masks the highest PRO (the first without
    defective validation images), and each width's PRO."""
    pros = {sigma: pro_auc(masks, smoothed(maps, sigma)) for sigma in SIGMAS}
    finite = {sigma: value for sigma, value in pros.items() if np.isfinite(value)}
    return (max(finite, key=finite.get) if finite else SIGMAS[0]), pros


def by_defect(masks, maps, defects: list[str]) -> dict[str, float]:
    """pixel_auroc_<defect> and pro_<defect>: over the images of each kind of defect alone."""
    found = {}
    for defect in sorted(set(defects) - {GOOD}):
        chosen = np.array([d == defect for d in defects])
        found.update({f"{name}_{defect}": value for name, value in located_metrics(masks[chosen],
                                                                                    maps[chosen]).items()})
    return found


def chosen_sigma(ckpt: dict) -> tuple[float, str]:
    """The smoothing a run chose on its validation masks at its checkpoint's epoch, and where it came from."""
    row = next((r for r in ckpt.get("history", []) if r.get("epoch") == ckpt.get("epoch")), {})
    sigma = row.get("val_map_sigma")
    if isinstance(sigma, (int, float)) and np.isfinite(sigma):
        return float(sigma), "chosen by the run on its validation masks"
    return SIGMAS[0], "the run had no masks to choose it: the literature's"


def evaluate_maps(model, images: torch.Tensor, masks: np.ndarray, defects: list[str], batchsize: int, device,
                  sigma: float) -> dict[str, float]:
    """Pixel AUROC and PRO of the maps of `images` smoothed by `sigma`, over all and per kind of defect."""
    maps = smoothed(anomaly_maps(model, images, batchsize, device, masks.shape[1:]), sigma)
    return {**located_metrics(masks, maps), **by_defect(masks, maps, defects)}


def localise(model, split, val, test, batchsize: int, device) -> None:
    """With masks (inspection data; else nothing): the maps' metrics added to `val.metrics` and `test.metrics`
    (lib.scoring.evaluate.Scores), the smoothing chosen on the validation split (val map_sigma)."""
    if split.test_masks is None:
        return
    val_masks, test_masks = split.val_masks.numpy(), split.test_masks.numpy()
    val_maps = anomaly_maps(model, split.val_images, batchsize, device, val_masks.shape[1:])
    sigma, _ = choose_sigma(val_masks, val_maps)
    if len(val_masks):
        val.metrics.update(located_metrics(val_masks, smoothed(val_maps, sigma)))
    val.metrics["map_sigma"] = sigma
    test.metrics.update(evaluate_maps(model, split.test_images, test_masks, split.test_defects, batchsize, device,
                                      sigma))
