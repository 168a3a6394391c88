"""The one training loop for every model: epochs, evaluation, checkpoints, logs.

Read it top to bottom in `fit`. A model is an `AnomalyModel` (lib/models/base.py); the loop uses
its `train_step` (losses as floats), `score_parts` (the reconstruction and the measurements its
score needs, each with its AUROC in metrics.csv), `scoring` (fitted or chosen before every
evaluation, lib/scoring/), `state_dict`/`load_state_dict` and `optimizers` (each gets a schedule).

Model selection uses the validation split (held-out normal and abnormal images, disjoint from the
test set); test metrics are recorded every epoch but never choose anything. A checkpoint's content
is lib/training/state.py's; what the run writes, lib/training/outputs.py's (original_outputs.py's).
"""
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import UserError
from ..images import to_float
from ..original import applies
from ..parallel import distributed
from ..scoring.evaluate import Scores, evaluate, fit_scoring, measure, split_metrics, stored_threshold
from ..scoring.functions import needs
from ..scoring.localise import localise
from ..scoring.metrics import HEADLINE
from ..scoring.policy import score_policy
from . import checkpoint, control, outputs
from .original_outputs import OriginalOutputs
from .schedules import current_lr, make_schedulers, step_schedulers
from .state import TrainingState
from .stopping import Interrupted, StopFlag


