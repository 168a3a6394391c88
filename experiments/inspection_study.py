"""Do the maps localise? Image AUROC, pixel AUROC and PRO on the generated inspection categories.

    python -m experiments.inspection_study [--out output/inspection_study] [--seeds 0 1 2]
                                           [--models skipganomaly w_skipganomaly ganomaly] [--device cpu]
                                           [--niter 15] [--jobs 1] [--report] [--dataroot MVTEC_AD]

For every category of tools/make_textures.py (generated with seed 0 into OUT/data; with --dataroot, of
the MVTec AD copy there instead, every category unless --categories names some), model and seed:
the trained run, its untrained control (the same command with --niter 0) and a classical baseline,
a per-pixel Gaussian of the normal training images (map: the squared z-score of each pixel, averaged
over channels; image score: the map's maximum), smoothed with the σ chosen on the validation masks
as the runs choose theirs. Every number is the best-on-validation epoch's test metric; nothing is
chosen on the test set. Finished runs are kept, so the study resumes where it stopped.
"""
import json
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from experiments import check_own_run, check_seeds, finished, study_folder
from lib.data.mvtec import categories
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.models import MODELS
from tools.baselines import gaussian_baseline
from tools.make_textures import CATEGORIES, make_category

ROOT = Path(__file__).resolve().parent.parent
ISIZE = 32  # (the images are generated at 64: the runs read them as a user's data, resized)
BUDGET = ["--dataset", "mvtec", "--isize", str(ISIZE), "--nc", "3", "--ngf", "32", "--ndf", "32", "--nz", "64",
          "--batchsize", "32"]
METRICS = ("auroc", "pixel_auroc", "pro")


def runs(categories, models, seeds, niter):
    """(name, train.py arguments) of each run: a category's controls first (they are quick)."""
    for category in categories:
        for model in models:
            for seed in seeds:
                for kind, epochs in (("control", "0"), ("trained", str(niter))):
                    yield (f"{category}/{model}-{kind}/seed{seed}",
                           ["--category", category, "--model", model, "--niter", epochs, "--manualseed", str(seed)])


def train(name: str, args: list[str], out: Path, data: Path, device: str, verbose: bool) -> str | None:
    """Train one run unless it has finished; None, or the error's last line."""
    niter = int(args[args.index("--niter") + 1])
    if finished(out / "runs" / name, niter) and (out / "runs" / name / "train/weights/best.pt").is_file():
        return None
    command = [sys.executable, str(ROOT / "train.py"), *BUDGET, "--dataroot", str(data), *args,
               "--device", device, "--outf", str(out / "runs"), "--name", name, "--overwrite"]
    check_own_run(out / "runs" / name, command[2:command.index("--outf")])
    done = subprocess.run(command, capture_output=not verbose, text=True)
    return None if done.returncode == 0 else (done.stderr or "").strip().splitlines()[-1:] or ["failed"]


def best_test(path: Path) -> dict | None:
    """The best-on-validation epoch's test metrics, and the kind of map it chose on validation masks; None,
    with a notice naming the file, for a results.json that cannot be read as a run's."""
    from lib.scoring.located import map_kind

    try:
        results = json.loads(path.read_text())
        chosen = (results.get("threshold") or {}).get("map", {}).get("score")
        return {**{k: float(results["best"]["test"].get(k, float("nan"))) for k in METRICS},
                "map": map_kind(chosen) if chosen else "?"}
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as err:
        print(f"notice: left out {path}: not a finished run's results ({type(err).__name__}: {err})", file=sys.stderr)
        return None


def report(out: Path, data: Path, categories, models, seeds) -> str:
    """A markdown table: mean ± standard deviation over the seeds of each category and method."""
    from lib.data.datasets import load_split

    lines = ["| category | method | image AUROC | pixel AUROC | PRO | map chosen (runs) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for category in categories:
        found = {}
        for model in models:
            for kind in ("trained", "control"):
                paths = [out / "runs" / category / f"{model}-{kind}" / f"seed{seed}" / "results.json" for seed in seeds]
                rows = [row for row in (best_test(p) for p in paths if p.is_file()) if row is not None]
                found[f"{model} ({'untrained control' if kind == 'control' else 'trained'})"] = rows
        split = load_split("mvtec", str(data), isize=ISIZE, nc=3, category=category, log=lambda _: None)
        found["per-pixel Gaussian"] = [{**gaussian_baseline(split), "map": "z-score"}]  # no seed: the split is fixed
        for method, rows in found.items():
            cells = [f"{np.mean([r[k] for r in rows]):.3f} ± {np.std([r[k] for r in rows]):.3f}" if rows else "—"
                     for k in METRICS]
            maps = Counter(r["map"] for r in rows)
            cells.append(", ".join(f"{kind} {n}" for kind, n in sorted(maps.items())) or "—")
            lines.append(f"| {category} | {method} | {' | '.join(cells)} | {len(rows)} |")
    return "\n".join(lines) + "\n"


def main(argv):
    parser = OneLineParser(prog="python -m experiments.inspection_study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="output/inspection_study")
    parser.add_argument("--models", nargs="+", default=["skipganomaly", "w_skipganomaly", "ganomaly"])
    parser.add_argument("--categories", nargs="+", help="default: every one (the generated, or --dataroot's)")
    parser.add_argument("--dataroot", help="an MVTec AD copy (ROOT/<category>/train/good, ...) to study instead")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--niter", type=int, default=15, help="epochs of a trained run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--report", action="store_true", help="only table the finished runs")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    found = categories(Path(args.dataroot)) if args.dataroot else list(CATEGORIES)
    if args.dataroot and not found:
        raise UserError(f"--dataroot {args.dataroot} holds no category (a folder with train/good/): give the root "
                        "of an MVTec AD copy")
    args.categories = args.categories or found
    unknown = [m for m in args.models if m not in MODELS] + [c for c in args.categories if c not in found]
    if unknown:
        where = f"a category of {args.dataroot}" if args.dataroot else "a generated category"
        raise UserError(f"{unknown[0]} is neither a model ({', '.join(MODELS)}) nor {where} ({', '.join(found)})")
    if args.niter < 1 or args.jobs < 1:
        raise UserError("--niter and --jobs must be 1 or more")
    check_seeds(args.seeds)
    out = study_folder(args.out).resolve()
    data = Path(args.dataroot).resolve() if args.dataroot else out / "data"
    for category in [] if args.dataroot else CATEGORIES:
        if not (data / category).is_dir():
            make_category(data, category, seed=0, size=64, n_train=100, n_test=40)
    if not args.report:
        todo = list(runs(args.categories, args.models, args.seeds, args.niter))
        with ThreadPoolExecutor(args.jobs) as pool:
            failed = [(name, error) for (name, _), error in
                      zip(todo, pool.map(lambda run: train(*run, out, data, args.device, args.verbose), todo))
                      if error]
        for name, error in failed:
            print(f"failed: {name}: {error[0]}", file=sys.stderr)
    table = report(out, data, args.categories, args.models, args.seeds)
    write_text(out / "report.md", table)
    print(table + f"\n(also in {out / 'report.md'})")
    return 1 if not args.report and failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
