"""The run folder's plots/: how well the run's score separates the classes, and how training went.

- roc.png and precision_recall.png: the curves of the chosen score on the validation and test
  splits, AUROC and average precision in the legend;
- score_histogram.png: the scores of normal and abnormal images, per split, with the stored
  threshold (predict.py's) and the share of each class it flags;
- learning_curves.png: AUROC per epoch (validation and test) and each loss per epoch.

The first three show the epoch whose weights are best.pt, the ones predict.py scores with and
whose threshold is stored; learning_curves.png every epoch so far. Figures come from what the loop
already has (scores, labels, metrics.csv's rows): pure functions return a matplotlib Figure, drawn
on the Agg canvas (no pyplot, no global state, never a display), and `save_figure` writes one
atomically. Without the 'outputs' fix (lib/original.py) a run draws none, as the original saved none.
"""
import math
import os
from pathlib import Path

import numpy as np

# matplotlib validates $MPLBACKEND as it loads and raises on a value it does not know; no backend is
# used here (the Agg canvas is drawn on directly), so a bad one in the user's shell must not stop a run.
_backend = os.environ.pop("MPLBACKEND", None)
try:
    import matplotlib  # noqa: F401
finally:
    if _backend is not None:
        os.environ["MPLBACKEND"] = _backend
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from ..files import atomic_write  # noqa: E402
from ..scoring import metrics  # noqa: E402

PLOTS = "plots"  # the folder in a run folder (and in its test/ folder, for --phase test)
ROC, PRECISION_RECALL, HISTOGRAM, LEARNING = "roc.png", "precision_recall.png", "score_histogram.png", \
    "learning_curves.png"
# metrics.csv's columns that are neither a loss nor a split's metric (lib/training/trainer.py, end_epoch).
BOOKKEEPING = frozenset({"epoch", "lr", "train_images", "train_seconds", "train_img_per_s", "eval_images",
                         "eval_seconds", "eval_img_per_s", "bf16", "threads", "processes"})
COLOURS = {"validation": "tab:blue", "test": "tab:orange", "normal": "tab:green", "abnormal": "tab:red"}
DPI = 100


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # draws into memory: no window, whatever $DISPLAY says
    return figure


def _both_classes(labels) -> bool:
    return len(np.unique(labels)) == 2


def roc_figure(splits: dict[str, tuple], title: str) -> Figure:
    """ROC curves of `splits` (name -> (labels, scores), 1 = abnormal), AUROC in the legend."""
    figure = _figure(5.5, 5.2)
    ax = figure.subplots()
    for name, (labels, scores) in splits.items():
        if _both_classes(labels):
            fpr, tpr, _ = metrics.roc_curve(labels, scores)
            ax.plot(fpr, tpr, color=COLOURS.get(name), label=f"{name}: AUROC {metrics.roc_auc(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance: AUROC 0.5")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (normal images flagged)",
           ylabel="true-positive rate (abnormal images flagged)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    return figure


