"""Where training stands, and what a checkpoint holds to continue it exactly.

Owns the contents of a checkpoint (lib/training/checkpoint.py writes, reads and checks the file):
the model's name, options and state, the epoch and batch reached, the data order's random
state, torch's (and CUDA's) random state, the schedulers, the finished epochs' history and
the stored threshold. Resuming from it, even mid-epoch after a signal, is bit-exact.
"""
from dataclasses import dataclass, field

import torch

from ..data.datasets import batches
from .schedules import load_schedulers


def rng_state() -> dict:
    """torch's random state, and every CUDA device's where there are any."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs: this one's devices take the first states.
        for device, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


@dataclass
class TrainingState:
    """The loop's position and record: with the model and schedulers, all a resume needs."""
    epoch: int  # epochs finished; training continues with epoch + 1
    data_rng: torch.Generator  # draws each epoch's order of the training images
    epoch_data_state: torch.Tensor  # data_rng's state when the current epoch's order was drawn
    batch: int = 0  # batches of the current epoch already trained
    history: list[dict] = field(default_factory=list)  # one row per finished epoch (metrics.csv)
    threshold: dict = field(default_factory=dict)  # stored for predict.py at the best epoch
    data_digest: str | None = None  # the split's (Split.digest): a resume must find the same data

    @classmethod
    def start(cls, epoch: int, seed: int) -> "TrainingState":
        data_rng = torch.Generator().manual_seed(seed)
        return cls(epoch, data_rng, data_rng.get_state())

    def epoch_order(self, n: int, batchsize: int, drop_last: bool, global_draws: bool = False) -> list[torch.Tensor]:
        """The current epoch's batches of image indices; resuming mid-epoch replays the same order.

        `global_draws` (without the own_data_order fix): the order is seeded from torch's global
        generator exactly as a shuffling DataLoader seeds it (its iterator draws a base seed,
        then its sampler the seed of a fresh generator), so a run takes the original's order.
        """
        if self.batch == 0:
            if global_draws:
                torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed
                self.data_rng.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
            self.epoch_data_state = self.data_rng.get_state()
        else:
            self.data_rng.set_state(self.epoch_data_state)
        return batches(n, batchsize, True, drop_last, self.data_rng)

    def checkpoint(self, opt, model, schedulers: list) -> dict:
        """What a checkpoint file holds (its keys are the file format: keep them)."""
        return {
            "model": opt.model, "options": dict(vars(opt)), "state": model.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "epoch_data_state": self.epoch_data_state,
            "data_rng": self.data_rng.get_state(), "rng": rng_state(),
            "schedulers": [s.state_dict() for s in schedulers],
            "history": self.history, "threshold": self.threshold,
            "speed": model.speed.record(),  # precision and kernels, reused by whatever loads it (lib.fast)
            **({"data_digest": self.data_digest} if self.data_digest else {}),
        }

    def restore(self, ckpt: dict, model, schedulers: list) -> None:
        """Continue exactly where `ckpt` stopped (mid-epoch included)."""
        model.load_state_dict(ckpt["state"])
        load_schedulers(schedulers, ckpt["schedulers"])
        self.history, self.threshold = ckpt["history"], ckpt["threshold"]
        self.epoch, self.batch = ckpt["epoch"], ckpt["batch"]
        self.epoch_data_state = ckpt["epoch_data_state"]
        self.data_rng.set_state(ckpt["data_rng"])
        set_rng_state(ckpt["rng"])
        self.data_digest = ckpt.get("data_digest", self.data_digest)
