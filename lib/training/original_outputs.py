"""The original code's run folder and console lines, for a run without the 'outputs' fix (lib/original.py).

Scripts written for the original Skip-WGANomaly's outputs read these unchanged:
- train/opt.txt: every option as its options.py wrote them (no default marks);
- loss_log.txt: a header with the date, then "class, nz, w_adv, w_con, w_lat", then one line per
  epoch with the milliseconds per test batch, the test AUC and the best test AUC so far;
- train/weights/netG_<epoch>.pth and netD_<epoch>.pth ({'epoch', 'state_dict'}, epochs from 0)
  whenever the test AUC improves;
- train/images/reals.png, fakes.png and fixed_fakes_<epoch>.png, and with --save_test_images
  test/images/real_<batch>.eps and fake_<batch>.eps, as torchvision's save_image wrote them;
- histogram.csv with the scores min-max scaled over the test set;
- on the console, its ">> Training ..." lines instead of ours, and with --verbose its options
  block and the networks.
Its --print_freq and --save_image_freq count training images, not iterations.

Our own files are written too (opt.txt, metrics.csv, results.json, train/weights/last.pt and
best.pt): resuming, predict.py and the result tables read them, and no script of the original does.
"""
import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import atomic_write, write_text
from ..images import tile
from .outputs import RunOutputs

# What the original's models call themselves in its console lines (their `name` property).
MODEL_NAMES = {"skipganomaly": "skip-ganomaly", "w_skipganomaly": "w_skipganomaly"}
# Its weight files: netG for the generator, netD for the discriminator or critic.
WEIGHT_FILES = {"generator": "netG", "adversary": "netD"}
OPTIONS_HEAD, OPTIONS_END = "------------ Options -------------", "-------------- End ----------------"
TIMED_BATCHES = 100  # its Avg Run Time is the mean over the first 100 test batches


# The original declared these float flags with whole-number defaults, so a run that left them out
# wrote `1`, `50`; ours are floats. Written as the original wrote its defaults (a run that typed
# `--w_adv 1` wrote `1.0` there: a difference of display only, and its opt.txt still has every value).
ORIGINAL_INT_DEFAULTS = {"w_adv": 1, "w_con": 50, "w_lat": 1}


def shown(key: str, value):
    """An option's value as the original's files show it."""
    default = ORIGINAL_INT_DEFAULTS.get(key)
    return default if default is not None and value == default else value


def options_text(opt) -> str:
    """The original's opt.txt and --verbose block: every option sorted by name, as `name: value`.

    Its parse() had turned `gpu_ids` into a list of the non-negative ids and added `isTrain`.
    """
    values = {**vars(opt), "isTrain": True,
              "gpu_ids": [int(i) for i in str(opt.gpu_ids).split(",") if int(i) >= 0]}
    lines = [f"{key}: {shown(key, value)}" for key, value in sorted(values.items())]
    return "\n".join([OPTIONS_HEAD, *lines, OPTIONS_END]) + "\n"


