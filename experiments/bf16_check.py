"""Does bf16 autocast cost detection? The ablation's runs of our default, trained again with --amp.

    python -m experiments.bf16_check            # train what is missing (resumable), then the table
    python -m experiments.bf16_check --native   # on a CPU with native bf16: both twins trained here
    python -m experiments.bf16_check --report   # only rebuild the tables in docs/benchmarks.md

The speed layer turns bf16 on by default only on a CPU that computes it natively and faster
(lib/fast/hardware.py) and on CUDA; this is the evidence that it may. Each run is one of the
ablation's "our default" runs (experiments/ablation.py: Fashion-MNIST leave-one-class-out, its
four table classes, 32x32, quarter width, 2 epochs, one thread), the same seed, data and
scoring, with `--amp` added; the fp32 twin is the ablation's stored run. Both are scored the
ablation's way: the original's score in eval mode, at the epoch chosen on validation. On a CPU
without native bf16 (the development machine) torch emulates it: slower, but the same numbers
as a native bf16 CPU's up to rounding order, which is what this measures. With `--native`, on a
CPU with native bf16, both twins are trained on that CPU (`--no-amp` and `--amp`): its fp32 kernels
sum in another order than the ablation's machine did, and that alone moves a run.
"""
import json
import statistics
import sys
from pathlib import Path

from experiments import parse_seeds
from experiments.ablation import MODELS, RESULTS, TABLE_CLASSES, run_file, train_one
from experiments.ablation_report import mean_sd, replace_between, selected
from lib.errors import OneLineParser, UserError, run_cli
from lib.fast import hardware
from lib.files import write_text
from lib.models import model_label
from lib.runs.collect import read_json
from lib.training.stopping import Interrupted

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "bf16" / "runs"
NATIVE = ROOT / "results" / "bf16" / "native"  # both twins trained on one CPU with native bf16
PRECISION_FLAGS = {"fp32": ("--no-amp",), "bf16": ("--amp",)}
PAGE = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bf16-auroc:begin -->", "<!-- bf16-auroc:end -->"
SEEDS = (0, 1, 2)  # trained here, in this order: every class of seed 0 first
ALL_SEEDS = range(10)  # the fp32 twins the ablation has (0-4 for our default)
FLAGS = ("--amp",)
NAMES = {model: model_label(model) for model in ("skipganomaly", "w_skipganomaly")}


def bf16_file(model: str, abnormal: str, seed: int) -> Path:
    return RUNS / run_file(model, "our default", abnormal, seed).relative_to(RESULTS / "runs")


def native_file(model: str, abnormal: str, seed: int, precision: str) -> Path:
    return NATIVE / precision / run_file(model, "our default", abnormal, seed).relative_to(RESULTS / "runs")


def emulated_pair(model: str, abnormal: str, seed: int) -> tuple[Path, Path]:
    """fp32: the ablation's run; bf16: the one trained here, emulated or not."""
    return run_file(model, "our default", abnormal, seed), bf16_file(model, abnormal, seed)


def native_pair(model: str, abnormal: str, seed: int) -> tuple[Path, Path]:
    return native_file(model, abnormal, seed, "fp32"), native_file(model, abnormal, seed, "bf16")


def auroc(run: dict) -> float:
    return selected(run, "eval", "val")


