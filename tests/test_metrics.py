"""Metrics agree with scikit-learn's definitions, ties included."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from lib.scoring import metrics


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_auprc_and_f1_match_scikit_learn(seed, ties):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    if ties:
        scores = np.round(scores, 1)
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    p, r, t = precision_recall_curve(labels, scores)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    best, threshold = metrics.best_f1(labels, scores)
    assert best == pytest.approx(f1[:-1].max())
    assert threshold == pytest.approx(t[np.argmax(f1[:-1])])


def test_perfect_separation_and_its_reverse():
    labels = np.array([0, 0, 1, 1])
    assert metrics.all_metrics(labels, [0.1, 0.2, 0.8, 0.9]) == {"auroc": 1.0, "auprc": 1.0, "f1": 1.0, "eer": 0.0}
    assert metrics.roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_min_max_scaling_does_not_change_ranking_metrics():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 100), rng.random(100)
    scaled = (scores - scores.min()) / (scores.max() - scores.min())
    assert metrics.all_metrics(labels, scores) == pytest.approx(metrics.all_metrics(labels, scaled))


def test_one_class_only_gives_nan_instead_of_crashing():
    assert np.isnan(metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_equal_error_rate_of_a_known_case():
    # Scores of normals 0..9, abnormals 5..14: at threshold 10 FPR = 0 and FNR = 0.5 ...
    labels = np.r_[np.zeros(10), np.ones(10)]
    scores = np.r_[np.arange(10), np.arange(5, 15)]
    assert metrics.equal_error_rate(labels, scores) == pytest.approx(0.25, abs=0.05)


def test_normal_quantile_threshold_flags_the_requested_share_of_normals():
    normals = np.arange(1000, dtype=float)
    t = metrics.normal_quantile_threshold(normals, 0.05)
    assert np.mean(normals >= t) == pytest.approx(0.05, abs=0.002)
