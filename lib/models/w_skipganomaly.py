"""Skip-WGANomaly: Skip-GANomaly's generator against a Wasserstein critic.

The critic (InstanceNorm, no sigmoid) is trained with the Wasserstein loss and
either a gradient penalty (Gulrajani et al., 2017) or weight clipping (Arjovsky
et al., 2017); the generator is updated every `n_critic` critic updates.
Unlike the original code, the generator's adversarial and latent losses are
not detached, so `w_adv` and `w_lat` act on it.
"""
import torch

from lib.losses import gradient_penalty
from lib.models.base import AnomalyGAN
from lib.networks import Critic


class WSkipGANomaly(AnomalyGAN):
    name = "w_skipganomaly"

    def __init__(self, opt, device, **settings):
        self.wgan, self.lambda_gp = opt.wgan, opt.lambda_gp
        self.clip_value, self.n_critic = opt.clip_value, opt.n_critic
        super().__init__(opt, device, **settings)

    def build_adversary(self, opt):
        return Critic(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers)

    @property
    def adversary_compiles(self) -> bool:
        return self.wgan != "gp"  # the gradient penalty needs a double backward

    def plain_train_step(self, images: torch.Tensor) -> dict[str, float]:
        self._train_mode()
        self.step += 1
        update_generator = self.step % self.n_critic == 0
        with torch.set_grad_enabled(update_generator):
            fake = self.generator(self.add_noise(images))

        # update critic: maximize the Wasserstein estimate C(x) − C(G(x)) (minus λ·GP)
        value_real, _ = self.adversary(images)
        value_fake, _ = self.adversary(fake.detach())
        wasserstein = value_real.mean() - value_fake.mean()
        loss_c = -wasserstein
        losses = {"wasserstein": wasserstein.item()}
        if self.wgan == "gp":
            penalty = gradient_penalty(self.adversary, images, fake.detach())
            loss_c = loss_c + self.lambda_gp * penalty
            losses["gp"] = penalty.item()
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_c.backward()
        self.optimizer_d.step()
        self.clip_critic()
        losses["critic"] = loss_c.item()

        if update_generator:
            # update G: minimize −w_adv·C(G(x)) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
            value_fake, features_fake = self.adversary(fake)
            with torch.no_grad():
                _, features_real = self.adversary(images)
            g_adv = -value_fake.mean()
            loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
            self.optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.optimizer_g.step()
            losses.update(g_adv=g_adv.item(), g_con=g_con.item(), g_lat=g_lat.item(), g=loss_g.item())
        return losses

    def clip_critic(self) -> None:
        """--wgan clip: keep every critic weight in [-clip_value, clip_value]."""
        if self.wgan == "clip":
            with torch.no_grad():
                for p in self.adversary.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)

    def fast_train_step(self, images: torch.Tensor) -> dict[str, float]:
        """The plain step with one critic pass over x and G(x) together, the gradient
        penalty in fp32, and no critic parameter gradients for the generator's update.

        The generator still sees the critic after its update, as in the plain step.
        """
        self._train_mode()
        self.step += 1
        update_generator = self.step % self.n_critic == 0
        with torch.set_grad_enabled(update_generator), self.autocast():
            fake = self.generator(self.add_noise(images))
        real_and_fake = torch.cat([images, fake.detach().to(images.dtype)])

        # update critic: maximize the Wasserstein estimate C(x) − C(G(x)) (minus λ·GP)
        with self.autocast():  # InstanceNorm treats every image on its own: one pass for both
            values, _ = self.adversary(real_and_fake)
        value_real, value_fake = values.float().chunk(2)
        wasserstein = value_real.mean() - value_fake.mean()
        loss_c = -wasserstein
        losses = {"wasserstein": wasserstein}
        if self.wgan == "gp":
            penalty = gradient_penalty(self.adversary, *real_and_fake.chunk(2))
            loss_c = loss_c + self.lambda_gp * penalty
            losses["gp"] = penalty
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_c.backward()
        self.optimizer_d.step()
        self.clip_critic()
        losses["critic"] = loss_c

        if update_generator:
            # update G: minimize −w_adv·C(G(x)) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
            with self.autocast():
                value_fake, features_fake = self.adversary(fake)
                with torch.no_grad():
                    _, features_real = self.adversary(images)
            g_adv = -value_fake.float().mean()
            loss_g, g_con, g_lat = self.generator_loss(g_adv, fake, images, features_real, features_fake)
            self.optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(self.generator.parameters()))
            self.optimizer_g.step()
            losses.update(g_adv=g_adv, g_con=g_con, g_lat=g_lat, g=loss_g)
        return self.floats(losses)
