"""Tables of the Fashion-MNIST study: small files under results/ and the tables of docs/fmnist_study.md.

Reads the run folders `<out>/<variant>/<protocol>/<class>/seed<N>/results.json` written by
fmnist_study.py and the baseline CSVs beside the results; missing runs show as "—", so a
partial study still gives an honest partial table. A file that cannot be read (torn, not
UTF-8/16/32 text, a key missing or of the wrong type) is skipped with a one-line warning.
"""
import csv
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

from experiments.fmnist_setup import CURVE_CLASS, CURVE_EPOCHS, SCORE_WEIGHT, VARIANTS, slug
from lib.classes import class_names
from lib.files import rows_csv, write_text
from lib.runs.collect import UNREADABLE, read_json, read_text, shown, unreadable
from lib.scoring.functions import DEFAULT_WEIGHT

BEGIN, END = "<!-- fmnist-results:begin -->", "<!-- fmnist-results:end -->"
LITERATURE = "GEOM 93.5, Deep SAD 89.2 (mean AUROC, one-class protocol, as reported in their papers)"


def warn(where, err: Exception) -> None:
    print(f"warning: skipping {shown(where)}: {unreadable(err)}", file=sys.stderr)


def study_runs(out: Path, variants, curves: bool):
    """(variant, protocol, class, seed, run folder) of every finished study run under `out`:
    the learning-curve runs, or all the others."""
    label = {slug(v): v for v in variants}
    classes = {slug(c): c for c in class_names("fashion-mnist")}
    for path in sorted(out.glob("*/*/*/seed*/results.json")):
        run = path.parent
        variant, protocol, cls = run.parts[-4], run.parts[-3], run.parts[-2]
        if variant in label and cls in classes and (protocol == "curves") == curves:
            try:
                seed = int(run.name[4:])
            except ValueError:
                warn(run, ValueError("not a seed<N> folder"))
                continue
            yield label[variant], protocol, classes[cls], seed, run


def _number(value, name: str, optional: bool = False):
    """`value` when it is a finite number (or None, when optional); ValueError otherwise."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"its {name} is {shown(json.dumps(value))}, not a number")
    return value


# A score part's AUROC in results.json, under its name before lib/scoring named the measurements.
OLD_PART_NAMES = {"image_mse": "reconstruction", "feature_mse": "features"}


def part_auroc(metrics: dict, part: str, prefix: str = ""):
    """The AUROC of one part of the score in a split's metrics (None when not recorded); `prefix`:
    "test_" in a metrics.csv row, where every split's metrics share the row."""
    return metrics.get(f"{prefix}auroc_{part}", metrics.get(f"{prefix}auroc_{OLD_PART_NAMES[part]}"))


def _run_row(variant, protocol, cls, seed, run) -> dict | None:
    """A finished run's row; None for old runs, which record no AUROC of their score's parts.
    (GANomaly's score has one part, the codes' distance: its image and feature cells stay empty.)"""
    r = read_json(run / "results.json")
    if not isinstance(r, dict):
        raise TypeError("not a JSON object")
    best, test = r["best"], r["best"]["test"]
    image, feature = (part_auroc(test, name) for name in ("image_mse", "feature_mse"))
    if not any(key.startswith("auroc_") for key in test):
        return None
    return {"variant": variant, "protocol": protocol, "class": cls, "seed": seed,
            "epochs": r["epochs"], "best_epoch": best["epoch"],
            "val_auroc": _number(best["val"].get("auroc"), "val auroc", optional=True),
            "test_auroc": _number(test["auroc"], "test auroc"),
            "test_auroc_last": _number(r["last"]["test"]["auroc"], "last test auroc"),
            "test_auroc_optimistic": _number(r["best_on_test_optimistic"]["test"]["auroc"], "optimistic auroc"),
            "optimistic_epoch": r["best_on_test_optimistic"]["epoch"],
            "test_auroc_reconstruction": _number(image, "auroc_image_mse", True),
            "test_auroc_features": _number(feature, "auroc_feature_mse", True),
            "score_weight": _number(best["val"].get("score_weight", DEFAULT_WEIGHT), "score_weight"),
            "finished": _date(run / "results.json")}


