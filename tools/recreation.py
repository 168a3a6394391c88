"""The original implementation's work per step, re-created from its description (not its code).

tools/benchmark.py's `original` path when the original's own code is not given: a generator
pass; discriminator passes over x and G(x) for the discriminator update; fresh passes over G(x)
and x (both recorded for autograd) for the generator update; for-loop Adam; evaluation in train
mode. Its Skip-WGANomaly generator update scores the critic on a detached G(x), as the original
did (its defect 1), which makes it cheaper, not dearer. It stays for what the real code cannot
give: counted FLOPs, profiles, and machines without the original's code.
"""
import torch
import torch.nn.functional as F

from lib.errors import UserError
from lib.models.losses import contextual_loss, gradient_penalty, latent_loss
from lib.models.networks import init_weights
from lib.scoring.functions import weighted
from lib.scoring.measures import feature_mse, image_mse


class Original:
    """The original implementation's per-step work on a plain model's networks and optimisers."""

    def __init__(self, model):
        steps = {"skipganomaly": self._gan_step, "w_skipganomaly": self._wgan_step}
        if model.name not in steps:
            raise UserError(f"--model {model.name} with the original path: the original code has no model "
                            f"{model.name}; benchmark --model skipganomaly or w_skipganomaly, or measure "
                            "--path fast or plain without --compare")
        self.model = model
        self._update = steps[model.name]
        self.step = 0

    def train_step(self, images):
        m = self.model
        m.generator.train()
        m.adversary.train()
        self.step += 1
        fake = m.generator(images)  # always recorded for autograd, as in the original
        return self._update(m, images, fake)

    def _gan_step(self, m, images, fake):
        bce = F.binary_cross_entropy
        prob_real, _ = m.adversary(images)
        prob_fake_d, _ = m.adversary(fake.detach())
        # update G on fresh passes over G(x) and x
        prob_fake, features_fake = m.adversary(fake)
        _, features_real = m.adversary(images)
        loss_g = (m.w_adv * bce(prob_fake, torch.ones_like(prob_fake)) + m.w_con * contextual_loss(fake, images)
                  + m.w_lat * latent_loss(features_real, features_fake))
        m.optimizers["g"].zero_grad()
        loss_g.backward()
        m.optimizers["g"].step()
        # update D on the first passes
        loss_d = bce(prob_real, torch.ones_like(prob_real)) + bce(prob_fake_d, torch.zeros_like(prob_fake_d))
        m.optimizers["d"].zero_grad()
        loss_d.backward()
        m.optimizers["d"].step()
        if loss_d.item() < 1e-5:
            init_weights(m.adversary)
        return {"g": loss_g.item(), "d": loss_d.item()}

    def _wgan_step(self, m, images, fake):
        value_real, _ = m.adversary(images)
        value_fake, _ = m.adversary(fake.detach())
        loss_c = value_fake.mean() - value_real.mean()
        if m.wgan == "gp":
            loss_c = loss_c + m.lambda_gp * gradient_penalty(m.adversary, images, fake.detach())
        m.optimizers["d"].zero_grad()
        loss_c.backward()
        m.optimizers["d"].step()
        if m.wgan == "clip":
            for p in m.adversary.parameters():
                p.data.clamp_(-m.clip_value, m.clip_value)
        losses = {"critic": loss_c.item()}
        if self.step % m.n_critic == 0:
            value_fake, features_fake = m.adversary(fake.detach())
            _, features_real = m.adversary(images)
            loss_g = (-m.w_adv * value_fake.mean() + m.w_con * contextual_loss(fake, images)
                      + m.w_lat * latent_loss(features_real, features_fake))
            m.optimizers["g"].zero_grad()
            loss_g.backward()
            m.optimizers["g"].step()
            losses["g"] = loss_g.item()
        return losses

    @torch.no_grad()
    def score(self, images):
        m = self.model
        m.generator.train()  # the original evaluated in training mode
        m.adversary.train()
        fake = m.generator(images)
        _, features_real = m.adversary(images)
        _, features_fake = m.adversary(fake)
        return weighted(image_mse(images, fake), feature_mse(features_real, features_fake), m.score_weight)
