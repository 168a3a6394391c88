"""The run folder's files and the run's console lines, named and laid out as this framework writes them.

histogram.csv (the test images' scores and labels), metrics.csv (one row per epoch),
results.json (the last, best-on-validation and best-on-test epochs), loss_log.txt, the
captioned image grids in train/images/ and test/images/ and the figures in plots/
(lib/training/plots.py draws them). The folder's lock, opt.txt and the checkpoints are
written elsewhere (lib/runs/folder.py, lib/runs/setup.py, lib/training/checkpoint.py).
Without the 'outputs' fix (lib/original.py) the trainer is given lib/training/original_outputs.py's
OriginalOutputs instead: the same methods, writing and printing what the original code did.
"""
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..files import WriteFailed, append_line, atomic_write, disk_error, rows_csv, write_text, writing
from ..images import enlarge, grid, heat_overlay, labelled_rows, pixels, shown, tile, with_caption
from ..models import model_label
from ..original import applies
from ..scoring.located import PIXEL_FULL, pixel_error

SHOWN_TILE = 64  # grid tiles are enlarged (nearest neighbour) to about this many pixels, for their labels


def histogram_csv(scores, labels, min_max: bool = False) -> str:
    """The original's histogram.csv layout (pandas' to_csv: an unnamed index column, then
    scores,labels), one row per test image; read it with pandas.read_csv(path, index_col=0).

    `min_max` scales the scores to [0, 1] over the test set as the original wrote them; by
    default they are the raw scores, comparable across epochs, runs and predict.py.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if min_max and len(scores):
        span = scores.max() - scores.min()
        scores = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    lines = [",scores,labels"] + [f"{i},{float(s)!r},{int(label)}" for i, (s, label) in enumerate(zip(scores, labels))]
    return "\n".join(lines) + "\n"


def save_picture(array: np.ndarray, path: Path) -> None:
    """(H, W, 3) uint8 pixels as a PNG, atomically; a disk that refuses it raises WriteFailed (lib/files.py)."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def captioned_grid(images, caption: list[str], nrow: int = 8) -> np.ndarray:
    """(H, W, 3): the images (N, C, H, W in [-1, 1]) tiled `nrow` to a row, enlarged, `caption` above."""
    factor = max(1, SHOWN_TILE // images.shape[-1])
    return with_caption(enlarge(grid(images, nrow), factor), caption)


def labelled_comparison(real, fake, caption: list[str]) -> np.ndarray:
    """(H, W, 3): rows input / reconstruction / pixel error drawn over the input, labelled, `caption` above."""
    inputs, outputs = shown(real), shown(fake)
    error = pixel_error(real.cpu(), fake.cpu()) / PIXEL_FULL
    overlays = torch.stack([heat_overlay(x, e) for x, e in zip(inputs, error)])
    factor = max(1, SHOWN_TILE // real.shape[-1])
    rows = [(label, enlarge(tile(np.stack([pixels(x) for x in row]), nrow=len(row)), factor))
            for label, row in (("input x", inputs), ("reconstruction G(x)", outputs),
                               ("error |x - G(x)| over x", overlays))]
    return with_caption(labelled_rows(rows), caption)


def results(opt, history: list[dict], best_epoch: int, headline: str, threshold: dict) -> dict:
    """results.json: last-epoch and best-validation-epoch metrics, plus the optimistic best-on-test."""
    pick = lambda row, prefix: {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}  # noqa: E731
    last = history[-1]
    best = next(r for r in history if r["epoch"] == best_epoch)
    on_test = max(history, key=lambda r: r.get(f"test_{headline}", -1))
    return {
        "run": opt.name, "model": opt.model, "dataset": opt.dataset,
        "abnormal_class": opt.abnormal_class, "normal_class": opt.normal_class,
        **({"category": opt.category} if getattr(opt, "category", None) else {}),  # inspection data
        "metric": headline, "seed": opt.manualseed, "epochs": last["epoch"],
        "untrained_control": opt.niter == 0,  # --niter 0 (lib/training/control.py)
        "last": {"epoch": last["epoch"], "test": pick(last, "test_"), "val": pick(last, "val_")},
        "best": {"epoch": best["epoch"], "selected_by": f"{'val' if applies(opt, 'validation_selection') else 'test'}"
                                                        f"_{headline}",
                 "test": pick(best, "test_"), "val": pick(best, "val_")},
        "best_on_test_optimistic": {"epoch": on_test["epoch"], "test": pick(on_test, "test_")},
        "threshold": threshold,
    }


def evaluation_plots(folder: Path, opt, labels, scores, score: str, threshold: dict | None, epoch) -> None:
    """--phase test's plots/ in `folder`: the test split's curves and score histogram of the weights of
    `epoch`, with their stored threshold if it was chosen for them (none without the 'outputs' fix)."""
    if not applies(opt, "outputs"):
        return
    from . import plots  # matplotlib loads only when a run draws

    if (threshold or {}).get("epoch") != epoch:  # a threshold of other weights (of last.pt's best epoch)
        threshold = None
    plots.write_score_plots(folder / plots.PLOTS, {"test": (labels, scores)}, threshold, lambda what: plots.heading(
        what, model_label(opt.model), score, opt.name, f"--phase test of the weights of epoch {epoch}"))


def failed_write(err: Exception, run: Path, then: str) -> Exception:
    """What to raise for `err`, raised while the run wrote its files: a disk that refused a write (full,
    over a limit, failing) is WriteFailed naming the file and the space left, and `then`; a run folder
    that is gone (deleted or moved while the run trained) says so; anything else is `err` itself."""
    error = disk_error(err)
    if error is not None:
        return WriteFailed(err.path if isinstance(err, WriteFailed) else error.filename or run, error, then)
    if isinstance(err, FileNotFoundError) and _vanishes(run):
        return folder_gone(run)
    if isinstance(err, PermissionError):  # a file made read-only (chmod, chattr +i) while the run trained
        target = err.filename2 or err.filename or run  # (os.replace's: the file it would replace, not the new one)
        return UserError(f"cannot write '{target}' ({err.strerror}): give the run folder's files back "
                         f"their write permission (chmod u+w, chattr -i); {then}")
    return err


def _vanishes(run: Path, wait: float = 5.0) -> bool:
    """Whether the run folder is gone, or goes within `wait` seconds: a file of ours that vanished while
    it was written means the folder is being deleted, and a deletion under way may still hold it."""
    deadline = time.monotonic() + wait
    while run.is_dir():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def folder_gone(run: Path) -> UserError:
    return UserError(f"the run folder '{run}' is gone (deleted or moved while the run trained), so nothing more can "
                     "be written there: if it was moved, continue with --resume at its new place; else train it again")


class RunOutputs:
    """Writes the run folder's result files, log and image grids, and prints the run's lines.

    The trainer calls these methods in this order: `begin`; per training batch `count`, and
    `training_losses` / `train_samples` when --print_freq / --save_image_freq divide the count;
    per epoch `testing` (its callback sees each test batch), `epoch_results`, `epoch_report`,
    `fixed_images`; `end`.
    """
    min_max_histogram = False  # histogram.csv keeps the raw scores

    def __init__(self, folder: Path, opt, log=print):
        """`log` prints a line on the console (the trainer's)."""
        self.dir, self.opt, self.console = Path(folder), opt, log
        self.images = self.dir / "train" / "images"

    def log(self, line: str) -> None:
        """One line of loss_log.txt."""
        path = self.dir / "loss_log.txt"
        with writing(path):
            append_line(path, line)

    def begin(self, model) -> None:
        """Training starts (or resumes)."""
        self.log(f"================ Training Loss ({time.strftime('%c')}) ================")

    def count(self, images, epoch: int, batch: int, n_batches: int) -> int:
        """After training batch number `batch` (from 1) of epoch `epoch` (from 0) of `n_batches`: what
        --print_freq and --save_image_freq count, here training iterations."""
        return epoch * n_batches + batch

    def training_losses(self, epoch: int, batch: int, means: dict[str, float]) -> None:
        """The epoch's mean losses so far, every --print_freq."""
        self.log(f"(epoch: {epoch + 1}, iters: {batch}) " + " ".join(f"{k}: {v:.4f}" for k, v in means.items()))

    def train_samples(self, real, fake, epoch: int, reconstruct) -> None:
        """A training batch and its reconstruction during `epoch` (counted from 1); `reconstruct(images)`
        gives the reconstruction of other images."""
        fakes = f"fake_samples_epoch_{epoch:03d}.png"
        save_picture(captioned_grid(real, [f"input x: a training batch of epoch {epoch} (reconstructed in {fakes})"]),
                     self.images / "real_samples.png")
        save_picture(captioned_grid(fake, [f"reconstruction G(x) of the training batch in real_samples.png, epoch "
                                           f"{epoch}, image for image"]), self.images / fakes)

    def fixed_images(self, name: str, real, fake, epoch: int) -> None:
        """The watched test images, their reconstructions and the error, in labelled rows, after `epoch`."""
        caption = [f"{len(real)} {name} test images (the same every epoch) after epoch {epoch}; "
                   f"{model_label(self.opt.model)}, run {self.opt.name}"]
        save_picture(labelled_comparison(real, fake, caption), self.images / f"fixed_{name}_epoch_{epoch:03d}.png")

    def testing(self, epoch: int):
        """The test split is scored after `epoch` (from 1): a `(real, parts)` callback for each batch, or None."""
        if self.opt.save_test_images and epoch == self.opt.niter:
            return self.test_image_writer()
        return None

    def epoch_results(self, history: list[dict], results: dict, val, test) -> None:
        """histogram.csv, metrics.csv, results.json and the plots as of the epoch just finished (`val`,
        `test`: the splits' labels and scores, lib.scoring.evaluate.Scores)."""
        write_text(self.dir / "histogram.csv", histogram_csv(test.parts["score"], test.labels, self.min_max_histogram))
        write_text(self.dir / "metrics.csv", rows_csv(history))
        write_text(self.dir / "results.json", json.dumps(results, indent=2) + "\n")
        self.plot(history, results, val, test)

    def plot(self, history: list[dict], results: dict, val, test) -> None:
        """plots/: the learning curves every epoch; the score's curves and histograms at the best epoch,
        whose weights (best.pt) and threshold predict.py uses."""
        from . import plots  # matplotlib loads when a run first draws, not when train.py starts

        best = results["best"]
        score = results.get("threshold", {}).get("score", "?")
        control = " (untrained control)" if results.get("untrained_control") else ""

        def title(what: str, epoch: str = f"epoch {best['epoch']}{control}, best by {best['selected_by']}") -> str:
            return plots.heading(what, model_label(self.opt.model), score, self.opt.name, epoch)
        folder = self.dir / plots.PLOTS
        first, last = history[0]["epoch"], history[-1]["epoch"]
        span = f"epoch {first}" if first == last else f"epochs {first} to {last}"
        plots.write_learning_curves(folder, history, best["epoch"], best["selected_by"],
                                    title("learning curves", span + control))
        if best["epoch"] == history[-1]["epoch"]:
            splits = {name: (s.labels, s.parts["score"]) for name, s in (("validation", val), ("test", test))
                      if len(s.labels)}
            plots.write_score_plots(folder, splits, results.get("threshold"), title)

    def epoch_report(self, line: str, history: list[dict], model) -> None:
        """The epoch's summary `line`, on the console and in loss_log.txt (history[-1] is the epoch's row), with
        the maps' pixel metrics where the data has masks."""
        if "test_pro" in history[-1]:
            line += f" | test pixel auroc {history[-1]['test_pixel_auroc']:.4f}, pro {history[-1]['test_pro']:.4f}"
        self.console(line)
        self.log(line)

    def end(self) -> None:
        """Training has finished every epoch."""

    def test_image_writer(self):
        """A `(real, parts)` callback for `evaluate` saving each test batch and its reconstruction."""
        folder = self.dir / "test" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        numbers = itertools.count(1)

        def save(real, parts) -> None:
            n = next(numbers)
            save_picture(captioned_grid(real, [f"input x: test batch {n} (reconstructed in fake_{n:04d}.png)"]),
                         folder / f"real_{n:04d}.png")
            save_picture(captioned_grid(parts["fake"], [f"reconstruction G(x) of test batch {n} (real_{n:04d}.png), "
                                                        "image for image"]), folder / f"fake_{n:04d}.png")
        return save