def read_runs(out: Path, variants) -> list[dict]:
    """One row per finished run: its setting and its test AUROC under each model selection."""
    rows = []
    for variant, protocol, cls, seed, run in study_runs(out, variants, curves=False):
        try:
            row = _run_row(variant, protocol, cls, seed, run)
        except UNREADABLE as err:
            warn(run / "results.json", err)
            continue
        if row is not None:
            rows.append(row)
    return rows


def read_curves(out: Path, variants) -> list[dict]:
    """Per-epoch losses and AUROCs of the learning-curve runs; a run with an unreadable row is skipped whole."""
    rows = []
    for variant, protocol, cls, seed, run in study_runs(out, variants, curves=True):
        try:
            finished = _date(run / "results.json")
            rows += [{"variant": variant, "class": cls, "seed": seed, "epoch": int(r["epoch"]),
                      "g_con": float(r["g_con"]), "val_auroc": float(r["val_auroc"]),
                      "test_auroc": float(r["test_auroc"]),
                      # the report's column names; metrics.csv's, by part_auroc (old runs: old names)
                      "test_auroc_reconstruction": float(part_auroc(r, "image_mse", prefix="test_")),
                      "test_auroc_features": float(part_auroc(r, "feature_mse", prefix="test_")),
                      "finished": finished} for r in _csv_rows(run / "metrics.csv")]
        except UNREADABLE as err:
            warn(run / "metrics.csv", err)
    return rows


