"""The one training loop for every model: epochs, evaluation, checkpoints, logs.

Read it top to bottom in `fit`. A model only has to offer `train_step`,
`score_parts`, `state_dict`/`load_state_dict` and `optimizers`.

Model selection uses the validation split (held-out normal and abnormal
images, disjoint from the test set); test metrics are recorded every epoch but
never used to choose anything.
"""
import json
import math
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lib import checkpoint
from lib.data import batches, to_float
from lib.errors import UserError
from lib.files import rows_csv, write_text
from lib.images import save_grid
from lib.metrics import (
    HEADLINE,
    all_metrics,
    best_f1,
    choose_score_weight,
    combined_score,
    normal_quantile_threshold,
    roc_auc,
)
from lib.runfolder import append_line

# Fraction of normal images the stored threshold may flag (predict.py's default).
THRESHOLD_FPR = 0.05


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a resumable checkpoint has been written."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal = signal_number


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between iterations."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a Ray worker thread)
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@torch.no_grad()
def evaluate(model, images: torch.Tensor, batchsize: int, device) -> dict[str, np.ndarray]:
    """Score uint8 images in batches; returns per-image score, reconstruction and features."""
    parts = {"score": [], "reconstruction": [], "features": []}
    for start in range(0, len(images), batchsize):
        out = model.score_parts(to_float(images[start:start + batchsize], device))
        for key in parts:
            parts[key].append(out[key].float().cpu())
    return {k: (torch.cat(v).numpy() if v else np.zeros(0, np.float32)) for k, v in parts.items()}


def make_schedulers(opt, optimizers):
    """The original's --lr_policy, now actually stepped once per epoch."""
    if opt.lr_policy == "lambda":
        # pix2pix: constant for --niter epochs, then linear decay over --niter_decay.
        rule = lambda e: 1.0 - max(0, e + 1 + opt.iter - opt.niter) / float(opt.niter_decay + 1)  # noqa: E731
        return [torch.optim.lr_scheduler.LambdaLR(o, rule) for o in optimizers]
    if opt.lr_policy == "step":
        return [torch.optim.lr_scheduler.StepLR(o, opt.lr_decay_iters, gamma=0.1) for o in optimizers]
    return [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=0.2, threshold=0.01, patience=5)
            for o in optimizers]


