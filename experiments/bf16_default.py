"""Does bf16 cost detection under the default score? Twins trained in fp32 and bf16 on one CPU.

    python -m experiments.bf16_default [--models skipganomaly ganomaly] [--protocols one-class leave-one-out]
                                       [--classes ...] [--seeds 0 1 2] [--out output/bf16_default]
    python -m experiments.bf16_default --report     # only table the finished pairs
    ... --publish: also write the table into docs/benchmarks.md and the pairs into results/bf16_default.csv

experiments/bf16_check.py measured bf16 under the original's score, before the default became the
score chosen on validation (mostly a distance of the encoder's codes, which may round differently).
This measures the default as it is: the control study's budget (16x16, quarter width, 2 epochs;
experiments/control_study.py), each run trained twice on this CPU, `--no-amp` and `--amp`, same seed
and data, scored the default way at the epoch chosen on validation. A bf16 run is only meaningful
where bf16 is native (AVX512-BF16, AMX, CUDA): emulated bf16 rounds the same but runs many times
slower. Finished runs are kept, so the study resumes where it stopped. The verdict per model is
the paired bf16 − fp32 difference against the spread of fp32 over seeds.
"""
import csv
import json
import statistics
import sys
from pathlib import Path

from experiments import STOPPED, check_seeds, finished, study_folder
from experiments.ablation_report import mean_sd, replace_between
from experiments.control_study import BUDGET, PROTOCOLS, TRAINED_EPOCHS, train_run
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.fast import hardware
from lib.files import rows_csv, write_text
from lib.models import MODELS, model_label

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"fp32": "--no-amp", "bf16": "--amp"}
CLASSES = ("T-shirt/top", "Dress", "Shirt", "Bag")  # bf16_check's four: Dress and Shirt lost there
PAGE = ROOT / "docs" / "benchmarks.md"
CSV = ROOT / "results" / "bf16_default.csv"
BEGIN, END = "<!-- bf16-default:begin -->", "<!-- bf16-default:end -->"


def run_name(protocol: str, model: str, target: str, seed: int, precision: str) -> str:
    return f"{protocol}/{model}/{target.replace('/', '-')}/seed{seed}/{precision}"


def train_missing(out: Path, name: str, flags: list[str]) -> int:
    return 0 if finished(out / name, int(TRAINED_EPOCHS)) else train_run(out, name, flags)


def pairs(out: Path) -> list[dict]:
    """One row per finished twin pair: test AUROC at the epoch chosen on validation, both precisions. A pair
    whose files are incomplete or foreign (a run stopped, a folder edited) is left out, and said so once."""
    rows, skipped = [], []
    for fp32 in sorted(out.glob("*/*/*/seed*/fp32/results.json")):
        bf16 = fp32.parent.parent / "bf16" / "results.json"
        if not bf16.is_file():
            continue
        protocol, model, target, seed = fp32.relative_to(out).parts[:4]
        try:
            a, b = (json.loads(p.read_text()) for p in (fp32, bf16))
            rows.append({"protocol": protocol, "model": model, "class": target, "seed": int(seed[4:]),
                         "fp32": float(a["best"]["test"]["auroc"]), "bf16": float(b["best"]["test"]["auroc"]),
                         "fp32_epoch": a["best"]["epoch"], "bf16_epoch": b["best"]["epoch"],
                         "fp32_train_img_per_s": train_rate(fp32.parent),
                         "bf16_train_img_per_s": train_rate(bf16.parent)})
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            skipped.append(fp32.parent.parent)
    if skipped:
        print(f"notice: {len(skipped)} pair(s) left out, their files incomplete or not a run's (the first: "
              f"{skipped[0]}); run the study again to train them", file=sys.stderr)
    return rows


def train_rate(run: Path) -> float:
    """Training images per second of the run's last epoch (metrics.csv)."""
    with open(run / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["train_img_per_s"])