def _csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file; ValueError for a torn row (cells missing or in excess)."""
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    for line, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise ValueError(f"row {line - 1} is torn")
    return rows


def _date(path: Path) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(path.stat().st_mtime))


def _cell(text: str):
    """A CSV cell back to int, float or None."""
    if text in ("", "None"):
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def merge(fresh: list[dict], path: Path, key, numbers: dict[str, bool]) -> list[dict]:
    """`fresh` rows plus the rows of `path` (a committed CSV) that no fresh row replaces.

    So the report rebuilds from results/ alone on a clone that has no run folders. `numbers`:
    the columns that must hold a number, each with whether it may be empty; a row that breaks
    this, or whose key does not build, is skipped with a warning.
    """
    kept = {}
    if path.is_file():
        try:
            rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
        except UNREADABLE as err:
            warn(path, err)
            rows = []
        for line, row in enumerate(rows, 2):
            try:
                if None in row or None in row.values():
                    raise ValueError("a torn row")
                cells = {k: _cell(v) for k, v in row.items()}
                for name, optional in numbers.items():
                    _number(cells.get(name), name, optional)
                kept[key(cells)] = cells
            except UNREADABLE as err:
                warn(f"{path} line {line}", err)
    kept.update({key(r): r for r in fresh})
    return sorted(kept.values(), key=key)


def write_csv(path: Path, rows: list[dict]) -> None:
    if rows:
        write_text(path, rows_csv(rows))


BASELINES = {"pca": "PCA reconstruction", "knn": "5-NN distance"}


def read_baselines(results: Path) -> list[dict]:
    """The rows of every baselines_*.csv; a file with an unreadable row is skipped whole."""
    rows = []
    for path in sorted(results.glob("baselines_*.csv")):
        try:
            found = [{"variant": BASELINES[r["method"]], "protocol": r["protocol"], "class": r["class"],
                      "seed": 0, "test_auroc": _number(float(r["auroc"]), "auroc")} for r in _csv_rows(path)]
        except UNREADABLE as err:
            warn(path, err)
            continue
        rows += found
    return rows


def table(rows, protocol, key, labels) -> tuple[str, dict]:
    """Markdown table (rows = labels, columns = classes + mean) of seed-0 values, and the means."""
    classes = class_names("fashion-mnist")
    value = {(r["variant"], r["class"]): r[key] for r in rows
             if r["protocol"] == protocol and r["seed"] == 0 and r.get(key) is not None}
    lines = ["| Model | " + " | ".join(classes) + " | mean |", "|---" * (len(classes) + 2) + "|"]
    means = {}
    for label in labels:
        cells = [value.get((label, c)) for c in classes]
        if all(v is None for v in cells):
            continue
        done = [v for v in cells if v is not None]
        mean = statistics.fmean(done) if len(done) == len(classes) else None
        means[label] = mean
        lines.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells)
                     + f" | {'—' if mean is None else f'**{mean:.3f}**'} |")
    return "\n".join(lines), means


def seed_table(rows) -> str:
    groups = {}
    for r in rows:
        if r["protocol"] == "leave-one-out" and "test_auroc_last" in r:
            groups.setdefault((r["variant"], r["class"]), []).append(r["test_auroc"])
    lines = ["| Model | class | seeds | AUROC mean ± std | min – max |", "|---|---|---|---|---|"]
    for (variant, cls), values in sorted(groups.items()):
        if len(values) > 1:
            lines.append(f"| {variant} | {cls} | {len(values)} | {statistics.fmean(values):.3f} ± "
                         f"{statistics.stdev(values):.3f} | {min(values):.3f} – {max(values):.3f} |")
    return "\n".join(lines) if len(lines) > 2 else "_No repeated seeds finished yet._"


def parts_table(rows, variants) -> str:
    """Mean test AUROC over finished classes of the score and of each of its parts alone."""
    lines = ["| Model | protocol | classes | score | image MSE alone | "
             "feature MSE alone |", "|---|---|---|---|---|---|"]
    for protocol in ("leave-one-out", "one-class"):
        for variant in variants:
            done = [r for r in rows if r["variant"] == variant and r["protocol"] == protocol and r["seed"] == 0
                    and r.get("test_auroc_features") is not None]
            if done:
                mean = lambda key: statistics.fmean(r[key] for r in done)  # noqa: E731
                lines.append(f"| {variant} | {protocol} | {len(done)} | {mean('test_auroc'):.3f} | "
                             f"{mean('test_auroc_reconstruction'):.3f} | {mean('test_auroc_features'):.3f} |")
    return "\n".join(lines)


def weight_table(rows) -> str:
    """Each model with the fixed 0.9 weighting against the same model with the weight chosen on validation."""
    lines = ["| Model | protocol | classes | AUROC, w = 0.9 | AUROC, w chosen on validation | "
             "chosen w per class |", "|---|---|---|---|---|---|"]
    for chosen in SCORE_WEIGHT:
        fixed = chosen.split(" (")[0]
        for protocol in ("leave-one-out", "one-class"):
            by_class = {r["class"]: r for r in rows if r["variant"] == chosen and r["protocol"] == protocol
                        and r["seed"] == 0}
            base = {r["class"]: r["test_auroc"] for r in rows if r["variant"] == fixed
                    and r["protocol"] == protocol and r["seed"] == 0 and r["class"] in by_class}
            if by_class and len(base) == len(by_class):
                weights = ", ".join(f"{by_class[c]['score_weight']:g}" for c in class_names("fashion-mnist")
                                    if c in by_class)
                lines.append(f"| {fixed} | {protocol} | {len(by_class)} | {statistics.fmean(base.values()):.3f} | "
                             f"{statistics.fmean(r['test_auroc'] for r in by_class.values()):.3f} | {weights} |")
    return "\n".join(lines) if len(lines) > 2 else "_Not run yet._"


def curves_table(curves) -> str:
    """Rows = epochs; per model: val AUROC, test AUROC of the score, of image MSE and of feature MSE."""
    variants = list(dict.fromkeys(r["variant"] for r in curves))
    if not variants:
        return "_Not run yet._"
    value = {(r["variant"], r["epoch"]): r for r in curves}
    head = "| epoch | " + " | ".join(f"{v}: val / test (image, features)" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 1) + "|"]
    for epoch in sorted({r["epoch"] for r in curves}):
        cells = []
        for v in variants:
            r = value.get((v, epoch))
            cells.append("—" if r is None else f"{r['val_auroc']:.3f} / {r['test_auroc']:.3f} "
                         f"({r['test_auroc_reconstruction']:.3f}, {r['test_auroc_features']:.3f})")
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def losses_to_baselines(rows, protocol, gans, baselines) -> str:
    """Plain words: the classes where the best GAN is below the best baseline."""
    best = {}
    for r in rows:
        if r["protocol"] == protocol and r["seed"] == 0:
            kind = "gan" if r["variant"] in gans else "base" if r["variant"] in baselines else None
            if kind:
                best.setdefault((r["class"], kind), []).append((r["test_auroc"], r["variant"]))
    lost = []
    for cls in class_names("fashion-mnist"):
        if (cls, "gan") in best and (cls, "base") in best:
            gan, base = max(best[(cls, "gan")]), max(best[(cls, "base")])
            if gan[0] < base[0]:
                lost.append(f"{cls} ({gan[1]} {gan[0]:.3f} < {base[1]} {base[0]:.3f})")
    if not lost:
        return "On every finished class, the best GAN variant beats both baselines."
    return f"The best GAN variant loses to a baseline on {len(lost)} classes: " + "; ".join(lost) + "."


def write_report(out: Path, results: Path, page: Path | None, budget: str, flags: str) -> None:
    """Write results/ files; with `page` (docs/fmnist_study.md), replace its tables between the markers."""
    gans, base = list(VARIANTS), list(BASELINES.values())
    runs = merge(read_runs(out, VARIANTS), results / f"runs_{budget}.csv",
                 lambda r: (list(VARIANTS).index(r["variant"]), r["protocol"], r["class"], r["seed"]),
                 {"seed": False, "test_auroc": False, "test_auroc_last": False, "test_auroc_optimistic": False,
                  "val_auroc": True, "test_auroc_reconstruction": True, "test_auroc_features": True,
                  "score_weight": False})
    curves = merge(read_curves(out, VARIANTS), results / f"curves_{budget}.csv",
                   lambda r: (list(VARIANTS).index(r["variant"]), r["class"], r["seed"], r["epoch"]),
                   dict.fromkeys(("seed", "epoch", "val_auroc", "test_auroc", "test_auroc_reconstruction",
                                  "test_auroc_features"), False))
    write_csv(results / f"runs_{budget}.csv", runs)
    write_csv(results / f"curves_{budget}.csv", curves)
    baseline_rows = read_baselines(results)
    rows = runs + baseline_rows
    loo, loo_means = table(rows, "leave-one-out", "test_auroc", gans + base)
    opt_table, _ = table(runs, "leave-one-out", "test_auroc_optimistic", gans)
    one, one_means = table(rows, "one-class", "test_auroc", gans + base)
    # The date of the newest run, not of the report: rebuilding from results/ changes nothing.
    date = max((r["finished"] for r in runs + curves if r.get("finished")), default=time.strftime("%Y-%m-%d"))
    summary = {"budget": budget, "flags": flags, "date": date, "runs": len(runs),
               "leave_one_out_mean_auroc": loo_means, "one_class_mean_auroc": one_means}
    write_text(results / f"summary_{budget}.json", json.dumps(summary, indent=2) + "\n")
    section = f"""{BEGIN}