def precision_recall_figure(splits: dict[str, tuple], title: str) -> Figure:
    """Precision-recall curves of `splits` (abnormal = positive), average precision in the legend."""
    figure = _figure(5.5, 5.2)
    ax = figure.subplots()
    for name, (labels, scores) in splits.items():
        if _both_classes(labels):
            precision, recall, _ = metrics.precision_recall_curve(labels, scores)
            colour = COLOURS.get(name)
            ax.plot(recall, precision, drawstyle="steps-post", color=colour,
                    label=f"{name}: AP {metrics.average_precision(labels, scores):.3f}")
            share = float(np.mean(np.asarray(labels) == 1))
            ax.axhline(share, color=colour, linestyle=":", label=f"{name}, chance: AP {share:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (abnormal images flagged)",
           ylabel="precision (flagged images that are abnormal)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return figure


def histogram_edges(scores: list, threshold: float | None = None, bins: int = 40) -> np.ndarray:
    """`bins` + 1 common bin edges over the finite values of every array in `scores` and the threshold."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores] + [np.zeros(0)])
    values = values[np.isfinite(values)]
    if threshold is not None and math.isfinite(threshold):
        values = np.r_[values, threshold]
    low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def class_histograms(labels, scores, edges) -> dict[str, np.ndarray]:
    """Each class's share of its images per bin ("normal", "abnormal"; a class without images left out)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    out = {}
    for name, value in (("normal", 0), ("abnormal", 1)):
        chosen = scores[(labels == value) & np.isfinite(scores)]
        if len(chosen):
            out[name] = np.histogram(np.clip(chosen, edges[0], edges[-1]), edges)[0] / len(chosen)
    return out


def flagged(labels, scores, threshold: float) -> dict[str, float]:
    """The share of each class's images at or above `threshold` (as predict.py decides)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return {name: float(np.mean(scores[labels == value] >= threshold))
            for name, value in (("normal", 0), ("abnormal", 1)) if np.any(labels == value)}


def histogram_figure(splits: dict[str, tuple], threshold: dict | None, title: str) -> Figure:
    """One panel per split: the share of normal and abnormal images per score bin, and the threshold."""
    value = (threshold or {}).get("value")
    value = value if isinstance(value, (int, float)) and math.isfinite(value) else None
    edges = histogram_edges([scores for _, scores in splits.values()], value)
    figure = _figure(5.5 * max(1, len(splits)), 4.6)
    axes = np.atleast_1d(figure.subplots(1, max(1, len(splits)), sharex=True))
    for ax, (name, (labels, scores)) in zip(axes, splits.items()):
        shares = flagged(labels, scores, value) if value is not None else {}
        for cls, counts in class_histograms(labels, scores, edges).items():
            n = int(np.sum(np.asarray(labels) == {"normal": 0, "abnormal": 1}[cls]))
            flag = f", {100 * shares[cls]:.1f}% flagged" if cls in shares else ""
            ax.stairs(counts, edges, fill=True, alpha=0.45, color=COLOURS[cls], label=f"{cls} ({n}{flag})")
        if value is not None:
            ax.axvline(value, color="black", linestyle="--", label=f"threshold {value:.4g}")
        ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="share of the class's images per bin")
        ax.set_title(f"{name} split", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    figure.suptitle(title + (f"\nthreshold: {threshold['method']}" if value is not None and "method" in threshold
                             else ""), fontsize=9)
    return figure


def loss_columns(history: list[dict]) -> list[str]:
    """The losses among metrics.csv's columns: neither bookkeeping nor a split's metric."""
    keys = dict.fromkeys(k for row in history for k in row)
    return [k for k in keys if k not in BOOKKEEPING and not k.startswith(("val_", "test_"))]


def series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the rows of `history` that hold a finite `key`."""
    points = [(row["epoch"], float(row[key])) for row in history
              if key in row and row[key] not in ("", None) and math.isfinite(float(row[key]))]
    return np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)


def learning_curves_figure(history: list[dict], best_epoch: int | None, selected_by: str, title: str) -> Figure:
    """AUROC per epoch (validation, test) and one small panel per loss, the best epoch marked."""
    losses = loss_columns(history)
    columns = 4
    rows = 1 + math.ceil(len(losses) / columns)
    figure = _figure(3.0 * columns, 3.0 + 2.2 * (rows - 1))
    grid = figure.add_gridspec(rows, columns)
    ax = figure.add_subplot(grid[0, :])
    for split, name in (("val", "validation"), ("test", "test")):
        epochs, values = series(history, f"{split}_auroc")
        if len(values):
            ax.plot(epochs, values, "o-", color=COLOURS[name], label=f"{name} AUROC")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch} ({selected_by})")
    ax.set(xlabel="epoch", ylabel="AUROC")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    for i, loss in enumerate(losses):
        panel = figure.add_subplot(grid[1 + i // columns, i % columns])
        epochs, values = series(history, loss)
        panel.plot(epochs, values, "o-", color="tab:purple")
        panel.set(xlabel="epoch", ylabel="mean over the epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.set_title(f"loss {loss}", fontsize=9)
    if not losses:
        ax.text(0.5, 0.1, "no training losses: an untrained control (--niter 0)", transform=ax.transAxes,
                ha="center")
    return figure


def picture(figure: Figure) -> Image.Image:
    """`figure` drawn, in a palette of 256 colours: enough for a plot's few colours and their anti-aliasing,
    at a third of the bytes of the full-colour image."""
    figure.canvas.draw()
    return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3]).quantize(256)


def save_figure(figure: Figure, path: Path) -> None:
    """`figure` as a PNG at `path`, atomically; a disk that refuses it raises WriteFailed (lib/files.py)."""
    image = picture(figure)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def heading(what: str, model: str, score: str, run: str, epoch: str) -> str:
    """A figure's title: what it shows, and the model, score, run and epoch it shows it for."""
    return f"{what}\n{model}, score {score}, run {run}\n{epoch}"


def write_score_plots(folder: Path, splits: dict[str, tuple], threshold: dict | None, title) -> None:
    """roc.png, precision_recall.png and score_histogram.png in `folder`; `title(what)` heads each."""
    save_figure(roc_figure(splits, title("ROC curve")), folder / ROC)
    save_figure(precision_recall_figure(splits, title("precision-recall curve")), folder / PRECISION_RECALL)
    save_figure(histogram_figure(splits, threshold, title("anomaly scores")), folder / HISTOGRAM)


def write_learning_curves(folder: Path, history: list[dict], best_epoch: int | None, selected_by: str,
                          title: str) -> None:
    save_figure(learning_curves_figure(history, best_epoch, selected_by, title), folder / LEARNING)
