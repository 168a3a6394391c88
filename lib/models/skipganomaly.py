"""Skip-GANomaly (Akçay, Atapour-Abarghouei, Breckon, IJCNN 2019).

A UNet generator with skip connections reconstructs the image; a DCGAN
discriminator trained with binary cross-entropy judges it, and its features
give the latent loss. The anomaly score weighs the image error against the
feature error. Skip-WGANomaly (w_skipganomaly.py) keeps all of this but the adversary.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..original import applies
from ..scoring import measures
from ..scoring.functions import DEFAULT_WEIGHT
from ..scoring.measures import ADVERSARY_EMBEDDING, ENCODER_EMBEDDING
from . import original_init
from .base import AnomalyModel, GeneratorAndAdversary
from .losses import bce_logits, contextual_loss, latent_loss
from .networks import Discriminator, UNet
from .registry import register

LABEL = "Skip-GANomaly"
OPTIONS = [
    {"flag": "--no_skip", "type": "bool", "run_name": {True: "-no_skip"},
     "help": "UNet without skip connections (the original README's ablation)"},
    {"flag": "--w_lat", "type": "float", "default": 1.0, "min": 0, "help": "weight of the latent (feature L2) loss"},
    {"flag": "--noise_std", "type": "float", "default": 0.0, "min": 0,
     "help": "std of Gaussian noise added to training inputs (the original added uninitialised memory)"},
]


@register
class SkipGANomaly(GeneratorAndAdversary, AnomalyModel):
    name = "skipganomaly"
    measurements = frozenset(measures.OF_RECONSTRUCTION) | measures.FROM_ADVERSARY | {ENCODER_EMBEDDING}

    @classmethod
    def bf16_safe(cls, opt) -> bool:
        # Measured (docs/benchmarks.md, bf16 and detection): with the default score, chosen on validation, bf16
        # keeps the AUROC (experiments/bf16_default.py); with the original's score it lost 0.014 ± 0.024
        # (experiments/bf16_check.py), so a score given with --score stays fp32 unless --amp.
        return cls.bf16_measured_safe or getattr(opt, "score", None) is None

    def __init__(self, opt, device, **speed):
        self.w_adv, self.w_con, self.w_lat = opt.w_adv, opt.w_con, opt.w_lat
        self.noise_std = opt.noise_std
        # lib/original.py: without this fix the reported loss and the reset threshold include the latent loss.
        self.d_loss_bce_only = applies(opt, "d_loss_bce_only")
        self.bce = bce_logits if applies(opt, "bce_with_logits") else _bce_of_probability
        super().__init__(opt, device, **speed)

    @property
    def score_weight(self) -> float:
        """The original score's weight of the image error (the feature error gets the rest)."""
        return self.scoring.stats.get("weight", DEFAULT_WEIGHT)

    def build_networks(self, opt) -> dict[str, nn.Module]:
        rng_state = torch.get_rng_state()
        generator = UNet(opt.nc, opt.ngf, opt.isize, skip=not opt.no_skip)
        adversary = self.build_adversary(opt)
        original_init.replay(rng_state, generator, adversary)  # a seed gives the original's initial weights
        return {"generator": generator, "adversary": adversary}

    def build_adversary(self, opt) -> nn.Module:
        return Discriminator(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers, bias=applies(opt, "classifier_bias"))

    def add_noise(self, images: torch.Tensor) -> torch.Tensor:
        """Gaussian input noise (the original added an uninitialised buffer instead)."""
        if self.noise_std <= 0:
            return images
        # Drawn in the standard layout so a channels-last batch gets the same noise.
        return images + self.noise_std * torch.randn(images.shape, dtype=images.dtype, device=images.device)

    def generator_loss(self, g_adv, fake, images, features_real, features_fake):
        """(total, contextual, latent): w_adv·g_adv + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖², in fp32."""
        g_con = contextual_loss(fake.float(), images.float())
        g_lat = latent_loss(features_real.detach().float(), features_fake.float())
        return self.w_adv * g_adv + self.w_con * g_con + self.w_lat * g_lat, g_con, g_lat

    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """G and D both learn from one discriminator pass over x and one over G(x).

        Both updates see the discriminator before either steps (as in the original, where
        D's update uses the G(x) made before G stepped), so the two passes serve both
        losses; each loss takes gradients only for its own network. BatchNorm's momenta
        are set so its running statistics end where the original's three passes (x, G(x),
        G(x) again for D's update) leave them.
        """
        fake = self.generator(self.add_noise(images))
        logit_real, features_real = self.adversary.logits(images)
        with _counted_twice(self.adversary):  # the original passes G(x) again for D's update
            logit_fake, features_fake = self.adversary.logits(fake)

        # update G: minimize w_adv·BCE(D(G(x)), real) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
        g_adv = self.bce(logit_fake, 1.0)
        loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
        # update D: maximize log D(x) + log(1 − D(G(x)))
        d_real = self.bce(logit_real, 1.0)
        d_fake = self.bce(logit_fake, 0.0)
        loss_d = d_real + d_fake
        if not self.d_loss_bce_only:  # the original adds the latent loss's value: no gradient, a higher loss
            loss_d = loss_d + self.w_lat * g_lat.detach()

        self.optimizers["g"].zero_grad(set_to_none=True)
        self.optimizers["d"].zero_grad(set_to_none=True)
        loss_d.backward(inputs=list(self.adversary.parameters()), retain_graph=True)
        loss_g.backward(inputs=list(self.generator.parameters()))
        self.optimizers["g"].step()
        self.optimizers["d"].step()
        return {"g_adv": g_adv, "g_con": g_con, "g_lat": g_lat, "g": loss_g,
                "d_real": d_real, "d_fake": d_fake, "d": loss_d}

    def outputs(self, images: torch.Tensor, needs) -> dict[str, torch.Tensor]:
        """G(x), the measurements of G(x) against x, and those of the adversary's view of both."""
        if not measures.reconstructs(self.generator.training, needs):  # e.g. a distance's bank of codes
            return measures.of_image_alone(self.generator.encode, self.verdict, images, needs)
        if ENCODER_EMBEDDING in needs:
            fake, code = self.generator.encode_and_decode(images)
            parts = {ENCODER_EMBEDDING: code.flatten(1)}
        else:
            fake, parts = self.generator(images), {}
        parts["fake"] = fake
        parts.update(measures.of_reconstruction(images.float(), fake.float(), needs))
        if needs & measures.FROM_ADVERSARY:
            parts.update(measures.of_adversary(self.verdict, images, fake, needs, not self.adversary.training))
        return parts

    def verdict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(how fake the adversary finds each image: its negated logit, its features of the image)."""
        logit, features = self.adversary.logits(images)
        return -logit, features

    @torch.no_grad()
    def embedding_by_location(self, images: torch.Tensor, measurement: str) -> torch.Tensor | None:
        """The generator's code over the UNet's innermost 2×2 input; the adversary's features (its
        discriminator's or critic's encoder output) over its last 4×4 map."""
        self.eval()
        if measurement == ENCODER_EMBEDDING:
            return self.generator.code_by_location(images.float())
        if measurement == ADVERSARY_EMBEDDING:
            return self.adversary.features.by_location(images.float())
        return None



def _bce_of_probability(logit: torch.Tensor, target: float) -> torch.Tensor:
    """The original's rounding: a sigmoid, then BCELoss (which clamps the log at -100). Outside
    autocast, which refuses BCELoss (the reason our default takes logits)."""
    with torch.autocast(logit.device.type, enabled=False):
        return F.binary_cross_entropy(torch.sigmoid(logit.float()), torch.full_like(logit, target, dtype=torch.float))


@contextlib.contextmanager
def _counted_twice(module: nn.Module):
    """Run `module`'s BatchNorm layers so that one pass updates their running statistics as two
    passes over the same batch would (momentum m becomes 1 − (1 − m)², and two batches count)."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.momentum is not None]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1 - (1 - m.momentum) ** 2
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
            if m.training and m.track_running_stats:
                m.num_batches_tracked.add_(1)
