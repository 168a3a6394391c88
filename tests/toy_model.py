"""A throwaway model that exists only to prove the model contract: a new model is one file
(this one) plus one line (tests/conftest.py's `MODELS.add`), and every generic test then runs on it.

A plain convolutional autoencoder with a flag of its own; its score is the image error.
"""
import torch
from torch import nn

from lib.models import register
from lib.models.base import AnomalyModel
from lib.models.networks import init_weights
from lib.scoring import measures

LABEL = "Toy"
OPTIONS = [{"flag": "--toy_width", "type": "int", "default": 4, "min": 1, "help": "channels of the toy's code"}]


@register
class ToyAutoencoder(AnomalyModel):
    name = "toy_model"
    measurements = frozenset(measures.OF_RECONSTRUCTION)
    default_score = "image"

    def build_networks(self, opt) -> dict[str, nn.Module]:
        w = opt.toy_width
        net = nn.Sequential(nn.Conv2d(opt.nc, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2),
                            nn.ConvTranspose2d(w, opt.nc, 4, 2, 1), nn.Tanh())
        init_weights(net)
        return {"autoencoder": net}

    def build_optimizers(self, opt) -> dict[str, torch.optim.Optimizer]:
        return {"ae": torch.optim.Adam(self.networks["autoencoder"].parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))}

    def update(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = (self.networks["autoencoder"](images).float() - images.float()).abs().mean()
        self.optimizers["ae"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["ae"].step()
        return {"l1": loss}

    def outputs(self, images: torch.Tensor, needs) -> dict[str, torch.Tensor]:
        fake = self.networks["autoencoder"](images).float()
        return {"fake": fake, **measures.of_reconstruction(images.float(), fake, needs)}
