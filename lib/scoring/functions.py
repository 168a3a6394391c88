"""Score functions: from a model's per-image measurements to one anomaly score per image.

Each function names the measurements it needs (lib/scoring/measures.py computes them; a model
computes only what its score needs), may fit statistics on normal images, and applies them.
Statistics are plain numbers and CPU tensors, so a checkpoint keeps them and predict.py scores
exactly as training evaluated. Higher = more anomalous, always.

Fitting sees normal images only: the normal training images (a distance's bank of embeddings)
and the normal validation images (a part's scale; the training images where there are none,
since the generator has fitted those and their errors are smaller).
"""
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import (
    metrics,  # Measurement names: what a model reports per image (lib/scoring/measures.py computes them; the
)

# embeddings are vectors, the rest numbers).
IMAGE_MSE, IMAGE_L1, LOCAL_ERROR, SSIM_ERROR = "image_mse", "image_l1", "local_error_max", "ssim_error"
FEATURE_MSE, ADVERSARY = "feature_mse", "adversary"
ADVERSARY_EMBEDDING, ENCODER_EMBEDDING = "adversary_embedding", "encoder_embedding"
LATENT_MSE = "latent_mse"  # an encoder-decoder-encoder's distance between the codes of x and of G(x)

DEFAULT_WEIGHT = 0.9  # the original's: 0.9·image MSE + 0.1·feature MSE
KNN_K = 5
BANK_SIZE = 4096  # normal training embeddings kept for the k-NN distance (evenly spaced)


@dataclass(frozen=True)
class ScoreFunction:
    name: str
    needs: tuple[str, ...]
    description: str
    apply: Callable[[dict, dict], np.ndarray]  # (measurements, statistics) -> scores
    # (normal training measurements, normal validation measurements, settings) -> statistics
    fit: Callable[[dict, dict, dict], dict] = field(default=lambda train, val, settings: {})
    # Whether `fit` needs the normal training images' measurements (an extra pass over them).
    fits_on_training: bool = False
    # The statistics `fit` returns: name -> kind (see KINDS); a checkpoint's are checked against it.
    stats: tuple[tuple[str, str], ...] = ()


