"""What Skip-GANomaly and Skip-WGANomaly share: the UNet generator, input noise,
Adam optimisers, the anomaly score and the checkpointable state.

A model subclasses `AnomalyGAN`, builds its adversary (a module returning
`(value, features)`) in `build_adversary`, and writes `train_step`.
"""
import torch
from torch import nn

from lib.losses import anomaly_score
from lib.networks import UNet, init_weights


class AnomalyGAN:
    name = ""

    def __init__(self, opt, device: torch.device):
        self.device = device
        self.noise_std = opt.noise_std
        self.score_weight = opt.score_weight
        self.w_adv, self.w_con, self.w_lat = opt.w_adv, opt.w_con, opt.w_lat
        self.generator = UNet(opt.nc, opt.ngf, opt.isize, skip=not opt.no_skip).to(device)
        self.adversary = self.build_adversary(opt).to(device)
        init_weights(self.generator)
        init_weights(self.adversary)
        betas = (opt.beta1, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=opt.lr, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.adversary.parameters(), lr=opt.lr, betas=betas)
        self.step = 0  # training steps taken; drives n_critic and survives resume

    def build_adversary(self, opt) -> nn.Module:
        raise NotImplementedError

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer_g, self.optimizer_d]

    def _train_mode(self) -> None:
        self.generator.train()
        self.adversary.train()

    def add_noise(self, images: torch.Tensor) -> torch.Tensor:
        """Gaussian input noise (the original added an uninitialised buffer instead)."""
        if self.noise_std <= 0:
            return images
        return images + self.noise_std * torch.randn_like(images)

    @torch.no_grad()
    def score_parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image anomaly score and its reconstruction/feature parts, in eval mode.

        Eval mode makes BatchNorm use its running statistics, so an image's
        score does not depend on which other images share its batch.
        """
        self.generator.eval()
        self.adversary.eval()
        fake = self.generator(images)
        _, features_real = self.adversary(images)
        _, features_fake = self.adversary(fake)
        score, reconstruction, features = anomaly_score(
            images, fake, features_real, features_fake, self.score_weight)
        return {"score": score, "reconstruction": reconstruction, "features": features, "fake": fake}

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image anomaly score (higher = more anomalous)."""
        return self.score_parts(images)["score"]

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "adversary": self.adversary.state_dict(),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        """Restore networks (and, unless `weights_only`, optimisers and step)."""
        self.generator.load_state_dict(state["generator"])
        self.adversary.load_state_dict(state["adversary"])
        if not weights_only:
            self.optimizer_g.load_state_dict(state["optimizer_g"])
            self.optimizer_d.load_state_dict(state["optimizer_d"])
            self.step = state["step"]
