"""One real training epoch of Fashion-MNIST against the original's step rate on the same machine.

    python -m experiments.epoch_speed                    # default networks, two threads
    python -m experiments.epoch_speed --threads 1 --model w_skipganomaly
    python -m experiments.epoch_speed --isize 16 --ngf 16     # network flags go to both sides

Runs `python -m tools.benchmark --path original` before and after one full epoch of `train.py`
(data loading, training, evaluating validation and test, writing every output), and reports how
long the original would take for the same images at its measured rates, against the epoch's
measured time. With `--original-code PATH` those rates are the original's own code's (its
optimize_params() and test()), and both sides take the images in colour, since the original
cannot take grey ones; without it, the benchmark's re-creation of its work per step
(docs/benchmarks.md), on grey images. Prints one JSON object, which says which.
"""
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.runs.collect import check_writable, shown

ROOT = Path(__file__).resolve().parent.parent
NETWORK_FLAGS = ("--isize", "--ngf", "--ndf", "--nz", "--batchsize")


def run(script: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `python CMD`; on failure, one line naming `script` with the last line it wrote to stderr
    (exit code 2 when the script refused its input, as it did, else 1)."""
    proc = subprocess.run([sys.executable, *cmd], stderr=subprocess.PIPE, text=True, errors="replace", **kwargs)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        message = f"{script} failed with exit code {proc.returncode}: {last}"
        if proc.returncode == 2:
            raise UserError(message)
        raise SystemExit(f"error: {message}")
    return proc


def network_flags(extra: list[str]) -> list[str]:
    """The flags passed on to both scripts (values are theirs to check); UserError for any other."""
    i = 0
    while i < len(extra):
        name = extra[i].split("=", 1)[0]
        if name not in NETWORK_FLAGS:
            raise UserError(f"{shown(name)}: only {', '.join(NETWORK_FLAGS)} are passed on to tools.benchmark "
                            "and train.py")
        i += 1 if "=" in extra[i] else 2
    return extra


def channels(args) -> str:
    """Grey, as Fashion-MNIST is; colour against the original's own code, which takes nothing else."""
    return "3" if args.original_code else "1"


def original_rates(args, env) -> dict:
    # 50 timed steps, about a minute with the default networks: the epoch's rate is an average
    # over minutes, so the original's should be one too; nine steps, a few seconds, swung by
    # 20 % between measurements on this shared machine (55 to 66 images/s).
    cmd = ["--path", "original", "--model", args.model, "--nc", channels(args), "--threads", str(args.threads),
           "--steps", "10", "--reps", "5", "--eval_batches", "10", *args.network,
           *(["--original-code", args.original_code] if args.original_code else [])]
    out = run("tools.benchmark", ["-m", "tools.benchmark", *cmd], cwd=ROOT, stdout=subprocess.PIPE, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"train_img_per_s": result["train_img_per_s"], "eval_img_per_s": result["eval_img_per_s"]}



def main(argv) -> None:
    p = OneLineParser(prog="python -m experiments.epoch_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="skipganomaly")
    p.add_argument("--abnormal_class", default="bag")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the JSON here too")
    p.add_argument("--dataroot", default=None, help="Fashion-MNIST folder (default: train.py's)")
    p.add_argument("--original-code", "--original_code", dest="original_code", default=None,
                   help="the original code's folder: time its own code, not the benchmark's re-creation")
    p.add_argument("--score", default=None,
                   help="train.py's --score for our side (default: its default, chosen on validation)")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    args, extra = p.parse_known_args(argv)
    args.network = network_flags(extra)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not 1 <= args.threads <= 4 * cores:
        raise UserError(f"--threads {args.threads}: use 1 to {4 * cores} (4 per core of the {cores} here)")
    if args.out:
        check_writable(args.out, "--out")  # now, not after minutes of measuring
    if args.dataroot and not Path(args.dataroot).is_dir():
        raise UserError(f"--dataroot {shown(args.dataroot)} is not a folder: give the folder of Fashion-MNIST's "
                        "files, or leave --dataroot out for train.py's")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    train = [str(ROOT / "train.py"), "--dataset", "fashion-mnist", "--nc", channels(args), "--model", args.model,
             "--abnormal_class", args.abnormal_class, "--niter", "1", "--device", "cpu", "--name", "epoch",
             # Each side's default scoring unless --score: ours chooses among a dozen on validation.
             *(["--score", args.score] if args.score else []), *args.network,
             *(["--dataroot", args.dataroot] if args.dataroot else [])]
    run("train.py", [*train, "--print_config"], stdout=subprocess.DEVNULL)  # refused now, not after minutes
    before = original_rates(args, env)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run("train.py", [*train, "--outf", tmp], env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        with open(Path(tmp) / "epoch" / "metrics.csv") as f:
            row = next(csv.DictReader(f))
    after = original_rates(args, env)
    original = {k: statistics.fmean([before[k], after[k]]) for k in before}
    trained, evaluated = int(row["train_images"]), int(row["eval_images"])
    ours = float(row["train_seconds"]) + float(row["eval_seconds"])
    theirs = trained / original["train_img_per_s"] + evaluated / original["eval_img_per_s"]
    result = {"model": args.model, "score": args.score or "default (chosen on validation)", "threads": args.threads,
              "channels": int(channels(args)), "images_trained": trained,
              "original": (f"the original's own code ({args.original_code})" if args.original_code
                           else "the re-creation in tools/benchmark.py"),
              "images_evaluated": evaluated, "epoch_seconds": {"train": float(row["train_seconds"]),
                                                               "eval": float(row["eval_seconds"]),
                                                               "train_py_wall": round(wall, 1)},
              "original_img_per_s": {"before": before, "after": after},
              "original_epoch_seconds_at_its_rates": round(theirs, 1),
              "speedup_train_plus_eval": round(theirs / ours, 2),
              "speedup_whole_train_py": round(theirs / wall, 2)}
    print(json.dumps(result))  # first, so the result is seen even if --out cannot be written
    if args.out:
        write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
