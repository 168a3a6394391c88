"""GANomaly here against anomalib's, on identical Fashion-MNIST data: test AUROC of the last epoch.

    python -m experiments.anomalib_crosscheck --anomalib-python /work/anomalib-venv/bin/python \\
        --classes "T-shirt/top,Bag" --train_images 12000 --niter 1 --seeds 0,1,2 \\
        --out results/anomalib_crosscheck/

anomalib is never a dependency of this project: its Ganomaly runs in an environment of its own,
whose Python --anomalib-python names (tools/anomalib_runner.py; docs/ganomaly.md says how to make
one). Both read the same PNG folder dataset (experiments.compare_original's: a seeded sample of
--train_images normal training images, every test image of the nine normal classes, then every
image of the abnormal class), train --niter epochs at the same batch size, image size and widths
from the same seed, and report the test AUROC of their last epoch; ours with --val_ratio 0, so
both test on the whole test set. Every finished run is kept in OUT/results/ and reused, and the
table is written to OUT/table.md.

--undo adds runs of anomalib's model with one of its differences from the paper undone each
(tools/anomalib_runner.py's UNDO; `all` undoes every one at once), to attribute a gap between the
two; their table, with ours and anomalib as it ships beside them, goes to OUT/undo.md instead.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments import parse_seeds
from experiments.compare_original import differences, prepare_data, run_ours
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.runs.collect import shown

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("ours", "anomalib")


def run_anomalib(python: Path, data: Path, settings: dict, log: Path, threads: int, undo: str = "") -> dict:
    args = [*(["--undo", undo] if undo else []),
            "--data", str(data.resolve()), "--isize", str(settings["isize"]), "--batchsize", str(settings["batchsize"]),
            "--niter", str(settings["niter"]), "--seed", str(settings["seed"]), "--threads", str(threads),
            *[item for name in ("ngf", "nz") if settings[name] for item in (f"--{name}", str(settings[name]))]]
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as work, open(log, "w") as f:
        out = Path(work) / "result.json"
        proc = subprocess.run([str(python), str(ROOT / "tools" / "anomalib_runner.py"), *args, "--out", str(out)],
                              cwd=work, stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not out.is_file():
            last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"anomalib's run failed with exit code {proc.returncode}: {last} (its full output: "
                            f"{shown(log)})")
        return json.loads(out.read_text())


def result_path(out: Path, data: Path, system: str, seed: int) -> Path:
    """Seed 0's runs keep the place they had before there were several seeds."""
    return out / "results" / data.name / (f"seed{seed}" if seed else "") / f"{system.replace(' ', '_')}.json"


def undo_system(name: str) -> str:
    """The system name of anomalib's model with `name` (one of its differences, or all) undone."""
    return f"anomalib undo {name}"