def _array(values) -> np.ndarray:
    """NumPy's view of an array or a (CPU or device) tensor."""
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def _tensor(array: np.ndarray):
    """A CPU tensor, for checkpoints (torch imported here: the command line imports this module)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(array))


# ------------------------------------------------------------------ weighted parts

def _fit_original(train, val, settings):
    return {"weight": float(settings.get("weight", DEFAULT_WEIGHT))}


def weighted(image_mse, feature_mse, weight: float = DEFAULT_WEIGHT):
    """weight·image MSE + (1 − weight)·feature MSE, on arrays and tensors alike (the benchmark
    scores on the device); a Python float weight keeps float32 parts float32."""
    weight = float(weight)
    return weight * image_mse + (1 - weight) * feature_mse


def _original(m, stats):
    return weighted(m[IMAGE_MSE], m[FEATURE_MSE], stats["weight"])


def choose_score_weight(labels, image_mse, feature_mse, metric: str = "auroc",
                        default: float = DEFAULT_WEIGHT, steps: int = 21) -> float:
    """--score_weight val: the weight in {0, 1/(steps-1), ..., 1} whose `weighted` score has the best
    `metric` (a name in lib.scoring.metrics).

    Meant for validation images only. The two parts live on different scales and one can
    even rank backwards (a WGAN critic's features are largest on real-looking normal
    images), so a fixed 0.9 is not safe. Ties go to the weight nearest `default`;
    without both classes the default is kept.
    """
    if len(np.unique(labels)) != 2:
        return default
    grid = np.linspace(0, 1, steps)
    measure = {**metrics.METRICS, **metrics.ON_REQUEST}[metric]
    values = [measure(labels, weighted(image_mse, feature_mse, w)) for w in grid]
    best = max(values)
    candidates = [w for w, v in zip(grid, values) if v >= best - 1e-12]
    return round(float(min(candidates, key=lambda w: abs(w - default))), 4)


def _fit_standardised(train, val, settings):
    normal = val if len(val.get(IMAGE_MSE, ())) else train
    stats = {}
    for part in (IMAGE_MSE, FEATURE_MSE):
        values = _array(normal[part]).astype(np.float64)
        stats[f"{part}_mean"] = float(values.mean())
        stats[f"{part}_std"] = float(max(values.std(), 1e-12))  # a constant part adds nothing, not NaN
    return stats


def _standardised(m, stats):
    z = [(_array(m[p]).astype(np.float64) - stats[f"{p}_mean"]) / stats[f"{p}_std"] for p in (IMAGE_MSE, FEATURE_MSE)]
    return (z[0] + z[1]) / 2


# ------------------------------------------------------------------ distances to normal embeddings

def _fit_bank(key):
    def fit(train, val, settings):
        bank = _array(train[key]).astype(np.float32)
        if len(bank) > BANK_SIZE:
            bank = bank[np.linspace(0, len(bank) - 1, BANK_SIZE).round().astype(int)]
        return {"bank": _tensor(bank), "k": int(settings.get("k", KNN_K))}
    return fit


def knn_distance(queries, bank, k: int, chunk: int = 1024) -> np.ndarray:
    """Mean Euclidean distance of each query to its k nearest rows of `bank`."""
    queries, bank = _array(queries).astype(np.float64), _array(bank).astype(np.float64)
    k = min(k, len(bank))
    bank_sq = (bank**2).sum(1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = np.maximum((q**2).sum(1)[:, None] + bank_sq[None, :] - 2 * q @ bank.T, 0)
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        out[start:start + chunk] = np.sqrt(nearest).mean(1)
    return out


def _knn(key):
    return lambda m, stats: knn_distance(m[key], stats["bank"], stats["k"])


def _fit_gaussian(key):
    def fit(train, val, settings):
        from sklearn.covariance import LedoitWolf  # shrinkage: fewer images than dimensions must still work

        estimate = LedoitWolf().fit(_array(train[key]).astype(np.float64))
        return {"mean": _tensor(estimate.location_), "precision": _tensor(estimate.precision_)}
    return fit


def mahalanobis_distance(x, mean, precision) -> np.ndarray:
    """sqrt((x − mean)ᵀ · precision · (x − mean)) per row."""
    d = _array(x).astype(np.float64) - _array(mean)
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, _array(precision), d), 0))


def _mahalanobis(key):
    return lambda m, stats: mahalanobis_distance(m[key], stats["mean"], stats["precision"])


def _single(part):
    return lambda m, stats: m[part]


KINDS = {  # kind -> (test, what it must be)
    "weight": (lambda v: _finite(v) and 0 <= v <= 1, "a weight in [0, 1]"),
    "number": (lambda v: _finite(v), "a finite number"),
    "positive": (lambda v: _finite(v) and v > 0, "a positive number"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a count of at least 1"),
    "vector": (lambda v: _float_tensor(v, 1), "a 1-D float tensor"),
    "matrix": (lambda v: _float_tensor(v, 2), "a 2-D float tensor"),
}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _float_tensor(value, dims: int) -> bool:
    return (hasattr(value, "dtype") and getattr(value, "ndim", -1) == dims and min(value.shape, default=0) > 0
            and getattr(value.dtype, "is_floating_point", False) and bool(np.isfinite(_array(value)).all()))


WEIGHT = (("weight", "weight"),)
STANDARDISED = tuple((f"{part}_{stat}", "number" if stat == "mean" else "positive")
                     for part in (IMAGE_MSE, FEATURE_MSE) for stat in ("mean", "std"))
BANK, GAUSSIAN = (("bank", "matrix"), ("k", "count")), (("mean", "vector"), ("precision", "matrix"))

SCORES = {f.name: f for f in [
    ScoreFunction("original", (IMAGE_MSE, FEATURE_MSE),
                  "w x image MSE + (1 - w) x feature MSE (the original's, w = 0.9)", _original, _fit_original,
                  stats=WEIGHT),
    ScoreFunction("image", (IMAGE_MSE,), "image MSE", _single(IMAGE_MSE)),
    ScoreFunction("image_l1", (IMAGE_L1,), "mean absolute image error", _single(IMAGE_L1)),
    ScoreFunction("local_error", (LOCAL_ERROR,), "largest 5x5-averaged squared error", _single(LOCAL_ERROR)),
    ScoreFunction("ssim", (SSIM_ERROR,), "1 - SSIM of image and reconstruction", _single(SSIM_ERROR)),
    ScoreFunction("feature", (FEATURE_MSE,), "adversary feature MSE", _single(FEATURE_MSE)),
    ScoreFunction("standardised", (IMAGE_MSE, FEATURE_MSE),
                  "mean of image and feature MSE, each standardised on normal validation images",
                  _standardised, _fit_standardised, stats=STANDARDISED),
    ScoreFunction("latent", (LATENT_MSE,), "MSE between the codes of the image and of its reconstruction "
                  "(GANomaly's)", _single(LATENT_MSE)),
    ScoreFunction("adversary", (ADVERSARY,), "the adversary's own verdict (higher = less real)", _single(ADVERSARY)),
    ScoreFunction("knn_adversary", (ADVERSARY_EMBEDDING,),
                  "k-NN distance to normal training images' adversary features",
                  _knn(ADVERSARY_EMBEDDING), _fit_bank(ADVERSARY_EMBEDDING), True, BANK),
    ScoreFunction("mahalanobis_adversary", (ADVERSARY_EMBEDDING,),
                  "Mahalanobis distance to normal training images' adversary features",
                  _mahalanobis(ADVERSARY_EMBEDDING), _fit_gaussian(ADVERSARY_EMBEDDING), True, GAUSSIAN),
    ScoreFunction("knn_encoder", (ENCODER_EMBEDDING,), "k-NN distance to normal training images' generator codes",
                  _knn(ENCODER_EMBEDDING), _fit_bank(ENCODER_EMBEDDING), True, BANK),
    ScoreFunction("mahalanobis_encoder", (ENCODER_EMBEDDING,),
                  "Mahalanobis distance to normal training images' generator codes",
                  _mahalanobis(ENCODER_EMBEDDING), _fit_gaussian(ENCODER_EMBEDDING), True, GAUSSIAN),
]}


def stats_problem(name, stats) -> str | None:
    """What is wrong with a stored score: an unknown name or statistics `fit` would not have made."""
    if name not in SCORES:
        return f"the score {name!r} is none of {', '.join(SCORES)}"
    if not isinstance(stats, dict):
        return f"the statistics of the score '{name}' are not a dict"
    for key, kind in SCORES[name].stats:
        test, what = KINDS[kind]
        if key not in stats:
            return f"the score '{name}' lacks its statistic '{key}'"
        if not test(stats[key]):
            return f"the statistic '{key}' of the score '{name}' is not {what}"
    if "precision" in stats and tuple(stats["precision"].shape) != (len(stats["mean"]),) * 2:
        return f"the score '{name}' has a precision matrix that does not match its mean"
    return None


def needs(names) -> set[str]:
    """The measurements that the score functions `names` need, together."""
    return {need for name in names for need in SCORES[name].needs}


def fit(name: str, normal_train: dict, normal_val: dict, **settings) -> dict:
    """Statistics of score `name` from normal images' measurements (training, validation)."""
    return SCORES[name].fit(normal_train, normal_val, settings)


def apply(name: str, measurements: dict, stats: dict) -> np.ndarray:
    """Score `name` of each image, from its measurements and the fitted statistics."""
    return SCORES[name].apply(measurements, stats)


@dataclass
class Scoring:
    """The score a model is evaluated with: a score function's name and its fitted statistics."""
    name: str = "original"
    stats: dict = field(default_factory=dict)

    @property
    def needs(self) -> tuple[str, ...]:
        return SCORES[self.name].needs

    def __call__(self, measurements: dict):
        """Each image's score from its measurements."""
        return apply(self.name, measurements, self.stats)


def choose(labels, candidates: dict[str, np.ndarray], metric) -> str:
    """The candidate whose scores have the best `metric(labels, scores)`; ties go to the first.

    For validation labels only: choosing on the test set would report a best case.
    """
    values = {name: metric(labels, scores) for name, scores in candidates.items()}
    values = {name: v for name, v in values.items() if v == v}  # NaN (one class only) cannot win
    if not values:
        return next(iter(candidates))
    best = max(values.values())
    return next(name for name, v in values.items() if v >= best)
