"""Convolutions with few positions as matrix products: the CPU speed-up of the innermost layers.

oneDNN's fp32 CPU kernels are slow (its backward pass 3-6x slower than a matrix
product) on the innermost UNet and encoder layers, which have 2x2 or fewer
positions but the largest weights; a matrix product can also skip the kernel
taps that only meet padding. `use_matmul_convolutions` swaps the class of a
network's convolutions in place: same parameters, state dict and results (up
to float rounding); larger layers keep the usual kernels.
"""
import torch
import torch.nn.functional as F
from torch import nn

# Layers whose output (convolution) or input (transposed convolution) has at most
# this many positions run as one matrix product.
MATMUL_MAX_POSITIONS = 4


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


_TAPS: dict[tuple, torch.Tensor] = {}


def _tap_indices(kw: int, t0: int, t1: int, u0: int, u1: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the taps [t0:t1, u0:u1] of a kernel `kw` wide: built once, not every pass. (A plain
    dictionary: torch.compile traces through an lru_cache, and warns at length that it does.)"""
    key = (kw, t0, t1, u0, u1, device)
    if key not in _TAPS:
        _TAPS[key] = torch.tensor([t * kw + u for t in range(t0, t1) for u in range(u0, u1)], device=device)
    return _TAPS[key]


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

    Works with weights in either memory format.
    """
    swaps = {nn.Conv2d: MatmulConv2d, nn.ConvTranspose2d: MatmulConvTranspose2d}
    for m in module.modules():
        if type(m) in swaps:
            m.__class__ = swaps[type(m)]  # only forward differs: no new state to build
    return module
