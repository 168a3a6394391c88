"""Where the anomalies are, measured: a run's anomaly maps against the masks of inspection data.

Each score has a per-location form, the one predict.py draws (lib/scoring/located.py): the reconstruction
error |x − G(x)| for the reconstruction scores, 1 − SSIM per position for ssim, each location's share for
a distance. The map that localises is chosen among these kinds, as the image score is chosen among the
scores: at each evaluation, by PRO on the validation split's masks, never on the test set. Each map is
brought to the masks' size and smoothed by a Gaussian, as the localisation literature does (PaDiM and
PatchCore smooth with σ = 4 pixels at 224 pixels); how much is chosen among SIGMAS with the kind. The
choice is the model's `localising` scoring, kept in its checkpoints. Metrics (lib/scoring/pixel.py) are
pixel AUROC and PRO over a split, and on the test split also over each kind of defect's images alone.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import UserError
from .evaluate import measure
from .functions import Scoring
from .located import PIXEL, map_kind, score_map
from .pixel import pixel_auroc, pro_auc

SIGMAS = (4.0, 2.0, 1.0, 0.0)  # Gaussian widths in pixels at the masks' size; the first when nothing can choose
GOOD = "good"  # the kind of a normal image (lib/data/mvtec.py)


def map_candidates(model, fitted: dict[str, Scoring]) -> dict[str, Scoring]:
    """Each kind of map the run can draw, with a score that draws it: the run's own score's first (it wins
    ties), then the pixel error and 1 − SSIM (no statistics), then each distance fitted this evaluation
    (all of them when the score is chosen on validation; with --score, its own alone)."""
    candidates = {map_kind(model.scoring.name): model.scoring}
    for kind, scoring in (("pixel", Scoring("image", {})), ("ssim", Scoring("ssim", {}))):
        candidates.setdefault(kind, scoring)
    for name, scoring in fitted.items():
        candidates.setdefault(map_kind(name), scoring)
    return candidates


def localising(model) -> Scoring:
    """The score whose map localises (chosen on validation masks), or, without one, the run's own score."""
    return getattr(model, "localising", None) or model.scoring


def anomaly_maps(model, images: torch.Tensor, batchsize: int, device, size: tuple[int, int],
                 scorings: dict[str, Scoring]) -> dict[str, np.ndarray]:
    """{kind: (N, *size) float32} for each scoring of `scorings`: the maps of the uint8 images, scored in eval
    mode as predict.py scores, in one pass, resized bilinearly to `size` where the images' size differs.
    A distance the model cannot split by location (its map would be the pixel error again) is left out."""
    maps = {kind: [] for kind in scorings}

    def collect(real, parts):
        embeddings = {}  # each embedding measured once for all the distances of this batch
        for kind, scoring in scorings.items():
            drawn = score_map(model, real, parts["fake"], float("nan"), scoring, embeddings)
            if kind != "pixel" and drawn.label.startswith(PIXEL):
                maps.pop(kind, None)
                continue
            values = drawn.values.float()
            if tuple(values.shape[-2:]) != tuple(size):
                values = F.interpolate(values[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            if kind in maps:
                maps[kind].append(values.cpu().numpy())
    measure(model, images, batchsize, device, needs=set(), on_batch=collect)
    return {kind: np.concatenate(found) if found else np.zeros((0, *size), np.float32) for kind, found in maps.items()}


def smoothed(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Each map blurred by a Gaussian of `sigma` pixels (0: as it is); borders mirrored."""
    if sigma == 0:
        return maps
    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)


def located_metrics(masks, maps) -> dict[str, float]:
    return {"pixel_auroc": pixel_auroc(masks, maps), "pro": pro_auc(masks, maps)}


def choose_sigma(masks, maps: np.ndarray) -> tuple[float, dict[float, float]]:
    """The width in SIGMAS whose smoothed maps give the validation masks the highest PRO (the first without
    defective validation images), and each width's PRO."""
    pros = {sigma: pro_auc(masks, smoothed(maps, sigma)) for sigma in SIGMAS}
    finite = {sigma: value for sigma, value in pros.items() if np.isfinite(value)}
    return (max(finite, key=finite.get) if finite else SIGMAS[0]), pros


def choose_map(masks, maps: dict[str, np.ndarray]) -> tuple[str, float, dict[str, float]]:
    """The kind of map and the width whose smoothed maps give the validation masks the highest PRO (ties:
    the earlier kind, the wider; without defective validation images, the first kind at SIGMAS[0]), and each
    kind's best PRO."""
    chosen = {kind: choose_sigma(masks, kind_maps) for kind, kind_maps in maps.items()}
    best = {kind: max((v for v in pros.values() if np.isfinite(v)), default=float("nan"))
            for kind, (_, pros) in chosen.items()}
    finite = {kind: value for kind, value in best.items() if np.isfinite(value)}
    kind = max(finite, key=finite.get) if finite else next(iter(maps))
    return kind, chosen[kind][0], best


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
    if sigma is None or isinstance(sigma, float) and np.isnan(sigma):
        return SIGMAS[0], "the run had no masks to choose it: the literature's"
    if isinstance(sigma, bool) or sigma not in SIGMAS:  # (it is one of them: an edited checkpoint)
        raise UserError(f"checkpoint '{ckpt.get('path')}' is damaged: its smoothing of the maps, val_map_sigma "
                        f"{sigma!r}, is none of {', '.join(f'{s:g}' for s in SIGMAS)}")
    return float(sigma), "chosen by the run on its validation masks"


def evaluate_maps(model, images: torch.Tensor, masks: np.ndarray, defects: list[str], batchsize: int, device,
                  sigma: float) -> dict[str, float]:
    """Pixel AUROC and PRO of the `localising` maps of `images` smoothed by `sigma`, over all and per kind of
    defect."""
    scoring = localising(model)
    maps = anomaly_maps(model, images, batchsize, device, masks.shape[1:], {map_kind(scoring.name): scoring})
    maps = smoothed(next(iter(maps.values()), np.zeros((len(images), *masks.shape[1:]), np.float32)), sigma)
    return {**located_metrics(masks, maps), **by_defect(masks, maps, defects)}


def localise(model, split, val, test, batchsize: int, device, fitted: dict[str, Scoring]) -> None:
    """With masks (inspection data; else nothing): the map that localises chosen on the validation split among
    the kinds the run's `fitted` scores draw (model.localising; val map_sigma, pro_map_<kind>), and the maps'
    metrics added to `val.metrics` and `test.metrics` (lib.scoring.evaluate.Scores)."""
    if split.test_masks is None:
        return
    val_masks, test_masks = split.val_masks.numpy(), split.test_masks.numpy()
    candidates = map_candidates(model, fitted)
    val_maps = anomaly_maps(model, split.val_images, batchsize, device, val_masks.shape[1:], candidates)
    kind, sigma, pros = choose_map(val_masks, val_maps)
    model.localising = candidates[kind]
    if len(val_masks):
        val.metrics.update(located_metrics(val_masks, smoothed(val_maps[kind], sigma)))
    val.metrics["map_sigma"] = sigma
    val.metrics.update({f"pro_map_{name}": value for name, value in pros.items()})
    test.metrics.update(evaluate_maps(model, split.test_images, test_masks, split.test_defects, batchsize, device,
                                      sigma))
