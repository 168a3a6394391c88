"""Tables of the ablation (experiments/ablation.py) from its finished runs.

Writes results/ablation/runs.csv (one row per run and way of scoring) and the tables of
docs/original_ablation.md between its markers; the prose around them is written by hand.
"""
import statistics
from pathlib import Path

from lib.files import rows_csv, write_text
from lib.models import model_label

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "original_ablation.md"
BEGIN, END = "<!-- ablation-results:begin -->", "<!-- ablation-results:end -->"
DIFFERENCES = ROOT / "docs" / "original.md"  # its table of each fix's effect
EFFECTS_BEGIN, EFFECTS_END = "<!-- fix-effects:begin -->", "<!-- fix-effects:end -->"
NAMES = {model: model_label(model) for model in ("skipganomaly", "w_skipganomaly")}  # the ablated models
# Fixes the ablation does not turn, and why. The first two are on in every variant, so that
# the variants see the same images in the same order and round alike: they differ only in what
# they name (--original turns them off too).
NOT_ABLATED = {
    "own_data_order": "on in every variant: it changes which random order, not how the model learns",
    "bce_with_logits": "on in every variant: the same loss, rounded otherwise",
    "mnist_range": "concerns MNIST only",
    "score_on_validation": "every ablation run scores the original's way (--score original); "
                           "docs/score_study.md measures every score",
    "lr_schedule": "changes nothing at these settings (the lambda policy keeps the rate constant for the "
                   "first --niter epochs)",
}
# A lead smaller than this is float rounding: runs that train alike differ by about 1e-7.
AHEAD = 1e-4
WAYS = {"train_ordered": "training mode, file order (the original)", "train_shuffled": "training mode, shuffled",
        "eval": "eval mode (ours)"}


def own_way(fixes: str) -> str:
    """How a run scores by its own fixes: eval mode with the eval_mode_scoring fix, else as the original."""
    from lib.original import parse_fixes
    return "eval" if "eval_mode_scoring" in parse_fixes(fixes) else "train_ordered"


def default_variant(runs: list[dict], model: str) -> str:
    """The variant that trains as our default does: "our default" where some fix is off by default
    (experiments/ablation.py adds it then), else "all fixes"."""
    return "our default" if any(r["model"] == model and r["variant"] == "our default" for r in runs) else "all fixes"


def selected(run: dict, way: str, on: str) -> float:
    """Test AUROC scored `way` at the epoch chosen on `on` ('val' or 'test') scored the same way."""
    best = max(run["epochs"], key=lambda e: e[f"{on}_{way}"])
    return best[f"test_{way}"]


def mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def seed_means(runs: list[dict], value) -> list[float]:
    """Per seed, the mean over classes of `value(run)`: the spread shown is between seeds."""
    by_seed: dict[int, list[float]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], []).append(value(run))
    classes = {len(v) for v in by_seed.values()}
    # A seed that has not finished every class would bias the mean: only complete seeds count.
    complete = max(classes) if classes else 0
    return [statistics.mean(v) for v in by_seed.values() if len(v) == complete]


