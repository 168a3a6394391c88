"""Data-parallel training over several processes (torchrun): the pieces, kept out of the models.

Each process holds the same networks and trains on its share of every global batch. Two things
make N processes train as one process on the whole batch would:
- BatchNorm normalises with the statistics of the global batch (`SyncBatchNorm2d`), not of
  each process's share;
- before every optimiser step, each gradient is averaged over the processes
  (`average_gradients_before_steps`): with equal shares and losses that are means over the
  batch, the average is the gradient of the global batch's loss.

Gradients are averaged in an optimiser's step pre-hook instead of by DistributedDataParallel,
because these models pass a batch through the adversary several times before one backward and
the gradient penalty differentiates twice; DDP supports neither. The cost is that communication
does not overlap the backward pass, which matters little for networks this small.

Torch's own SyncBatchNorm runs on CUDA only; `SyncBatchNorm2d` sums on any device, so the same
code trains on gloo (CPU) and NCCL (GPU).
"""
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

JOB_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets for each process


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job: rank 0 of 1 when not launched by torchrun."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Only rank 0 writes the run folder, prints and talks to Visdom."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Context":
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK (none, or a job of one: one process). A set that is
        no process of a job (a variable left over from another one) is refused: it would train in
        silence as a rank that writes nothing, or fail inside torch.distributed."""
        from ..errors import UserError
        given = {name: os.environ[name] for name in JOB_VARIABLES if os.environ.get(name, "") != ""}
        try:
            rank, world, local = (int(given.get(name, default)) for name, default in zip(JOB_VARIABLES, (0, 1, 0)))
        except ValueError:
            rank = world = local = -1
        if world == 1 and rank == local == 0:
            return cls()
        if not ({"RANK", "WORLD_SIZE"} <= given.keys() and 0 <= rank < world and local >= 0
                and all(os.environ.get(name) for name in ("MASTER_ADDR", "MASTER_PORT"))):
            settings = " ".join(f"{name}={value}" for name, value in given.items())
            raise UserError(f"the environment sets {settings}, which is no process of a torchrun job (RANK, "
                            "WORLD_SIZE, MASTER_ADDR and MASTER_PORT together): unset them, or start several "
                            "processes with --ngpu N or torchrun")
        return cls(rank, world, local)


def start(context: Context, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPUs."""
    if context.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def check_batch_splits(batchsize, processes: int) -> None:
    """A UserError for a global batch that `processes` cannot share equally."""
    from ..errors import UserError
    if int(batchsize) % processes:
        raise UserError(f"--batchsize {batchsize} does not split into {processes} processes: give a multiple of "
                        f"{processes} (it is the global batch; each process takes its share)")


def share(indices: torch.Tensor, context: Context) -> torch.Tensor:
    """This process's part of a global batch: equal contiguous parts, in the global batch's order."""
    if not context.active:
        return indices
    if len(indices) % context.world:
        raise ValueError(f"a batch of {len(indices)} does not split into {context.world} equal parts")
    part = len(indices) // context.world
    return indices[context.rank * part:(context.rank + 1) * part]


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over the processes, differentiable: every process's result depends on
    every process's input, so the gradient of an input is the sum of the results' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch over all processes.

    The per-channel count, sum and sum of squares are summed over the processes with an all-reduce
    that gradients flow back through, so each process's backward is the global batch's. Running
    statistics are updated as BatchNorm2d does, with the unbiased variance of the global batch.
    Outside a process group, or in eval mode, it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.full((1,), x.numel() / x.size(1), device=x.device, dtype=torch.float32)
        local = torch.cat([count, x.float().sum(dims), x.float().pow(2).sum(dims)])
        total = _SumOverProcesses.apply(local)
        n, channels = total[0], x.size(1)
        mean = total[1:1 + channels] / n
        var = total[1 + channels:] / n - mean.pow(2)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * n / (n - 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = (1, channels, 1, 1)
        out = (x - mean.view(shape).to(x.dtype)) * torch.rsqrt(var.view(shape) + self.eps).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def synchronise_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm2d of `module` a SyncBatchNorm2d (in place: the same parameters and buffers)."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = SyncBatchNorm2d
    return module


def _average(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    world = dist.get_world_size()
    flat = torch.cat([g.reshape(-1) for g in grads])  # one message instead of one per tensor
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_gradients_before_steps(optimizers) -> list:
    """Average each optimiser's gradients over the processes right before it steps; the hooks' handles."""
    return [o.register_step_pre_hook(_average) for o in optimizers]


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers to every process (a safeguard: the same seed builds the same networks)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def prepare(model, context: Context) -> None:
    """Make `model` train data-parallel in `context` (nothing for one process): BatchNorm over the
    global batch, gradients averaged before every step, rank 0's weights everywhere."""
    if not context.active:
        return
    for net in model.networks.values():
        synchronise_batchnorm(net)
        broadcast_module(net)
    average_gradients_before_steps(model.optimizers.values())


def _device() -> torch.device:
    """Where a message tensor must be: NCCL sends GPU tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_over_processes(losses: dict, context: Context) -> dict:
    """Each loss averaged over the processes: with equal shares of a batch, the global batch's."""
    if not context.active:
        return losses
    names = list(losses)  # the model's order, the same in every process
    values = torch.tensor([losses[k] for k in names], dtype=torch.float64, device=_device())
    dist.all_reduce(values)
    return dict(zip(names, (values / context.world).tolist()))


def agree_to_stop(signal_number, context: Context):
    """The signal any process received (None: none did), the same in every process, so that all
    stop after the same step."""
    if not context.active:
        return signal_number
    flag = torch.tensor([signal_number or 0], device=_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) or None


def from_rank_zero(value, context: Context) -> float:
    """Rank 0's `value` (a float) in every process; the others wait for it (rank 0 evaluates alone)."""
    if not context.active:
        return value
    box = torch.tensor([float("nan") if value is None else float(value)], dtype=torch.float64, device=_device())
    dist.broadcast(box, src=0)
    return float(box)


def finish(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End this process of a job, now, its files written and its process group gone: the interpreter's
    teardown is skipped because C++ then destroys torch's background threads, some still joinable, which
    calls std::terminate ("terminate called without an active exception", SIGABRT): in about one stopped
    run in 20 (measured with `train.py --ngpu 2`), and at the normal end of a job on a busy machine too
    (tests/distributed_check.py, 3 of 14 runs beside a hostile probe)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def lost_peer(err: BaseException) -> bool:
    """Whether `err` is a collective failing because another process of the job has gone."""
    text = str(err)
    return (isinstance(err, dist.DistError) or "Connection closed by peer" in text or "Connection reset" in text
            or "gloo" in text.lower())

