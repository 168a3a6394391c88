"""The Visdom dashboard of a training run (--display): losses, metrics, images, scores, ROC.

The training loop calls the same five methods whether or not a display is on. make_visualizer
returns a NullVisualizer when --display is off and, with one warning, when no server answers (every
request times out) or its login (VISDOM_USERNAME, VISDOM_PASSWORD) is missing or refused; a
VisdomVisualizer switches itself off, with one warning, when its server goes away: a dashboard
never stops or slows down training. Each run draws into its own Visdom environment, named after the run.
"""
import re

import torch


def make_visualizer(opt, run_name: str, log=print):
    """A VisdomVisualizer when --display is on and the server answers (and takes the login), else a NullVisualizer."""
    if not opt.display:
        return NullVisualizer()
    # visdom and requests load only for a display
    from .visdom_visualizer import ServerUnavailable, VisdomVisualizer

    try:
        return VisdomVisualizer(opt.display_server, opt.display_port, env_name(run_name),
                                first_id=opt.display_id, log=log)
    except ServerUnavailable as err:
        log(f"warning: {err}; training goes on without the dashboard ({err.fix})")
        return NullVisualizer()


def env_name(run_name: str) -> str:
    """A Visdom environment name for a run: "w_skipganomaly/cifar10/airplane" -> "w_skipganomaly_cifar10_airplane"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name).strip("_") or "main"


class NullVisualizer:
    """The dashboard when there is none: every call does nothing."""

    def losses(self, epoch: float, losses: dict) -> None:
        pass

    def metrics(self, epoch: int, metrics: dict) -> None:
        pass

    def images(self, title: str, real: torch.Tensor, fake: torch.Tensor) -> None:
        pass

    def evaluation(self, epoch: int, scores, labels) -> None:
        pass

    def close(self) -> None:
        pass