def batch_table(runs: list[dict]) -> str:
    """Last-epoch test AUROC of the original's runs scored three ways, beside our default run."""
    lines = ["| model | anomaly class | seeds | original, scored as the original | same weights, shuffled batches "
             "| same weights, eval mode | our default, eval mode |", "|---|---|---|---|---|---|---|"]
    for model in NAMES:
        classes = sorted({r["abnormal_class"] for r in runs if r["model"] == model})
        for cls in classes + ["mean over these classes"]:
            pick = lambda variant: [r for r in runs if r["model"] == model and r["variant"] == variant  # noqa: E731
                                    and (r["abnormal_class"] == cls or cls.startswith("mean"))]
            original, ours = pick("original"), pick(default_variant(runs, model))
            if not original and not ours:
                continue
            last = lambda run, way: run["epochs"][-1][f"test_{way}"]  # noqa: E731
            if cls.startswith("mean"):
                cells = [mean_sd(seed_means(original, lambda r, w=w: last(r, w))) for w in WAYS]
                cells.append(mean_sd(seed_means(ours, lambda r: last(r, "eval"))))
            else:
                cells = [mean_sd([last(r, w) for r in original]) for w in WAYS]
                cells.append(mean_sd([last(r, "eval") for r in ours]))
            seeds = len({r["seed"] for r in original + ours})
            lines.append(f"| {NAMES[model]} | {cls} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fixes_table(runs: list[dict], model: str) -> str:
    """Every variant's test AUROC, with the epoch chosen on validation and on the test set."""
    rows = []
    first = ("original", "our default", "all fixes")
    variants = sorted({r["variant"] for r in runs if r["model"] == model},
                      key=lambda v: (not v.startswith("original"), v not in first, v))
    for variant in variants:
        chosen = [r for r in runs if r["model"] == model and r["variant"] == variant]
        way = own_way(chosen[0]["fixes"])
        rows.append((variant, chosen, way))
        # The scoring fix costs no training: the same runs scored the other way.
        if variant == "original":
            rows.append(("original + eval_mode_scoring", chosen, "eval"))
        if variant == "all fixes":
            rows.append(("all fixes - eval_mode_scoring", chosen, "train_ordered"))
    lines = ["| variant | scored | runs | test AUROC, epoch chosen on validation | "
             "epoch chosen on the test set (the original) |", "|---|---|---|---|---|"]
    for variant, chosen, way in rows:
        cells = [mean_sd(seed_means(chosen, lambda r, on=on: selected(r, way, on))) for on in ("val", "test")]
        mode = "eval mode" if way == "eval" else "training mode"
        lines.append(f"| {variant} | {mode} | {len(chosen)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def paired(runs: list[dict], model: str, base: str, other: str) -> list[tuple[dict, dict]]:
    """(run of variant `base`, run of variant `other`) with the same class and seed."""
    first = {(r["abnormal_class"], r["seed"]): r for r in runs if r["model"] == model and r["variant"] == base}
    return [(first[key], r) for r in runs if r["model"] == model and r["variant"] == other
            and (key := (r["abnormal_class"], r["seed"])) in first]


def signed(text: str) -> str:
    """'+0.010 ± 0.034' for a mean that is not negative ('+0.000', never '-0.000')."""
    if text.startswith("-") and float(text.split()[0]) == 0:
        text = text[1:]
    return text if text.startswith(("-", "—")) else f"+{text}"


def effect(runs: list[dict], model: str, name: str, on_original: bool = False) -> str:
    """What the original's way of fix `name` does to honest test AUROC (validation-selected epoch,
    eval mode), as mean ± sd between seeds of the per-seed difference, positive when the original's
    way scores higher: undone from our default, or (`on_original`) the original against the
    original with that fix. '—' before the runs exist."""
    if name in ("eval_mode_scoring", "validation_selection"):  # no training: the same runs, read otherwise
        variant = "original" if on_original else "all fixes"
        same = [(r, r) for r in runs if r["model"] == model and r["variant"] == variant]
        if name == "eval_mode_scoring":  # fix on: eval mode; off: training mode over ordered batches
            pairs = [(fixed, off, "train_ordered", "val") for fixed, off in same]
        else:  # fix on: the epoch chosen on validation; off: on the test set
            pairs = [(fixed, off, "eval", "test") for fixed, off in same]
    elif on_original:
        pairs = [(fixed, off, "eval", "val") for off, fixed in paired(runs, model, "original", f"original + {name}")]
    else:
        pairs = [(fixed, off, "eval", "val") for fixed, off in paired(runs, model, "all fixes", f"all fixes - {name}")]
    if not pairs:
        return "—"
    differences = [{"seed": fixed["seed"], "value": selected(off, way, on) - selected(fixed, "eval", "val")}
                   for fixed, off, way, on in pairs]
    return signed(mean_sd(seed_means(differences, lambda d: d["value"])))


def effects_table(runs: list[dict]) -> str:
    """One row per fix that changes numbers: what the original does, and the measured effect of its
    way (test AUROC, positive: the original's way scores higher), from our default and on the original."""
    from lib.original import FIXES
    header = [f"{NAMES[m]}: {where}" for m in NAMES for where in ("undone from all fixes", "on the original")]
    lines = ["| fix | the original | here | by default | " + " | ".join(header) + " |",
             "|---|---|---|---|" + "---|" * len(header)]
    for name, fix in FIXES.items():
        if not fix.numbers:
            continue
        cells = [("not ablated" if name in NOT_ABLATED else effect(runs, model, name, on_original))
                 if fix.concerns(model) else "n/a" for model in NAMES for on_original in (False, True)]
        default = f"off: {fix.reverted}" if fix.reverted else "on"
        lines.append(f"| `{name}` | {fix.original} | {fix.ours} | {default} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def honest_table(runs: list[dict]) -> str:
    """Our default against the original, both scored honestly (eval mode, epoch chosen on validation),
    on the runs that share class and seed."""
    lines = ["| model | runs | seeds | the original | our default | ours minus the original (between seeds) "
             f"| runs where the original is ahead by more than {AHEAD:g} |", "|---|---|---|---|---|---|---|"]
    for model in NAMES:
        pairs = paired(runs, model, "original", default_variant(runs, model))
        if not pairs:
            continue
        honest = lambda r: selected(r, "eval", "val")  # noqa: E731
        differences = [{"seed": o["seed"], "value": honest(ours) - honest(o)} for o, ours in pairs]
        ahead = sum(d["value"] < -AHEAD for d in differences)
        seeds = len({d["seed"] for d in differences})
        cells = [str(len(pairs)), str(seeds), mean_sd(seed_means([o for o, _ in pairs], honest)),
                 mean_sd(seed_means([x for _, x in pairs], honest)),
                 signed(mean_sd(seed_means(differences, lambda d: d["value"]))), f"{ahead} of {len(pairs)}"]
        lines.append(f"| {NAMES[model]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        for way in WAYS:
            last = run["epochs"][-1]
            if f"test_{way}" not in last:
                continue
            rows.append({"model": run["model"], "variant": run["variant"], "fixes": run["fixes"],
                         "abnormal_class": run["abnormal_class"], "seed": run["seed"], "scored": way,
                         "test_auroc_last": last[f"test_{way}"],
                         "test_auroc_val_selected": selected(run, way, "val") if way != "train_shuffled" else "",
                         "test_auroc_test_selected": selected(run, way, "test") if way != "train_shuffled" else "",
                         "seconds": run["seconds"]})
    return rows


def replace_between(path: Path, begin: str, end: str, body: str) -> None:
    text = path.read_text()
    head, rest = text.split(begin, 1)
    write_text(path, head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1])


def write_report(runs: list[dict], page: Path, csv: Path, differences: Path | None = None) -> Path:
    """Write the CSV, the page's tables and (`differences`) docs/original.md's table of effects; returns the page."""
    write_text(csv, rows_csv(csv_rows(runs)))
    budget = " ".join(runs[0]["budget"]) if runs else "—"
    section = [BEGIN, f"_Generated by `python -m experiments.ablation` from {len(runs)} finished runs "
               f"(`results/ablation/`). Budget: `{budget}`, {runs[0]['train_images'] if runs else '—'} normal "
               "training images. Mean ± standard deviation between seeds of the mean over classes._", "",
               "### The same weights scored three ways", "", batch_table(runs), ""]
    for model in NAMES:
        if any(r["model"] == model for r in runs):
            section += [f"### Each fix, {NAMES[model]}", "", fixes_table(runs, model), ""]
    section += ["### Our default against the original, both scored honestly", "",
                "Eval mode, the epoch chosen on the validation split, the networks as training left them.", "",
                honest_table(runs), "",
                "### What the original's way of each fix changes", "",
                "Test AUROC with the original's way minus with the fix (epoch chosen on validation, eval mode; "
                "positive: the original's way scores higher). Undone from all fixes: every fix but that one "
                "against every fix. On the original: the original against the original with that fix alone.",
                "", effects_table(runs), ""]
    if not page.is_file():
        write_text(page, f"# What each fix changes\n\n{BEGIN}\n{END}\n")
    replace_between(page, BEGIN, END, "\n".join(section[1:]))
    if differences is not None:
        replace_between(differences, EFFECTS_BEGIN, EFFECTS_END, effects_table(runs))
    return page