class Trainer:
    """Trains `model` on `split` and writes every output into `run_dir`."""

    def __init__(self, opt, model, split, device, run_dir: Path, visualizer, log=print, on_epoch=None,
                 context: distributed.Context = distributed.Context()):
        """`on_epoch(trainer, row)` runs after each epoch's outputs and checkpoints are written.

        In a data-parallel job (`context`, lib/parallel/distributed.py) every process trains on its share of
        each batch; rank 0 alone evaluates, writes and reports, and the others wait for it."""
        self.opt, self.model, self.split, self.device = opt, model, split, device
        self.context, self.writes, self.on_epoch = context, context.writes, on_epoch
        # uint8 images (CIFAR-10: 138 MB) indexed on the GPU: no host copy per batch.
        on_gpu = torch.device(device).type == "cuda" and split.train.numel() < torch.cuda.mem_get_info(device)[0] // 4
        self.train_images = split.train.to(device) if on_gpu else split.train
        self.dir, self.vis, self.log = Path(run_dir), visualizer, log
        self.out = self._outputs()
        self.weights = self.dir / "train" / "weights"
        self.headline = HEADLINE[opt.metric]
        self.policy = score_policy(opt, type(model))  # which score, its weight, the mode it is measured in
        # The original picks the best epoch on the test set and never steps its schedulers (lib/original.py).
        self.selection_split = "val" if applies(opt, "validation_selection") else "test"
        self.steps_schedulers = applies(opt, "lr_schedule")
        # Without own_data_order, the data order and the test pass draw from torch's global generator (DataLoaders).
        self.global_data_order = not applies(opt, "own_data_order")
        self.schedulers = make_schedulers(opt, model.optimizers)
        self.state = TrainingState.start(opt.iter, opt.manualseed)
        self.train_seconds, self.images_trained, self.sums, self.counts = 0.0, 0, {}, {}
        labels = split.test_labels  # a fixed handful of normal and abnormal test images, shown every epoch
        self.fixed = {name: split.test_images[(labels == value).nonzero().flatten()[:8]]
                      for name, value in (("normal", 0), ("abnormal", 1))}
        self.claim = None  # the run folder's lock, set by whoever claims the folder
        self.saved_niter = None  # --niter as last.pt on disk holds it (a resume that lengthens the run differs)

    def _outputs(self) -> outputs.RunOutputs:
        """What the run writes and prints: this framework's run folder, or the original's (lib/original.py)."""
        if applies(self.opt, "outputs"):
            return outputs.RunOutputs(self.dir, self.opt, self.log)
        return OriginalOutputs(self.dir, self.opt, len(self.split.test_labels), self.log)

    def close(self) -> None:
        """Close the dashboard and release the run folder (safe to call twice)."""
        self.vis.close()
        if self.claim is not None:
            self.claim.release()

    def restore(self, ckpt: dict) -> None:
        """Continue exactly where `ckpt` stopped (mid-epoch included)."""
        self.state.restore(ckpt, self.model, self.schedulers)
        self.saved_niter = ckpt["options"].get("niter")

    def save(self, name: str) -> None:
        checkpoint.save(self.weights / f"{name}.pt", self.state.checkpoint(self.opt, self.model, self.schedulers))
        if name == "last":
            self.saved_niter = self.opt.niter

    # --- the loop ----------------------------------------------------------------
    def fit(self) -> dict:
        try:
            if self.writes:
                self.out.begin(self.model)
            with StopFlag() as stop:
                if self.opt.niter == 0 and not self.state.history:  # the untrained control: no epoch
                    self.images_trained, self.train_seconds = control.calibrate(
                        self.model, self.train_images, self.opt.batchsize, self.device)
                    self.end_epoch(trained=False)
                while self.state.epoch < self.opt.niter:
                    start = time.perf_counter()
                    self.train_epoch(stop)
                    self.train_seconds = time.perf_counter() - start
                    self.end_epoch() if self.writes else self.follow_epoch()
            if self.writes:
                self._check_best_weights()
                self.out.end()
            if stop.signal is not None:  # it came during the last evaluation (or a control's): a sweep must stop
                raise Interrupted(f"stopped by signal {stop.signal} during the last evaluation, after which the run "
                                  f"is complete in {self.dir}", stop.signal)
        except Exception as err:  # a full disk, a run folder deleted meanwhile: one line, and what to do
            failure = outputs.failed_write(err, self.dir, self._continuation())
            if failure is err:
                raise
            raise failure from err
        return self.results()

    def _continuation(self) -> str:
        """After a failed write: how to go on from the last checkpoint on disk (or start again)."""
        if not (self.weights / "last.pt").is_file():
            return "then run the same command with --overwrite"
        niter = "" if self.saved_niter == self.opt.niter else f" --niter {self.opt.niter}"
        return f"then continue with --resume {self.dir}{niter}"

    def _check_best_weights(self) -> None:
        """A finished run has best.pt beside last.pt (predict.py reads it). One left without it (a failed
        write, before best.pt was written ahead of last.pt) gets it now if its best epoch is its last."""
        best = self.weights / "best.pt"
        if not self.state.history or best.is_file():
            return
        if self.best_epoch() != self.state.epoch:
            raise UserError(f"'{best}' is missing: the weights of the run's best epoch ({self.best_epoch()}) were "
                            f"never written; train it again with --overwrite, or score with last.pt "
                            f"(epoch {self.state.epoch}) and --threshold")
        self.save("best")

    def train_epoch(self, stop: StopFlag) -> None:
        opt, model, state = self.opt, self.model, self.state
        order = state.epoch_order(len(self.split.train), opt.batchsize, opt.droplast, self.global_data_order)
        if not order:
            raise UserError(f"no training batch: {len(self.split.train)} training images, --batchsize "
                            f"{opt.batchsize} with --droplast; lower --batchsize or pass --no-droplast")
        self.sums, self.counts = {}, {}
        self.images_trained = 0
        bar = tqdm(order[state.batch:], desc=f"epoch {state.epoch + 1}/{opt.niter}", leave=False,
                   initial=state.batch, total=len(order), dynamic_ncols=True, disable=None)
        for idx in bar:
            images = to_float(self.train_images[distributed.share(idx, self.context)], self.device,
                              model.pixel_mean_std)
            losses = distributed.mean_over_processes(model.train_step(images), self.context)
            self._check_finite(losses)
            state.batch += 1
            self.images_trained += len(idx)
            stop.signal = distributed.agree_to_stop(stop.signal, self.context)
            if not self.writes:
                if stop.signal is not None:
                    raise Interrupted(f"stopped by signal {stop.signal}", stop.signal)
                continue
            for k, v in losses.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
                self.counts[k] = self.counts.get(k, 0) + 1
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if k in ("g", "d", "critic", "g_con")})
            count = self.out.count(images, state.epoch, state.batch, len(order))  # iterations, or images
            if count % opt.print_freq == 0:
                means = self.epoch_losses()
                self.out.training_losses(state.epoch, state.batch, means)
                self.vis.losses(state.epoch + state.batch / len(order), means)
            if count % opt.save_image_freq == 0:
                fake = self.reconstruct(images)
                self.out.train_samples(images, fake, state.epoch + 1, self.reconstruct)
                self.vis.images("train", images, fake)
            if stop.signal is not None:
                bar.close()
                self.save("last")
                raise Interrupted(f"stopped by signal {stop.signal} at epoch {state.epoch + 1}, "
                                  f"iteration {state.batch}; continue with --resume {self.dir}", stop.signal)
        bar.close()

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """The model's reconstruction, for pictures: in eval mode, so that BatchNorm is left alone."""
        return self.model.score_parts(images, train_mode=False)["fake"]

    def epoch_losses(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def _check_finite(self, losses: dict) -> None:
        """Stop on a NaN/inf loss before it reaches a checkpoint."""
        for name, value in losses.items():
            if not math.isfinite(value):
                last = self.weights / "last.pt"
                kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
                raise UserError(f"loss '{name}' became {value} at epoch {self.state.epoch + 1}, iteration "
                                f"{self.state.batch + 1}; {kept}; try a lower --lr or smaller loss weights")

    def follow_epoch(self) -> None:
        """end_epoch in a process that is not rank 0: wait for rank 0's evaluation, then step the
        schedulers with its selection value, as rank 0 does."""
        value = distributed.from_rank_zero(None, self.context)
        self.state.epoch, self.state.batch = self.state.epoch + 1, 0
        if self.steps_schedulers:
            step_schedulers(self.schedulers, value)

    def end_epoch(self, trained: bool = True) -> None:
        """Evaluate, record and save the epoch just trained (`trained` False: the untrained control, epoch 0)."""
        state = self.state
        losses = self.epoch_losses()
        start = time.perf_counter()
        val, test = self.evaluate_splits()
        eval_seconds = time.perf_counter() - start
        evaluated = len(val.labels) + len(test.labels)
        row = {"epoch": state.epoch + trained, **losses,
               **{f"val_{k}": v for k, v in val.metrics.items()},
               **{f"test_{k}": v for k, v in test.metrics.items()},
               "lr": current_lr(self.model.optimizers),
               # Wall clock (since the resume, for an epoch that was resumed part-way).
               "train_images": self.images_trained, "train_seconds": round(self.train_seconds, 2),
               "train_img_per_s": round(self.images_trained / max(self.train_seconds, 1e-9), 1),
               "eval_images": evaluated, "eval_seconds": round(eval_seconds, 2),
               "eval_img_per_s": round(evaluated / max(eval_seconds, 1e-9), 1),
               # What those speeds ran with (opt.txt says why): bf16 autocast, threads, processes.
               "bf16": int(self.model.speed.amp), "threads": torch.get_num_threads(),
               "processes": self.context.world}
        state.history.append(row)
        state.epoch, state.batch = state.epoch + trained, 0
        distributed.from_rank_zero(self._selection_value(row), self.context)  # the other processes go on
        if self.steps_schedulers:
            step_schedulers(self.schedulers, self._selection_value(row))
        is_best = self.best_epoch() == row["epoch"]
        if is_best:
            state.threshold = stored_threshold(self.model, val, test, self.split, self.opt.batchsize, self.device,
                                               self.policy.train_mode, state.epoch)
        if self.claim is not None and not self.claim.held():  # the folder deleted or moved: write nothing there
            raise outputs.folder_gone(self.dir)
        self.out.epoch_results(state.history, self.results(), val, test)
        self._report(row, is_best, test)
        # last.pt is written last: a run whose last.pt holds an epoch has every file of that epoch.
        if is_best:
            self.save("best")
        self.save("last")
        if self.on_epoch is not None:
            self.on_epoch(self, row)

    def evaluate_splits(self) -> tuple[Scores, Scores]:
        """Scores and metrics of the validation and test images: the score (--score) fitted, or chosen, on normal
        training and validation images and validation labels first, then the test split measured for that score
        alone; with masks (inspection data), the map that localises chosen on validation masks among the fitted
        scores' maps, and how well it finds the anomalies (lib/scoring/localise.py)."""
        split, batchsize, model, policy = self.split, self.opt.batchsize, self.model, self.policy
        names = policy.candidates(model.measurements)
        val = Scores(split.val_labels.numpy(), measure(model, split.val_images, batchsize, self.device, needs(names),
                                                       train_mode=policy.train_mode))
        model.scoring, choice, fitted = fit_scoring(model, names, val, split.train, batchsize, self.device,
                                                    self.headline, policy.weight, policy.train_mode)
        # The outputs see each test batch (test images, timing) in the one pass that scores it.
        if self.global_data_order:
            torch.empty((), dtype=torch.int64).random_()  # the original's test DataLoader draws a base seed
        test = Scores(split.test_labels.numpy(), evaluate(model, split.test_images, batchsize, self.device,
                                                          on_batch=self.out.testing(self.state.epoch + 1),
                                                          train_mode=policy.train_mode))
        for scores in (val, test):
            scores.metrics = split_metrics(scores.labels, scores.parts, self.headline)
        if val.metrics:  # metrics.csv: val_score_weight, val_auroc_score_<name> of each candidate
            if policy.weight is None and model.scoring.name == "original":
                val.metrics["score_weight"] = model.scoring.stats["weight"]
            val.metrics.update({f"{self.headline}_score_{name}": value for name, value in choice.items()})
        localise(model, split, val, test, batchsize, self.device, fitted)
        return val, test

    def _selection_value(self, row: dict) -> float:
        """What picks the best epoch: the validation headline metric (the test set's, as the
        original did, without the validation_selection fix), else the latest epoch."""
        value = row.get(f"{self.selection_split}_{self.headline}", float("nan"))
        return value if not math.isnan(value) else float(row["epoch"])

    def best_epoch(self) -> int:
        return max(self.state.history, key=self._selection_value)["epoch"]

    def results(self) -> dict:
        """results.json's contents ({} before the first epoch has finished)."""
        if not self.state.history:
            return {}
        return outputs.results(self.opt, self.state.history, self.best_epoch(), self.headline, self.state.threshold)

    def _report(self, row: dict, is_best: bool, test: Scores) -> None:
        h = self.headline
        line = (f"epoch {row['epoch']}/{self.opt.niter}: test {h} {row.get(f'test_{h}', float('nan')):.4f}"
                f" | val {h} {row.get(f'val_{h}', float('nan')):.4f}{' *' if is_best else ''}"
                f" | best ({self.selection_split}) epoch {self.best_epoch()} | train {row['train_seconds']:.0f} s "
                f"({row['train_img_per_s']:.0f} img/s), eval {row['eval_seconds']:.0f} s")
        self.out.epoch_report(line, self.state.history, self.model)
        best_val = max(self._selection_value(r) for r in self.state.history)
        self.vis.metrics(row["epoch"], {k: v for k, v in row.items() if k.startswith(("val_", "test_"))}
                         | {f"best_val_{h}": best_val})
        self.vis.evaluation(row["epoch"], test.parts["score"], test.labels)
        for name, images in self.fixed.items():
            if len(images):
                real = to_float(images, self.device, self.model.pixel_mean_std)
                fake = self.reconstruct(real)
                self.out.fixed_images(name, real, fake, row["epoch"])
                self.vis.images(f"test {name}", real, fake)
