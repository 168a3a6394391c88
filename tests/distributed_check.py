"""Train a tiny model a few steps, in one process or as one of several under torchrun.

    python tests/distributed_check.py OUT.pt MODEL [option=value ...]
    torchrun --standalone --nproc-per-node 2 tests/distributed_check.py OUT.pt MODEL [option=value ...]

Every process sees the same global batches (8 images) and trains on its share of each; rank 0
saves the losses (each averaged over the processes: with equal shares, the global batch's) and
the networks' state to OUT.pt. tests/test_distributed.py compares one process against two.
"""
import sys

import torch
import torch.distributed as dist

from lib.models import build_model
from lib.parallel import distributed
from tests.helpers import make_opt

STEPS, BATCH = 4, 8


def main(out: str, model_name: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    context = distributed.Context.from_env()
    device = torch.device("cpu")
    distributed.start(context, device)
    options = dict(item.split("=", 1) for item in overrides)
    opt = make_opt(model=model_name, n_critic=2, **{k: (float(v) if "." in v else v) for k, v in options.items()})
    torch.manual_seed(0)
    model = build_model(opt, device, amp=False)  # fp32: the two ways differ only in summation order
    if context.active:
        for net in model.networks.values():
            distributed.synchronise_batchnorm(net)
        distributed.average_gradients_before_steps(model.optimizers.values())
    data = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        images = torch.rand(BATCH, 3, 16, 16, generator=data) * 2 - 1
        step = model.train_step(images[distributed.share(torch.arange(BATCH), context)])
        if context.active:
            values = torch.tensor([step[k] for k in sorted(step)], dtype=torch.float64)
            dist.all_reduce(values)
            step = dict(zip(sorted(step), (values / context.world).tolist()))
        losses.append(step)
    if context.writes:
        torch.save({"losses": losses, "state": model.state_dict(), "world": context.world}, out)
    if context.active:
        dist.destroy_process_group()
        distributed.leave(0)  # as train.py's processes end: the interpreter's teardown can abort (SIGABRT)


if __name__ == "__main__":
    main(*sys.argv[1:])
