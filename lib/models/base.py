"""The contract every model satisfies, and the generic machinery it gets for free.

A model is one subclass of `AnomalyModel` in one file, lib/models/<name>.py,
registered with `@register` and listed in lib/models/__init__.py. It writes
four methods, all checked when it registers (a half-written model cannot be built):

- `build_networks(opt)`: its named networks, e.g. {"generator": ..., "adversary": ...}.
- `build_optimizers(opt)`: its named optimisers over those networks' parameters.
- `update(images)`: one training step on a batch in [-1, 1], written once, plainly;
  returns the losses as tensors. The trainer owns the loop; the model owns the step.
- `outputs(images, needs)`: "fake" (the reconstruction) and the per-image measurements
  named in `needs` (lib/scoring/measures.py), computing nothing they do not need. The score
  (`self.scoring`, lib/scoring/functions.py) is made from those measurements; which score, and
  in which mode they are measured, is the loop's ScorePolicy (lib/scoring/policy.py), never the
  model's: a model declares `measurements` and its `default_score`.

and may declare flags only it reads (a literal `OPTIONS` list at the top of its
file, see registry.py), say how often its generator learns (`generator_every`),
keep more in checkpoints (`extra_state`) and split an embedding over the locations
of the feature map it sums (`embedding_by_location`: predict.py's maps of a distance).

Everything else loops over the named collections: train/eval modes, devices,
checkpoints (network `name` → state key `name`, optimiser `name` → `optimizer_name`),
printing. Speed is not the model's business: `lib.fast.accelerate` makes the
networks and optimisers fast after they are built, and `train_step` and
`score_parts` run `update` and `outputs` inside the speed layer's layout and autocast.
"""
import abc

import torch
from torch import nn

from .. import fast as speed_layer
from ..images import normalisation
from ..original import applies
from ..scoring.functions import DEFAULT_WEIGHT, Scoring, fit
from ..scoring.measures import FAKE
from .networks import init_weights


