"""Networks of Skip-GANomaly (Akçay et al., 2019), Skip-WGANomaly and GANomaly (Akçay et al., 2018).

Pure `nn.Module`s with explicit arguments: they know nothing about options,
devices or losses.

- `UNet`: the pix2pix-style encoder-decoder generator with skip connections.
- `Encoder`: the DCGAN encoder shared by the discriminator and the critic.
- `Discriminator`: Skip-GANomaly's real/fake probability plus its features.
- `Critic`: Skip-WGANomaly's Wasserstein critic (no sigmoid, no BatchNorm).
- `Decoder`, `EncoderDecoderEncoder`, `FeatureDiscriminator`: GANomaly's generator and discriminator.

How they run fast (memory layout, CPU kernels, compiling) is lib/fast's business.
"""
import math

import torch
from torch import nn


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
        return self.encode_and_decode(x)[0]

    def encode_and_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, code): the code is the innermost level's 1×1 features, per image."""
        features = []
        for down in self.down:
            x = down(x)
            features.append(x)
        for i in reversed(range(len(self.up))):
            if self.skip and i < len(self.up) - 1:
                x = torch.cat([features[i], x], dim=1)
            x = self.up[i](x)
        return x, features[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`encode_and_decode`'s code alone: the down path, without the decoder's cost."""
        for down in self.down:
            x = down(x)
        return x

    def code_by_location(self, x: torch.Tensor) -> torch.Tensor:
        """(N, code channels, 2, 2): the code split over the innermost level's 2×2 input; the parts sum to
        `encode_and_decode`'s code, since its last convolution has no bias and nothing after it."""
        for down in self.down[:-1]:
            x = down(x)
        *before, last = self.down[-1]
        for layer in before:
            x = layer(x)
        # Stride 2 and padding 1 from 2×2 to 1×1: input position (i, j) meets the kernel's tap (1 + i, 1 + j).
        taps = last.weight[:, :, 1:1 + x.shape[2], 1:1 + x.shape[3]]
        return torch.einsum("nchw,zchw->nzhw", x.float(), taps.float())


class Encoder(nn.Module):
    """DCGAN encoder: isize → 4×4 by stride-2 convolutions, then a 4×4 convolution to `nz` × 1 × 1.

    `norm` is BatchNorm2d for the discriminator and InstanceNorm2d for the
    critic (a gradient penalty is per sample, so the critic must not mix
    samples through batch statistics). `extra_layers` adds 3×3 convolutions
    at the first resolution (the original's `--extralayers`). `affine`: the norm
    layers learn a scale and shift (the original's critic has none).
    """

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, norm: type[nn.Module], extra_layers: int = 0,
                 affine: bool = True):
        super().__init__()

        def norm_layer(ch):
            return norm(ch, affine=affine)

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

    def by_location(self, x: torch.Tensor) -> torch.Tensor:
        """(N, nz, s, s): the output split over the last convolution's s×s input, whose kernel is as large;
        the parts sum to `forward`'s output, since that convolution has no bias."""
        *body, last = self.main
        for layer in body:
            x = layer(x)
        return torch.einsum("nchw,zchw->nzhw", x.float(), last.weight.float())


class Discriminator(nn.Module):
    """Skip-GANomaly's discriminator: returns (probability real per image, nz features).

    `bias`: the classifier's bias (the original's has none)."""

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, extra_layers: int = 0, bias: bool = True):
        super().__init__()
        self.features = Encoder(isize, nc, ndf, nz, nn.BatchNorm2d, extra_layers)
        self.classifier = nn.Sequential(nn.Conv2d(nz, 1, 3, 1, 1, bias=bias), nn.Sigmoid())

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

    def __init__(self, isize: int, nc: int, ndf: int, nz: int, extra_layers: int = 0, affine: bool = True):
        super().__init__()
        self.features = Encoder(isize, nc, ndf, nz, nn.InstanceNorm2d, extra_layers, affine)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x).flatten(1)
        return features.mean(dim=1), features


class Decoder(nn.Module):
    """DCGAN decoder: an `nz` × 1 × 1 code → 4×4 → ... → isize × isize image in [-1, 1] (tanh).

    Widths halve at every stride-2 step and end at `ngf` before the image, mirroring `Encoder`.
    """

    def __init__(self, isize: int, nc: int, ngf: int, nz: int, extra_layers: int = 0):
        super().__init__()
        width, size = ngf, isize // 2
        while size > 4:
            width, size = width * 2, size // 2
        layers = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        size = 4
        while size < isize // 2:
            width, size = width // 2, size * 2
            layers += [nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(extra_layers):
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.main(code)


class EncoderDecoderEncoder(nn.Module):
    """GANomaly's generator (Akçay et al., 2018): x → code z → reconstruction G(x) → code ẑ of G(x).

    Returns (G(x), z, ẑ); the anomaly score is the distance between the two codes.
    """

    def __init__(self, isize: int, nc: int, ngf: int, nz: int, extra_layers: int = 0):
        super().__init__()
        self.encoder = Encoder(isize, nc, ngf, nz, nn.BatchNorm2d, extra_layers)
        self.decoder = Decoder(isize, nc, ngf, nz, extra_layers)
        self.encoder_of_reconstruction = Encoder(isize, nc, ngf, nz, nn.BatchNorm2d, extra_layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        code = self.encoder(x)
        fake = self.decoder(code)
        return fake, code, self.encoder_of_reconstruction(fake)


class FeatureDiscriminator(nn.Module):
    """GANomaly's discriminator: a DCGAN encoder to one logit; its features are the 4×4 maps before
    the last convolution (what the generator's adversarial loss matches)."""

    def __init__(self, isize: int, nc: int, ndf: int, extra_layers: int = 0):
        super().__init__()
        layers = list(Encoder(isize, nc, ndf, 1, nn.BatchNorm2d, extra_layers).main)
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = layers[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability real per image, feature maps)."""
        logit, features = self.logits(x)
        return torch.sigmoid(logit), features

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.classifier(features).flatten(), features