def histogram_csv(scores, labels) -> str:
    """The original's histogram.csv: columns scores,labels, one row per test image."""
    lines = ["scores,labels"] + [f"{float(s)!r},{int(label)}" for s, label in zip(scores, labels)]
    return "\n".join(lines) + "\n"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs: this one's devices take the first states.
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class Trainer:
    """Trains `model` on `split` and writes every output into `run_dir`."""

    def __init__(self, opt, model, split, device, run_dir: Path, visualizer, log=print, on_epoch=None):
        """`on_epoch(trainer, row)` runs after each epoch's outputs and checkpoints are written."""
        self.opt, self.model, self.split, self.device = opt, model, split, device
        self.on_epoch = on_epoch
        if torch.device(device).type == "cuda" and split.train.numel() < torch.cuda.mem_get_info(device)[0] // 4:
            # uint8 images (CIFAR-10: 138 MB) indexed on the GPU: no host copy per batch.
            self.train_images = split.train.to(device)
        else:
            self.train_images = split.train
        self.dir, self.vis, self.log = Path(run_dir), visualizer, log
        self.weights = self.dir / "train" / "weights"
        self.images = self.dir / "train" / "images"
        self.headline = HEADLINE[opt.metric]
        self.schedulers = make_schedulers(opt, model.optimizers)
        self.data_rng = torch.Generator().manual_seed(opt.manualseed)
        self.history: list[dict] = []   # one row per finished epoch
        self.epoch, self.batch = opt.iter, 0  # where training continues
        self.epoch_data_state = self.data_rng.get_state()
        self.threshold: dict = {}
        self.train_seconds, self.images_trained = 0.0, 0
        self.fixed = self._fixed_test_images()
        self.claim = None  # the run folder's lock, set by whoever claims the folder

    def close(self) -> None:
        """Close the dashboard and release the run folder (safe to call twice)."""
        self.vis.close()
        if self.claim is not None:
            self.claim.release()

    # --- state -----------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {
            "model": self.opt.model, "options": dict(vars(self.opt)), "state": self.model.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "epoch_data_state": self.epoch_data_state,
            "data_rng": self.data_rng.get_state(), "rng": _rng_state(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "history": self.history, "threshold": self.threshold,
        }

    def restore(self, ckpt: dict) -> None:
        """Continue exactly where `ckpt` stopped (mid-epoch included)."""
        self.model.load_state_dict(ckpt["state"])
        for sched, state in zip(self.schedulers, ckpt["schedulers"]):
            sched.load_state_dict(state)
            if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                # The lambda rule depends on --niter, which a resumed run may extend.
                for group, base, rule in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                    group["lr"] = base * rule(sched.last_epoch)
        self.history, self.threshold = ckpt["history"], ckpt["threshold"]
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch"]
        self.epoch_data_state = ckpt["epoch_data_state"]
        self.data_rng.set_state(ckpt["data_rng"])
        _set_rng_state(ckpt["rng"])

    def save(self, name: str) -> None:
        checkpoint.save(self.weights / f"{name}.pt", self.checkpoint_state())

    # --- the loop ----------------------------------------------------------------
    def fit(self) -> dict:
        opt = self.opt
        self._log_line(f"================ Training Loss ({time.strftime('%c')}) ================")
        with StopFlag() as stop:
            while self.epoch < opt.niter:
                start = time.perf_counter()
                self.train_epoch(stop)
                self.train_seconds = time.perf_counter() - start
                self.end_epoch()
        return self.results()

    def train_epoch(self, stop: StopFlag) -> None:
        opt, model = self.opt, self.model
        if self.batch == 0:
            self.epoch_data_state = self.data_rng.get_state()
        else:  # resuming mid-epoch: replay this epoch's order, skip what was done
            self.data_rng.set_state(self.epoch_data_state)
        order = batches(len(self.split.train), opt.batchsize, True, opt.droplast, self.data_rng)
        if not order:
            raise UserError(f"no training batch: {len(self.split.train)} training images, --batchsize "
                            f"{opt.batchsize} with --droplast; lower --batchsize or pass --no-droplast")
        self.sums, self.counts = {}, {}
        self.images_trained = 0
        bar = tqdm(order[self.batch:], desc=f"epoch {self.epoch + 1}/{opt.niter}", leave=False,
                   initial=self.batch, total=len(order), dynamic_ncols=True, disable=None)
        for idx in bar:
            images = to_float(self.train_images[idx], self.device)
            losses = model.train_step(images)
            self._check_finite(losses)
            self.batch += 1
            self.images_trained += len(idx)
            for k, v in losses.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if k in ("g", "d", "critic", "g_con")})
            iteration = self.epoch * len(order) + self.batch
            if iteration % opt.print_freq == 0:
                means = self.epoch_losses()
                self._log_line(f"(epoch: {self.epoch + 1}, iters: {self.batch}) "
                               + " ".join(f"{k}: {v:.4f}" for k, v in means.items()))
                self.vis.losses(self.epoch + self.batch / len(order), means)
            if iteration % opt.save_image_freq == 0:
                fake = model.score_parts(images)["fake"]
                save_grid(images, self.images / "real_samples.png")
                save_grid(fake, self.images / f"fake_samples_epoch_{self.epoch + 1:03d}.png")
                self.vis.images("train", images, fake)
            if stop.signal is not None:
                bar.close()
                self.save("last")
                raise Interrupted(f"stopped by signal {stop.signal} at epoch {self.epoch + 1}, "
                                  f"iteration {self.batch}; continue with --resume {self.dir}", stop.signal)
        bar.close()

    def epoch_losses(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def _check_finite(self, losses: dict) -> None:
        """Stop on a NaN/inf loss before it reaches a checkpoint."""
        for name, value in losses.items():
            if not math.isfinite(value):
                last = self.weights / "last.pt"
                kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
                raise UserError(f"loss '{name}' became {value} at epoch {self.epoch + 1}, iteration "
                                f"{self.batch + 1}; {kept}; try a lower --lr or smaller loss weights")

    def end_epoch(self) -> None:
        losses = self.epoch_losses()
        start = time.perf_counter()
        val, test = self.evaluate_splits()
        eval_seconds = time.perf_counter() - start
        evaluated = len(val["labels"]) + len(test["labels"])
        row = {"epoch": self.epoch + 1, **losses,
               **{f"val_{k}": v for k, v in val["metrics"].items()},
               **{f"test_{k}": v for k, v in test["metrics"].items()},
               "lr": self.model.optimizers[0].param_groups[0]["lr"],
               # Wall clock (since the resume, for an epoch that was resumed part-way).
               "train_images": self.images_trained, "train_seconds": round(self.train_seconds, 2),
               "train_img_per_s": round(self.images_trained / max(self.train_seconds, 1e-9), 1),
               "eval_images": evaluated, "eval_seconds": round(eval_seconds, 2),
               "eval_img_per_s": round(evaluated / max(eval_seconds, 1e-9), 1)}
        self.history.append(row)
        self.epoch, self.batch = self.epoch + 1, 0
        for sched in self.schedulers:
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(self._selection_value(row))
            else:
                with warnings.catch_warnings():  # a WGAN epoch shorter than n_critic never steps G's optimiser
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                    sched.step()
        is_best = self.best_epoch() == row["epoch"]
        if is_best:
            self.threshold = self._threshold(val, test)
        self.write_outputs(test)
        self.save("last")
        if is_best:
            self.save("best")
        self._report(row, is_best, val, test)
        if self.on_epoch is not None:
            self.on_epoch(self, row)

    def evaluate_splits(self):
        """Scores and metrics of the validation and test images."""
        out = [{"parts": evaluate(self.model, images, self.opt.batchsize, self.device), "labels": labels.numpy()}
               for images, labels in ((self.split.val_images, self.split.val_labels),
                                      (self.split.test_images, self.split.test_labels))]
        if self.model.choose_score_weight:  # --score_weight val: chosen on validation labels only
            val = out[0]
            weight = choose_score_weight(val["labels"], val["parts"]["reconstruction"], val["parts"]["features"],
                                         self.headline)
            self.model.score_weight = weight
            for split in out:
                split["parts"]["score"] = combined_score(split["parts"]["reconstruction"],
                                                         split["parts"]["features"], weight)
        for split in out:
            labels, parts = split["labels"], split["parts"]
            metrics = {}
            if len(labels):
                metrics = all_metrics(labels, parts["score"])
                # Each part of the score on its own shows which one carries (or spoils) the ranking.
                for part in ("reconstruction", "features"):
                    metrics[f"auroc_{part}"] = roc_auc(labels, parts[part])
            split["metrics"] = metrics
        if self.model.choose_score_weight and out[0]["metrics"]:
            out[0]["metrics"]["score_weight"] = self.model.score_weight  # metrics.csv: val_score_weight
        return out

    def _selection_value(self, row: dict) -> float:
        """What picks the best epoch: the validation headline metric, else the latest epoch."""
        value = row.get(f"val_{self.headline}", float("nan"))
        return value if not math.isnan(value) else float(row["epoch"])

    def best_epoch(self) -> int:
        return max(self.history, key=self._selection_value)["epoch"]

    def _threshold(self, val, test) -> dict:
        """Thresholds stored for predict.py: from normal images only, and F1-optimal on test."""
        normal = val["parts"]["score"][val["labels"] == 0]
        source = "validation normal images"
        if len(normal) == 0:  # --val_ratio 0: training images are all we have without labels
            normal = evaluate(self.model, self.split.train, self.opt.batchsize, self.device)["score"]
            source = "training images (no validation split; biased low)"
        _, f1_threshold = best_f1(test["labels"], test["parts"]["score"])
        return {"value": normal_quantile_threshold(normal, THRESHOLD_FPR), "fpr": THRESHOLD_FPR,
                "method": f"{100 * (1 - THRESHOLD_FPR):g}th percentile of scores of {source}",
                "f1_optimal_test": f1_threshold, "epoch": self.epoch}

    def write_outputs(self, test) -> None:
        hist = histogram_csv(test["parts"]["score"], test["labels"])
        write_text(self.dir / "histogram.csv", hist)
        write_text(self.dir / "metrics.csv", rows_csv(self.history))
        write_text(self.dir / "results.json", json.dumps(self.results(), indent=2) + "\n")
        if self.opt.save_test_images and self.epoch == self.opt.niter:
            self.save_test_images()

    def results(self) -> dict:
        """Last-epoch and best-validation-epoch metrics, plus the optimistic best-on-test."""
        if not self.history:
            return {}
        pick = lambda row, prefix: {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}  # noqa: E731
        last = self.history[-1]
        best = next(r for r in self.history if r["epoch"] == self.best_epoch())
        on_test = max(self.history, key=lambda r: r.get(f"test_{self.headline}", -1))
        return {
            "run": self.opt.name, "model": self.opt.model, "dataset": self.opt.dataset,
            "abnormal_class": self.opt.abnormal_class, "normal_class": self.opt.normal_class,
            "metric": self.headline, "seed": self.opt.manualseed, "epochs": last["epoch"],
            "last": {"epoch": last["epoch"], "test": pick(last, "test_"), "val": pick(last, "val_")},
            "best": {"epoch": best["epoch"], "selected_by": f"val_{self.headline}",
                     "test": pick(best, "test_"), "val": pick(best, "val_")},
            "best_on_test_optimistic": {"epoch": on_test["epoch"], "test": pick(on_test, "test_")},
            "threshold": self.threshold,
        }

    def save_test_images(self) -> None:
        folder = self.dir / "test" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        images = self.split.test_images
        for n, start in enumerate(range(0, len(images), self.opt.batchsize), 1):
            real = to_float(images[start:start + self.opt.batchsize], self.device)
            fake = self.model.score_parts(real)["fake"]
            save_grid(real, folder / f"real_{n:04d}.png")
            save_grid(fake, folder / f"fake_{n:04d}.png")

    def _fixed_test_images(self) -> dict:
        """A fixed handful of normal and abnormal test images to watch every epoch."""
        labels = self.split.test_labels
        return {name: self.split.test_images[(labels == value).nonzero().flatten()[:8]]
                for name, value in (("normal", 0), ("abnormal", 1))}

    def _report(self, row, is_best, val, test) -> None:
        h = self.headline
        mark = " *" if is_best else ""
        line = (f"epoch {row['epoch']}/{self.opt.niter}: test {h} {row.get(f'test_{h}', float('nan')):.4f}"
                f" | val {h} {row.get(f'val_{h}', float('nan')):.4f}{mark}"
                f" | best (val) epoch {self.best_epoch()} | train {row['train_seconds']:.0f} s "
                f"({row['train_img_per_s']:.0f} img/s), eval {row['eval_seconds']:.0f} s")
        self.log(line)
        self._log_line(line)
        best_val = max(self._selection_value(r) for r in self.history)
        self.vis.metrics(row["epoch"], {k: v for k, v in row.items() if k.startswith(("val_", "test_"))}
                         | {f"best_val_{h}": best_val})
        self.vis.evaluation(row["epoch"], test["parts"]["score"], test["labels"])
        for name, images in self.fixed.items():
            if len(images):
                real = to_float(images, self.device)
                fake = self.model.score_parts(real)["fake"]
                save_grid(torch.cat([real, fake]), self.images / f"fixed_{name}_epoch_{row['epoch']:03d}.png",
                          nrow=len(real))
                self.vis.images(f"test {name}", real, fake)

    def _log_line(self, line: str) -> None:
        append_line(self.dir / "loss_log.txt", line)