def table(rows: list[dict]) -> str:
    """Per model, protocol and class: both precisions over seeds, the paired difference and the fp32 spread."""
    lines = ["| model | protocol | class | seeds | fp32 | bf16 | bf16 − fp32 (paired) | fp32 sd over seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        diffs, spreads = [], []
        for protocol in PROTOCOLS:
            for target in dict.fromkeys(r["class"] for r in rows):
                mine = [r for r in rows if (r["model"], r["protocol"], r["class"]) == (model, protocol, target)]
                if not mine:
                    continue
                a, b = [r["fp32"] for r in mine], [r["bf16"] for r in mine]
                d = [y - x for x, y in zip(a, b)]
                diffs += d
                spread = statistics.stdev(a) if len(a) > 1 else None  # one seed has no spread
                spreads += [spread] if spread is not None else []
                lines.append(f"| {model_label(model)} | {protocol} | {target} | {len(mine)} | {mean_sd(a)} | "
                             f"{mean_sd(b)} | {mean_sd(d)} | {'—' if spread is None else f'{spread:.3f}'} |")
        mean_spread = f"{statistics.mean(spreads):.3f} (mean)" if spreads else "—"
        lines.append(f"| **{model_label(model)}** | all | all | {len(diffs)} pairs | | | **{mean_sd(diffs)}** | "
                     f"{mean_spread} |")
    return "\n".join(lines)


def report(out: Path, publish: bool) -> None:
    """Print the table (and the pairs to OUT/pairs.csv); `publish`: into docs/benchmarks.md and results/ too."""
    rows = pairs(out)
    if not rows:
        raise UserError(f"no finished fp32/bf16 pairs under '{out}': run the study without --report first")
    write_text(out / "pairs.csv", rows_csv(rows))
    print(table(rows))
    if publish:
        write_text(CSV, rows_csv(rows))
        cpu = f"{hardware.cpu_name()} ({hardware.capability()})"
        replace_between(PAGE, BEGIN, END, f"_Generated by `python -m experiments.bf16_default --publish` from "
                        f"{len(rows)} fp32/bf16 pairs trained on {cpu}; test AUROC of the default score at the epoch "
                        f"chosen on validation; the pairs in `{CSV.relative_to(ROOT)}`._\n\n" + table(rows))
        print(f"published: {PAGE.relative_to(ROOT)}, {CSV.relative_to(ROOT)}")


def main(argv) -> int:
    parser = OneLineParser(prog="python -m experiments.bf16_default", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["skipganomaly", "ganomaly"])
    parser.add_argument("--protocols", nargs="+", choices=tuple(PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--classes", nargs="+", default=list(CLASSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="output/bf16_default")
    parser.add_argument("--report", action="store_true", help="only table the finished pairs")
    parser.add_argument("--publish", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise UserError(f"--models {unknown[0]} is not a model: choose from {', '.join(MODELS)}")
    check_seeds(args.seeds)
    names = class_names("fashion-mnist")
    classes = [names[resolve_class("fashion-mnist", c)] for c in args.classes]
    out = study_folder(args.out)
    if not args.report and not hardware.cpu_flags() & set(hardware.NATIVE_BF16):
        raise UserError(f"this CPU ({hardware.capability()}) has no native bf16 ({' or '.join(hardware.NATIVE_BF16)})"
                        ": run the study where bf16 is native, or only --report")
    failed = []
    for seed in [] if args.report else args.seeds:  # seed by seed: a stopped study still has whole seeds
        for protocol in args.protocols:
            for target in classes:
                for model in args.models:
                    for precision, flag in PRECISIONS.items():
                        name = run_name(protocol, model, target, seed, precision)
                        code = train_missing(out, name, [*BUDGET, "--model", model, PROTOCOLS[protocol], target,
                                                         "--niter", TRAINED_EPOCHS, "--manualseed", str(seed), flag])
                        if code in STOPPED:
                            return code
                        if code:
                            failed.append(name)
    report(out, args.publish)
    if failed:
        print(f"failed: {len(failed)} run(s), the first {failed[0]} (its error is above); run the same command "
              "again to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