def table(pair=emulated_pair) -> str:
    """Per model and class: fp32 and bf16 over the seeds both have (`pair` names the two files of a
    seed), their paired difference, and the seed noise it is to be judged against: the spread of the
    ablation's fp32 runs over every seed there is."""
    lines = ["| model | class | seeds | fp32 | bf16 | bf16 − fp32 (paired) | fp32 spread over seeds 0-4 (sd) |",
             "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        diffs, fp32_all, bf16_all, spreads = [], [], [], []
        for abnormal in TABLE_CLASSES:
            pairs = [tuple(map(read_json, pair(model, abnormal, s))) for s in ALL_SEEDS
                     if all(p.is_file() for p in pair(model, abnormal, s))]
            if not pairs:
                continue
            every = [auroc(read_json(run_file(model, "our default", abnormal, s))) for s in ALL_SEEDS
                     if run_file(model, "our default", abnormal, s).is_file()]
            spread = statistics.stdev(every) if len(every) > 1 else float("nan")
            a, b = [auroc(x) for x, _ in pairs], [auroc(y) for _, y in pairs]
            diffs += [y - x for x, y in zip(a, b)]
            fp32_all += a
            bf16_all += b
            spreads.append(spread)
            lines.append(f"| {NAMES[model]} | {abnormal} | {len(pairs)} | {mean_sd(a)} | {mean_sd(b)} | "
                         f"{mean_sd([y - x for x, y in zip(a, b)])} | {spread:.3f} ({len(every)} seeds) |")
        if diffs:
            lines.append(f"| **{NAMES[model]}** | all | {len(diffs)} runs | {mean_sd(fp32_all)} | "
                         f"{mean_sd(bf16_all)} | **{mean_sd(diffs)}** | {statistics.mean(spreads):.3f} (mean) |")
    return "\n".join(lines)


def report() -> str:
    runs = sorted(RUNS.rglob("seed*.json"))
    seconds = [read_json(p)["seconds"] for p in runs]
    body = (f"_Generated by `python -m experiments.bf16_check` from {len(runs)} bf16 runs and their fp32 twins "
            f"(the ablation's \"our default\"); test AUROC at the epoch chosen on validation, mean ± standard "
            f"deviation over seeds._\n\n" + table())
    if seconds:
        body += f"\n\nA bf16 run took {statistics.median(seconds):.0f} s (median) on this emulating CPU."
    native = {precision: [read_json(p) for p in sorted((NATIVE / precision).rglob("seed*.json"))]
              for precision in PRECISION_FLAGS}
    if native["bf16"]:
        cpus = sorted({run["cpu"] for runs in native.values() for run in runs})
        body += (f"\n\n**Native bf16**, both twins trained on one CPU, {'; '.join(cpus)}, with `--no-amp` and "
                 f"`--amp` (`python -m experiments.bf16_check --native`), {len(native['bf16'])} bf16 runs; the "
                 "spread column is still the ablation's fp32 runs':\n\n" + table(native_pair) + "\n\nMedian "
                 + ", ".join(f"{p} run {statistics.median(r['seconds'] for r in runs):.0f} s"
                             for p, runs in native.items() if runs) + " on that CPU, one thread.")
    replace_between(PAGE, BEGIN, END, body)
    return str(PAGE)


def check_pairable(seeds: list[int], models: list[str], native: bool) -> None:
    """Each seed one the table pairs, refused before any training: the ablation's fp32 twin exists for every
    model and class (with --native, both twins are trained here, but the table reads ALL_SEEDS only). A seed
    without a twin (-1 among them: train.py draws a random seed for it) trained a bf16 run that nothing pairs,
    and wrote it into the table."""
    pairable = [s for s in ALL_SEEDS if native or all(run_file(m, "our default", c, s).is_file()
                                                     for m in models for c in TABLE_CLASSES)]
    unpaired = [s for s in seeds if s not in pairable]
    if unpaired:
        raise UserError(f"--seeds {','.join(map(str, unpaired))}: "
                        + ("the table pairs seeds " if native else "the ablation has fp32 twins of seeds ")
                        + f"{', '.join(map(str, pairable))} only: give some of those")


def train_missing(path: Path, model: str, abnormal: str, seed: int, precision: str, flags) -> None:
    if path.is_file():
        return
    print(f"{precision}: {model} | {abnormal} | seed {seed}", flush=True)
    result = train_one(model, "default", abnormal, seed, log=lambda *_: None, extra=flags)
    result.update(variant=f"our default, {precision}", cpu=f"{hardware.cpu_name()} ({hardware.capability()})")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1) + "\n")
    print(f"  {result['seconds']} s; test AUROC {auroc(result):.3f}", flush=True)


def main(argv) -> int:
    p = OneLineParser(prog="python -m experiments.bf16_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="models, separated by commas")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds, separated by commas")
    p.add_argument("--native", action="store_true",
                   help="train both twins on this CPU (it must have native bf16), not against the ablation's fp32")
    p.add_argument("--report", action="store_true", help="only rebuild the tables")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(MODELS):
        raise UserError(f"--models {args.models!r}: give some of {', '.join(MODELS)}, separated by commas")
    seeds = parse_seeds(args.seeds)
    check_pairable(seeds, models, args.native)
    if args.native and not args.report and not hardware.cpu_flags() & set(hardware.NATIVE_BF16):
        raise UserError(f"--native: this CPU ({hardware.capability()}) has no native bf16 "
                        f"({' or '.join(hardware.NATIVE_BF16)}): leave out --native to pair emulated bf16 runs "
                        "with the ablation's fp32 ones")
    try:
        for seed in ([] if args.report else seeds):  # seed by seed: an interrupted check pairs every class it reached
            for abnormal in TABLE_CLASSES:
                for model in models:
                    if args.native:
                        for precision, path in zip(PRECISION_FLAGS, native_pair(model, abnormal, seed)):
                            train_missing(path, model, abnormal, seed, precision, PRECISION_FLAGS[precision])
                    else:
                        train_missing(bf16_file(model, abnormal, seed), model, abnormal, seed, "bf16", FLAGS)
    except Interrupted as stop:  # as train.py and the ablation: one line and 128 + the signal, no traceback
        print(f"interrupted: stopped by signal {stop.signal}; the finished twins are kept; rerun the same command "
              "to continue (the interrupted run starts again)", file=sys.stderr)
        return 128 + stop.signal
    print(f"report: {report()}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
