"""Scoring images with a trained model, and what is chosen from the scores.

One batch loop, `evaluate`, serves the training loop, `train.py --phase test` and
predict.py, so an image gets the same score wherever it is scored. The rest are
functions of scores and labels: a split's metrics, the score weight chosen on
validation labels (--score_weight val) and the thresholds stored for predict.py.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from lib.data import to_float
from lib.metrics import all_metrics, best_f1, normal_quantile_threshold, roc_auc
from lib.scoring.functions import choose_score_weight
from lib.scoring.measures import FEATURE_MSE, IMAGE_MSE

# Fraction of normal images the stored threshold may flag (predict.py's default).
THRESHOLD_FPR = 0.05


@torch.no_grad()
def evaluate(model, images: torch.Tensor, batchsize: int, device, on_batch=None, needs=None) -> dict[str, np.ndarray]:
    """Score uint8 `images` in batches: "score" (`model.scoring`), then the measurements it is made of.

    `needs`: these measurements too. `on_batch(real, parts)` sees each float batch and its
    measurements, the reconstruction "fake" included, in the same pass (predict.py draws its
    strips there).
    """
    needs = set(model.scoring.needs) | set(needs or ())
    collected = {name: [] for name in sorted(needs)}
    for start in range(0, len(images), batchsize):
        real = to_float(images[start:start + batchsize], device, model.pixel_mean_std)
        parts = model.score_parts(real, needs=needs)
        for name in collected:
            collected[name].append(parts[name].float().cpu())
        if on_batch is not None:
            on_batch(real, parts)
    measured = {name: torch.cat(values).numpy() if values else np.zeros(0, np.float32)
                for name, values in collected.items()}
    return {"score": np.asarray(model.scoring(measured), dtype=np.float32), **measured}


@dataclass
class Scores:
    """One split's labels (1 = abnormal), per-image parts from `evaluate` and metrics."""
    labels: np.ndarray
    parts: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)


def split_metrics(labels, parts: dict[str, np.ndarray], headline: str = "auroc") -> dict[str, float]:
    """The score's metrics (the `headline` one included) and, as auroc_<name>, the AUROC of each
    per-image measurement alone ({} without images)."""
    if not len(labels):
        return {}
    metrics = all_metrics(labels, parts["score"], also=(headline,))
    # Each part of the score on its own shows which one carries (or spoils) the ranking.
    for name, values in parts.items():
        if name != "score" and values.ndim == 1:
            metrics[f"auroc_{name}"] = roc_auc(labels, values)
    return metrics


def choose_weight(model, val: Scores, splits: list[Scores], metric: str) -> float:
    """--score_weight val: the weight of the original score's two parts that ranks validation best,
    for `model` and `splits`.

    Only validation labels are looked at; every split's score is recomputed with the weight.
    """
    # Without validation images there are no parts: choose_score_weight keeps its default.
    image, feature = (val.parts.get(name, np.zeros(0, np.float32)) for name in (IMAGE_MSE, FEATURE_MSE))
    weight = choose_score_weight(val.labels, image, feature, metric)
    model.score_weight = weight
    for split in splits:
        if len(split.labels):
            split.parts["score"] = np.asarray(model.scoring(split.parts), dtype=np.float32)
    return weight


def decision_threshold(normal_scores, source: str, test: Scores, epoch: int) -> dict:
    """Thresholds stored for predict.py: from normal images' scores, and F1-optimal on test (for reference)."""
    _, f1_threshold = best_f1(test.labels, test.parts["score"])
    return {"value": normal_quantile_threshold(normal_scores, THRESHOLD_FPR), "fpr": THRESHOLD_FPR,
            "method": f"{100 * (1 - THRESHOLD_FPR):g}th percentile of scores of {source}",
            "f1_optimal_test": f1_threshold, "epoch": epoch}