class AnomalyModel(abc.ABC):
    name = ""  # the --model name
    # The measurements `outputs` can make (lib/scoring/measures.py): the scores this model can use.
    measurements: frozenset[str] = frozenset()
    default_score = "original"  # the score function (lib/scoring/functions.py) unless told otherwise
    # Whether bf16 autocast may be a default where the hardware favours it: only once the model's
    # AUROC with it was measured within seed noise of fp32's (docs/benchmarks.md, bf16 and detection).
    bf16_measured_safe = False

    @classmethod
    def bf16_safe(cls, opt) -> bool:
        """`bf16_measured_safe` for a run of `opt`: a model may have been measured safe in bf16 under some
        scores only (its default, chosen on validation) and not under others."""
        return cls.bf16_measured_safe

    def __init__(self, opt, device, fast: bool | None = None, amp: bool | None = None, compile: bool | None = None,
                 recorded: dict | None = None):
        """`fast`, `amp` and `compile` default to the options' values, then to a checkpoint's
        `recorded` speed choices (see lib.fast.settings)."""
        self.device = torch.device(device)
        self.networks: dict[str, nn.Module] = dict(self.build_networks(opt))
        for net in self.networks.values():
            net.to(self.device)
        self.speed = speed_layer.settings(opt, self.device, fast, amp, compile, bf16_safe=self.bf16_safe(opt),
                                          recorded=recorded)
        self.optimizers: dict[str, torch.optim.Optimizer] = speed_layer.accelerate(
            self.speed, self.networks, dict(self.build_optimizers(opt)), self.compiles)
        self.step = 0  # training steps taken; survives resume (a critic's schedule depends on it)
        # The score made from `outputs`' measurements, with its statistics: the model's own until the loop
        # fits the run's (lib/scoring/policy.py), which checkpoints then keep.
        self.scoring = Scoring(self.default_score, fit(self.default_score, {}, {}, weight=DEFAULT_WEIGHT))
        # On inspection data, the score whose map localises best on the validation masks (None: the score's
        # own map; lib/scoring/localise.py), kept in checkpoints as `scoring` is.
        self.localising: Scoring | None = None
        # How uint8 images become the float inputs this model was trained on (lib.images.to_float).
        self.pixel_mean_std = normalisation(opt.dataset, applies(opt, "mnist_range"))

    # --- what a model writes ------------------------------------------------------
    @classmethod
    def generator_every(cls, opt) -> int:
        """Training steps per generator update (a critic-driven model: more than one)."""
        return 1

    @abc.abstractmethod
    def build_networks(self, opt) -> dict[str, nn.Module]:
        """The model's networks by name, initialised (on the CPU; the base moves them)."""

    @abc.abstractmethod
    def build_optimizers(self, opt) -> dict[str, torch.optim.Optimizer]:
        """The model's optimisers by name, over `self.networks`' parameters."""

    @abc.abstractmethod
    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step (networks already in training mode, `self.step` already counted)."""

    @abc.abstractmethod
    def outputs(self, images: torch.Tensor, needs) -> dict[str, torch.Tensor]:
        """"fake" and the per-image measurements in `needs` (no grad; networks in eval mode, or in
        training mode when the run scores as the original did: then no pass may mix images that
        the original passed separately, since each pass normalises by its own batch)."""

    def compiles(self, network: str) -> bool:
        """Whether torch.compile can take that network (not with a double backward through it)."""
        return True

    def after_update(self, losses: dict[str, float]) -> None:
        """Act on a step's losses once they are floats (`update` itself never waits for the device)."""

    def embedding_by_location(self, images: torch.Tensor, measurement: str) -> torch.Tensor | None:
        """The embedding `measurement` of each image (in eval mode, in fp32) split over the locations of the
        feature map it is made from: (N, D, h, w) summing over (h, w) to the embedding. None: the model has
        no such split (predict.py's map then says the score has no per-location form)."""
        return None

    def extra_state(self) -> dict:
        """Whatever else the model must keep in a checkpoint (plain values)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore `extra_state`'s entries (a checkpoint may lack them)."""

    # --- what every model gets --------------------------------------------------------
    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        """One training step on a batch in [-1, 1]; returns the losses as floats."""
        self.train()
        self.step += 1
        with self.speed.autocast():
            losses = floats(self.update(self.speed.inputs(images)))
        self.after_update(losses)
        return losses

    @torch.no_grad()
    def score_parts(self, images: torch.Tensor, train_mode: bool = False, needs=None,
                    reconstruction: bool = True) -> dict[str, torch.Tensor]:
        """The reconstruction "fake" (`reconstruction`: False, where the measurements need none, spares
        the decoder) and the measurements the score needs (`needs`: these instead), in fp32; `scoring`
        makes the score from them.

        In eval mode (the default) BatchNorm uses its running statistics, so an image's score
        does not depend on which other images share its batch. `train_mode` scores as the
        original did (a run's ScorePolicy says which): with each batch's own statistics, which
        the running statistics then also absorb.
        """
        if train_mode:
            self.train()
        else:
            self.eval()
        needs = frozenset(self.scoring.needs if needs is None else needs) | ({FAKE} if reconstruction else set())
        with self.speed.autocast():
            parts = self.outputs(self.speed.inputs(images), needs)
        return {k: v.float().contiguous() for k, v in parts.items()}

    def score(self, images: torch.Tensor, train_mode: bool = False) -> torch.Tensor:
        """Per-image anomaly score (higher = more anomalous)."""
        return torch.as_tensor(self.scoring(self.score_parts(images, train_mode)))

    def train(self) -> None:
        for net in self.networks.values():
            net.train()

    def eval(self) -> None:
        for net in self.networks.values():
            net.eval()

    def state_dict(self) -> dict:
        return {**{name: net.state_dict() for name, net in self.networks.items()},
                **{f"optimizer_{name}": o.state_dict() for name, o in self.optimizers.items()},
                "step": self.step, "score": self.scoring.name, "score_stats": dict(self.scoring.stats),
                **({"map_score": self.localising.name, "map_stats": dict(self.localising.stats)}
                   if self.localising is not None else {}),
                **self.extra_state()}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        """Restore networks (and, unless `weights_only`, optimisers and step)."""
        for name, net in self.networks.items():
            net.load_state_dict(state[name])
        if "score" in state:  # the score it was evaluated with (older checkpoints: the original's weight)
            self.scoring = Scoring(state["score"], dict(state["score_stats"]))
        elif "score_weight" in state and self.scoring.name == "original":
            self.scoring.stats["weight"] = float(state["score_weight"])
        if "map_score" in state:
            self.localising = Scoring(state["map_score"], dict(state["map_stats"]))
        self.load_extra_state(state)
        if not weights_only:
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state[f"optimizer_{name}"])
                self.speed.optimizer_loaded(optimizer)
            self.step = state["step"]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {sum(p.numel() for p in net.parameters()):,} parameters"
                          for name, net in self.networks.items())
        return f"{type(self).__name__}({sizes}; {self.speed})"


class GeneratorAndAdversary:
    """For a model of two networks, "generator" and "adversary", each with its own Adam ("g", "d"),
    as the paper models have: their accessors, optimisers and the adversary's restart (put before
    AnomalyModel in the bases)."""

    restarts = 0  # the adversary's re-initialisations in this process (the ablation reports them)

    @property
    def generator(self) -> nn.Module:
        return self.networks["generator"]

    @property
    def adversary(self) -> nn.Module:
        return self.networks["adversary"]

    def build_optimizers(self, opt) -> dict[str, torch.optim.Optimizer]:
        betas = (opt.beta1, 0.999)
        return {"g": torch.optim.Adam(self.generator.parameters(), lr=opt.lr, betas=betas),
                "d": torch.optim.Adam(self.adversary.parameters(), lr=opt.lr, betas=betas)}

    def after_update(self, losses: dict[str, float]) -> None:
        # As the authors: a discriminator that wins outright gives G no gradient, so start it afresh.
        if losses["d"] < 1e-5:
            self.restart_adversary()

    def restart_adversary(self) -> None:
        init_weights(self.adversary)
        self.restarts += 1


def floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Loss tensors as floats, with one device sync instead of one per loss."""
    if not losses:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
    return dict(zip(losses, values))
