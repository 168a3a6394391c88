"""Skip-WGANomaly: Skip-GANomaly's generator against a Wasserstein critic.

The critic (InstanceNorm, no sigmoid) is trained with the Wasserstein loss and
either a gradient penalty (Gulrajani et al., 2017) or weight clipping (Arjovsky
et al., 2017); the generator is updated every `n_critic` critic updates.
Unlike the original code, the generator's adversarial and latent losses are
not detached, so `w_adv` and `w_lat` act on it.
"""
import torch

from lib.losses import gradient_penalty
from lib.models.registry import register
from lib.models.skipganomaly import SkipGANomaly
from lib.networks import Critic

# This model's own flags, as data the command line reads without importing this file (lib/models/registry.py).
OPTIONS = [
    {"flag": "--wgan", "default": "gp", "choices": ["gp", "clip"], "run_name": {"clip": "-clip"},
     "help": "critic constraint: gradient penalty or weight clipping"},
    {"flag": "--lambda_gp", "type": "float", "default": 10, "min": 0, "help": "gradient penalty weight"},
    {"flag": "--clip_value", "type": "float", "default": 0.01, "min": 0, "help": "weight clipping bound"},
    {"flag": "--n_critic", "type": "int", "default": 5, "min": 1, "help": "critic updates per generator update"},
]


@register
class WSkipGANomaly(SkipGANomaly):
    name = "w_skipganomaly"

    @classmethod
    def generator_every(cls, opt) -> int:
        return opt.n_critic

    def __init__(self, opt, device, **speed):
        self.wgan, self.lambda_gp = opt.wgan, opt.lambda_gp
        self.clip_value, self.n_critic = opt.clip_value, opt.n_critic
        super().__init__(opt, device, **speed)

    def build_adversary(self, opt):
        return Critic(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers)

    def compiles(self, network: str) -> bool:
        return network != "adversary" or self.wgan != "gp"  # the gradient penalty needs a double backward

    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """A critic update every step (x and G(x) in one pass: InstanceNorm treats every
        image on its own), then, every n_critic steps, a generator update against the
        updated critic."""
        update_generator = self.step % self.n_critic == 0
        with torch.set_grad_enabled(update_generator):
            fake = self.generator(self.add_noise(images))
        real_and_fake = torch.cat([images, fake.detach().to(images.dtype)])

        # update critic: maximize the Wasserstein estimate C(x) − C(G(x)) (minus λ·GP)
        values, _ = self.adversary(real_and_fake)
        value_real, value_fake = values.float().chunk(2)
        wasserstein = value_real.mean() - value_fake.mean()
        loss_c = -wasserstein
        losses = {"wasserstein": wasserstein}
        if self.wgan == "gp":
            penalty = gradient_penalty(self.adversary, *real_and_fake.chunk(2))
            loss_c = loss_c + self.lambda_gp * penalty
            losses["gp"] = penalty
        self.optimizers["d"].zero_grad(set_to_none=True)
        loss_c.backward()
        self.optimizers["d"].step()
        self.clip_critic()
        losses["critic"] = loss_c

        if update_generator:
            # update G: minimize −w_adv·C(G(x)) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
            value_fake, features_fake = self.adversary(fake)
            with torch.no_grad():
                _, features_real = self.adversary(images)
            g_adv = -value_fake.float().mean()
            loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
            self.optimizers["g"].zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(self.generator.parameters()))  # the critic's gradients are not needed
            self.optimizers["g"].step()
            losses.update(g_adv=g_adv, g_con=g_con, g_lat=g_lat, g=loss_g)
        return losses

    def after_update(self, losses: dict[str, float]) -> None:
        """A critic's loss is unbounded: nothing to restart (Skip-GANomaly's discriminator has)."""

    def clip_critic(self) -> None:
        """--wgan clip: keep every critic weight in [-clip_value, clip_value]."""
        if self.wgan == "clip":
            with torch.no_grad():
                for p in self.adversary.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
