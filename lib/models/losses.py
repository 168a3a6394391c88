"""Loss terms of Skip-GANomaly, Skip-WGANomaly and GANomaly."""
import torch
import torch.nn.functional as F


def latent_loss(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """L2 between discriminator features of x and G(x) (the paper's L_lat)."""
    return F.mse_loss(features_fake, features_real)


def contextual_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between G(x) and x (the paper's L_con)."""
    return F.l1_loss(fake, real)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, of_sum: bool = False) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al., 2017): E[(‖∇C(x̂)‖₂ − 1)²] on random interpolates x̂.

    C is the critic's value; `of_sum`: the sum of its features instead, as the original code
    penalises (nz times the value's gradient). Always in fp32, under bf16 autocast too: a
    gradient norm through a double backward is too coarse in bf16.
    """
    with torch.autocast(real.device.type, enabled=False):
        return _gradient_penalty(critic, real.float(), fake.float(), of_sum)


def _gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, of_sum: bool) -> torch.Tensor:
    eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    value, features = critic(mixed)
    (grad,) = torch.autograd.grad((features if of_sum else value).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def bce_logits(logit: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of logits against a constant label, in fp32 (exact in bf16, no log clamp)."""
    return F.binary_cross_entropy_with_logits(logit.float(), torch.full_like(logit, target, dtype=torch.float))
