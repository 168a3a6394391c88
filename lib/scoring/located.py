"""Where in an image its score comes from: each score's per-location form, for predict.py's maps.

A reconstruction score's map is the error it is made of: the pixel error |x − G(x)|, or 1 − SSIM
per position. A distance of an image's embedding to normal images' (k-NN, Mahalanobis; see
lib/scoring/functions.py) is split exactly over the locations of the feature map the embedding
is a sum of: the model gives each location's part of the embedding
(`AnomalyModel.embedding_by_location`), and a location's share is its part's projection on the
direction in which the distance grows. The shares of an image sum to its score. A score with no
per-location form says so in its map's label, beside the pixel error shown in its place.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import measures
from .functions import ADVERSARY_EMBEDDING, ENCODER_EMBEDDING, SCORES

# The value each kind of map is drawn in full colour at (a fixed scale: strips compare).
PIXEL_FULL = 0.5  # a pixel error of half the intensity range
SSIM_FULL = 1.0  # 1 − SSIM of 1: no structural similarity left
SHARE_FULL = 2.0  # a location holding twice its even share of the threshold (times the threshold / locations)

PIXEL = "pixel error |x - G(x)|"
NO_FORM = "has no per-location form"
# Scores made of the pixel error: how.
OF_PIXEL_ERROR = {
    "image": "the score is the mean of its square",
    "image_l1": "the score is its mean",
    "local_error": "the score is the largest 5x5 mean of its square",
    "original": f"the score's image part; its feature part {NO_FORM}",
    "standardised": f"the score's image part; its feature part {NO_FORM}",
}
# Distances of an embedding to normal images': the embedding they measure.
DISTANCES = {"knn_encoder": ENCODER_EMBEDDING, "mahalanobis_encoder": ENCODER_EMBEDDING,
             "knn_adversary": ADVERSARY_EMBEDDING, "mahalanobis_adversary": ADVERSARY_EMBEDDING}


@dataclass
class ScoreMap:
    values: torch.Tensor  # (N, H, W), at the images' size, in the map's own units
    full: float  # the value drawn in full colour
    label: str  # what the map shows, for the strip's caption
    short: str = "pixel error"  # the same in a few words, over its panel
    scale: str = "a pixel error of half the intensity range"  # what `full` is, for the caption


def pixel_error(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(N, H, W): |x − G(x)| averaged over channels, as a fraction of the [-1, 1] intensity range."""
    return (real.float() - fake.float()).abs().mean(1) / 2


