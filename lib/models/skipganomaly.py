"""Skip-GANomaly (Akçay, Atapour-Abarghouei, Breckon, IJCNN 2019).

UNet generator with skip connections against a DCGAN discriminator trained
with binary cross-entropy; the discriminator's features give the latent loss.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.base import AnomalyGAN
from lib.networks import Discriminator, init_weights


def _bce_logits(logit: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit.float(), torch.full_like(logit, target, dtype=torch.float))


def matching_momenta(m: float) -> tuple[float, float]:
    """BatchNorm momenta for one pass over real then one over fake images that leave the
    running statistics where the plain step's four passes (fake, real, real, fake) leave them."""
    fake = m + m * (1 - m) ** 3
    real = m * (1 - m) * (2 - m) / (1 - fake)
    return real, fake


@contextlib.contextmanager
def _momentum(module: nn.Module, which: int):
    """Run BatchNorm layers of `module` with `matching_momenta(...)[which]`, counting two batches."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.momentum is not None]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = matching_momenta(m.momentum)[which]
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
            if m.training and m.track_running_stats:
                m.num_batches_tracked.add_(1)


class SkipGANomaly(AnomalyGAN):
    name = "skipganomaly"

    def build_adversary(self, opt):
        return Discriminator(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers)

    def plain_train_step(self, images: torch.Tensor) -> dict[str, float]:
        self._train_mode()
        self.step += 1
        fake = self.generator(self.add_noise(images))

        # update G: minimize w_adv·BCE(D(G(x)), real) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
        prob_fake, features_fake = self.adversary(fake)
        with torch.no_grad():
            _, features_real = self.adversary(images)
        g_adv = F.binary_cross_entropy(prob_fake, torch.ones_like(prob_fake))
        loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_g.step()

        # update D: maximize log D(x) + log(1 − D(G(x)))
        prob_real, _ = self.adversary(images)
        prob_fake, _ = self.adversary(fake.detach())
        d_real = F.binary_cross_entropy(prob_real, torch.ones_like(prob_real))
        d_fake = F.binary_cross_entropy(prob_fake, torch.zeros_like(prob_fake))
        loss_d = d_real + d_fake
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizer_d.step()

        # As in the original: a discriminator that wins outright gives G no
        # gradient, so start it afresh.
        if loss_d.item() < 1e-5:
            init_weights(self.adversary)

        return {"g_adv": g_adv.item(), "g_con": g_con.item(), "g_lat": g_lat.item(),
                "g": loss_g.item(), "d_real": d_real.item(), "d_fake": d_fake.item(), "d": loss_d.item()}

    def fast_train_step(self, images: torch.Tensor) -> dict[str, float]:
        """The plain step with one discriminator pass per batch instead of two.

        Both updates see the discriminator before either steps, as in the plain
        step, so D's passes over x and G(x) serve both; each loss then takes
        gradients only for its own network's parameters.
        """
        self._train_mode()
        self.step += 1
        with self.autocast():
            fake = self.generator(self.add_noise(images))
            with _momentum(self.adversary, 0):
                logit_real, features_real = self.adversary.logits(images)
            with _momentum(self.adversary, 1):
                logit_fake, features_fake = self.adversary.logits(fake)

        # update G: minimize w_adv·BCE(D(G(x)), real) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
        g_adv = _bce_logits(logit_fake, 1.0)
        loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
        # update D: maximize log D(x) + log(1 − D(G(x)))
        d_real = _bce_logits(logit_real, 1.0)
        d_fake = _bce_logits(logit_fake, 0.0)
        loss_d = d_real + d_fake

        self.optimizer_g.zero_grad(set_to_none=True)
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward(inputs=list(self.adversary.parameters()), retain_graph=True)
        loss_g.backward(inputs=list(self.generator.parameters()))
        self.optimizer_g.step()
        self.optimizer_d.step()

        losses = self.floats({"g_adv": g_adv, "g_con": g_con, "g_lat": g_lat, "g": loss_g,
                              "d_real": d_real, "d_fake": d_fake, "d": loss_d})
        if losses["d"] < 1e-5:  # as in the plain step
            init_weights(self.adversary)
        return losses
