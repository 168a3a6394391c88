"""Training and evaluation throughput, peak memory and counted FLOPs of a model.

    python -m tools.benchmark --model skipganomaly --device cpu            # the fast path alone
    python -m tools.benchmark --model skipganomaly --device cpu --compare  # original vs plain vs fast
    python -m tools.benchmark --loader                                     # the data loader alone
    python -m tools.benchmark --profile --path original                    # where its time goes

Prints one JSON object. Three paths can be measured:
- `fast`: the models' default path (lib/models/base.py);
- `plain`: the same models with `fast=False`, the straightforward reference;
- `original`: the original implementation's work per step, re-created (tools/recreation.py) from
  its description: a generator pass; discriminator passes over x and G(x) for
  the discriminator update; fresh passes over G(x) and x (both recorded for
  autograd) for the generator update; for-loop Adam; evaluation in train mode.
  Its Skip-WGANomaly generator update scores the critic on a detached G(x), as
  the original did (its defect 1), which makes it cheaper, not dearer.
With `--original-code PATH` (the original Skip-WGANomaly code's folder), `original` is
the original's own code instead: its optimize_params() and test(), run by
tools/original/timing.py in a process of its own, taking turns with ours. The
re-creation stays for what the real code cannot give: counted FLOPs, profiles, and
a machine without the original's code. The output says which one `original` was.
`--compare` times the three interleaved (A, B, C, B, C, A, ...) in one process
and reports medians and the medians of the per-repetition ratios: this machine
is shared, so only ratios measured side by side mean much.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from lib import fast as speed_layer, options
from lib.data.datasets import batches
from lib.errors import OneLineParser, UserError, run_cli
from lib.fast import hardware
from lib.images import to_float
from lib.models import MODELS
from lib.resources import check_fits
from tools.counters import flops, peak_memory, steps_per_cycle, sync, timed
from tools.recreation import Original

SIMD = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "neon", "sve"}

PATHS = ("original", "plain", "fast")
ROOT = Path(__file__).resolve().parent.parent  # where `python -m tools.benchmark` runs


def build(path, args, device):
    """A model (or the original: its own code with --original-code, else the re-creation) for
    `path`, seeded so all paths start equal."""
    if path == "original" and args.original_code:
        from tools.original.timing import OriginalCode
        return OriginalCode(args.original_code, args, torch.get_num_threads())
    opt = argparse.Namespace(**options.defaults())
    for key in ("model", "isize", "nc", "batchsize", "wgan", "n_critic", "ngf", "ndf", "nz"):
        setattr(opt, key, getattr(args, key))
    torch.manual_seed(args.seed)
    fast = path == "fast"
    model = MODELS[args.model](opt, device, fast=fast, amp=args.amp if fast else False,
                               compile=args.compile and fast)
    return Original(model) if path == "original" else model




def memory_in_fresh_process(path, argv) -> dict:
    """Freed memory stays resident for reuse, so each path's CPU peak is measured in its own process."""
    out = subprocess.run([sys.executable, "-m", "tools.benchmark", *argv, "--path", path, "--memory_only"],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def make_data(args, device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(args.seed)
    return [(torch.rand(args.batchsize, args.nc, args.isize, args.isize, generator=gen) * 2 - 1).to(device)
            for _ in range(4)]


def measure(args, device, paths) -> dict:
    data = make_data(args, device)
    runners = {p: build(p, args, device) for p in paths}
    result = {p: {} for p in paths}
    for p, runner in runners.items():
        if not hasattr(runner, "train_step"):  # the original's own code: it warmed up in its process
            result[p]["gflop_per_img"] = None
            continue
        result[p]["gflop_per_img"] = flops(runner, data, args)
        for i in range(args.warmup):
            runner.train_step(data[i % len(data)])
            runner.score(data[0])
    cycle = steps_per_cycle(args)
    steps = -(-args.steps // cycle) * cycle  # whole generator-update cycles
    times = {p: {"train": [], "eval": []} for p in paths}
    try:
        for rep in range(args.reps):
            order = paths[rep % len(paths):] + paths[:rep % len(paths)]
            for p in order:
                runner = runners[p]
                if not hasattr(runner, "train_step"):
                    times[p]["train"].append(runner.time_train(steps))
                    times[p]["eval"].append(runner.time_eval(args.eval_batches))
                    continue
                times[p]["train"].append(timed(lambda: [runner.train_step(data[i % len(data)])
                                                        for i in range(steps)], device))
                times[p]["eval"].append(timed(lambda: [runner.score(data[i % len(data)])
                                                       for i in range(args.eval_batches)], device))
            for precision in {bf16_of(r) for r in runners.values()}:  # the roofline of each precision used
                times.setdefault(f"matmul_{precision}", []).append(
                    timed(lambda: matmul(device, precision == "bf16"), device)[0])
    finally:
        for runner in runners.values():
            if hasattr(runner, "close"):
                result["_original_code_peak_mem_mb"] = runner.ready["peak_mem_mb"]
                runner.close()
    images = {"train": steps * args.batchsize, "eval": args.eval_batches * args.batchsize}
    # The roofline: what a large matrix product, the best case of these kernels, reaches here in
    # the same run, in the precision a path computes in (bf16 autocast runs bf16 kernels, which a
    # native bf16 CPU runs faster). gflop_per_img / that = the fastest any implementation of the
    # same work could go; `share` says how close each path is.
    matmuls = {key.removeprefix("matmul_"): times.pop(key) for key in [k for k in times if k.startswith("matmul_")]}
    peaks = {precision: statistics.median(2 * MATMUL_SIZE ** 3 * MATMUL_REPEAT / 1e9 / t for t in seconds)
             for precision, seconds in matmuls.items()}
    result["roofline"] = {f"matmul_{precision}_gflop_per_s": round(peak, 1) for precision, peak in peaks.items()}
    result["roofline"]["paths"] = {}
    for p in paths:
        for phase in ("train", "eval"):
            wall = [images[phase] / w for w, _ in times[p][phase]]
            cpu = [images[phase] / c for _, c in times[p][phase]]
            result[p][f"{phase}_img_per_s"] = round(statistics.median(wall), 2)
            result[p][f"{phase}_img_per_cpu_s"] = round(statistics.median(cpu), 2)
            result[p][f"{phase}_img_per_s_reps"] = [round(r, 2) for r in wall]
        if result[p]["gflop_per_img"] is None:
            continue
        peak = peaks[bf16_of(runners[p])]
        result["roofline"]["paths"][p] = {"precision": bf16_of(runners[p])} | {
            phase: {"gflop_per_s": round(result[p][f"{phase}_img_per_s"] * gflop, 1),
                    "share_of_matmul": round(result[p][f"{phase}_img_per_s"] * gflop / peak, 3),
                    "ceiling_img_per_s": round(peak / gflop, 1)}
            for phase, gflop in (("train", result[p]["gflop_per_img"]["train_step"]),
                                 ("eval", result[p]["gflop_per_img"]["eval"]))}
    result["_times"] = times
    result["_images"] = images
    return result


MATMUL_SIZE, MATMUL_REPEAT = 1024, 4


def matmul(device, bf16: bool = False) -> None:
    a = torch.ones(MATMUL_SIZE, MATMUL_SIZE, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(MATMUL_REPEAT):
            a @ a


def bf16_of(runner) -> str:
    """The precision a path computes in: bf16 where our model autocasts, else (the original) fp32."""
    speed = getattr(runner, "speed", None) or getattr(getattr(runner, "model", None), "speed", None)
    return "bf16" if speed is not None and speed.amp else "fp32"


def ratios(result, paths, a, b) -> dict:
    """Medians over repetitions of the throughput ratio a/b measured side by side."""
    out = {}
    for phase in ("train", "eval"):
        wall = [tb[0] / ta[0] for ta, tb in zip(result["_times"][a][phase], result["_times"][b][phase])]
        cpu = [tb[1] / ta[1] for ta, tb in zip(result["_times"][a][phase], result["_times"][b][phase])]
        out[phase] = round(statistics.median(wall), 3)
        out[f"{phase}_cpu_time"] = round(statistics.median(cpu), 3)
    return out


def loader(args, device) -> dict:
    """img/s of lib.data.datasets.batches + to_float over an in-memory uint8 dataset."""
    n = args.loader_images
    data = torch.randint(0, 256, (n, args.nc, args.isize, args.isize), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(args.seed)
    rates = []
    for _ in range(args.reps):
        def epoch():
            for idx in batches(n, args.batchsize, True, True, gen):
                to_float(data[idx], device)
        wall, _ = timed(epoch, device)
        rates.append(n // args.batchsize * args.batchsize / wall)
    return {"loader_img_per_s": round(statistics.median(rates), 1),
            "loader_img_per_s_reps": [round(r, 1) for r in rates], "images": n}


def profile(args, device) -> dict:
    """Where the time of `--path` goes: torch.profiler's top operators by self time, per batch."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    data = make_data(args, device)
    runner = build(args.path, args, device)
    steps = -(-args.steps // steps_per_cycle(args)) * steps_per_cycle(args)
    for i in range(max(args.warmup, 1)):
        runner.train_step(data[i % len(data)])
        runner.score(data[0])
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    self_us = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    out = {}
    for phase, fn, count in (("train", runner.train_step, steps), ("eval", runner.score, args.eval_batches)):
        with torch_profile(activities=activities) as prof:
            for i in range(count):
                fn(data[i % len(data)])
            sync(device)
        events = sorted(prof.key_averages(), key=self_us, reverse=True)
        total = sum(self_us(e) for e in events)
        out[phase] = {"ms_per_batch": round(total / 1000 / count, 1), "top": [
            {"op": e.key, "ms_per_batch": round(self_us(e) / 1000 / count, 1),
             "share": round(self_us(e) / total, 3), "calls_per_batch": e.count / count}
            for e in events[:args.profile_top]]}
    return out



COUNTS = ("batchsize", "n_critic", "ngf", "ndf", "nz", "steps", "eval_batches", "reps", "profile_top",
          "loader_images")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bytes_needed(args) -> int:
    """A lower bound of the memory the measurement holds, so sizes that cannot fit are refused
    before anything is allocated: the data; the generator's convolution weights (a decoder at
    least as large as the encoder) and the adversary's last one, each with its gradient and two
    Adam moments; and the generator activations of one batch, kept for the backward pass."""
    pixels = args.nc * args.isize ** 2
    if args.loader:
        return args.loader_images * pixels  # uint8
    depth = int(math.log2(args.isize))
    widths = [args.ngf * min(2**i, 8) for i in range(depth)]
    weights = 2 * sum(16 * a * b for a, b in zip([args.nc, *widths], widths))
    weights += 16 * args.ndf * (args.isize // 8) * args.nz
    activations = 2 * sum(w * (args.isize >> (i + 1)) ** 2 for i, w in enumerate(widths))
    return 4 * (4 * args.batchsize * pixels + 4 * weights + args.batchsize * activations)


def check(args) -> None:
    """Raise UserError for values that pass argparse but that the measurement cannot take."""
    options.check_image_shape(args.isize, args.nc)
    for name in COUNTS:
        if not 1 <= getattr(args, name) <= options.C_INT_MAX:
            raise UserError(f"--{name} {getattr(args, name)}: use a whole number from 1 to {options.C_INT_MAX}")
    if not 0 <= args.warmup <= options.C_INT_MAX:
        raise UserError(f"--warmup {args.warmup}: use a whole number from 0 to {options.C_INT_MAX}")
    if args.threads is not None and not 1 <= args.threads <= 4 * cores():
        raise UserError(f"--threads {args.threads}: use 1 to {4 * cores()} (4 per core of the {cores()} here), "
                        "or leave it out for torch's choice")
    if not -2**63 <= args.seed < 2**64:
        raise UserError(f"--seed {args.seed}: use a whole number from 0 to 2**64 - 1")
    if args.loader and args.loader_images < args.batchsize:
        raise UserError(f"--loader_images {args.loader_images} is less than one batch of --batchsize "
                        f"{args.batchsize}, so no batch would be timed: give more images or a smaller batch")
    if args.original_code:
        from tools.original.launch import check_original_code
        from tools.original.timing import check_settings
        if args.loader or args.profile:
            raise UserError("--original-code times the original's own code with --compare or --path original; "
                            "--loader and --profile measure our code (--profile --path original: the re-creation)")
        check_original_code(args.original_code)
        check_settings(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU here; use --device cpu")
    images = f"{args.nc}x{args.isize}x{args.isize} images"
    if args.loader:
        check_fits(bytes_needed(args), f"--loader_images {args.loader_images} of {images}",
                   "use fewer --loader_images or a smaller --isize")
    else:
        check_fits(bytes_needed(args), f"--batchsize {args.batchsize} of {images} with --ngf {args.ngf} "
                   f"--ndf {args.ndf} --nz {args.nz}", "use a smaller --batchsize (or --isize, --ngf, --ndf, --nz)",
                   args.device)


def parse(argv=None):
    p = OneLineParser(prog="python -m tools.benchmark", description=__doc__.split("\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--model", default="skipganomaly", choices=sorted(MODELS))
    a("--isize", type=int, default=32)
    a("--nc", type=int, default=3)
    a("--batchsize", type=int, default=64)
    a("--device", default="cpu", choices=("cpu", "cuda"))
    a("--wgan", default="gp", choices=("gp", "clip"), help="Skip-WGANomaly critic constraint")
    a("--n_critic", type=int, default=5)
    a("--ngf", type=int, default=64)
    a("--ndf", type=int, default=64)
    a("--nz", type=int, default=100)
    a("--steps", type=int, default=5, help="timed training steps per repetition (whole n_critic cycles)")
    a("--eval_batches", type=int, default=10, help="timed evaluation batches per repetition")
    a("--warmup", type=int, default=2, help="untimed training steps (and evals) first")
    a("--reps", type=int, default=3, help="repetitions; the paths are interleaved within each")
    a("--path", default="fast", choices=PATHS, help="the path measured without --compare")
    a("--compare", action="store_true", help="measure original, plain and fast side by side")
    a("--original-code", "--original_code", dest="original_code", default=None,
      help="the original code's folder: --compare times its own optimize_params() and test() as `original`")
    a("--loader", action="store_true", help="measure the data loader alone")
    a("--profile", action="store_true", help="profile --path: top operators by self time")
    a("--profile_top", type=int, default=12)
    a("--loader_images", type=int, default=20000)
    a("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="bf16 autocast on the fast path (default: on for CUDA, off for CPU)")
    a("--compile", action="store_true", help="torch.compile the fast path's networks")
    a("--seed", type=int, default=0)
    a("--memory_only", action="store_true", help=argparse.SUPPRESS)
    a("--verbose", action="store_true", help="show tracebacks of errors")
    args = p.parse_args(argv)
    check(args)
    return args


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = {k: v for k, v in vars(args).items() if k not in ("memory_only", "loader_images")}
    settings["threads"] = torch.get_num_threads()
    settings["torch"] = torch.__version__
    simd = " ".join(sorted(hardware.cpu_flags() & SIMD))
    settings["cpu"] = f"{hardware.cpu_name()} ({hardware.capability()}; {simd})"
    chosen = speed_layer.settings(argparse.Namespace(), device, fast=True, amp=args.amp,  # what `fast` runs with
                                  bf16_safe=MODELS[args.model].bf16_safe(argparse.Namespace()))
    settings["fast_path"] = {"bf16": chosen.amp, "matmul_convolutions": chosen.matmul, "why": list(chosen.why)}
    if args.loader:
        print(json.dumps({**loader(args, device), "settings": settings}))
        return
    if args.profile:
        print(json.dumps({"path": args.path, **profile(args, device), "settings": settings}))
        return
    if args.memory_only:
        runner = build(args.path, args, device)
        print(json.dumps(peak_memory(runner, make_data(args, device), args, device)))
        return
    paths = list(PATHS) if args.compare else [args.path]
    result = measure(args, device, paths)
    base_argv = [a for a in argv if a not in ("--compare",)]
    original_code = result.pop("_original_code_peak_mem_mb", None)
    for p in paths:
        if p == "original" and args.original_code:  # measured in its own fresh process already
            result[p].update(peak_mem_mb=original_code, peak_mem_method="peak RSS of its own process over the "
                             "warmup steps and test(), as for our paths")
        elif device.type == "cpu":
            result[p].update(memory_in_fresh_process(p, base_argv))
        else:
            result[p].update(peak_memory(build(p, args, device), make_data(args, device), args, device))
    if not args.compare:
        out = {k: v for k, v in result[args.path].items() if not k.endswith("_reps")}
        print(json.dumps({**out, "roofline": result["roofline"], "settings": settings}))
        return
    best = {phase: result["roofline"]["paths"]["fast"][phase]["ceiling_img_per_s"] for phase in ("train", "eval")}
    result["roofline"]["ceiling/original"] = {
        phase: round(best[phase] / result["original"][f"{phase}_img_per_s"], 2) for phase in best}
    out = {"paths": {p: result[p] for p in paths},
           "ratios": {"fast/original": ratios(result, paths, "fast", "original"),
                      "fast/plain": ratios(result, paths, "fast", "plain"),
                      "plain/original": ratios(result, paths, "plain", "original")},
           "peak_mem_ratio_fast/original": round(result["fast"]["peak_mem_mb"]
                                                 / max(result["original"]["peak_mem_mb"], 1e-9), 3),
           "roofline": result["roofline"],
           "original": (f"the original's own code ({args.original_code}): optimize_params() and test()"
                        if args.original_code else "the re-creation of the original's work per step in "
                        "tools/benchmark.py (give --original-code to time its own code)"),
           "timing": "img/s: median over --reps; ratios: median of per-repetition ratios, paths interleaved",
           "settings": settings}
    print(json.dumps(out))


if __name__ == "__main__":
    run_cli(main)
