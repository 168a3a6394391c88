"""When does training start to pay? Each candidate score's validation AUROC, epoch by epoch, against the
same score of the untrained control (train.py --niter 0).

    python -m experiments.learning_curves --class Shirt [--protocol one-class] [--model w_skipganomaly]
                                          [--epochs 15] [--isize 32] [--width 64] [--nz 100] [--seeds 0 1 2]
                                          [--out output/learning_curves]
    python -m experiments.learning_curves --class Shirt ... --report    # only table the finished runs

For each seed, one Fashion-MNIST run is trained for --epochs and its control is built with the same
flags and seed. Every epoch, the loop measures each candidate score's AUROC on the validation split
(metrics.csv's val_auroc_score_*), and the control measures the same scores once. So a score whose
validation AUROC rises above its control's is one the training gave skill to; one that stays level
was random features all along. Decisions read the validation split alone: "pays from epoch" is the
first epoch whose mean over seeds beats the control's by MARGIN; the test AUROC shown beside is that
of the score the run chose on validation at that epoch, as the run reports it.

Writes into --out/<protocol>-<class>-<model>-<budget>/: the runs, curves.csv (a row per score and
epoch, epoch 0 the control), curves.md and curves.png. Finished runs are kept: it resumes.
"""
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

from experiments import STOPPED, check_own_run, check_seeds, finished, run_to_end, study_folder
from experiments.ablation_report import mean_sd
from experiments.control_study import PROTOCOLS, ROOT, train_run
from experiments.epoch_speed import run as run_script
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import rows_csv, write_text
from lib.models import MODELS, model_label

MARGIN = 0.02  # the bar: training pays where it beats the control by this much
SCORE = "val_auroc_score_"


def budget_flags(args) -> list[str]:
    return ["--dataset", "fashion-mnist", "--nc", "1", "--isize", str(args.isize), "--ngf", str(args.width),
            "--ndf", str(args.width), "--nz", str(args.nz), "--device", "cpu", "--model", args.model,
            PROTOCOLS[args.protocol], args.target]


def runs(args) -> list[tuple[str, list[str]]]:
    """(run name, train.py arguments) for each seed: the control first (it is quick)."""
    found = []
    for seed in args.seeds:
        for kind, niter in (("control", 0), ("trained", args.epochs)):
            found.append((f"{kind}/seed{seed}", [*budget_flags(args), "--niter", str(niter),
                                                 "--manualseed", str(seed)]))
    return found


def resume_run(run: Path) -> int:
    print(f"{run.parent.name}/{run.name} (resumed)", flush=True)
    return run_to_end([sys.executable, str(ROOT / "train.py"), "--resume", str(run.resolve())], cwd=ROOT,
                      stdout=subprocess.DEVNULL)


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def curves(folder: Path, seeds: list[int], epochs: int) -> tuple[list[dict], list[int]]:
    """Rows (score, epoch, AUROC per seed) from the finished runs below `folder` (epoch 0: the control), and
    the seeds whose trained run and control are both finished."""
    done = [s for s in seeds if finished(folder / "control" / f"seed{s}", 0)
            and finished(folder / "trained" / f"seed{s}", epochs)]
    rows = {}
    for seed in done:
        history = [read_metrics(folder / "control" / f"seed{seed}" / "metrics.csv")[-1],
                   *read_metrics(folder / "trained" / f"seed{seed}" / "metrics.csv")]
        for epoch, row in enumerate(history):
            for key, value in row.items():
                if key.startswith(SCORE) or key == "test_auroc":
                    name = key[len(SCORE):] if key.startswith(SCORE) else "test AUROC of the chosen score"
                    rows.setdefault((name, epoch), {})[seed] = number(value)
    return [{"score": name, "epoch": epoch, **{f"seed{s}": v for s, v in values.items()}}
            for (name, epoch), values in sorted(rows.items())], done


