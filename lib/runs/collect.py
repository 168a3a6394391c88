"""Results tables of Skip-GANomaly, Skip-WGANomaly or GANomaly sweeps, as in the paper's README.

Owns: finding the run folders under an output folder (each holds results.json and opt.txt), naming
each run's setting (model plus the options that differ from the defaults, e.g. "no skip connections"),
and the table: one row per setting, one column per class, the mean over classes, and "± std" where
seeds repeat. A run whose files cannot be read (torn, not UTF-8/16/32 text, a key missing or of the
wrong type) is skipped with a one-line warning; a sweep is collected from the runs that remain.

Untrained controls (train.py --niter 0) get rows of their own, and each trained setting with a control
of the same settings a "− untrained control" row: the difference, seed by seed where both have the seed
(the same initial weights), else of the means. An inspection run's column is its category.
"""
import codecs
import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..classes import class_names, inspection_dataset
from ..errors import UserError
from ..models import model_label
from ..options.parser import defaults
from ..options.record import marked
from .folder import is_run_folder

SELECTIONS = {"best": "epoch chosen on validation", "last": "last epoch",
              "optimistic": "epoch chosen on test, optimistic"}
SELECTION_KEYS = {"best": "best", "last": "last", "optimistic": "best_on_test_optimistic"}
METRICS = ("auroc", "auprc", "f1", "eer", "pixel_auroc", "pro")  # the last two: inspection data's maps
# Options that name the run, its class, seed, machine or logging: they do not make a new setting.
NOT_A_SETTING = {"abnormal_class", "normal_class", "name", "outf", "dataroot", "manualseed", "device",
                 "gpu_ids", "ngpu", "workers", "display", "display_server", "display_port", "display_id",
                 "verbose", "print_freq", "save_image_freq", "save_test_images", "tune", "phase",
                 "load_weights", "resume", "iter", "path", "model", "dataset", "nc", "overwrite", "category"}
FOLDER_CLASS = "abnormal"  # the column of a folder dataset (0.normal / 1.abnormal) in the tables
VARIANT_LABELS = {("no_skip", "True"): "no skip connections", ("wgan", "clip"): "weight clipping"}
# What reading a damaged result file raises (UnicodeDecodeError is a ValueError; RecursionError: deep JSON).
UNREADABLE = (OSError, ValueError, KeyError, TypeError, RecursionError, csv.Error)


@dataclass
class Run:
    folder: Path
    dataset: str
    protocol: str  # "abnormal" (leave-one-class-out) or "normal" (one-class)
    target: str    # the class
    setting: str   # row label
    seed: object
    value: float
    base: str = ""  # the label without --niter: a trained setting and its control share it
    control: bool = False  # an untrained control (--niter 0)


@dataclass
class Table:
    dataset: str
    protocol: str
    classes: list[str]
    rows: dict[str, dict[str, list[tuple]]] = field(default_factory=dict)  # setting -> class -> [(seed, value)]


def shown(path) -> str:
    """A path (or any name) on one line: undecodable bytes as \\xNN, control characters escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else ascii(c)[1:-1] for c in str(path))


def check_writable(path, flag: str) -> None:
    """Refuse, before the work rather than after it, a file that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {shown(path)} is a folder: choose a file name")
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p == p.parent)
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {shown(path)}: cannot write in '{shown(folder)}' "
                        f"({'not a folder' if not folder.is_dir() else 'no permission'}): choose another {flag}")


def read_text(path: Path) -> str:
    """A text file in UTF-8, or in UTF-16/32 when it starts with their byte-order mark."""
    if not Path(path).is_file():
        raise ValueError("not a regular file")
    data = Path(path).read_bytes()
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
                       (codecs.BOM_UTF8, "utf-8-sig")):
        if data.startswith(bom):
            return data.decode(codec)
    return data.decode("utf-8")


def read_json(path: Path):
    """A JSON file in UTF-8, -16 or -32 (json tells them apart)."""
    if not Path(path).is_file():  # a folder, or a device that never ends
        raise ValueError("not a regular file")
    return json.loads(Path(path).read_bytes())


def unreadable(err: Exception) -> str:
    """Why a result file was skipped, in a few words on one line."""
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8, UTF-16 or UTF-32 text"
    if isinstance(err, json.JSONDecodeError):
        return f"torn or not JSON ({err.msg}, line {err.lineno} column {err.colno})"
    if isinstance(err, KeyError):
        return f"no {shown(err.args[0])!r} entry"
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    if isinstance(err, RecursionError):
        return "nested too deep"
    return shown(err)


