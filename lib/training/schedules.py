"""Learning-rate schedules: the original's --lr_policy, stepped once per epoch.

Owns building one scheduler per optimiser (a model's named optimisers, in their order),
re-applying the rule after a resume, and stepping them when an epoch ends.
"""
import warnings

import torch


def current_lr(optimizers: dict) -> float:
    """The learning rate metrics.csv reports: the first optimiser's (every one follows the same rule)."""
    return next(iter(optimizers.values())).param_groups[0]["lr"]


def make_schedulers(opt, optimizers: dict) -> list:
    """One scheduler per named optimiser, in their order, for --lr_policy lambda, step or plateau."""
    optimizers = list(optimizers.values())
    if opt.lr_policy == "lambda":
        # pix2pix: constant for --niter epochs, then linear decay over --niter_decay.
        rule = lambda e: 1.0 - max(0, e + 1 + opt.iter - opt.niter) / float(opt.niter_decay + 1)  # noqa: E731
        return [torch.optim.lr_scheduler.LambdaLR(o, rule) for o in optimizers]
    if opt.lr_policy == "step":
        return [torch.optim.lr_scheduler.StepLR(o, opt.lr_decay_iters, gamma=0.1) for o in optimizers]
    return [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=0.2, threshold=0.01, patience=5)
            for o in optimizers]


def load_schedulers(schedulers: list, states: list) -> None:
    """Restore the schedulers' states (a checkpoint's), with the lambda rule of this run."""
    for scheduler, state in zip(schedulers, states):
        scheduler.load_state_dict(state)
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            # The lambda rule depends on --niter, which a resumed run may extend.
            for group, base, rule in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                         scheduler.lr_lambdas):
                group["lr"] = base * rule(scheduler.last_epoch)


def step_schedulers(schedulers: list, selection_value: float) -> None:
    """End of an epoch: plateau schedulers watch the value that selects the best epoch."""
    for scheduler in schedulers:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(selection_value)
        else:
            with warnings.catch_warnings():  # a WGAN epoch shorter than n_critic never steps G's optimiser
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
