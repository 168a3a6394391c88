"""Networks of Skip-GANomaly (Akçay et al., 2019) and Skip-WGANomaly.

Pure `nn.Module`s with explicit arguments: they know nothing about options,
devices or losses.

- `UNet`: the pix2pix-style encoder-decoder generator with skip connections.
- `Encoder`: the DCGAN encoder shared by the discriminator and the critic.
- `Discriminator`: Skip-GANomaly's real/fake probability plus its features.
- `Critic`: Skip-WGANomaly's Wasserstein critic (no sigmoid, no BatchNorm).
- `use_matmul_convolutions`: the CPU speed-up for layers with few positions.
"""
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# Layers whose output (convolution) or input (transposed convolution) has at most
# this many positions run as one matrix product on CPU (see use_matmul_convolutions).
MATMUL_MAX_POSITIONS = 4


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def unet_depth(isize: int) -> int:
    """Number of stride-2 levels of the UNet: log2(isize), as in the original."""
    return int(math.log2(isize))


class UNet(nn.Module):
    """Encoder-decoder with log2(isize) stride-2 levels; widths ngf, 2ngf, 4ngf, 8ngf, 8ngf...

    Level 0 maps the image to ngf channels; the innermost level reaches 1×1.
    With `skip=True`, each decoder level concatenates the matching encoder
    features (pix2pix's UNet); `skip=False` is the original README's ablation.
    """

    def __init__(self, nc: int, ngf: int, isize: int, skip: bool = True):
        super().__init__()
        depth = unet_depth(isize)
        widths = [ngf * min(2**i, 8) for i in range(depth)]
        self.skip = skip
        self.down = nn.ModuleList()
        for i in range(depth):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(nc if i == 0 else widths[i - 1], widths[i], 4, 2, 1, bias=False))
            if 0 < i < depth - 1:  # pix2pix: no norm on the outermost and innermost downs
                layers.append(nn.BatchNorm2d(widths[i]))
            self.down.append(nn.Sequential(*layers))
        # up[i] undoes down[i]; its input is concatenated with encoder features except innermost.
        self.up = nn.ModuleList()
        for i in range(depth):
            in_ch = widths[i] * (2 if skip and i < depth - 1 else 1)
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(in_ch, nc, 4, 2, 1), nn.Tanh()))
            else:
                self.up.append(nn.Sequential(
                    nn.ReLU(), nn.ConvTranspose2d(in_ch, widths[i - 1], 4, 2, 1, bias=False),
                    nn.BatchNorm2d(widths[i - 1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for down in self.down:
            x = down(x)
            features.append(x)
        for i in reversed(range(len(self.up))):
            if self.skip and i < len(self.up) - 1:
                x = torch.cat([features[i], x], dim=1)
            x = self.up[i](x)
        return x


class Encoder(nn.Module):
    """DCGAN encoder: isize → 4×4 by stride-2 convolutions, then a 4×4 convolution to `nz` × 1 × 1.

    `norm` is BatchNorm2d for the discriminator and InstanceNorm2d for the
    critic (a gradient penalty is per sample, so the critic must not mix
    samples through batch statistics). `extra_layers` adds 3×3 convolutions
    at the first resolution (the original's `--extralayers`).
    """

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, norm: type[nn.Module], extra_layers: int = 0):
        super().__init__()

        def norm_layer(ch):
            return norm(ch, affine=True) if norm is nn.InstanceNorm2d else norm(ch)

        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        size, ch = isize // 2, ndf
        for _ in range(extra_layers):
            layers += [nn.Conv2d(ch, ch, 3, 1, 1, bias=False), norm_layer(ch), nn.LeakyReLU(0.2)]
        while size > 4:
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), norm_layer(ch * 2), nn.LeakyReLU(0.2)]
            size, ch = size // 2, ch * 2
        layers.append(nn.Conv2d(ch, nz, size, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Discriminator(nn.Module):
    """Skip-GANomaly's discriminator: returns (probability real per image, nz features)."""

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, extra_layers: int = 0):
        super().__init__()
        self.features = Encoder(isize, nc, ndf, nz, nn.BatchNorm2d, extra_layers)
        self.classifier = nn.Sequential(nn.Conv2d(nz, 1, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, features = self.logits(x)
        return torch.sigmoid(logit), features

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit of real per image, nz features): for a cross-entropy that is safe in bf16."""
        features = self.features(x)
        return self.classifier[0](features).flatten(), features.flatten(1)


class Critic(nn.Module):
    """Skip-WGANomaly's critic: returns (critic value per image, nz features).

    The value is the mean of the features, as in the original: one output
    serves both the Wasserstein loss and the latent loss.
    """

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, extra_layers: int = 0):
        super().__init__()
        self.features = Encoder(isize, nc, ndf, nz, nn.InstanceNorm2d, extra_layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x).flatten(1)
        return features.mean(dim=1), features


def _used_taps(positions: int, extent: int, k: int, s: int, p: int, d: int) -> tuple[int, int, int]:
    """The taps of one kernel dimension that meet the image: (first, last + 1, padding left).

    Position i with tap t reads (transposed: writes) index i·s − p + t·d of a
    dimension of `extent`; taps that only ever meet padding (the innermost layers'
    4x4 kernels on 2x2 and 1x1 images) are dropped, unless that would move the positions.
    """
    used = [t for t in range(k) if any(0 <= i * s - p + t * d < extent for i in range(positions))]
    if not used:
        return 0, k, p
    lo, hi = used[0], used[-1] + 1
    pad = p - lo * d
    if pad >= 0 and (extent + 2 * pad - d * (hi - lo - 1) - 1) // s + 1 == positions:
        return lo, hi, pad
    return 0, k, p


def _kernel_taps(weight: torch.Tensor, t0: int, t1: int, u0: int, u1: int) -> torch.Tensor:
    """The taps [t0:t1, u0:u1] of a weight seen as (A, kh, kw, B), as one gather.

    Slicing both kernel dimensions would cost the backward pass two zero-filled
    gradients of the whole weight (one per slice); a gather costs one.
    """
    a, kh, kw, b = weight.shape
    if (t0, t1, u0, u1) == (0, kh, 0, kw):
        return weight
    taps = _tap_indices(kw, t0, t1, u0, u1, weight.device)
    return weight.reshape(a, kh * kw, b).index_select(1, taps).view(a, t1 - t0, u1 - u0, b)


@functools.lru_cache(maxsize=None)
def _tap_indices(kw: int, t0: int, t1: int, u0: int, u1: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the taps [t0:t1, u0:u1] of a kernel `kw` wide: built once, not every pass."""
    return torch.tensor([t * kw + u for t in range(t0, t1) for u in range(u0, u1)], device=device)


def _channels_last(weight: torch.Tensor) -> bool:
    return not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


class MatmulConv2d(nn.Conv2d):
    """`nn.Conv2d` that runs as one matrix product when it has few output positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel_size, self.stride, self.dilation, self.padding
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if ho * wo > MATMUL_MAX_POSITIONS:
            return super().forward(x)
        t0, t1, ph = _used_taps(ho, h, kh, sh, ph, dh)
        u0, u1, pw = _used_taps(wo, w, kw, sw, pw, dw)
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        # Each output position's receptive field, as a view: N, C, ho, wo, kh, kw.
        if (t1 - t0, u1 - u0) == (h + 2 * ph, w + 2 * pw) and dh == dw == 1:
            fields = x[:, :, None, None]  # one field, the whole image: no unfold to undo
        else:
            fields = x.unfold(2, dh * (t1 - t0 - 1) + 1, sh).unfold(3, dw * (u1 - u0 - 1) + 1, sw)[..., ::dh, ::dw]
        # Both in (kh, kw, C) order: a view of channels-last weights, whose gradient keeps their layout.
        cols = fields.permute(0, 2, 3, 4, 5, 1).reshape(n * ho * wo, -1)
        weight = _kernel_taps(self.weight.permute(0, 2, 3, 1), t0, t1, u0, u1).reshape(self.out_channels, -1)
        out = cols @ weight.t() if self.bias is None else torch.addmm(self.bias, cols, weight.t())
        return out.view(n, ho, wo, self.out_channels).permute(0, 3, 1, 2)


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` that runs as one matrix product when it has few input positions."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        if (h * w > MATMUL_MAX_POSITIONS or output_size is not None or self.groups != 1
                or any(self.output_padding) or self.dilation != (1, 1)):
            return super().forward(x, output_size)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
        t0, t1, ph = _used_taps(h, ho, kh, sh, ph, 1)
        u0, u1, pw = _used_taps(w, wo, kw, sw, pw, 1)
        kh, kw, o = t1 - t0, u1 - u0, self.out_channels
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        weight = _kernel_taps(self.weight.permute(0, 2, 3, 1), t0, t1, u0, u1).reshape(c, -1)  # C, (kh, kw, O)
        blocks = (rows @ weight).view(n, h * w, kh, kw, o)
        # Each input position paints a kh x kw block of the (N, H, W, O) output; overlaps add
        # up. Summing padded blocks, not adding them into one buffer in place, keeps the
        # backward pass to views: in-place adds would copy the whole gradient once per block.
        height, width = (h - 1) * sh + kh, (w - 1) * sw + kw
        full = None
        for k, block in enumerate(blocks.unbind(1)):
            i, j = divmod(k, w)
            if (height, width) != (kh, kw):
                block = F.pad(block, (0, 0, j * sw, width - j * sw - kw, i * sh, height - i * sh - kh))
            full = block if full is None else full + block
        out = full[:, ph:ph + ho, pw:pw + wo].permute(0, 3, 1, 2)
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out.contiguous(memory_format=torch.channels_last if _channels_last(self.weight)
                              else torch.contiguous_format)


def use_matmul_convolutions(module: nn.Module) -> nn.Module:
    """Make the convolutions of `module` run as matrix products where they have few positions.

    oneDNN's fp32 CPU kernels are slow (its backward pass 3-6x slower than a
    matrix product) on the innermost UNet and encoder layers, which have 2x2 or
    fewer positions but the largest weights; a matrix product can also skip the
    kernel taps that only meet padding. Same parameters, state dict and results
    (up to float rounding); larger layers keep the usual kernels. Works with
    weights in either memory format.
    """
    swaps = {nn.Conv2d: MatmulConv2d, nn.ConvTranspose2d: MatmulConvTranspose2d}
    for m in module.modules():
        if type(m) in swaps:
            m.__class__ = swaps[type(m)]  # only forward differs: no new state to build
    return module
