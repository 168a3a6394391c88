"""Evaluation metrics: pure functions of (labels, scores), labels 1 = abnormal.

Scores are never min-max normalised here: ranking metrics do not change under
it, and a threshold must stay in the units the model produces.
"""
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

# --metric value -> metrics key
HEADLINE = {"roc": "auroc", "auprc": "auprc", "f1": "f1"}


def _both_classes(labels) -> bool:
    return len(np.unique(labels)) == 2


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else float("nan")


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve (average precision), abnormal = positive."""
    return float(average_precision_score(labels, scores)) if _both_classes(labels) else float("nan")


def best_f1(labels, scores) -> tuple[float, float]:
    """Highest F1 over all thresholds, and the threshold reaching it (score >= t is abnormal)."""
    if not _both_classes(labels):
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    return float(f1[best]), float(thresholds[best])


def equal_error_rate(labels, scores) -> float:
    """Error rate where the false-positive rate equals the false-negative rate."""
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def all_metrics(labels, scores) -> dict[str, float]:
    """AUROC, AUPRC, best F1 and EER of one evaluation."""
    f1, _ = best_f1(labels, scores)
    return {"auroc": roc_auc(labels, scores), "auprc": average_precision(labels, scores),
            "f1": f1, "eer": equal_error_rate(labels, scores)}


def normal_quantile_threshold(normal_scores, false_positive_rate: float = 0.05) -> float:
    """Score below which (1 − fpr) of normal images fall: needs no labelled anomalies."""
    return float(np.quantile(np.asarray(normal_scores), 1 - false_positive_rate))
