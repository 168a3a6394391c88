"""Per-image measurements of how far a reconstruction or an embedding is from normal.

Pure torch functions of batches: (N, C, H, W) images or (N, D) vectors in, an (N,) tensor out.
A score function (lib/scoring/functions.py) combines these; a model computes only those its
chosen score needs.
"""
import torch
import torch.nn.functional as F

from .functions import (  # noqa: F401  (the names models use, with the functions)
    ADVERSARY,
    ADVERSARY_EMBEDDING,
    ENCODER_EMBEDDING,
    FEATURE_MSE,
    IMAGE_L1,
    IMAGE_MSE,
    LATENT_MSE,
    LOCAL_ERROR,
    SSIM_ERROR,
)

# Those that need the adversary's features of the image (and, for FEATURE_MSE, of its reconstruction).
FROM_ADVERSARY = frozenset({FEATURE_MSE, ADVERSARY, ADVERSARY_EMBEDDING})
# Those made of the image alone: measuring only these, a model in eval mode need not reconstruct it.
OF_IMAGE_ALONE = frozenset({ENCODER_EMBEDDING, ADVERSARY, ADVERSARY_EMBEDDING})
# Asked of `score_parts` with the measurements: the reconstruction G(x) itself (to draw or save it).
FAKE = "fake"


def reconstructs(model_in_training: bool, needs) -> bool:
    """Whether a model must reconstruct the images to give `needs` (FAKE among them, or a measurement of
    G(x)). In training mode it always does: the original's scoring lets every BatchNorm layer see the batch."""
    return model_in_training or FAKE in needs or not set(needs) <= OF_IMAGE_ALONE

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # Wang et al. (2004)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def image_mse(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error per image (the original's reconstruction part)."""
    return (real - fake).pow(2).flatten(1).mean(dim=1)


def image_l1(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error per image: the generator's own training objective (L_con)."""
    return (real - fake).abs().flatten(1).mean(dim=1)


def feature_mse(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """Mean squared error between an image's and its reconstruction's adversary features."""
    return (features_real - features_fake).pow(2).flatten(1).mean(dim=1)


def local_error_max(real: torch.Tensor, fake: torch.Tensor, window: int = 5) -> torch.Tensor:
    """The largest squared error averaged over a `window`×`window` patch (channels averaged).

    A small defect changes few pixels, so a mean over the whole image dilutes it; the
    maximum of a locally smoothed error map does not (the usual image score of
    reconstruction-based detectors on industrial data, e.g. MVTec AD).
    """
    error = (real - fake).pow(2).mean(dim=1, keepdim=True)
    window = min(window, error.shape[-2], error.shape[-1])
    return F.avg_pool2d(error, window, stride=1).flatten(1).amax(dim=1)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(like).expand(channels, 1, size, size)


def ssim(real: torch.Tensor, fake: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al., 2004): Gaussian window 11, σ 1.5,
    over the positions where the window fits (as pytorch-msssim; smaller images use a window
    as large as they are), averaged over channels. `data_range`: 2 for images in [−1, 1]."""
    return ssim_map(real, fake, data_range).flatten(1).mean(dim=1)


def ssim_map(real: torch.Tensor, fake: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """(N, C, H', W'): the structural similarity at each position where the window fits (`ssim` is its mean)."""
    channels, size = real.shape[1], min(SSIM_WINDOW, real.shape[-2], real.shape[-1])
    window = _gaussian_window(size, SSIM_SIGMA, channels, real)

    def blur(x):
        return F.conv2d(x, window, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(real), blur(fake)
    var_x = blur(real * real) - mu_x.pow(2)
    var_y = blur(fake * fake) - mu_y.pow(2)
    cov = blur(real * fake) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x.pow(2) + mu_y.pow(2) + c1)
    structure = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance * structure


def ssim_error(real: torch.Tensor, fake: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """1 − SSIM: 0 for a perfect reconstruction, higher = more anomalous."""
    return 1 - ssim(real, fake, data_range)


# Measurements of a reconstruction against its image: name -> function of (real, fake).
OF_RECONSTRUCTION = {IMAGE_MSE: image_mse, IMAGE_L1: image_l1, LOCAL_ERROR: local_error_max, SSIM_ERROR: ssim_error}


def of_reconstruction(real: torch.Tensor, fake: torch.Tensor, needs) -> dict[str, torch.Tensor]:
    """The measurements among `needs` that compare `fake` with `real`."""
    return {name: measure(real, fake) for name, measure in OF_RECONSTRUCTION.items() if name in needs}


def of_adversary(view, images: torch.Tensor, fake: torch.Tensor, needs, one_pass: bool) -> dict[str, torch.Tensor]:
    """The measurements among `needs` that the adversary makes of x (and, for FEATURE_MSE, of G(x)).

    `view(batch)` gives (verdict per image, higher = less real; features). The embedding is the
    features averaged over positions (feature maps would make a distance's statistics huge).
    `one_pass`: x and G(x) go through together (eval mode, where no layer mixes images); in
    training mode each set has its own pass, and so its own batch statistics, as the original's.
    """
    both = FEATURE_MSE in needs
    if one_pass:
        verdict, features = view(torch.cat([images, fake]) if both else images)
        verdict = verdict[:len(images)]
        features_real, features_fake = features.chunk(2) if both else (features, None)
    else:
        verdict, features_real = view(images)
        features_fake = view(fake)[1] if both else None
    parts = {}
    if ADVERSARY in needs:
        parts[ADVERSARY] = verdict.float()
    if ADVERSARY_EMBEDDING in needs:
        embedding = features_real.float()
        parts[ADVERSARY_EMBEDDING] = embedding.flatten(2).mean(2) if embedding.dim() > 2 else embedding
    if both:
        parts[FEATURE_MSE] = feature_mse(features_real.float(), features_fake.float())
    return parts


def of_image_alone(encode, view, images: torch.Tensor, needs) -> dict[str, torch.Tensor]:
    """The measurements among `needs` (all in OF_IMAGE_ALONE) of a model in eval mode: `encode(images)`
    the generator's code, `view` the adversary's as in `of_adversary`; no reconstruction is made."""
    parts = {ENCODER_EMBEDDING: encode(images).flatten(1)} if ENCODER_EMBEDDING in needs else {}
    if needs & FROM_ADVERSARY:
        parts.update(of_adversary(view, images, None, needs, one_pass=True))
    return parts
