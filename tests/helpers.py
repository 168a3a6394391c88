"""What the tests share: the tiny run's arguments, running the commands as a user would (in-process,
fast, or as a real process), tiny model options, and reading a CSV file."""
import argparse
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import train
from lib import options
from lib.errors import run_cli

ROOT = Path(__file__).resolve().parent.parent
# A run on scikit-learn's digits that takes about a second per epoch.
TINY = ["--dataset", "digits", "--abnormal_class", "3", "--isize", "8", "--ngf", "8", "--ndf", "8",
        "--nz", "8", "--batchsize", "64", "--device", "cpu", "--manualseed", "1", "--print_freq", "5",
        "--save_image_freq", "10"]
# The run most tests read: one epoch of Skip-GANomaly (tests/conftest.py trains it once, `trained_run`).
ONE_EPOCH = [*TINY, "--model", "skipganomaly", "--niter", "1"]
RUN = "skipganomaly/digits/3"  # where a TINY Skip-GANomaly run lands below --outf
# The start of a script that stands in for PYTHON in a sweep (experiments/run_*.sh) and records its train.py
# runs: the sweep's own `python -c CODE` checks (its requirements, with SEEDS its run names) get real Python.
STUB_START = """import json, os, sys
if sys.argv[1:2] == ["-c"]:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def tiny(**flags) -> list[str]:
    """TINY with flags changed (`abnormal_class=0`), added (`niter=2`) or left out (`manualseed=None`)."""
    args = dict(zip(TINY[::2], TINY[1::2]))
    for name, value in flags.items():
        if value is None:
            del args[f"--{name}"]
        else:
            args[f"--{name}"] = str(value)
    return [item for pair in args.items() for item in pair]


def make_opt(**overrides) -> argparse.Namespace:
    """train.py's default options with tiny networks (16x16 colour images), for building a model directly."""
    opt = argparse.Namespace(**options.defaults())
    opt.__dict__.update(isize=16, nc=3, ngf=8, ndf=8, nz=8)
    opt.__dict__.update(overrides)
    return opt


def read_csv(path) -> list[dict]:
    """The rows of a CSV file with a header line."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_main(main, args, cwd) -> Result:
    """`main(args)` through the same error handling as the command line, in `cwd`."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_cli(main, list(map(str, args))) or 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(previous)
    return Result(code, out.getvalue(), err.getvalue())


def train_cli(args, cwd, check=True) -> Result:
    """`python train.py ARGS` in `cwd`, in-process."""
    result = run_main(train.main, args, cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def process(script, args, cwd, **kwargs) -> subprocess.CompletedProcess:
    """A real `python SCRIPT ARGS` process, for what only a process shows (signals, -h, imports)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kwargs)


def tool(module: str, args, cwd) -> subprocess.CompletedProcess:
    """A real `python -m MODULE ARGS` process in `cwd`, finding the modules as from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def default_interrupts() -> None:
    """A child process's preexec_fn: Ctrl-C delivered as a terminal would, even where the tests run as a
    background job (a shell starts those with SIGINT ignored, and the child would inherit that)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(proc, *fragments) -> None:
    """The command refused its input as every script must: exit 2, one `error:` line, no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def without_searched(search, args):
    """`search` without the flags the space file in `args` searches (a flag and a search of it are refused)."""
    try:
        path = Path(args[args.index("--space") + 1])
        if not path.is_file() or path.stat().st_size > 1 << 20:  # the tests' huge and special files stay unread
            return search
        names = {key.lstrip("-") for key in json.loads(path.read_bytes())}  # (it finds UTF-16 too)
    except (ValueError, OSError, AttributeError, TypeError, RecursionError):
        return search
    kept, i = [], 0
    while i < len(search):
        if str(search[i]).startswith("--") and search[i][2:] in names:
            i += 2
            continue
        kept.append(search[i])
        i += 1
    return kept
