"""What tools/benchmark.py counts besides time: FLOPs per image and peak memory, and the timer."""
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks break
    torch.autograd.grad on leaf inputs (the gradient penalty); totals need no modules."""
    parents = {"Global"}
    is_bw = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_gflop(fn) -> float:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def steps_per_cycle(args) -> int:
    return args.n_critic if args.model == "w_skipganomaly" else 1


def flops(runner, data, args) -> dict:
    """GFLOP per image, counted: a training step (averaged over a generator-update cycle) and an eval."""
    cycle = steps_per_cycle(args)
    per_step = [count_gflop(lambda i=i: runner.train_step(data[i % len(data)])) / args.batchsize
                for i in range(cycle)]
    out = {"train_step": sum(per_step) / cycle,
           "eval": count_gflop(lambda: runner.score(data[0])) / args.batchsize}
    if cycle > 1:
        out["critic_only_step"], out["generator_step"] = min(per_step), max(per_step)
    return {k: float(f"{v:.4g}") for k, v in out.items()}


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory(runner, data, args, device) -> dict:
    """Peak memory of training steps and an eval, beyond what the process held before them."""
    steps = max(steps_per_cycle(args), 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for i in range(steps):
            runner.train_step(data[i % len(data)])
        runner.score(data[0])
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mem_mb": round(peak / 2**20, 1), "peak_mem_delta_mb": round((peak - base) / 2**20, 1),
                "peak_mem_method": "torch.cuda.max_memory_allocated"}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    base = _status_mb("VmHWM")  # read after the reset, so the peak can never be below it
    for i in range(steps):
        runner.train_step(data[i % len(data)])
    runner.score(data[0])
    # The kernel's RSS counters are approximate (per-thread caches), so a flat peak can read a
    # fraction of a MB below its base: floor it at zero.
    return {"peak_mem_mb": round(max(_status_mb("VmHWM") - base, 0.0), 1),
            "peak_mem_method": "peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS before the "
                               "first training step, in a fresh process"}
