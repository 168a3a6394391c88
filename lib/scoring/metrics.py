"""Evaluation metrics: pure functions of (labels, scores), labels 1 = abnormal.

Computed with NumPy from one sorted pass (the same definitions as
scikit-learn's roc_auc_score, average_precision_score and precision_recall_curve,
which the tests check against): importing scikit-learn would double the start-up
time of every command. Scores are never min-max normalised here: ranking metrics
do not change under it, and a threshold must stay in the units the model produces.
"""
import numpy as np

# --metric value -> metrics key
HEADLINE = {"roc": "auroc", "auprc": "auprc", "f1": "f1", "f1_score": "f1_score"}


def _counts(labels, scores):
    """Distinct thresholds (descending) with true/false positives at `score >= threshold`."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(labels == 1)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return scores[last_of_tie], tps, fps


def _both_classes(labels) -> bool:
    return len(np.unique(labels)) == 2


def roc_curve(labels, scores):
    """False-positive rates, true-positive rates and thresholds, starting at (0, 0)."""
    thresholds, tps, fps = _counts(labels, scores)
    fpr = np.r_[0, fps] / max(fps[-1], 1)
    tpr = np.r_[0, tps] / max(tps[-1], 1)
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def _precision_recall(labels, scores):
    thresholds, tps, fps = _counts(labels, scores)
    return tps / (tps + fps), tps / tps[-1], thresholds


def precision_recall_curve(labels, scores):
    """Precisions, recalls and thresholds as scikit-learn's precision_recall_curve gives them:
    thresholds ascending, and a last point (precision 1, recall 0) with no threshold."""
    precision, recall, thresholds = _precision_recall(labels, scores)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve (average precision), abnormal = positive."""
    if not _both_classes(labels):
        return float("nan")
    precision, recall, _ = _precision_recall(labels, scores)
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def best_f1(labels, scores) -> tuple[float, float]:
    """Highest F1 over all thresholds, and the threshold reaching it (score >= t is abnormal)."""
    if not _both_classes(labels):
        return float("nan"), float("nan")
    precision, recall, thresholds = _precision_recall(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def equal_error_rate(labels, scores) -> float:
    """Error rate where the false-positive rate equals the false-negative rate."""
    if not _both_classes(labels):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


ORIGINAL_F1_THRESHOLD = 0.20


def original_f1_score(labels, scores) -> float:
    """The original code's `--metric f1_score` (its lib/evaluate.py): the F1 of calling abnormal every
    image whose score, min-max scaled over the set, is at least 0.20.

    In float32 like the original's score tensor, so an image right at the threshold falls on the
    same side; 0.0 where scikit-learn's f1_score is 0/0, NaN for scores that are all equal (the
    scaling divides by zero there: the original fails).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float32)
    if not len(scores) or scores.max() == scores.min():
        return float("nan")
    scaled = (scores - scores.min()) / (scores.max() - scores.min())
    predicted = scaled >= np.float32(ORIGINAL_F1_THRESHOLD)
    true_pos = int(np.sum(predicted & (labels == 1)))
    errors = int(np.sum(predicted != (labels == 1)))  # false positives and false negatives
    return 2 * true_pos / (2 * true_pos + errors) if true_pos + errors else 0.0


# Recorded for every evaluation.
METRICS = {"auroc": roc_auc, "auprc": average_precision, "f1": lambda labels, scores: best_f1(labels, scores)[0],
           "eer": equal_error_rate}
# Recorded only when --metric names them (see HEADLINE).
ON_REQUEST = {"f1_score": original_f1_score}


def all_metrics(labels, scores, also=()) -> dict[str, float]:
    """AUROC, AUPRC, best F1 and EER of one evaluation, and those of ON_REQUEST named in `also`."""
    chosen = {**METRICS, **{name: ON_REQUEST[name] for name in also if name in ON_REQUEST}}
    return {name: metric(labels, scores) for name, metric in chosen.items()}


def normal_quantile_threshold(normal_scores, false_positive_rate: float = 0.05) -> float:
    """Score below which (1 − fpr) of normal images fall: needs no labelled anomalies."""
    return float(np.quantile(np.asarray(normal_scores), 1 - false_positive_rate))
