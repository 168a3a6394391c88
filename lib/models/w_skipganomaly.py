"""Skip-WGANomaly: Skip-GANomaly's generator against a Wasserstein critic.

The critic (InstanceNorm, no sigmoid) is trained with the Wasserstein loss and
either a gradient penalty (Gulrajani et al., 2017) or weight clipping (Arjovsky
et al., 2017); the generator is updated every `n_critic` critic updates.
Unlike the original code, the generator's adversarial and latent losses are
not detached, so `w_adv` and `w_lat` act on it; without the fixes (lib/original.py)
the step is the original's, defects included.
"""
import torch

from ..original import applies
from .losses import contextual_loss, gradient_penalty, latent_loss
from .networks import Critic
from .registry import register
from .skipganomaly import SkipGANomaly

# This model's own flags, as data the command line reads without importing this file (lib/models/registry.py).
LABEL = "Skip-WGANomaly"
OPTIONS = [
    {"extends": "skipganomaly"},  # the same generator, losses and flags
    {"flag": "--wgan", "default": "gp", "choices": ["gp", "clip"], "run_name": {"clip": "-clip"},
     "help": "critic constraint: gradient penalty or weight clipping"},
    {"flag": "--lambda_gp", "type": "float", "default": 10.0, "min": 0, "help": "gradient penalty weight",
     "only_with": {"wgan": ["gp"]}},
    {"flag": "--clip_value", "type": "float", "default": 0.01, "above": 0, "help": "weight clipping bound",
     "only_with": {"wgan": ["clip"]}},
    {"flag": "--n_critic", "type": "int", "default": 5, "min": 1, "help": "critic updates per generator update"},
]


@register
class WSkipGANomaly(SkipGANomaly):
    name = "w_skipganomaly"
    bf16_measured_safe = True  # bf16 minus fp32 AUROC 0.000 ± 0.002 (docs/benchmarks.md)

    @classmethod
    def generator_every(cls, opt) -> int:
        return opt.n_critic

    def __init__(self, opt, device, **speed):
        self.wgan, self.lambda_gp = opt.wgan, opt.lambda_gp
        self.clip_value, self.n_critic = opt.clip_value, opt.n_critic
        # The original's behaviour where a fix is off (lib/original.py).
        self.generator_gradients = applies(opt, "generator_gradients")
        self.gp_of_mean = applies(opt, "gp_of_mean")
        self.critic_no_reset = applies(opt, "critic_no_reset")
        # The step (1, 2, ...) at which the generator first learns: n_critic, or n_critic − 1 in the original.
        self.generator_phase = 0 if applies(opt, "generator_phase") else self.n_critic - 1
        super().__init__(opt, device, **speed)

    def build_adversary(self, opt):
        return Critic(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers, affine=applies(opt, "critic_affine"))

    def compiles(self, network: str) -> bool:
        return network != "adversary" or self.wgan != "gp"  # the gradient penalty needs a double backward

    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """A critic update every step (x and G(x) in one pass: InstanceNorm treats every
        image on its own), then, every n_critic steps, a generator update against the
        updated critic."""
        update_generator = self.step % self.n_critic == self.generator_phase
        with torch.set_grad_enabled(update_generator):
            fake = self.generator(self.add_noise(images))
        real_and_fake = torch.cat([images, fake.detach().to(images.dtype)])

        # update critic: maximize the Wasserstein estimate C(x) − C(G(x)) (minus λ·GP)
        values, features = self.adversary(real_and_fake)
        value_real, value_fake = values.float().chunk(2)
        wasserstein = value_real.mean() - value_fake.mean()
        loss_c = -wasserstein
        losses = {"wasserstein": wasserstein}
        if self.wgan == "gp":
            penalty = gradient_penalty(self.adversary, *real_and_fake.chunk(2), of_sum=not self.gp_of_mean)
            loss_c = loss_c + self.lambda_gp * penalty
            losses["gp"] = penalty
        self.optimizers["d"].zero_grad(set_to_none=True)
        loss_c.backward()
        self.optimizers["d"].step()
        self.clip_critic()
        losses["critic"] = loss_c

        if update_generator:
            # update G: minimize −w_adv·C(G(x)) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
            if self.generator_gradients:
                value_fake, features_fake = self.adversary(fake)
                with torch.no_grad():
                    _, features_real = self.adversary(images)
                g_adv = -value_fake.float().mean()
                loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
            else:
                loss_g, g_con, g_lat, g_adv = self.original_generator_loss(fake, images, features)
            self.optimizers["g"].zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(self.generator.parameters()))  # the critic's gradients are not needed
            self.optimizers["g"].step()
            losses.update(g_adv=g_adv, g_con=g_con, g_lat=g_lat, g=loss_g)
        return losses

    def original_generator_loss(self, fake, images, features):
        """The original's generator loss: the adversarial term on a detached G(x) (against the
        updated critic) and the latent term from the critic pass before its update, detached.
        Their values count; only the L1 term teaches the generator."""
        with torch.no_grad():
            g_adv = -self.adversary(fake.detach())[0].float().mean()
            features_real, features_fake = features.float().chunk(2)
            g_lat = latent_loss(features_real, features_fake)
        g_con = contextual_loss(fake.float(), images.float())
        return self.w_adv * g_adv + self.w_con * g_con + self.w_lat * g_lat, g_con, g_lat, g_adv

    def verdict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the negated critic value: a critic rates real-looking images high, its features)."""
        value, features = self.adversary(images)
        return -value, features

    def after_update(self, losses: dict[str, float]) -> None:
        """A critic's loss is unbounded: nothing to restart (the original restarts it below 1e-5)."""
        if not self.critic_no_reset and losses["critic"] < 1e-5:
            self.restart_adversary()

    def clip_critic(self) -> None:
        """--wgan clip: keep every critic weight in [-clip_value, clip_value]."""
        if self.wgan == "clip":
            with torch.no_grad():
                for p in self.adversary.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
