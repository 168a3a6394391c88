"""Scoring images with a trained model, and what is chosen from the scores.

One batch loop, `measure`, serves the training loop, `train.py --phase test` and
predict.py, so an image gets the same score wherever it is scored. The rest are
functions of measurements, scores and labels: the score's statistics fitted on normal
images and the score chosen on validation labels (`fit_scoring`: --score, --score_weight),
a split's metrics and the thresholds stored for predict.py.
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from ..images import to_float
from .functions import (
    BANK_SIZE,
    FEATURE_MSE,
    IMAGE_MSE,
    SCORES,
    Scoring,
    choose,
    choose_score_weight,
    fit,
    needs,
)
from .metrics import METRICS, ON_REQUEST, all_metrics, best_f1, normal_quantile_threshold, roc_auc

# Fraction of normal images the stored threshold may flag (predict.py's default).
THRESHOLD_FPR = 0.05


@torch.no_grad()
def measure(model, images: torch.Tensor, batchsize: int, device, needs, on_batch=None,
            train_mode: bool = False) -> dict[str, np.ndarray]:
    """The measurements `needs` of uint8 `images`, in batches (`train_mode`: as the original measured,
    see ScorePolicy). `on_batch(real, parts)` sees each float batch and its measurements, the
    reconstruction "fake" included, in the same pass (predict.py draws its strips there)."""
    collected = {name: [] for name in sorted(needs)}
    for start in range(0, len(images), batchsize):
        real = to_float(images[start:start + batchsize], device, model.pixel_mean_std)
        parts = model.score_parts(real, train_mode, needs=needs, reconstruction=on_batch is not None)
        for name in collected:
            collected[name].append(parts[name].float().cpu())
        if on_batch is not None:
            on_batch(real, parts)
    return {name: torch.cat(values).numpy() if values else np.zeros(0, np.float32)
            for name, values in collected.items()}


def evaluate(model, images: torch.Tensor, batchsize: int, device, on_batch=None, needs=(),
             train_mode: bool = False) -> dict[str, np.ndarray]:
    """"score" (`model.scoring`) of uint8 `images`, then the measurements it is made of (and `needs`)."""
    measured = measure(model, images, batchsize, device, set(model.scoring.needs) | set(needs), on_batch,
                       train_mode)
    return {"score": scores_of(model.scoring, measured), **measured}


def scores_of(scoring, measured: dict) -> np.ndarray:
    """float32 scores ([] without images: a score function need not take empty input)."""
    if not len(next(iter(measured.values()), ())):
        return np.zeros(0, np.float32)
    return np.asarray(scoring(measured), dtype=np.float32)


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


def fit_all(model, names: list[str], val: Scores, training_images: torch.Tensor, batchsize: int, device,
            metric: str, weight: float | None, train_mode: bool = False) -> dict[str, Scoring]:
    """Each of the scores `names` with its statistics, fitted on normal images only: a sample of
    training images (a distance's bank of embeddings) and the validation split's normal images.

    Needs `val.parts` to hold every measurement of `names`; the original score takes `weight`, or
    (None: --score_weight val) the weight whose scores rank the validation labels best by `metric`.
    Training images are measured as the validation images were (`train_mode`).
    """
    normal_val = {name: values[val.labels == 0] for name, values in val.parts.items()}
    # Without normal validation images (--val_ratio 0) a part's scale comes from training images too.
    no_val = not (val.labels == 0).any()
    on_training = sorted(needs(n for n in names if SCORES[n].fits_on_training or no_val and n != "original"))
    training = {}
    if on_training:
        sample = torch.linspace(0, len(training_images) - 1, min(BANK_SIZE, len(training_images))).round().long()
        training = measure(model, training_images[sample], batchsize, device, on_training, train_mode=train_mode)
    fitted = {}
    for name in names:
        if name == "original":  # its weight: fixed, or chosen on the validation labels (--score_weight val)
            chosen = (weight if weight is not None else
                      choose_score_weight(val.labels, val.parts[IMAGE_MSE], val.parts[FEATURE_MSE], metric))
            fitted[name] = Scoring(name, fit(name, {}, {}, weight=chosen))
        else:
            fitted[name] = Scoring(name, fit(name, training or normal_val, normal_val))
    return fitted


def fit_scoring(model, names: list[str], val: Scores, training_images: torch.Tensor, batchsize: int, device,
                metric: str, weight: float | None,
                train_mode: bool = False) -> tuple[Scoring, dict[str, float], dict[str, Scoring]]:
    """The scores `names` fitted (`fit_all`), and the one that ranks the validation split best (never
    the test set; the only one when there is one); `val` gets its scores.

    Returns (that score, each candidate's validation `metric` when there was a choice, else {}, every
    fitted score: the maps that localise are chosen among theirs).
    """
    fitted = fit_all(model, names, val, training_images, batchsize, device, metric, weight, train_mode)
    values = {}
    chosen = fitted[names[0]]
    if len(names) > 1:
        scores = {name: scores_of(scoring, val.parts) for name, scoring in fitted.items()}
        measure_of = {**METRICS, **ON_REQUEST}[metric]
        values = {name: measure_of(val.labels, s) for name, s in scores.items()}
        chosen = fitted[choose(val.labels, scores, measure_of)]
    val.parts["score"] = scores_of(chosen, val.parts)
    return chosen, values, fitted


def decision_threshold(normal_scores, source: str, test: Scores, epoch: int) -> dict:
    """Thresholds stored for predict.py: from normal images' scores, and F1-optimal on test (for reference)."""
    _, f1_threshold = best_f1(test.labels, test.parts["score"])
    return {"value": normal_quantile_threshold(normal_scores, THRESHOLD_FPR), "fpr": THRESHOLD_FPR,
            "method": f"{100 * (1 - THRESHOLD_FPR):g}th percentile of scores of {source}",
            "f1_optimal_test": f1_threshold, "epoch": epoch}


def stored_threshold(model, val: Scores, test: Scores, split, batchsize: int, device, train_mode: bool,
                     epoch: int) -> dict:
    """The thresholds a run stores for predict.py, from the scores of normal images only.

    predict.py scores in eval mode: a run that scores in training mode (as the original) is scored
    again in eval mode here, which also leaves BatchNorm's statistics as they were.
    """
    normal = val.parts["score"][val.labels == 0]
    source = "validation normal images"
    images = split.val_images[torch.from_numpy(val.labels == 0)]
    if len(normal) == 0:  # --val_ratio 0: training images are all we have without labels
        images, source = split.train, "training images (no validation split; biased low)"
    if len(normal) == 0 or train_mode:  # (in eval mode, as predict.py scores)
        normal = evaluate(model, images, batchsize, device)["score"]
    chosen = getattr(model, "localising", None)  # inspection data: the map chosen on validation masks, with it
    return {**decision_threshold(normal, source, test, epoch), "score": model.scoring.name,
            **({"map": {"score": chosen.name, "sigma": val.metrics["map_sigma"]}} if chosen else {})}
