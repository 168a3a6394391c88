"""Memory a run would need, told before it is allocated.

Linux hands out memory lazily, so an impossible size is not refused when asked for:
the process is killed later, mid-run. These checks refuse it up front, with one line.
"""
from pathlib import Path

import torch

from .errors import UserError


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes(device=None) -> int | None:
    """Memory a new allocation can still get on `device` (None: unknown)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    # A container's own limit (cgroup v2, then v1), less what the process tree already uses.
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        total, used = _read_int(limit), _read_int(usage)
        if total is not None and used is not None and total < 1 << 60:
            limits.append(max(0, total - used))
            break
    return min(limits) if limits else None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(needed: int, what: str, fix: str, device=None) -> None:
    """UserError if `needed` bytes (a lower bound) exceed what `device` has free."""
    free = available_bytes(device)
    if free is not None and needed > free:
        where = "GPU" if torch.device(device or "cpu").type == "cuda" else "memory"
        raise UserError(f"{what} needs at least {gib(needed)} but only {gib(free)} of {where} is free: {fix}")


def network_bytes(networks, input_shape, training: bool) -> int:
    """A lower bound of the bytes a forward (and backward) pass of meta-device `networks` takes.

    Parameters count once for inference; with their gradient and Adam's two moments when
    training. Activations are every leaf module's output over the batch, kept for backward
    and matched by a gradient when training. `networks` chain: each takes the previous one's
    output (the generator's reconstruction feeds the adversary).
    """
    params = sum(p.numel() for net in networks for p in net.parameters())
    outputs = [0]

    def count(module, inputs, out):
        for tensor in (out if isinstance(out, tuple) else (out,)):
            if isinstance(tensor, torch.Tensor):
                outputs[0] += tensor.numel()

    hooks = [m.register_forward_hook(count) for net in networks for m in net.modules()
             if not list(m.children())]
    try:
        x = torch.empty(input_shape, device="meta")
        with torch.no_grad():
            for net in networks:
                x = net(x)
                x = x[0] if isinstance(x, tuple) else x
    finally:
        for hook in hooks:
            hook.remove()
    return 4 * (params * (4 if training else 1) + outputs[0] * (2 if training else 1))
