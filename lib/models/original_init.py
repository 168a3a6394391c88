"""Initial weights drawn in the original code's order, so a seed gives the original's networks.

The original builds its UNet from the innermost level outwards and then re-draws every weight
(N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scales) in the order `nn.Module.apply`
visits them; the default initialisation of each layer, drawn while it is built, is overwritten
but still consumes random numbers. Our modules are built in another order, so after building
them we rewind torch's generator and replay the original's draws on our layers: with the same
seed, the generator and the discriminator start from the original's very weights.
"""
import torch
from torch import nn

from .networks import UNet, init_weights

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)


def replay(rng_state: torch.Tensor, generator: UNet, adversary: nn.Module) -> None:
    """Re-initialise both networks as the original's define_G then define_D would, from `rng_state`."""
    torch.set_rng_state(rng_state)
    levels = range(len(generator.down))
    # define_G: each level's down and up convolutions are built innermost level first...
    for i in reversed(levels):
        for block in (generator.down[i], generator.up[i]):
            _reset_convolutions(block)
    # ...then apply() re-draws them: every down level outermost first, then every up level back out.
    for block in [generator.down[i] for i in levels] + [generator.up[i] for i in reversed(levels)]:
        init_weights(block)
    # define_D / define_C: built and re-drawn in the order of their layers.
    _reset_convolutions(adversary)
    init_weights(adversary)


def _reset_convolutions(module: nn.Module) -> None:
    """Draw the default initialisation of each convolution, as building it does (norms draw nothing)."""
    for m in module.modules():
        if isinstance(m, CONVOLUTIONS):
            m.reset_parameters()
