"""What evaluation costs with the default score, per image, measured in one process taking turns.

    python -m experiments.eval_cost [--models skipganomaly ganomaly] [--isize 32] [--nc 1] [--images 512]

Two comparisons for each model, untrained networks of the given size (the cost does not depend on
the weights):
- the measurements a distance needs (the bank of training codes, and a test split scored by one),
  with the reconstruction G(x) made, as before, and without it, as evaluation now measures them;
- what the default score's choice costs an epoch (every candidate's measurements of the validation
  split, and the bank's pass over training images), against the pass the original's score makes
  over the test split, counted for a one-class Fashion-MNIST run (--val, --bank, --test).
Prints one JSON line per model; read the ratios on a busy machine.
"""
import argparse
import json
import os
import sys
import time

import torch

from lib.errors import OneLineParser, UserError, run_cli
from lib.fast import hardware
from lib.models import MODELS, build_model
from lib.options import defaults
from lib.resources import check_fits
from lib.scoring.evaluate import measure
from lib.scoring.functions import SCORES, needs
from lib.scoring.measures import ENCODER_EMBEDDING, OF_IMAGE_ALONE
from lib.scoring.policy import ScorePolicy


def per_image(model, images, wanted, reconstruction: bool) -> float:
    draw = (lambda real, parts: None) if reconstruction else None  # a caller that draws G(x) gets it
    start = time.perf_counter()
    measure(model, images, 64, torch.device("cpu"), wanted, on_batch=draw)
    return (time.perf_counter() - start) / len(images)


def costs(name: str, args) -> dict:
    opt = argparse.Namespace(**{**defaults(), "model": name, "isize": args.isize, "nc": args.nc, "device": "cpu"})
    model = build_model(opt, torch.device("cpu"))
    candidates = ScorePolicy("val").candidates(model.measurements)
    passes = {  # name -> (measurements, with G(x))
        "code, with G(x)": ({ENCODER_EMBEDDING}, True), "code, without": ({ENCODER_EMBEDDING}, False),
        "validation, every candidate": (needs(candidates), False),
        "bank": (needs(n for n in candidates if SCORES[n].fits_on_training) & OF_IMAGE_ALONE, False),
        "test, the original's score": (set(SCORES["original" if "original" in candidates else
                                                  model.default_score].needs), False)}
    images = torch.randint(0, 256, (args.images, args.nc, args.isize, args.isize), dtype=torch.uint8)
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(args.rounds):  # in turns: the machine's load falls on every pass alike
        for what, (wanted, reconstruction) in passes.items():
            best[what] = min(best[what], per_image(model, images, wanted, reconstruction))
    choice = args.val * best["validation, every candidate"] + args.bank * best["bank"]
    original = args.test * best["test, the original's score"]
    return {"model": name, "ms_per_image": {k: round(1e3 * v, 3) for k, v in best.items()},
            "code_without_G_speedup": round(best["code, with G(x)"] / best["code, without"], 2),
            "choice_seconds": round(choice, 1), "original_test_seconds": round(original, 1),
            "choice_over_original": round(choice / original, 2)}


def main(argv) -> int:
    p = OneLineParser(prog="python -m experiments.eval_cost", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["skipganomaly", "ganomaly"])
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--nc", type=int, default=1, choices=(1, 3))
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val", type=int, default=1500)
    p.add_argument("--bank", type=int, default=4096)
    p.add_argument("--test", type=int, default=9100)
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise UserError(f"--models {unknown[0]} is not a model: choose from {', '.join(MODELS)}")
    if min(args.images, args.rounds, args.threads, args.val, args.bank, args.test) < 1 or \
            args.isize not in (8, 16, 32, 64, 128):
        raise UserError("--images, --rounds, --threads, --val, --bank and --test must be positive and --isize one "
                        "of 8, 16, 32, 64, 128")
    cores = len(os.sched_getaffinity(0))
    if args.threads > 4 * cores:  # (torch's pool crashes far above the cores)
        raise UserError(f"--threads {args.threads}: use 1 to {4 * cores} (4 per core of the {cores} here)")
    check_fits(args.images * args.nc * args.isize**2 * 5, f"--images {args.images} at --isize {args.isize}",
               "give fewer --images")  # the uint8 images and a float copy of them
    torch.set_num_threads(args.threads)
    for name in args.models:
        print(json.dumps({**costs(name, args), "cpu": f"{hardware.cpu_name()} ({hardware.capability()})",
                          "threads": args.threads}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