def changed_options(opt_txt: Path) -> dict[str, str]:  # the options opt.txt marks as not their default, as text
    return marked(read_text(opt_txt).splitlines()) if opt_txt.is_file() else {}


def setting_label(model: str, changed: dict[str, str]) -> str:
    """'Skip-WGANomaly (no skip connections, w_con 25.0)': the model and what differs from defaults;
    an untrained control's ends 'untrained control' instead of naming --niter 0."""
    control = changed.get("niter") == "0"
    parts = [VARIANT_LABELS.get((key, value), f"{key} {value}") for key, value in sorted(changed.items())
             if key not in NOT_A_SETTING and not (control and key == "niter")]
    name = model_label(model)
    return (f"{name} ({', '.join(parts)})" if parts else name) + (", untrained control" if control else "")


def read_run(path: Path, metric: str, select: str) -> Run:
    """The run of one results.json (and the opt.txt beside it); an exception says what is wrong."""
    results = read_json(path)
    if not isinstance(results, dict):
        raise TypeError("not a JSON object")
    value = results[SELECTION_KEYS[select]]["test"][metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"its {select} test {metric} is {shown(json.dumps(value))}, not a number")
    if not 0 <= value <= 1:  # every metric here is a rate or an area in [0, 1]: an edited or foreign file
        raise ValueError(f"its {select} test {metric} is {value!r}, outside [0, 1]")
    one_class = results.get("normal_class") is not None
    target = results["normal_class" if one_class else "abnormal_class"]
    try:
        changed = changed_options(path.parent / "opt.txt")
    except (OSError, ValueError) as err:
        raise ValueError(f"its opt.txt: {unreadable(err)}") from err
    if target is None and isinstance(results.get("dataset"), str) and not class_names(results["dataset"]):
        # inspection data: its category (opt.txt's in older runs); a folder dataset: test/1.abnormal
        target = results.get("category") or changed.get("category") or FOLDER_CLASS
    for key, wanted, got in (("dataset", str, results["dataset"]), ("model", str, results["model"]),
                             ("class", (str, int), target)):
        if isinstance(got, bool) or not isinstance(got, wanted):
            raise TypeError(f"its {key} is {shown(json.dumps(got))}, not a name")
    niter = changed.get("niter", str(defaults()["niter"]))  # a stopped run is no result of its setting
    if isinstance(results.get("epochs"), int) and niter.isdigit() and results["epochs"] < int(niter):
        raise ValueError(f"stopped after epoch {results['epochs']} of {niter}: finish it with train.py --resume "
                         f"{shown(path.parent)}")
    base = setting_label(results["model"], {k: v for k, v in changed.items() if k != "niter"})
    return Run(path.parent, results["dataset"], "normal" if one_class else "abnormal", str(target),
               setting_label(results["model"], changed), results.get("seed"), float(value), base,
               changed.get("niter") == "0")


def find_runs(root, metric: str = "auroc", select: str = "best", warn=print) -> list[Run]:
    """Every run folder under `root` with a readable results.json; one warning for each other one."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no folder '{shown(root)}': give the --outf of the runs to collect")
    runs = []
    for path in sorted(root.rglob("results.json")):
        if path.parent.name == "test" and is_run_folder(path.parent.parent):  # a run's --phase test
            continue
        try:
            runs.append(read_run(path, metric, select))
        except UNREADABLE as err:
            warn(f"warning: skipping {shown(path)}: {unreadable(err)}")
    if not runs:
        raise UserError(f"no readable results.json with a test {metric} under '{shown(root)}': run train.py "
                        "or experiments/*.sh there first")
    return unique(runs, warn)


def unique(runs: list[Run], warn=print) -> list[Run]:
    """The runs but a second one of a setting, class and seed (a copied run folder: no second seed)."""
    first, kept = {}, []
    for run in runs:
        key = (run.dataset, run.protocol, run.setting, run.target, json.dumps(run.seed))
        if key in first:
            warn(f"warning: skipping {shown(run.folder)}: the same setting, class and seed as {shown(first[key])} "
                 "(a copy?); give each seed one run folder")
            continue
        first[key] = run.folder
        kept.append(run)
    return kept


def build_tables(runs: list[Run]) -> list[Table]:
    """One table per dataset and protocol; classes in the dataset's order."""
    tables: dict[tuple, Table] = {}
    for run in runs:
        table = tables.setdefault((run.dataset, run.protocol), Table(run.dataset, run.protocol, []))
        table.rows.setdefault(run.setting, {}).setdefault(run.target, []).append((run.seed, run.value))
    add_control_differences(tables, runs)
    for table in tables.values():
        present = {c for row in table.rows.values() for c in row}
        order = [c for c in class_names(table.dataset) if c in present]
        table.classes = order + sorted(present - set(order))
    return [tables[k] for k in sorted(tables)]