def original_image(images: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8: torchvision's `save_image(images, normalize=True)` as the original called it.

    Min-max scaled over all the images together, grey made RGB, 8 to a row with a 2-pixel black
    border, rounded as save_image rounds; a single image (C, H, W, or a batch of one) has no border.
    """
    x = images.detach().float().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.size(1) == 1:
        x = torch.cat((x, x, x), 1)
    low, high = float(x.min()), float(x.max())
    x = x.clamp(low, high).sub(low).div(max(high - low, 1e-5))
    tiles = x.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return tiles[0] if len(tiles) == 1 else tile(tiles)


def save_original_image(images: torch.Tensor, path: Path) -> None:
    """`original_image` as a file whose format its extension names (.png, .eps: Pillow writes EPS itself)."""
    Image.fromarray(original_image(images)).save(path)


def _save(content, tmp) -> None:
    with open(tmp, "wb") as f:  # a Python file: torch's writer loses a full disk's errno (training/checkpoint.py)
        torch.save(content, f)


class OriginalOutputs(RunOutputs):
    """What the original's Visualizer and BaseModel wrote and printed (lib/outputs.RunOutputs' methods)."""
    min_max_histogram = True  # its histogram.csv holds the scores scaled to [0, 1]

    def __init__(self, folder: Path, opt, n_test_images: int, log=print):
        super().__init__(folder, opt, log)
        self.name = MODEL_NAMES.get(opt.model, opt.model)
        self.weights = self.dir / "train" / "weights"
        # Its image counter after a test pass: the pass restarts it from 0 and adds --batchsize per batch.
        self.after_test = math.ceil(n_test_images / opt.batchsize) * opt.batchsize
        self.fixed = None  # the batch its fixed_fakes images reconstruct
        self.times: list[float] = []  # seconds per test batch of the latest test pass

    def begin(self, model) -> None:
        options = options_text(self.opt)
        write_text(self.dir / "train" / "opt.txt", options)
        (self.dir / "test" / "images").mkdir(parents=True, exist_ok=True)
        if self.opt.verbose:
            self.console(options.rstrip("\n"))
            for network in model.networks.values():
                self.console(network)
        o = self.opt
        weights = ", ".join(str(shown(k, getattr(o, k))) for k in ("w_adv", "w_con", "w_lat"))
        # Its Visualizer writes this header (and a blank line) whenever a run starts.
        self.log(f"================ {time.strftime('%c')} ================\n"
                 f"{o.abnormal_class}, {o.nz}, {weights}\n")
        self.console(f">> Training {self.name} on {o.dataset} to detect {o.abnormal_class}")

    def count(self, images, epoch: int, batch: int, n_batches: int) -> int:
        """Training images: --batchsize per batch (whatever the batch holds), counted from 0 in a run's
        first epoch and, after each test pass, from where that pass left the counter."""
        images_seen = (0 if epoch == self.opt.iter else self.after_test) + batch * self.opt.batchsize
        if images_seen == self.opt.batchsize:  # its set_input keeps this batch as the fixed input
            self.fixed = images
        return images_seen

    def training_losses(self, epoch: int, batch: int, means: dict[str, float]) -> None:
        """Nothing: the original only plots them on its dashboard (it never calls print_current_errors)."""

    def train_samples(self, real, fake, epoch: int, reconstruct) -> None:
        """reals.png and fakes.png (overwritten), and fixed_fakes_<epoch>.png: the reconstruction of the
        first image of the fixed input (the run's first batch, then after each test pass the first
        test batch, as its counter has it).

        The fakes here are reconstructions of the batch after its step, in eval mode: the original
        showed the step's own output of the noisy batch, but a picture must not change the model (a
        training-mode pass would move BatchNorm's statistics). A run resumed inside its first epoch
        never saw its fixed input: until the next test pass, the current batch stands in.
        """
        save_original_image(real, self.images / "reals.png")
        save_original_image(fake, self.images / "fakes.png")
        fixed = self.fixed if self.fixed is not None else real
        save_original_image(reconstruct(fixed[:1])[0], self.images / f"fixed_fakes_{epoch:03d}.png")

    def fixed_images(self, name: str, real, fake, epoch: int) -> None:
        """Nothing: the watched test images are this framework's."""

    def plot(self, history: list[dict], results: dict, val, test) -> None:
        """Nothing: the original saved no figure (it opened a score histogram each test pass, never saved)."""

    def testing(self, epoch: int):
        """Its console lines, and a callback timing each test batch, keeping the first as the fixed
        input and, with --save_test_images, saving each batch and its reconstruction as EPS files
        (every epoch, overwriting the last, as the original did)."""
        self.console(f">> Training model {self.name}. Epoch {epoch}/{self.opt.niter}")
        self.console(f"   Testing {self.name}")
        folder = self.dir / "test" / "images"
        self.times = []
        numbers = itertools.count(1)
        started = [time.perf_counter()]

        def on_batch(real, parts) -> None:
            self.times.append(time.perf_counter() - started[0])
            n = next(numbers)
            if n == 1:
                self.fixed = real
            if self.opt.save_test_images:
                save_original_image(real, folder / f"real_{n:03d}.eps")
                save_original_image(parts["fake"], folder / f"fake_{n:03d}.eps")
            started[0] = time.perf_counter()  # its timing leaves the saving out
        return on_batch

    def epoch_report(self, line: str, history: list[dict], model) -> None:
        """Its performance line, and the weights whenever the test AUC beats every earlier one.

        Its AUC is the test set's ROC AUC whatever --metric says (both its models' test() call roc()).
        """
        auc = history[-1].get("test_auroc", math.nan)
        best = max([r["test_auroc"] for r in history[:-1] if r.get("test_auroc", math.nan) > 0] + [0.0])
        if auc > best:  # never for NaN, as in the original
            best = auc
            self.save_weights(model, history[-1]["epoch"] - 1)
        run_time = 1000 * float(np.mean(self.times[:TIMED_BATCHES])) if self.times else math.nan
        message = f"   Avg Run Time (ms/batch): {run_time:.3f} AUC: {auc:.3f} max AUC: {best:.3f}"
        self.console(message)
        self.log(message)

    def save_weights(self, model, epoch: int) -> None:
        """netD_<epoch>.pth and netG_<epoch>.pth, each {'epoch': epoch (from 0), 'state_dict'}, on the CPU.

        The state_dicts are our networks' (lib/models/networks.py): their keys are not the original's module
        names, so they load into this framework's networks, not into the original's.
        """
        for name, network in model.networks.items():
            state = network.state_dict()
            for key, value in state.items():
                state[key] = value.detach().cpu()
            content = {"epoch": epoch, "state_dict": state}
            atomic_write(self.weights / f"{WEIGHT_FILES.get(name, 'net_' + name)}_{epoch}.pth",
                         lambda tmp, content=content: _save(content, tmp))

    def end(self) -> None:
        self.console(f">> Training model {self.name}.[Done]")