_Generated by `python -m experiments.fmnist_study --budget {budget}` (runs finished {date}) from
{len(runs)} finished GAN runs (files in `results/fmnist/`). Budget: `{flags}`, batch 64, Adam 2e-4,
Fashion-MNIST resized to the image size given. Test AUROC; the epoch is chosen on the validation
split, never on the test set. "—": not run yet._

**Leave-one-class-out** (the original's protocol: the named class is the anomaly):

{loo}

{losses_to_baselines(rows, "leave-one-out", gans, base)}

The same GAN runs with the epoch chosen on the test set, as the original did (optimistic):

{opt_table}

**What each part of the score contributes** (same runs and epochs; mean over the classes done):

{parts_table(runs, gans)}

**The score weight chosen on the validation split** (`--score_weight val`: at every evaluation the
weight w in 0, 0.05, …, 1 with the best validation AUROC; the test set is never looked at):

{weight_table(runs)}

**Learning curves** (the budget above but `--niter {CURVE_EPOCHS}`, `--abnormal_class {CURVE_CLASS}`: test AUROC of the
score and, in brackets, of its parts alone after each epoch; validation AUROC first):

{curves_table(curves)}

**Spread over seeds** (leave-one-class-out, seeds 0, 1, 2):

{seed_table(runs)}

**One-class protocol** (`--normal_class`: the named class is normal, the nine others abnormal).
For comparison with the literature: {LITERATURE}.

{one}

{losses_to_baselines(rows, "one-class", gans, base)}
{END}"""
    write_text(results / f"section_{budget}.md", section + "\n")
    text = page.read_text() if page else ""
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
        write_text(page, text)
    print(f"report: {shown(results)}{f', {shown(page)} updated' if BEGIN in text else ''} ({len(runs)} runs)")
