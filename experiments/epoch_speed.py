"""One real training epoch of Fashion-MNIST against the original's step rate on the same machine.

    python experiments/epoch_speed.py                    # default networks, two threads
    python experiments/epoch_speed.py --threads 1 --model w_skipganomaly
    python experiments/epoch_speed.py --isize 16 --ngf 16     # network flags go to both sides

Runs `benchmark.py --path original` (the original's work per step, see docs/benchmarks.md) before
and after one full epoch of `train.py` (data loading, training, evaluating validation and test,
writing every output), and reports how long the original would take for the same images at its
measured rates, against the epoch's measured time. Prints one JSON object.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORK_FLAGS = ("--isize", "--ngf", "--ndf", "--nz", "--batchsize")


def fail(message: str) -> None:
    print(f"epoch_speed.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def run(script: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `script` with `cmd`; on failure, one line with the last line it wrote to stderr."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *cmd], stderr=subprocess.PIPE, text=True, **kwargs)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        fail(f"{script} failed with exit code {proc.returncode}: {last}")
    return proc


def original_rates(args, env) -> dict:
    # 50 timed steps, about a minute with the default networks: the epoch's rate is an average
    # over minutes, so the original's should be one too; nine steps, a few seconds, swung by
    # 20 % between measurements on this shared machine (55 to 66 images/s).
    cmd = ["--path", "original", "--model", args.model, "--nc", "1", "--threads", str(args.threads),
           "--steps", "10", "--reps", "5", "--eval_batches", "10", *args.network]
    out = run("benchmark.py", cmd, stdout=subprocess.PIPE, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"train_img_per_s": result["train_img_per_s"], "eval_img_per_s": result["eval_img_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="skipganomaly")
    p.add_argument("--abnormal_class", default="bag")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the JSON here too")
    p.add_argument("--dataroot", default=None, help="Fashion-MNIST folder (default: train.py's)")
    args, args.network = p.parse_known_args()
    for flag in args.network:
        if flag.startswith("--") and flag not in NETWORK_FLAGS:
            fail(f"{flag}: only {', '.join(NETWORK_FLAGS)} are passed on to benchmark.py and train.py")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    before = original_rates(args, env)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run("train.py", ["--dataset", "fashion-mnist", "--nc", "1", "--model", args.model,
                         "--abnormal_class", args.abnormal_class, "--niter", "1", "--device", "cpu",
                         "--outf", tmp, "--name", "epoch", *args.network,
                         *(["--dataroot", args.dataroot] if args.dataroot else [])],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        with open(Path(tmp) / "epoch" / "metrics.csv") as f:
            row = next(csv.DictReader(f))
    after = original_rates(args, env)
    original = {k: statistics.fmean([before[k], after[k]]) for k in before}
    trained, evaluated = int(row["train_images"]), int(row["eval_images"])
    ours = float(row["train_seconds"]) + float(row["eval_seconds"])
    theirs = trained / original["train_img_per_s"] + evaluated / original["eval_img_per_s"]
    result = {"model": args.model, "threads": args.threads, "images_trained": trained,
              "images_evaluated": evaluated, "epoch_seconds": {"train": float(row["train_seconds"]),
                                                               "eval": float(row["eval_seconds"]),
                                                               "train_py_wall": round(wall, 1)},
              "original_img_per_s": {"before": before, "after": after},
              "original_epoch_seconds_at_its_rates": round(theirs, 1),
              "speedup_train_plus_eval": round(theirs / ours, 2),
              "speedup_whole_train_py": round(theirs / wall, 2)}
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
