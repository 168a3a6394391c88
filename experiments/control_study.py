"""Does training matter? Each Fashion-MNIST run beside its untrained control (train.py --niter 0).

    python -m experiments.control_study [--protocols one-class leave-one-out] [--seeds 0 1 2]
                                        [--models w_skipganomaly] [--out output/control_study]

Trains, for every class, protocol, model and seed, the default run at the study's CPU budget
(16x16 images, quarter-width networks, 2 epochs: experiments/fmnist_setup.py) and its control:
the same command with --niter 0, the same networks at initialisation with BatchNorm fitted to the
data, scored the same way (the score chosen on validation). Finished runs are kept, so the study
resumes where it stopped. The table is tools.collect_results's: each trained setting, its control,
and "− untrained control", seed by seed. Selection never looks at the test set.
"""
import subprocess
import sys
from pathlib import Path

from experiments import STOPPED, check_own_run, check_seeds, finished, run_to_end, study_folder
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.models import MODELS
from lib.runs.collect import collect

ROOT = Path(__file__).resolve().parent.parent
BUDGET = ["--dataset", "fashion-mnist", "--nc", "1", "--isize", "16", "--ngf", "16", "--ndf", "16", "--nz", "32",
          "--device", "cpu"]
TRAINED_EPOCHS = "2"
PROTOCOLS = {"one-class": "--normal_class", "leave-one-out": "--abnormal_class"}


def runs(protocols, models, seeds, classes):
    """(run name, train.py arguments) of every run, the controls of a class first (they are quick)."""
    for protocol in protocols:
        for target in classes:
            for model in models:
                for seed in seeds:
                    for niter in ("0", TRAINED_EPOCHS):
                        kind = "control" if niter == "0" else "trained"
                        name = f"{protocol}/{model}-{kind}/{target.replace('/', '-')}/seed{seed}"
                        yield name, [*BUDGET, "--model", model, PROTOCOLS[protocol], target, "--niter", niter,
                                     "--manualseed", str(seed)]


def train_run(out: Path, name: str, flags: list[str]) -> int:
    """train.py's exit status for run `name` of a study under `out`, trained afresh (its one line is on stderr)."""
    check_own_run(out / name, flags)
    print(name, flush=True)
    # --outf absolute: train.py runs in the repository, and a relative --out names the caller's folder.
    return run_to_end([sys.executable, str(ROOT / "train.py"), *flags, "--outf", str(out.resolve()),
                       "--name", name, "--overwrite"], cwd=ROOT, stdout=subprocess.DEVNULL)


def main(argv):
    parser = OneLineParser(prog="python -m experiments.control_study", description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", choices=tuple(PROTOCOLS), default=["one-class"])
    parser.add_argument("--models", nargs="+", default=["w_skipganomaly"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classes", nargs="+", default=None, help="default: all ten")
    parser.add_argument("--out", default="output/control_study")
    parser.add_argument("--report", action="store_true", help="only table the finished runs")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    check_seeds(args.seeds)
    names = class_names("fashion-mnist")
    classes = [names[resolve_class("fashion-mnist", c)] for c in args.classes] if args.classes else list(names)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise UserError(f"--models {unknown[0]} is not a model: choose from {', '.join(MODELS)}")
    out = study_folder(args.out)
    failed = []
    for name, flags in ([] if args.report else runs(args.protocols, args.models, args.seeds, classes)):
        if finished(out / name, int(flags[flags.index("--niter") + 1])):
            continue
        code = train_run(out, name, flags)
        if code in STOPPED:
            return code
        if code != 0:  # its one line is above; the study goes on with the other runs
            failed.append(name)
    tabled = [p for p in args.protocols if (out / p).is_dir() and any((out / p).rglob("results.json"))]
    for protocol in tabled:
        table, _ = collect(out / protocol)
        print(table)
    if failed:
        print(f"failed: {len(failed)} run(s), the first {failed[0]} (its error is above); run the same command "
              "again to retry them", file=sys.stderr)
        return 1
    if not tabled:
        raise UserError(f"no runs of {', '.join(args.protocols)} under '{out}': run the study without --report first")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