def add_control_differences(tables: dict[tuple, Table], runs: list[Run]) -> None:
    """A "− untrained control" row for each trained setting whose control was collected too."""
    controls = {(r.dataset, r.protocol, r.base): r.setting for r in runs if r.control}
    for (dataset, protocol), table in tables.items():
        for setting in [s for s in table.rows if not s.endswith("untrained control")]:
            base = next(r.base for r in runs if r.setting == setting)
            control = table.rows.get(controls.get((dataset, protocol, base)))
            if control is None:
                continue
            trained, diff = table.rows[setting], {}
            for target in trained.keys() & control.keys():
                by_seed = dict(control[target])
                paired = [(seed, value - by_seed[seed]) for seed, value in trained[target] if seed in by_seed]
                diff[target] = paired or [(None, statistics.fmean(v for _, v in trained[target])
                                           - statistics.fmean(v for _, v in control[target]))]
            table.rows[f"{setting} − untrained control"] = diff


def cell(samples: list[tuple] | None) -> tuple[float, float | None, int]:
    """(mean, std or None, count) of one class's runs."""
    values = [v for _, v in samples or ()]
    if not values:
        return math.nan, None, 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)


def row_mean(row: dict[str, list[tuple]], classes: list[str]) -> tuple[float, float | None]:
    """Mean over classes; its std over seeds when every class has the same number of runs."""
    present = [row[c] for c in classes if c in row]
    if not present:
        return math.nan, None
    mean = statistics.fmean(statistics.fmean(v for _, v in s) for s in present)
    counts = {len(s) for s in present}
    if len(counts) != 1 or counts == {1}:
        return mean, None
    # Replicate i is each class's i-th run in seed order: its mean over classes, then their spread.
    replicates = zip(*([v for _, v in sorted(s, key=lambda x: (str(x[0]), x[1]))] for s in present))
    return mean, statistics.stdev(statistics.fmean(r) for r in replicates)


def _fmt(mean: float, std: float | None) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def markdown(tables: list[Table], metric: str, select: str) -> str:
    out = []
    for t in tables:
        kind = "anomaly" if t.protocol == "abnormal" else "normal"
        column = "category" if inspection_dataset(t.dataset) else f"{kind} class"
        out.append(f"### {t.dataset}: test {metric} per {column} ({SELECTIONS[select]})\n")
        out.append("| Model | " + " | ".join(t.classes) + " | mean |")
        out.append("|" + "---|" * (len(t.classes) + 2))
        for setting, row in sorted(t.rows.items()):
            cells = [_fmt(*cell(row.get(c))[:2]) for c in t.classes]
            out.append(f"| **{setting}** | " + " | ".join(cells) + f" | {_fmt(*row_mean(row, t.classes))} |")
        out.append("")
    return "\n".join(out)


def csv_text(tables: list[Table], metric: str, select: str) -> str:
    """The same tables as CSV: one line per row, class means, then their std and run counts."""
    lines, columns = [], ["dataset", "protocol", "model", "metric", "selected"]
    for t in tables:
        for setting, row in sorted(t.rows.items()):
            line = {"dataset": t.dataset, "protocol": t.protocol, "model": setting, "metric": metric,
                    "selected": select}
            for c in t.classes:
                mean, std, n = cell(row.get(c))
                line.update({c: _num(mean), f"{c} std": _num(std), f"{c} runs": n})
            mean, std = row_mean(row, t.classes)
            line.update({"mean": _num(mean), "mean std": _num(std)})
            columns += [k for k in line if k not in columns]
            lines.append(line)
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return out.getvalue()


def _num(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def collect(root, metric="auroc", select="best", warn=lambda line: print(line, file=sys.stderr)):
    """(markdown, csv) of every run under `root`."""
    tables = build_tables(find_runs(root, metric, select, warn))
    return markdown(tables, metric, select), csv_text(tables, metric, select)
