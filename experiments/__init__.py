"""Class sweeps (run_*.sh) and studies, run from the repository root: `python -m experiments.fmnist_study`,
`python -m experiments.epoch_speed`."""
import json
import subprocess
from pathlib import Path

from lib.errors import Stopped, UserError, require_environment
from lib.runs.folder import is_run_folder, refuse_inside_run

require_environment()  # a Python without the requirements: one line, not a traceback


def check_seeds(seeds) -> None:
    """A study's --seeds, refused once up front (not by each of its runs): each a seed train.py repeats."""
    if any(not 0 <= seed < 2**32 for seed in seeds):
        raise UserError("--seeds must be whole numbers from 0 to 2^32 - 1: a study's runs are repeatable")
    twice = next((seed for i, seed in enumerate(seeds) if seed in seeds[:i]), None)
    if twice is not None:  # one run, which the tables would count (and spread) as two
        raise UserError(f"--seeds names {twice} twice: give each seed once")


def parse_seeds(text: str) -> list[int]:
    """--seeds given as "0,1,2" (the older studies' spelling): at least one, each checked as `check_seeds`."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: give whole numbers from 0 up, separated by commas, e.g. 0,1,2 "
                        "(a study's seeds are fixed: a negative one would pick a random seed)")
    check_seeds(seeds)
    return seeds


def finished(run: Path, niter: int) -> bool:
    """Whether `run` has trained all its `niter` epochs (0: a control). results.json is written after every
    epoch, so its presence says only that one has ended: a study stopped mid-run took that run for done."""
    try:
        return json.loads((Path(run) / "results.json").read_text(encoding="utf-8"))["epochs"] == niter
    except (OSError, ValueError, KeyError, TypeError):
        return False


STOPPED = (129, 130, 143)  # train.py's exit status after SIGHUP, Ctrl-C, SIGTERM: its run is resumable


def run_to_end(command: list[str], **popen) -> int:
    """A study's train.py process, waited for to its end: its exit status. Ctrl-C reaches it too (one process
    group), and it then checkpoints and ends with 130; subprocess.run would kill it 0.25 s after Ctrl-C,
    before its last.pt was written, so a stopped study could not continue its long runs. SIGTERM or SIGHUP
    sent to the study alone (a supervisor, `kill PID`) is passed on to the run, which stops the same way."""
    with subprocess.Popen(command, **popen) as proc:
        while True:
            try:
                return proc.wait()
            except Stopped as stop:
                proc.send_signal(stop.signum)  # sent to the study's pid only: the run has not had it
            except KeyboardInterrupt:
                continue  # the run has it too: it ends once its checkpoint is written


def study_folder(text) -> Path:
    """A study's --out: a folder (made when needed), never inside or at a run folder, whose files its runs
    could replace (a run folder's --overwrite deletes everything in it)."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file: give a folder for the study's runs")
    if is_run_folder(out):
        raise UserError(f"--out '{out}' is a run folder, whose files the study's runs could replace: choose --out "
                        "outside every run folder")
    refuse_inside_run(out)
    return out


def check_own_run(run: Path, flags: list[str]) -> None:
    """A run folder where a study puts one of its runs is replaced (train.py --overwrite) only when it is that
    run, unfinished: a run of the user's, or of other flags, at that place is named and kept."""
    from lib.options.parser import build_parser, explicit_options
    from lib.options.record import recorded_values
    if not run.exists():
        return
    recorded = recorded_values(run / "opt.txt")
    wanted = vars(build_parser().parse_args(flags))
    differs = next((key for key in sorted(explicit_options(flags)) if recorded.get(key) != str(wanted[key])), None)
    if differs is not None or not recorded and any(run.iterdir()):
        what = (f"its opt.txt records --{differs} {recorded[differs]}, the study's run {wanted[differs]}"
                if differs in recorded else f"its opt.txt records no --{differs}" if differs else "it has no opt.txt")
        raise UserError(f"'{run}' holds something other than this study's run ({what}), which the study would "
                        "replace: move it away, or give the study another --out")
