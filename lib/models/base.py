"""What Skip-GANomaly and Skip-WGANomaly share: the UNet generator, input noise,
Adam optimisers, the anomaly score and the checkpointable state.

A model subclasses `AnomalyGAN`, builds its adversary (a module returning
`(value, features)`) in `build_adversary`, and writes `train_step`, which runs
`fast_train_step` or `plain_train_step`.

Two paths compute the same losses and scores. The plain path is the method
written out straightforwardly and is the reference the tests hold the fast
path to (docs/benchmarks.md). The fast path shares discriminator passes between
updates, keeps tensors channels-last and uses fused Adam (stepping channels-last
weights in place, `lib.optim`); on CPU it runs the few-position convolutions as
matrix products; on CUDA it uses bf16 autocast (`amp`) and cuDNN autotuning.
"""
import contextlib

import torch
from torch import nn

from lib.losses import anomaly_score, contextual_loss, latent_loss
from lib.metrics import DEFAULT_SCORE_WEIGHT
from lib.networks import UNet, init_weights, use_matmul_convolutions
from lib.optim import ChannelsLastAdam


def _option(opt, name: str, value):
    """`value` if given, else `opt.<name>` when the options define it, else None."""
    return value if value is not None else getattr(opt, name, None)


class AnomalyGAN:
    name = ""

    def __init__(self, opt, device: torch.device, fast: bool | None = None, amp: bool | None = None,
                 compile: bool | None = None):
        """`fast`, `amp` and `compile` default to the options' values, else fast on,
        amp (bf16, fast path only) on for CUDA only, compile off."""
        self.device = torch.device(device)
        fast = _option(opt, "fast", fast)
        self.fast = True if fast is None else bool(fast)
        amp = _option(opt, "amp", amp)
        self.amp = self.fast and (self.device.type == "cuda" if amp is None else bool(amp))
        self.compiled = bool(_option(opt, "compile", compile))
        self.noise_std = opt.noise_std
        # 'val': the trainer sets the weight from the validation split; checkpoints keep it.
        self.choose_score_weight = opt.score_weight == "val"
        self.score_weight = DEFAULT_SCORE_WEIGHT if self.choose_score_weight else float(opt.score_weight)
        self.w_adv, self.w_con, self.w_lat = opt.w_adv, opt.w_con, opt.w_lat
        self.generator = UNet(opt.nc, opt.ngf, opt.isize, skip=not opt.no_skip).to(self.device)
        self.adversary = self.build_adversary(opt).to(self.device)
        init_weights(self.generator)
        init_weights(self.adversary)
        # Channels-last suits oneDNN's CPU kernels and tensor cores alike.
        self.memory_format = torch.channels_last if self.fast else torch.contiguous_format
        if self.fast:
            self.generator.to(memory_format=self.memory_format)
            self.adversary.to(memory_format=self.memory_format)
        if self.fast and self.device.type == "cpu":
            use_matmul_convolutions(self.generator)
            use_matmul_convolutions(self.adversary)
        if self.fast and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # process-wide: autotune a kernel per shape
        if self.compiled:
            # nn.Module.compile keeps parameter names, so checkpoints stay interchangeable.
            self.generator.compile()
            if self.adversary_compiles:
                self.adversary.compile()
        betas = (opt.beta1, 0.999)
        adam = ChannelsLastAdam if self.fast else torch.optim.Adam  # the same updates, fewer copies
        self.optimizer_g = adam(self.generator.parameters(), lr=opt.lr, betas=betas, fused=self.fast)
        self.optimizer_d = adam(self.adversary.parameters(), lr=opt.lr, betas=betas, fused=self.fast)
        self.step = 0  # training steps taken; drives n_critic and survives resume

    @property
    def adversary_compiles(self) -> bool:
        """Whether torch.compile can take the adversary (not with a double backward)."""
        return True

    def build_adversary(self, opt) -> nn.Module:
        raise NotImplementedError

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        """One training step on a batch in [-1, 1]; returns the losses as floats."""
        if self.fast:
            return self.fast_train_step(images.to(memory_format=self.memory_format))
        return self.plain_train_step(images)

    def plain_train_step(self, images: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def fast_train_step(self, images: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def autocast(self):
        """bf16 autocast when `amp` is on; losses are computed outside it, in fp32."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @staticmethod
    def floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss tensors as floats with one device sync instead of one per loss."""
        values = torch.stack([v.detach().float() for v in losses.values()]).tolist()
        return dict(zip(losses, values))

    def generator_loss(self, g_adv, fake, images, features_real, features_fake):
        """(total, contextual, latent): w_adv·g_adv + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖², in fp32."""
        g_con = contextual_loss(fake.float(), images.float())
        g_lat = latent_loss(features_real.detach().float(), features_fake.float())
        return self.w_adv * g_adv + self.w_con * g_con + self.w_lat * g_lat, g_con, g_lat

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
        # Drawn in the standard layout so a channels-last batch gets the same noise.
        return images + self.noise_std * torch.randn(images.shape, dtype=images.dtype, device=images.device)

    @torch.no_grad()
    def score_parts(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image anomaly score and its reconstruction/feature parts, in eval mode.

        Eval mode makes BatchNorm use its running statistics, so an image's
        score does not depend on which other images share its batch.
        """
        self.generator.eval()
        self.adversary.eval()
        if self.fast:
            images = images.to(memory_format=self.memory_format)
            with self.autocast():
                fake = self.generator(images)
                # In eval mode every layer treats images independently: one pass for both.
                _, features = self.adversary(torch.cat([images, fake]))
            features_real, features_fake = features.float().chunk(2)
            fake = fake.float().contiguous()
        else:
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
            "score_weight": self.score_weight,
        }

    def load_state_dict(self, state: dict, weights_only: bool = False) -> None:
        """Restore networks (and, unless `weights_only`, optimisers and step)."""
        self.generator.load_state_dict(state["generator"])
        self.adversary.load_state_dict(state["adversary"])
        if self.choose_score_weight and "score_weight" in state:
            self.score_weight = state["score_weight"]
        if not weights_only:
            for optimizer, key in ((self.optimizer_g, "optimizer_g"), (self.optimizer_d, "optimizer_d")):
                optimizer.load_state_dict(state[key])
                for group in optimizer.param_groups:  # a checkpoint's path must not switch ours
                    group["fused"] = self.fast
                    group["foreach"] = None
            self.step = state["step"]
