"""Skip-GANomaly (Akçay, Atapour-Abarghouei, Breckon, IJCNN 2019).

UNet generator with skip connections against a DCGAN discriminator trained
with binary cross-entropy; the discriminator's features give the latent loss.
"""
import torch
import torch.nn.functional as F

from lib.losses import contextual_loss, latent_loss
from lib.models.base import AnomalyGAN
from lib.networks import Discriminator, init_weights


class SkipGANomaly(AnomalyGAN):
    name = "skipganomaly"

    def build_adversary(self, opt):
        return Discriminator(opt.isize, opt.nc, opt.ndf, opt.nz, opt.extralayers)

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        self._train_mode()
        self.step += 1
        fake = self.generator(self.add_noise(images))

        # update G: minimize w_adv·BCE(D(G(x)), real) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
        prob_fake, features_fake = self.adversary(fake)
        with torch.no_grad():
            _, features_real = self.adversary(images)
        g_adv = F.binary_cross_entropy(prob_fake, torch.ones_like(prob_fake))
        g_con = contextual_loss(fake, images)
        g_lat = latent_loss(features_real, features_fake)
        loss_g = self.w_adv * g_adv + self.w_con * g_con + self.w_lat * g_lat
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