def one_result(out: Path, python: Path, data: Path, abnormal: str, system: str, settings: dict, threads: int) -> dict:
    path = result_path(out, data, system, settings["seed"])
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("settings") != settings:
            raise UserError(f"{shown(path)} was made with other settings "
                            f"({differences(result.get('settings'), settings)}); choose another --out or delete it")
        return result
    print(f"[{time.strftime('%H:%M:%S')}] {abnormal} | {system} | seed {settings['seed']} ...", flush=True)
    start = time.time()
    log = out / "logs" / data.name / f"{system.replace(' ', '_')}_seed{settings['seed']}.log"
    if system.startswith("anomalib"):
        undo = system.removeprefix("anomalib").removeprefix(" undo ")
        result = run_anomalib(python, data, settings, log, threads, undo)
    else:
        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        result = run_ours(out, data, "ganomaly", system, settings, log, env)
    result = {**result, "abnormal_class": abnormal, "system": system, "settings": settings,
              "seconds": round(time.time() - start, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1) + "\n")
    print(f"    test AUROC {result['auroc']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return result


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def describe(settings: dict, seeds: list[int]) -> str:
    return (f"{settings['train_images']} normal training images (seeded sample, data seed {settings['data_seed']}), "
             f"{settings['niter']} epoch(s), batch {settings['batchsize']}, {settings['isize']}x{settings['isize']}, "
             f"ngf {settings['ngf'] or 64}, nz {settings['nz'] or 100}, seeds {', '.join(map(str, seeds))}; test "
             "AUROC of the last epoch.")


def table(results: dict, classes: list[str], seeds: list[int], settings: dict) -> str:
    """Per class: each system's AUROC per seed and its mean ± sd, and ours minus anomalib's."""
    lines = ["# GANomaly here and in anomalib, on identical Fashion-MNIST data", "", describe(settings, seeds), "",
             "| abnormal class | ours, per seed | anomalib, per seed | ours | anomalib | ours − anomalib |",
             "|---|---|---|---|---|---|"]
    for abnormal in classes:
        per = {s: [results[(abnormal, s, seed)]["auroc"] for seed in seeds] for s in SYSTEMS}
        gaps = [a - b for a, b in zip(per["ours"], per["anomalib"])]
        lines.append(f"| {abnormal} | " + " | ".join(", ".join(f"{v:.4f}" for v in per[s]) for s in SYSTEMS)
                     + f" | {mean_sd(per['ours'])} | {mean_sd(per['anomalib'])} | {mean_sd(gaps)} |")
    versions = sorted({r.get("anomalib", "") for (_, s, _), r in results.items() if s == "anomalib"})
    lines += ["", f"- anomalib {', '.join(versions)}, its `Ganomaly` as it ships (image size and widths set).",
              "- ours: `train.py --model ganomaly --val_ratio 0` (its defaults).",
              "- A gap is beyond seed noise when it is several times the spread of either system over the seeds."]
    return "\n".join(lines) + "\n"


def undo_table(results: dict, classes: list[str], seeds: list[int], settings: dict, undone: list[str],
               meanings: dict) -> str:
    """Per class and system: the AUROC per seed, its mean ± sd, and per seed its change from anomalib as it
    ships and what is left of the gap to ours."""
    lines = ["# anomalib's GANomaly with its differences from the paper undone", "", describe(settings, seeds), "",
             "| abnormal class | system | per seed | mean ± sd | − anomalib as it ships | ours − it |",
             "|---|---|---|---|---|---|"]
    for abnormal in classes:
        shipped = [results[(abnormal, "anomalib", seed)]["auroc"] for seed in seeds]
        ours = [results[(abnormal, "ours", seed)]["auroc"] for seed in seeds]
        for system in ("ours", "anomalib", *map(undo_system, undone)):
            values = [results[(abnormal, system, seed)]["auroc"] for seed in seeds]
            lines.append(f"| {abnormal} | {system} | {', '.join(f'{v:.4f}' for v in values)} | {mean_sd(values)} | "
                         f"{mean_sd([v - s for v, s in zip(values, shipped)])} | "
                         f"{mean_sd([o - v for o, v in zip(ours, values)])} |")
    lines += ["", "Differences, as `tools/anomalib_runner.py --undo` undoes them:", ""]
    lines += [f"- `{name}`: {meanings[name]}" for name in undone if name != "all"]
    if "all" in undone:
        lines.append("- `all`: every one of them at once")
    lines.append("- Changes and gaps are paired by seed (the same data and seed), mean ± sd over the seeds.")
    return "\n".join(lines) + "\n"


def runner_undo_names() -> dict:
    """tools/anomalib_runner.py's UNDO, read from its source: this environment has no anomalib to import it with."""
    import ast
    tree = ast.parse((ROOT / "tools" / "anomalib_runner.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "UNDO":
            return ast.literal_eval(node.value)
    raise AssertionError("tools/anomalib_runner.py has no UNDO")


def check_anomalib(python: Path) -> None:
    """Before any run: the Python must answer with anomalib's version, 2.x (a program that merely exits 0,
    /bin/true, or a Python without anomalib would fail only after our side had trained)."""
    try:
        done = subprocess.run([str(python), "-c", "import anomalib; print('anomalib', anomalib.__version__)"],
                              capture_output=True, text=True, timeout=120)
        answer = done.stdout.split()
    except (OSError, subprocess.SubprocessError) as err:
        answer, done = [], err
    if len(answer) != 2 or answer[0] != "anomalib" or not answer[1].startswith("2."):
        said = " ".join(answer) or "nothing"
        raise UserError(f"--anomalib-python {shown(python)} does not import anomalib 2.x (it answered: {said}); "
                        "make its environment first (docs/ganomaly.md)")


def main(argv) -> None:
    p = OneLineParser(prog="python -m experiments.anomalib_crosscheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--anomalib-python", required=True, help="a Python that can import anomalib 2.x")
    p.add_argument("--classes", default="T-shirt/top,Bag", help="abnormal classes, comma-separated")
    p.add_argument("--train_images", type=int, default=12000, help="normal training images (a seeded sample)")
    p.add_argument("--test_images", type=int, default=0, help="0: the whole test set; N: a seeded sample of N")
    p.add_argument("--data_seed", type=int, default=0)
    p.add_argument("--niter", type=int, default=1)
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated (each one a run of both systems)")
    p.add_argument("--batchsize", type=int, default=64)
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--ngf", type=int, default=None, help="generator width for both (default: 64)")
    p.add_argument("--nz", type=int, default=None, help="code size for both (default: 100)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (0: torch's choice)")
    p.add_argument("--undo", default="", help="also run anomalib's model with each of these differences undone, "
                   "comma-separated (all: every one at once); the table goes to OUT/undo.md")
    p.add_argument("--out", default="results/anomalib_crosscheck")
    args = p.parse_args(argv)
    python = Path(args.anomalib_python)
    if not os.access(python, os.X_OK) or python.is_dir():
        raise UserError(f"--anomalib-python {shown(python)} is not an executable Python; make the environment "
                        "first (docs/ganomaly.md)")
    names = class_names("fashion-mnist")
    classes = [names[resolve_class("fashion-mnist", c)] for c in args.classes.split(",") if c.strip()]
    for name in ("train_images", "niter", "batchsize", "isize"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be positive (got {getattr(args, name)})")
    # ndf follows ngf: anomalib's discriminator has the generator's width (n_features).
    seeds = parse_seeds(args.seeds)
    meanings = runner_undo_names()
    undone = list(dict.fromkeys(x.strip() for x in args.undo.split(",") if x.strip()))  # each once, in order
    unknown = [x for x in undone if x not in meanings and x != "all"]
    if unknown:
        raise UserError(f"--undo {','.join(unknown)}: unknown; choose from {', '.join(meanings)} or all")
    systems = (*SYSTEMS, *map(undo_system, undone))
    settings = {name: getattr(args, name) for name in ("train_images", "test_images", "data_seed", "niter",
                                                       "batchsize", "isize", "ngf", "nz")}
    settings["ndf"] = args.ngf
    check_anomalib(python)  # the last check (it starts that Python), before anything runs
    out = Path(args.out)
    results = {}
    for seed in seeds:  # seed by seed: an interrupted check has whole seeds
        for abnormal in classes:
            data = prepare_data(out / "data", abnormal, {**settings, "seed": seed})
            for system in systems:
                results[(abnormal, system, seed)] = one_result(out, python, data, abnormal, system,
                                                               {**settings, "seed": seed}, args.threads)
    if undone:
        text = undo_table(results, classes, seeds, settings, undone, meanings)
        write_text(out / "undo.md", text)
    else:
        text = table(results, classes, seeds, settings)
        write_text(out / "table.md", text)
    print(text, end="")


if __name__ == "__main__":
    sys.exit(run_cli(main))
