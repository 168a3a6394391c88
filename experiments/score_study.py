"""Every score on the Fashion-MNIST study's runs: which one finds the anomalies.

    python -m experiments.score_study             # train what is missing, score every run, report
    python -m experiments.score_study --report    # only rebuild the tables from scored runs

Skip-GANomaly, Skip-WGANomaly and GANomaly with their default flags, both protocols, the ten
classes, seed 0, at the Fashion-MNIST study's CPU budget (experiments/fmnist_setup.py), trained
into that study's run folders (a run it already has is reused). Each run's selected epoch
(best.pt, chosen on the validation split) is then scored with every score the model can measure
(lib/scoring), each fitted on normal images only: the validation and test AUROC of each, kept in
the run's scores.json. The headline is, per run, the score with the best validation AUROC:
the test set chooses nothing. The baselines are the study's, on the same splits.

The committed results/fmnist/scores_cpu.csv and docs/score_study.md are rebuilt only from the
default --out (another folder's report needs --results and --page elsewhere), keeping the rows of
the runs that folder lacks; with no scored run there the report is refused and nothing is written.
"""
import csv
import io
import json
import statistics
import sys
from pathlib import Path

from experiments.fmnist_setup import BUDGETS, slug
from experiments.fmnist_study import RESULTS, train
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import rows_csv, write_text
from lib.runs.collect import UNREADABLE, check_writable, read_json, read_text, shown, unreadable

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "score_study.md"
BEGIN, END = "<!-- score-study:begin -->", "<!-- score-study:end -->"
MODELS = ["Skip-GANomaly", "Skip-WGANomaly", "GANomaly"]
PROTOCOLS = ("one-class", "leave-one-out")
BUDGET = "cpu"


def score_run(run: Path) -> dict:
    """{score: {"val": AUROC, "test": AUROC}} of the run's best.pt, every score fitted on normal images."""
    import torch

    from lib.predict.score import load_model
    from lib.runs.setup import build_evaluation
    from lib.scoring.evaluate import Scores, fit_all, measure, scores_of
    from lib.scoring.functions import needs
    from lib.scoring.metrics import roc_auc
    from lib.scoring.policy import ScorePolicy, score_policy

    device = torch.device("cpu")
    model, ckpt, opt = load_model(run, device)
    _, split, _ = build_evaluation(opt, ckpt, log=lambda *_: None)
    names = ScorePolicy("val").candidates(model.measurements)
    wanted = needs(names)
    val = Scores(split.val_labels.numpy(), measure(model, split.val_images, opt.batchsize, device, wanted))
    test = measure(model, split.test_images, opt.batchsize, device, wanted)
    weight = score_policy(opt, type(model)).weight
    fitted = fit_all(model, names, val, split.train, opt.batchsize, device, "auroc", weight)
    return {name: {"val": roc_auc(val.labels, scores_of(s, val.parts)),
                   "test": roc_auc(split.test_labels.numpy(), scores_of(s, test))} for name, s in fitted.items()}


def scored(run: Path) -> dict | None:
    """The run's scores.json (made now if missing); None while the run is unfinished."""
    path = run / "scores.json"
    if not (run / "train" / "weights" / "best.pt").is_file():
        return None
    try:
        return read_json(path)["scores"]
    except UNREADABLE:
        pass
    result = {"epoch": read_json(run / "results.json")["best"]["epoch"], "scores": score_run(run)}
    write_text(path, json.dumps(result, indent=1) + "\n")
    return result["scores"]


def read_scored(run: Path) -> dict | None:
    """The run's scores.json as it is (--report scores nothing); None, with a warning, when unreadable."""
    path = run / "scores.json"
    if not path.is_file():
        return None
    try:
        return read_json(path)["scores"]
    except UNREADABLE as err:
        print(f"warning: skipping {shown(path)}: {unreadable(err)}", file=sys.stderr)
        return None


def rows(out: Path, score_missing: bool) -> list[dict]:
    """One row per (model, protocol, class, score) of every scored run."""
    found = []
    for model in MODELS:
        for protocol in PROTOCOLS:
            for cls in class_names("fashion-mnist"):
                run = out / slug(model) / protocol / slug(cls) / "seed0"
                scores = scored(run) if score_missing else read_scored(run)
                if not scores:
                    continue
                chosen = max(scores, key=lambda name: scores[name]["val"])  # ties: the first, the original's
                found += [{"model": model, "protocol": protocol, "class": cls, "score": name,
                           "val_auroc": v["val"], "test_auroc": v["test"], "chosen_on_validation": name == chosen}
                          for name, v in scores.items()]
    return found


