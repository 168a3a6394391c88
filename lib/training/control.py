"""The untrained control (`--niter 0`): the run's networks as initialised, BatchNorm fitted to the data.

What a trained run's detection owes to training is its AUROC minus its control's: the same networks
(built from the same --manualseed), the same data and split, the same scoring (statistics fitted on
normal images, the score chosen on validation), and no step of training. Only BatchNorm's running
statistics follow the training images, estimated in one pass (a cumulative mean of every batch's
statistics, where training keeps a momentum average), so that eval-mode scoring normalises the
images as a trained run's would. The loop then evaluates and writes the run like any other
(lib/training/trainer.py): epoch 0, results.json marked "untrained_control".
"""
import time

import torch
from torch import nn

from ..images import to_float


def calibrate(model, images: torch.Tensor, batchsize: int, device) -> tuple[int, float]:
    """One pass of the uint8 training `images` through every network in training mode, no gradient:
    BatchNorm's running statistics become the mean of the batches' statistics. (images, seconds)."""
    start = time.perf_counter()
    norms = [m for net in model.networks.values() for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative mean
    # Batches of `batchsize`, a last one of a single image joined to the one before (BatchNorm
    # cannot take the statistics of one value per channel).
    bounds = list(range(0, len(images), batchsize)) + [len(images)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    try:
        with torch.no_grad():
            for start_at, end in zip(bounds, bounds[1:]):
                batch = to_float(images[start_at:end], device, model.pixel_mean_std)
                model.score_parts(batch, train_mode=True, needs=model.measurements)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return len(images), time.perf_counter() - start
