"""The Fashion-MNIST study: four GAN variants and two classical baselines, both protocols.

    python -m experiments.fmnist_study                 # CPU budget, resumable, then the report
    python -m experiments.fmnist_study --budget gpu    # the original's budget (15 epochs, 32x32, width 64)
    python -m experiments.fmnist_study --report        # only rebuild results/ and docs/fmnist_study.md

Every step skips what is already done (a run with a finished results.json, a baselines file),
so an interrupted study continues where it stopped. Headline numbers use the epoch chosen on
the validation split; the original's best-on-test epoch is reported beside them as optimistic.
A run that fails stops the study with one line (its full output is kept beside its folder);
the runs finished before it stay in results/, and a rerun continues from the failed one.
"""
import subprocess
import sys
import time
from pathlib import Path

from experiments import check_own_run, study_folder
from experiments.fmnist_report import write_report
from experiments.fmnist_setup import (
    ABLATIONS,
    BUDGETS,
    CURVE_CLASS,
    CURVE_EPOCHS,
    EXTRA_SEEDS,
    GANOMALY,
    MAIN,
    SCORE_WEIGHT,
    SEED_CLASSES,
    VARIANTS,
    slug,
)
from lib.classes import class_names
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.runs.collect import UNREADABLE, check_writable, read_json, shown, unreadable

ROOT = Path(__file__).resolve().parent.parent
STEPS = {  # step name -> (protocol, variants); the cheap and the headline parts come first
    "one-class": ("one-class", MAIN + ABLATIONS),
    "leave-one-out-main": ("leave-one-out", MAIN),
    "leave-one-out-ablations": ("leave-one-out", ABLATIONS),
    "score-weight": ("both", SCORE_WEIGHT),
    "ganomaly": ("both", GANOMALY),
}
RESULTS = ROOT / "results" / "fmnist"  # the committed result files, from which docs/fmnist_study.md is built
STUDY_PAGE = ROOT / "docs" / "fmnist_study.md"  # its tables are rebuilt between markers


def finished(run: Path, niter: int) -> bool:
    results = run / "results.json"
    if not results.is_file():
        return False
    try:
        r = read_json(results)
        # Runs from before the per-part AUROCs were recorded are redone (as in fmnist_report: a
        # GANomaly run's one part is the codes' distance, not the image error).
        return r.get("epochs") == niter and any(key.startswith("auroc_") for key in r["best"]["test"])
    except UNREADABLE + (AttributeError,) as err:
        print(f"warning: {shown(results)}: {unreadable(err)}; the run is done again", file=sys.stderr)
        return False


def failed(script: str, what: str, proc: subprocess.CompletedProcess, log: Path | None = None):
    """One line for a failed step: exit code 2 (the step refused its input) stays 2, anything else is 1."""
    last = (proc.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
    if log is not None:
        try:
            write_text(log, proc.stderr)
            last += f" (its full output: {shown(log)})"
        except OSError:
            pass  # the line above still says what failed
    message = f"{script} failed for {what} with exit code {proc.returncode}: {last}"
    if proc.returncode == 2:
        raise UserError(f"{message}; fix that, then rerun to continue the study")
    raise SystemExit(f"error: {message}; the runs before it are kept: rerun to continue the study")


def train(out: Path, budget: str, variant: str, protocol: str, cls: str, seed: int, niter: int | None = None) -> bool:
    """Run one training unless it already finished; True when it ran.

    Protocol "curves" is leave-one-class-out trained for `niter` epochs, kept apart.
    """
    run_name = f"{slug(variant)}/{protocol}/{slug(cls)}/seed{seed}"
    flags = list(BUDGETS[budget])
    at = flags.index("--niter") + 1
    niter = niter or int(flags[at])
    flags[at] = str(niter)
    if finished(out / run_name, niter):
        return False
    flag = "--normal_class" if protocol == "one-class" else "--abnormal_class"
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", "fashion-mnist", "--nc", "1",
           *VARIANTS[variant], *flags, flag, cls, "--manualseed", str(seed),
           "--outf", str(out), "--name", run_name, "--print_freq", "1000", "--save_image_freq", "1000",
           "--overwrite"]  # the study's own folder: an unfinished run there is redone, a finished one skipped
    start = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {variant} | {protocol} | {cls} | seed {seed}", flush=True)
    check_own_run(out / run_name, cmd[2:])
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        failed("train.py", f"{variant} | {protocol} | {cls} | seed {seed}", proc,
               out / f"{run_name}.stderr.txt")
    (out / f"{run_name}.stderr.txt").unlink(missing_ok=True)  # a failed attempt's, now stale
    summary = proc.stdout.strip().splitlines()[-2:] or [""]
    print(f"    {summary[0]} ({time.time() - start:.0f} s)", flush=True)
    return True