def mean(row: dict) -> float:
    values = [v for k, v in row.items() if k.startswith("seed") and not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def summary(rows: list[dict], title: str) -> str:
    """A table: per score, the control, the trained run at its last epoch and at its best epoch (means over
    seeds, validation), and the first epoch at which it beats the control by MARGIN."""
    by_score = {}
    for row in rows:
        by_score.setdefault(row["score"], []).append(row)
    lines = [f"### {title}", "",
             f"Validation AUROC (mean ± sd over seeds). Epoch 0 is the untrained control; \"pays from\" is the "
             f"first epoch whose mean beats the control's by {MARGIN}.", "",
             "| score | control | last epoch | trained − control (last) | best epoch (its AUROC) | pays from |",
             "|---|---|---|---|---|---|"]
    for score, found in by_score.items():
        found.sort(key=lambda r: r["epoch"])
        control, trained = found[0], found[1:]
        if control["epoch"] != 0 or not trained:
            continue
        seeds = [k for k in control if k.startswith("seed")]
        last = trained[-1]
        gain = [last[s] - control[s] for s in seeds if s in last]
        best = max(trained, key=mean)
        pays = next((r["epoch"] for r in trained if mean(r) - mean(control) >= MARGIN), "never")
        at_best = f"{best['epoch']} ({mean(best):.3f})"
        if score.startswith("test"):  # reported, never a decision
            pays = at_best = "— (the test split decides nothing)"
        at_last = mean_sd([last[s] for s in seeds if s in last])
        lines.append(f"| {score} | {mean_sd([control[s] for s in seeds])} | {at_last} | {mean_sd(gain)} | {at_best} "
                     f"| {pays} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], title: str):
    """Each score's mean validation AUROC per epoch, from the untrained control at epoch 0."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    from lib.training.plots import _figure
    fig = _figure(9.0, 5.5)
    ax = fig.subplots()
    by_score = {}
    for row in rows:
        by_score.setdefault(row["score"], []).append(row)
    palette = colormaps["tab20"].colors
    for i, (score, found) in enumerate(by_score.items()):
        found.sort(key=lambda r: r["epoch"])
        test = score.startswith("test")
        ax.plot([r["epoch"] for r in found], [mean(r) for r in found], ":" if test else f"{'ov^s<>Dp'[i % 8]}-",
                color="black" if test else palette[i % len(palette)], label=score, ms=4, linewidth=2 if test else 1)
    ax.set(xlabel="epoch (0: the untrained control)", ylabel="AUROC (validation; dotted: test of the chosen score)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    return fig


def main(argv):
    parser = OneLineParser(prog="python -m experiments.learning_curves", description=__doc__.splitlines()[0])
    parser.add_argument("--class", dest="target", required=True, help="the Fashion-MNIST class (name or number)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="one-class")
    parser.add_argument("--model", default="w_skipganomaly")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--isize", type=int, default=32)
    parser.add_argument("--width", type=int, default=64, help="--ngf and --ndf")
    parser.add_argument("--nz", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="output/learning_curves")
    parser.add_argument("--report", action="store_true", help="only table the finished runs")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    check_seeds(args.seeds)
    if args.model not in MODELS:
        raise UserError(f"--model {args.model} is not a model: choose from {', '.join(MODELS)}")
    if not 1 <= args.epochs <= 1000:
        raise UserError(f"--epochs {args.epochs}: give 1 to 1000 (a curve needs epochs; the control is epoch 0)")
    args.target = class_names("fashion-mnist")[resolve_class("fashion-mnist", args.target)]
    out = study_folder(args.out)
    setting = (f"{args.protocol}-{args.target.replace('/', '-')}-{args.model}-"
               f"{args.isize}px-width{args.width}-nz{args.nz}-{args.epochs}epochs")
    folder = out / setting
    if not args.report:  # train.py's refusal now, before any run folder or minutes of training
        run_script("train.py", [str(ROOT / "train.py"), *runs(args)[-1][1], "--print_config"], cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    for name, flags in ([] if args.report else runs(args)):
        if finished(folder / name, int(flags[flags.index("--niter") + 1])):
            continue
        check_own_run(folder / name, flags)  # (train_run checks it too; a resume would continue another run)
        last = folder / name / "train" / "weights" / "last.pt"
        # A long run stopped part-way (a session's end) continues from its last checkpoint, bit for bit.
        code = resume_run(folder / name) if last.is_file() and "trained" in name else train_run(folder, name, flags)
        if code in STOPPED:
            return code
        if code != 0:
            raise SystemExit(f"error: run {folder / name} failed (its error is above); run the same command "
                             "again to retry it")
    rows, done = curves(folder, args.seeds, args.epochs)
    if not done:
        raise UserError(f"no finished pair of runs under '{folder}': run it without --report first")
    title = (f"{model_label(args.model)}, {args.protocol} {args.target}, {args.isize}x{args.isize}, width "
             f"{args.width}, nz {args.nz}, {args.epochs} epochs, seeds {', '.join(map(str, done))}")
    table = summary(rows, title)
    write_text(folder / "curves.csv", rows_csv(rows))
    write_text(folder / "curves.md", table)
    from lib.training.plots import save_figure
    save_figure(figure(rows, title), folder / "curves.png")
    print(table)
    print(f"outputs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
