"""GANomaly (Akçay, Atapour-Abarghouei, Breckon, ACCV 2018).

An encoder-decoder-encoder generator reconstructs the image and encodes the reconstruction
again; a DCGAN discriminator judges the reconstruction, and the generator matches its
features. The anomaly score is the distance between the two codes: a normal image's
reconstruction encodes like the image itself. Defaults follow the paper and its authors' code
(w_adv 1, w_con 50, w_enc 1); docs/ganomaly.md lists where this differs from that code.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..scoring import measures
from ..scoring.measures import ADVERSARY_EMBEDDING, ENCODER_EMBEDDING, LATENT_MSE
from .base import AnomalyModel, GeneratorAndAdversary
from .losses import bce_logits, contextual_loss
from .networks import EncoderDecoderEncoder, FeatureDiscriminator, init_weights
from .registry import register

# This model's own flags, as data the command line reads without importing this file (lib/models/registry.py).
LABEL = "GANomaly"
OPTIONS = [
    {"flag": "--w_enc", "type": "float", "default": 1.0, "min": 0,
     "help": "weight of the encoder loss (L2 between the codes of x and of G(x))"},
]


@register
class GANomaly(GeneratorAndAdversary, AnomalyModel):
    name = "ganomaly"
    measurements = (frozenset(measures.OF_RECONSTRUCTION) | measures.FROM_ADVERSARY
                    | {ENCODER_EMBEDDING, LATENT_MSE})
    default_score = "latent"

    def __init__(self, opt, device, **speed):
        self.w_adv, self.w_con, self.w_enc = opt.w_adv, opt.w_con, opt.w_enc
        super().__init__(opt, device, **speed)

    def build_networks(self, opt) -> dict[str, nn.Module]:
        generator = EncoderDecoderEncoder(opt.isize, opt.nc, opt.ngf, opt.nz, opt.extralayers)
        adversary = FeatureDiscriminator(opt.isize, opt.nc, opt.ndf, opt.extralayers)
        for net in (generator, adversary):
            init_weights(net)
        return {"generator": generator, "adversary": adversary}

    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """G and D both learn from one discriminator pass over x and one over G(x), taken before
        either steps (as the authors' D update uses the G(x) made before G stepped)."""
        fake, code, code_of_fake = self.generator(images)
        logit_real, features_real = self.adversary.logits(images)
        logit_fake, features_fake = self.adversary.logits(fake)

        # update G: minimize w_adv·‖f(x) − f(G(x))‖² + w_con·|G(x) − x|₁ + w_enc·‖z − ẑ‖²
        g_adv = F.mse_loss(features_fake.float(), features_real.detach().float())
        g_con = contextual_loss(fake.float(), images.float())
        g_enc = F.mse_loss(code_of_fake.float(), code.float())
        loss_g = self.w_adv * g_adv + self.w_con * g_con + self.w_enc * g_enc
        # update D: maximize log D(x) + log(1 − D(G(x))), halved as in the authors' code
        d_real = bce_logits(logit_real, 1.0)
        d_fake = bce_logits(logit_fake, 0.0)
        loss_d = (d_real + d_fake) / 2

        self.optimizers["g"].zero_grad(set_to_none=True)
        self.optimizers["d"].zero_grad(set_to_none=True)
        loss_d.backward(inputs=list(self.adversary.parameters()), retain_graph=True)
        loss_g.backward(inputs=list(self.generator.parameters()))
        self.optimizers["g"].step()
        self.optimizers["d"].step()
        return {"g_adv": g_adv, "g_con": g_con, "g_enc": g_enc, "g": loss_g, "d_real": d_real, "d_fake": d_fake,
                "d": loss_d}

    def outputs(self, images: torch.Tensor, needs) -> dict[str, torch.Tensor]:
        """G(x), the distance of the codes, and what the scoring module measures of G(x) and x."""
        if not measures.reconstructs(self.generator.training, needs):  # e.g. a distance's bank of codes
            return measures.of_image_alone(self.generator.encoder, self.verdict, images, needs)
        fake, code, code_of_fake = self.generator(images)
        parts = {"fake": fake}
        if LATENT_MSE in needs:
            parts[LATENT_MSE] = measures.feature_mse(code.float(), code_of_fake.float())
        if ENCODER_EMBEDDING in needs:
            parts[ENCODER_EMBEDDING] = code.flatten(1)
        parts.update(measures.of_reconstruction(images.float(), fake.float(), needs))
        if needs & measures.FROM_ADVERSARY:
            parts.update(measures.of_adversary(self.verdict, images, fake, needs, not self.adversary.training))
        return parts

    def verdict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(how fake the discriminator finds each image: its negated logit, its feature maps)."""
        logit, features = self.adversary.logits(images)
        return -logit, features

    @torch.no_grad()
    def embedding_by_location(self, images: torch.Tensor, measurement: str) -> torch.Tensor | None:
        """The code over the encoder's last 4×4 map; the discriminator's embedding, the mean of its 4×4
        feature maps, as each position's feature vector over the number of positions."""
        self.eval()
        if measurement == ENCODER_EMBEDDING:
            return self.generator.encoder.by_location(images.float())
        if measurement == ADVERSARY_EMBEDDING:
            features = self.adversary.features(images.float()).float()
            return features / (features.shape[2] * features.shape[3])
        return None