def mean(values) -> str:
    values = list(values)
    return f"{statistics.mean(values):.3f}" if values else "—"


def tables(found: list[dict], baselines: dict) -> str:
    """The headline (the validation-chosen score beside the original's, the model's own and the
    baselines), then every score's mean test AUROC, then the chosen score per class."""
    columns = [(m, p) for m in MODELS for p in PROTOCOLS if any(r["model"] == m and r["protocol"] == p for r in found)]
    pick = lambda m, p, **k: [r for r in found if r["model"] == m and r["protocol"] == p  # noqa: E731
                              and all(r[key] == v for key, v in k.items())]
    own = {"Skip-GANomaly": "original", "Skip-WGANomaly": "original", "GANomaly": "latent"}
    lines = ["| model | protocol | classes | chosen on validation | the original's score | the model's own score "
             "| PCA | 5-NN | classes below 0.5 (chosen) |", "|---|---|---|---|---|---|---|---|---|"]
    for m, p in columns:
        chosen = pick(m, p, chosen_on_validation=True)
        classes = {r["class"] for r in chosen}
        base = [mean(v for (proto, cls, method), v in baselines.items() if proto == p and method == name
                     and cls in classes) for name in ("pca", "knn")]
        below = sorted(r["class"] for r in chosen if r["test_auroc"] < 0.5)
        lines.append(f"| {m} | {p} | {len(classes)} | {mean(r['test_auroc'] for r in chosen)} | "
                     f"{mean(r['test_auroc'] for r in pick(m, p, score='original'))} | "
                     f"{mean(r['test_auroc'] for r in pick(m, p, score=own[m]))} | {base[0]} | {base[1]} | "
                     f"{', '.join(below) or 'none'} |")
    scores = list(dict.fromkeys(r["score"] for r in found))
    lines += ["", "Every score, mean test AUROC over the classes (how often validation chose it):", "",
              "| score | " + " | ".join(f"{m}, {p}" for m, p in columns) + " |", "|---|" + "---|" * len(columns)]
    for name in scores:
        cells = [f"{mean(r['test_auroc'] for r in pick(m, p, score=name))} "
                 f"({sum(r['chosen_on_validation'] for r in pick(m, p, score=name))})"
                 if pick(m, p, score=name) else "—" for m, p in columns]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "The score chosen on validation, per class (test AUROC):", "",
              "| class | " + " | ".join(f"{m}, {p}" for m, p in columns) + " |", "|---|" + "---|" * len(columns)]
    for cls in class_names("fashion-mnist"):
        cells = [next((f"{r['test_auroc']:.3f} `{r['score']}`" for r in pick(m, p, chosen_on_validation=True)
                       if r["class"] == cls), "—") for m, p in columns]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_baselines(results: Path) -> dict:
    """(protocol, class, method) -> test AUROC of the study's PCA and 5-NN baselines."""
    found = {}
    for protocol in PROTOCOLS:
        path = results / f"baselines_{protocol}.csv"
        if path.is_file():
            for r in csv.DictReader(io.StringIO(read_text(path))):
                found[(protocol, r["class"], r["method"])] = float(r["auroc"])
    return found


def run_key(row: dict) -> tuple:
    """A row's run, in the order the report lists runs."""
    return (MODELS.index(row["model"]), PROTOCOLS.index(row["protocol"]),
            class_names("fashion-mnist").index(row["class"]))


def merged(fresh: list[dict], path: Path) -> list[dict]:
    """`fresh` rows plus the rows of `path` (the last report's CSV) of the runs `fresh` lacks, so that a
    folder holding fewer scored runs (a checkout that scored one class) never shrinks the tables."""
    if not path.is_file():
        return fresh
    try:
        old = [{**r, "val_auroc": float(r["val_auroc"]), "test_auroc": float(r["test_auroc"]),
                "chosen_on_validation": {"True": True, "False": False}[r["chosen_on_validation"]]}
               for r in csv.DictReader(io.StringIO(read_text(path), newline=""))]
        done = {run_key(r) for r in fresh}
        kept = [r for r in old if run_key(r) not in done]
    except UNREADABLE as err:
        raise UserError(f"--results: {shown(path)} is unreadable ({unreadable(err)}) and would be replaced by a "
                        "report that lacks its runs: restore it from git, or move it away to start anew") from err
    return sorted(kept + fresh, key=run_key)  # stable: a run's scores keep their order (ties: the first)


