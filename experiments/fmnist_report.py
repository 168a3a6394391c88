"""Tables of the Fashion-MNIST study: small files under results/ and the README's results section.

Reads the run folders `<out>/<variant>/<protocol>/<class>/seed<N>/results.json` written by
fmnist_study.py and the baseline CSVs beside the results; missing runs show as "—", so a
partial study still gives an honest partial table.
"""
import csv
import io
import json
import statistics
import time
from pathlib import Path

from lib.data import class_names

BEGIN, END = "<!-- fmnist-results:begin -->", "<!-- fmnist-results:end -->"
LITERATURE = "GEOM 93.5, Deep SAD 89.2 (mean AUROC, one-class protocol, as reported in their papers)"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def read_runs(out: Path, variants) -> list[dict]:
    """One row per finished run: its setting and its test AUROC under each model selection."""
    label = {slug(v): v for v in variants}
    classes = {slug(c): c for c in class_names("fashion-mnist")}
    rows = []
    for path in sorted(out.glob("*/*/*/seed*/results.json")):
        run = path.parent
        r = json.loads(path.read_text())
        variant, protocol, cls = run.parts[-4], run.parts[-3], run.parts[-2]
        if variant not in label or cls not in classes or "auroc_reconstruction" not in r["best"]["test"]:
            continue  # not a study run, or one from before the study recorded the score parts
        rows.append({"variant": label[variant], "protocol": protocol, "class": classes[cls],
                     "seed": int(run.name[4:]), "epochs": r["epochs"], "best_epoch": r["best"]["epoch"],
                     "val_auroc": r["best"]["val"].get("auroc"), "test_auroc": r["best"]["test"]["auroc"],
                     "test_auroc_last": r["last"]["test"]["auroc"],
                     "test_auroc_optimistic": r["best_on_test_optimistic"]["test"]["auroc"],
                     "optimistic_epoch": r["best_on_test_optimistic"]["epoch"],
                     "test_auroc_reconstruction": r["best"]["test"].get("auroc_reconstruction"),
                     "test_auroc_features": r["best"]["test"].get("auroc_features")})
    return rows


def read_baselines(results: Path) -> list[dict]:
    rows = []
    for path in sorted(results.glob("baselines_*.csv")):
        with open(path) as f:
            for r in csv.DictReader(f):
                rows.append({"variant": {"pca": "PCA reconstruction", "knn": "5-NN distance"}[r["method"]],
                             "protocol": r["protocol"], "class": r["class"], "seed": 0,
                             "test_auroc": float(r["auroc"])})
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
    lines = ["| Model | protocol | classes | score (0.9·image + 0.1·features) | image MSE alone | "
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


def write_report(out: Path, results: Path, readme: Path | None, budget: str, flags: str) -> None:
    """Write results/ files; with `readme`, replace its section between the markers."""
    from fmnist_study import VARIANTS  # the study script owns the list of variants
    gans, base = list(VARIANTS), ["PCA reconstruction", "5-NN distance"]
    runs, baseline_rows = read_runs(out, VARIANTS), read_baselines(results)
    if runs:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, list(runs[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(runs)
        (results / f"runs_{budget}.csv").write_text(buf.getvalue())
    rows = runs + baseline_rows
    loo, loo_means = table(rows, "leave-one-out", "test_auroc", gans + base)
    opt_table, _ = table(runs, "leave-one-out", "test_auroc_optimistic", gans)
    one, one_means = table(rows, "one-class", "test_auroc", gans + base)
    summary = {"budget": budget, "flags": flags, "date": time.strftime("%Y-%m-%d"), "runs": len(runs),
               "leave_one_out_mean_auroc": loo_means, "one_class_mean_auroc": one_means}
    (results / f"summary_{budget}.json").write_text(json.dumps(summary, indent=2) + "\n")
    section = f"""{BEGIN}
_Generated by `python experiments/fmnist_study.py --budget {budget}` on {summary['date']} from
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

**Spread over seeds** (leave-one-class-out, seeds 0, 1, 2):

{seed_table(runs)}

**One-class protocol** (`--normal_class`: the named class is normal, the nine others abnormal).
For comparison with the literature: {LITERATURE}.

{one}

{losses_to_baselines(rows, "one-class", gans, base)}
{END}"""
    (results / f"section_{budget}.md").write_text(section + "\n")
    text = readme.read_text() if readme else ""
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
        readme.write_text(text)
    print(f"report: {results}{', README section updated' if text else ''} ({len(runs)} runs)")
