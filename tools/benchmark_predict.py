"""predict.py's scoring speed on this CPU: the run with PyTorch against its exports with onnxruntime and OpenVINO.

    python -m tools.benchmark_predict                                  # an untrained control at 32x32
    python -m tools.benchmark_predict --weights RUN --batches 1,64 --reps 7

Times what predict.py does for a batch once its images are read: normalising them, the networks' pass and
the score function with its statistics (lib/scoring/evaluate.py's `evaluate`), with maps off. The three
take turns, batch by batch, in one process (this machine is shared: only times measured side by side
compare); each time is the median over --reps. Without --weights, the networks of an untrained control
run (--niter 0: the same sizes and work as a trained one) of --model at --isize are made in a temporary
folder. Prints the CPU (its model name and the flags that decide its kernels) and a markdown table.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lib.commands.train import main as train
from lib.errors import OneLineParser, UserError, run_cli
from lib.export.runtime import load_export
from lib.export.write import export
from lib.fast import hardware
from lib.models import build_model
from lib.predict.score import load_model
from lib.runs.adopted import speed_record
from lib.scoring.evaluate import evaluate

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what the kernels of all three depend on


def control_run(folder: Path, args) -> Path:
    """An untrained control of --model at --isize on the bundled digits, trained in no time."""
    argv = ["--dataset", "digits", "--abnormal_class", "0", "--model", args.model, "--isize", str(args.isize),
            "--nc", "3", "--niter", "0", "--device", "cpu", "--manualseed", "0", "--score", args.score,
            "--outf", str(folder), "--name", "control"]
    if run_cli(train, argv) not in (0, None):
        raise UserError("the control run could not be made")
    return folder / "control"


def timed(model, images: torch.Tensor) -> float:
    start = time.perf_counter()
    evaluate(model, images, len(images), torch.device("cpu"))
    return time.perf_counter() - start


def cpu_line() -> str:
    flags = hardware.cpu_flags()
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in FLAGS)
    return f"CPU: {hardware.cpu_name()} ({torch.get_num_threads()} threads; {shown})"


def measure(run: Path, folder: Path, batches: list[int], reps: int) -> list[dict]:
    """Median seconds per batch of each runtime at each batch size, taken in turns."""
    export(run, "onnx", folder / "onnx")
    export(run, "openvino", folder / "openvino")
    torch_model, ckpt, opt = load_model(run, torch.device("cpu"))
    version = torch.__version__.split("+")[0]
    models = {f"PyTorch {version} ({'bf16' if torch_model.speed.amp else 'fp32'}, as predict.py)": torch_model}
    if torch_model.speed.amp:  # the exports compute in fp32: PyTorch in fp32 too, for the same work
        fp32 = build_model(opt, torch.device("cpu"), amp=False, recorded=speed_record(ckpt))
        fp32.load_state_dict(ckpt["state"], weights_only=True)
        models[f"PyTorch {version} (fp32)"] = fp32
    models["onnxruntime (fp32)"] = load_export(folder / "onnx")[0]
    models["OpenVINO (fp32)"] = load_export(folder / "openvino")[0]
    generator = torch.Generator().manual_seed(0)
    images = {n: torch.randint(0, 256, (n, opt.nc, opt.isize, opt.isize), dtype=torch.uint8, generator=generator)
              for n in batches}
    times = {(name, n): [] for name in models for n in batches}
    for name, model in models.items():  # warm up: first calls allocate and pick kernels
        for n in batches:
            timed(model, images[n])
    for _ in range(reps):
        for n in batches:
            for name, model in models.items():
                times[name, n].append(timed(model, images[n]))
    return [{"runtime": name, "batch": n, "ms": 1000 * statistics.median(times[name, n]),
             "images/s": n / statistics.median(times[name, n])} for n in batches for name in models]


def table(rows: list[dict]) -> str:
    lines = ["| runtime | batch | ms per batch | images/s |", "|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['ms']:.2f} | {r['images/s']:.0f} |" for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m tools.benchmark_predict", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--weights", default=None, help="a run folder or checkpoint (default: an untrained control, see --model)")
    a("--model", default=DEFAULTS["model"], help="the control's model (without --weights)")
    a("--isize", type=int, default=DEFAULTS["isize"], help="the control's image size (without --weights)")
    a("--score", default=DEFAULTS["score"], help="the control's score (without --weights)")
    a("--batches", default="1,64", help="batch sizes, comma-separated")
    a("--reps", type=int, default=7, help="timed repetitions of each (runtime, batch); the median is reported")
    a("--verbose", action="store_true", help="print tracebacks")
    return p


MAX_BATCH = 4096
DEFAULTS = {"model": "w_skipganomaly", "isize": 32, "score": "knn_encoder"}  # the untrained control's


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise UserError(f"--batches {args.batches!r}: give whole numbers separated by commas, e.g. 1,64") from None
    if not batches or min(batches) < 1 or args.reps < 1:
        raise UserError("--batches and --reps must be at least 1")
    if max(batches) > MAX_BATCH:  # the images are made in memory: a huge batch would fail in the allocator
        raise UserError(f"--batches {max(batches)}: at most {MAX_BATCH} images a batch")
    if args.weights is not None:  # the control's settings would be ignored silently
        given = [f"--{name}" for name in ("model", "isize", "score") if getattr(args, name) != DEFAULTS[name]]
        if given:
            raise UserError(f"{', '.join(given)} {'describe' if len(given) > 1 else 'describes'} the untrained "
                            "control, and --weights scores a run of its own: drop them, or drop --weights")
    with tempfile.TemporaryDirectory(prefix="benchmark_predict-") as tmp:
        run = Path(args.weights) if args.weights else control_run(Path(tmp) / "runs", args)
        rows = measure(run, Path(tmp) / "exports", batches, args.reps)
    print(cpu_line())
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