def ssim_error_map(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(N, H, W): 1 − SSIM at each position where the window fits (the ssim score is its mean), 0 on
    the border where it does not, placed as the window's centre."""
    error = 1 - measures.ssim_map(real.float(), fake.float()).mean(1)
    top, left = (real.shape[-2] - error.shape[-2]) // 2, (real.shape[-1] - error.shape[-1]) // 2
    return F.pad(error, (left, real.shape[-1] - error.shape[-1] - left, top, real.shape[-2] - error.shape[-2] - top))


def _array(values) -> np.ndarray:
    return values.detach().cpu().double().numpy() if hasattr(values, "detach") else np.asarray(values, np.float64)


def knn_shares(parts, bank, k: int) -> np.ndarray:
    """(N, h, w): each location's share of the k-NN distance (lib.scoring.functions.knn_distance).

    `parts` (N, D, h, w) sum over locations to the embeddings e. The score is the mean over the k
    nearest normal embeddings b of ‖e − b‖ = Σ_l (p_l − b/L)·(e − b) / ‖e − b‖, L locations.
    """
    parts, bank = _array(parts), _array(bank)
    n, d, h, w = parts.shape
    parts = parts.reshape(n, d, h * w)
    embeddings = parts.sum(2)
    k = min(k, len(bank))
    d2 = (embeddings**2).sum(1)[:, None] + (bank**2).sum(1)[None, :] - 2 * embeddings @ bank.T
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
    shares = np.zeros((n, h * w))
    for i in range(n):
        neighbours = bank[nearest[i]]  # (k, D)
        towards = embeddings[i] - neighbours  # the direction each distance grows in
        length = np.linalg.norm(towards, axis=1)
        weights = np.divide(1.0, length, out=np.zeros_like(length), where=length > 0) / k
        located = parts[i].T[:, None, :] - neighbours[None] / (h * w)  # (L, k, D)
        shares[i] = np.einsum("lkd,kd,k->l", located, towards, weights)
    return shares.reshape(n, h, w)


def mahalanobis_shares(parts, mean, precision) -> np.ndarray:
    """(N, h, w): each location's share of the Mahalanobis distance (functions.mahalanobis_distance):
    d = Σ_l (p_l − μ/L)ᵀ P (e − μ) / d, for the parts p_l (N, D, h, w) of e = Σ_l p_l."""
    parts, mean, precision = _array(parts), _array(mean), _array(precision)
    n, d, h, w = parts.shape
    parts = parts.reshape(n, d, h * w)
    towards = (parts.sum(2) - mean) @ precision  # P is symmetric
    distance = np.sqrt(np.maximum(np.einsum("nd,nd->n", parts.sum(2) - mean, towards), 0))
    located = parts - mean[None, :, None] / (h * w)
    shares = np.einsum("ndl,nd->nl", located, towards)
    return (np.divide(shares, distance[:, None], out=np.zeros_like(shares), where=distance[:, None] > 0)
            .reshape(n, h, w))


def _to_image_size(values: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) blocks: each location's value over the pixels it stands for (nearest: no finer detail is
    invented than the feature map has)."""
    return F.interpolate(torch.from_numpy(values)[:, None].float(), size=size, mode="nearest")[:, 0]


def map_kind(score: str) -> str:
    """The kind of map a score draws: its own distance's shares, 'ssim', or 'pixel' (the error |x - G(x)|,
    also for a score with no per-location form)."""
    return score if score in DISTANCES else "ssim" if score == "ssim" else "pixel"


def score_map(model, real: torch.Tensor, fake: torch.Tensor, threshold: float, scoring=None,
              embeddings: dict | None = None) -> ScoreMap:
    """The map of `scoring` (default `model.scoring`) for the images `real` (N, C, H, W, as scored) and their
    reconstructions. `embeddings`, a dict kept across the calls on one `real`, holds the per-location
    embeddings measured, so that the distances of one embedding (k-NN and Mahalanobis) measure it once."""
    scoring = scoring or model.scoring
    name, stats = scoring.name, scoring.stats
    if name == "ssim":
        return ScoreMap(ssim_error_map(real, fake).cpu(), SSIM_FULL,
                        "1 - SSIM per position (11x11 window); the score is its mean", "1 - SSIM",
                        "no structural similarity left")
    if name in DISTANCES:
        embeddings = {} if embeddings is None else embeddings
        if DISTANCES[name] not in embeddings:
            embeddings[DISTANCES[name]] = model.embedding_by_location(real, DISTANCES[name])
        parts = embeddings[DISTANCES[name]]
        if parts is not None:
            shares = (knn_shares(parts, stats["bank"], stats["k"]) if name.startswith("knn")
                      else mahalanobis_shares(parts, stats["mean"], stats["precision"]))
            h, w = shares.shape[1:]
            # Without a positive threshold (--threshold 0 or below), the largest score sets the scale.
            scale = threshold if np.isfinite(threshold) and threshold > 0 else max(shares.sum((1, 2)).max(), 1e-12)
            block = f"{real.shape[-2] // h}x{real.shape[-1] // w}-pixel block"
            of = "threshold" if scale == threshold else "largest score"
            return ScoreMap(_to_image_size(shares, tuple(real.shape[-2:])), SHARE_FULL * scale / (h * w),
                            f"each {block}'s share of the score ({SCORES[name].description}); the shares sum to "
                            "the score", "share of the score",
                            f"{SHARE_FULL:g} x a block's even share of the {of} ({SHARE_FULL:g} x {scale:.3g} / "
                            f"{h * w} blocks)")
        how = f"(the score {name} {NO_FORM} in this model)"
    else:
        how = f"({OF_PIXEL_ERROR[name]})" if name in OF_PIXEL_ERROR else f"(the score {name} {NO_FORM})"
    return ScoreMap(pixel_error(real, fake).cpu(), PIXEL_FULL, f"{PIXEL} {how}")