def baselines(results: Path, protocol: str) -> None:
    target = results / f"baselines_{protocol}.csv"
    if target.is_file():
        return
    print(f"[{time.strftime('%H:%M:%S')}] baselines | {protocol}", flush=True)
    # In this working directory, as train.py's runs: both read the same ./data.
    proc = subprocess.run([sys.executable, "-m", "tools.baselines", "--dataset", "fashion-mnist", "--nc", "1",
                           "--isize", "16", "--protocol", protocol, "--out", str(target)],
                          stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        failed("tools.baselines", f"the {protocol} protocol", proc)
    sys.stderr.write(proc.stderr)  # its warnings, if any



def main(argv) -> None:
    p = OneLineParser(prog="python -m experiments.fmnist_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", choices=BUDGETS, default="cpu")
    p.add_argument("--out", default=None, help="run folders (default: output/fmnist_study_<budget>)")
    p.add_argument("--results", default=str(RESULTS), help="small result files (docs/fmnist_study.md's tables "
                   "are rebuilt only from the default folder, so another one cannot empty them)")
    p.add_argument("--report", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--steps", nargs="*", choices=["baselines", *STEPS, "seeds", "curves"],
                   default=["baselines", "one-class", "leave-one-out-main", "seeds", "leave-one-out-ablations",
                            "score-weight", "curves", "ganomaly"],
                   help="which parts to run, in this order")
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    opt = p.parse_args(argv)
    out = Path(opt.out or ROOT / "output" / f"fmnist_study_{opt.budget}")
    results = Path(opt.results)
    study_folder(out)
    check_writable(out / "runs", "--out")
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--results {shown(results)}: cannot make that folder ({err.strerror}): "
                        "choose another") from err
    check_writable(results / f"summary_{opt.budget}.json", "--results")
    classes = class_names("fashion-mnist")

    def report(page=True):
        page = page and results.resolve() == RESULTS.resolve()
        write_report(out, results, STUDY_PAGE if page else None, opt.budget, " ".join(BUDGETS[opt.budget]))

    def train_and_report(*args):
        if train(out, opt.budget, *args):
            report(page=False)  # after every run, so an interrupted study leaves results/ current

    if not opt.report:
        for step in opt.steps:
            if step == "baselines":
                for protocol in ("leave-one-out", "one-class"):
                    baselines(results, protocol)
            elif step in STEPS:
                protocol, variants = STEPS[step]
                for one in (("one-class", "leave-one-out") if protocol == "both" else (protocol,)):
                    for variant in variants:
                        for cls in classes:
                            train_and_report(variant, one, cls, 0)
            elif step == "curves":
                for variant in MAIN:
                    train_and_report(variant, "curves", CURVE_CLASS, 0, CURVE_EPOCHS)
            elif step == "seeds":
                for variant in ("Skip-GANomaly", "Skip-WGANomaly"):
                    for cls in SEED_CLASSES:
                        for seed in EXTRA_SEEDS:
                            train_and_report(variant, "leave-one-out", cls, seed)
    report()


if __name__ == "__main__":
    sys.exit(run_cli(main))