def page_text(page: Path) -> str:
    """The page whose tables are rebuilt (a new one when there is none), refused unless it has the
    markers the tables go between: without them the report cannot tell the tables from the prose."""
    if not page.exists():
        return f"# Which score finds the anomalies\n\n{BEGIN}\n{END}\n"
    try:
        text = read_text(page)
    except UNREADABLE as err:
        raise UserError(f"--page {shown(page)}: {unreadable(err)}: give the Markdown page of the tables") from err
    if END not in text.partition(BEGIN)[2]:
        raise UserError(f"--page {shown(page)} lacks the lines {BEGIN} and then {END}, between which the report "
                        "writes its tables: add them where the tables go, or give another --page")
    return text


def default_out() -> Path:
    return ROOT / "output" / f"fmnist_study_{BUDGET}"


def check_places(out: Path, results: Path, page: Path) -> None:
    """Refuse, before anything is trained or written, the places the report cannot use. The committed
    results/ and docs/ files are rebuilt only from the study's own folder, as experiments.fmnist_study
    does: another folder (a scratch one, an empty one) must not rewrite them."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {shown(out)} is a file: give the folder of the study's runs")
    committed = [f"{flag} {shown(path)}" for flag, path, default in (("--results", results, RESULTS),
                                                                   ("--page", page, PAGE))
                 if path.resolve() == default.resolve()]
    if committed and out.resolve() != default_out().resolve():
        raise UserError(f"--out {shown(out)} is not the study's folder ({shown(default_out())}), and the committed "
                        f"{' and '.join(committed)} are rebuilt only from that one: give "
                        f"{' and '.join(c.split()[0] for c in committed)} elsewhere for this folder's report")
    check_writable(results / f"scores_{BUDGET}.csv", "--results")
    check_writable(page, "--page")
    page_text(page)


def report(out: Path, results: Path, page: Path, score_missing: bool) -> None:
    """Rebuild the CSV and the page's tables; refused, with both left as they are, without a scored run."""
    fresh = rows(out, score_missing)
    if not fresh:
        raise UserError(f"--out {shown(out)} holds no scored runs: nothing to report (the tables are left as they "
                        "are); run python -m experiments.score_study without --report to train and score them, "
                        "or give --out the folder of the study's runs")
    found = merged(fresh, results / f"scores_{BUDGET}.csv")
    runs = len({(r["model"], r["protocol"], r["class"]) for r in found})
    body = (f"_Generated by `python -m experiments.score_study` from {runs} scored runs. "
            f"Budget: `{' '.join(BUDGETS[BUDGET])}`, seed 0._\n\n" + tables(found, read_baselines(results)))
    head, _, rest = page_text(page).partition(BEGIN)
    write_text(results / f"scores_{BUDGET}.csv", rows_csv(found))
    write_text(page, head + BEGIN + "\n" + body + "\n" + END + rest.split(END, 1)[1])
    print(f"report: {shown(results / f'scores_{BUDGET}.csv')}, {shown(page)} ({len(found)} rows)")


def main(argv) -> None:
    p = OneLineParser(prog="python -m experiments.score_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(default_out()), help="the study's run folders")
    p.add_argument("--results", default=str(RESULTS), help="where scores_cpu.csv goes (the committed one is "
                   "rebuilt only from the default --out, so another folder cannot empty it)")
    p.add_argument("--page", default=str(PAGE), help="the page whose tables are rebuilt (as --results)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, among " + ", ".join(MODELS))
    p.add_argument("--classes", default=None, help="comma-separated class names (default: all ten)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, among " + ", ".join(PROTOCOLS))
    p.add_argument("--report", action="store_true", help="only rebuild the tables from scored runs")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    args = p.parse_args(argv)
    out, results, page = Path(args.out), Path(args.results), Path(args.page)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(MODELS):
        raise UserError(f"--models {args.models!r}: give some of {', '.join(MODELS)}, separated by commas")
    protocols = [x.strip() for x in args.protocols.split(",") if x.strip()]
    if not protocols or set(protocols) - set(PROTOCOLS):
        raise UserError(f"--protocols {args.protocols!r}: give some of {', '.join(PROTOCOLS)}, separated by commas")
    names = class_names("fashion-mnist")
    classes = [names[resolve_class("fashion-mnist", c)] for c in args.classes.split(",")] if args.classes else names
    check_places(out, results, page)
    if not args.report:
        for protocol in protocols:
            for model in models:
                for cls in classes:
                    train(out, BUDGET, model, protocol, cls, 0)
                    scored(out / slug(model) / protocol / slug(cls) / "seed0")
    report(out, results, page, score_missing=not args.report)


if __name__ == "__main__":
    sys.exit(run_cli(main))
