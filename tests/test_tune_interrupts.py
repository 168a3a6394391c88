"""Ctrl-C to train_tune.py in every phase of a search, as a real process on a real local Ray.

Whenever it comes, the search stops with exit status 130 and one line that says what was kept
and how to go on; results.csv lists the trials that had finished (only its header if none had);
`--restore` finishes the search without training a finished trial again. Ray runs with one CPU,
so trials run one after another: while one trains, the next is pending.
"""
import json
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from lib import options
from lib.runs.collect import changed_options
from tests.helpers import ROOT, read_csv, tiny

SEARCH = [*tiny(abnormal_class=0, manualseed=None, print_freq=None, save_image_freq=None), "--num_cpus", "1",
          "--name", "s"]
TRIAL_LINE = re.compile(r"^(\x1b\[\d+m)?\(run_trial pid=\d+")  # what trials print, through Ray
WAIT_S = 240

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class Search:
    """`python train_tune.py` in `tmp_path` with a search space of its own, output in files."""

    def __init__(self, tmp_path, space: dict, *flags):
        (tmp_path / "space.json").write_text(json.dumps(space))
        self.tmp_path, self.folder = tmp_path, tmp_path / "out" / "tune" / "s"
        self.argv = [sys.executable, str(ROOT / "train_tune.py"), *SEARCH, "--space", str(tmp_path / "space.json"),
                     "--outf", str(tmp_path / "out"), *flags]
        self.runs = 0

    def run(self, *flags, interrupt_when=None, signal_number=signal.SIGINT):
        """Run it (with `flags`); with `interrupt_when`, send it the signal once that holds. Returns (exit
        status, stdout, what it wrote to stderr after the signal, all of stderr)."""
        self.runs += 1
        out, err = (self.tmp_path / f"{self.runs}.{name}" for name in ("out", "err"))
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = subprocess.Popen([*self.argv, *flags], cwd=self.tmp_path, stdout=stdout, stderr=stderr)
            try:
                offset = 0
                if interrupt_when is not None:
                    deadline = time.monotonic() + WAIT_S
                    while proc.poll() is None and not interrupt_when(proc):
                        assert time.monotonic() < deadline, "the moment to interrupt it never came"
                        time.sleep(0.05)
                    assert proc.poll() is None, "it ended before the moment to interrupt it:\n" + err.read_text()
                    offset = err.stat().st_size
                    proc.send_signal(signal_number)
                code = proc.wait(timeout=WAIT_S)
            finally:  # a failed test leaves no search running (Ray's processes end with it)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        data = err.read_bytes()
        return code, out.read_text(), data[offset:].decode(errors="replace"), data.decode(errors="replace")

    def epochs(self) -> list[int]:
        """The epochs each trial that has started has finished, the trial that wrote last last."""
        runs = sorted((self.folder / "runs").glob("*/metrics.csv"), key=lambda p: p.stat().st_ctime)
        return [len(read_csv(path)) for path in runs]

    def rows(self) -> list[dict]:
        return read_csv(self.folder / "results.csv")


def one_line(code, after, everything, *fragments, status=130) -> str:
    """Exit 130 and, after the signal, one line of its own (trials may still be printing), no traceback."""
    assert code == status, everything
    assert "Traceback" not in everything, everything
    lines = [line for line in after.splitlines() if not TRIAL_LINE.match(line)]
    assert len(lines) == 1, everything
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def ray_is_starting(proc) -> bool:
    """Ray's first process (its GCS server) is a child of train_tune.py."""
    return bool(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.strip())


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_ray_starts_writes_nothing_so_the_same_command_starts_the_search(tmp_path, signal_number):
    # ray.init installs a SIGTERM handler of its own as it begins: the search keeps its own instead.
    search = Search(tmp_path, {"w_con": {"grid": [1]}}, "--niter", "1")
    code, _, after, everything = search.run(interrupt_when=ray_is_starting, signal_number=signal_number)
    name = "Ctrl-C" if signal_number == signal.SIGINT else "SIGTERM"
    one_line(code, after, everything, f"interrupted ({name}) before the search started: nothing was written",
             "run the same command again", status=128 + signal_number)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_trials_are_pending_leaves_the_results_header_and_restore_runs_them(tmp_path):
    search = Search(tmp_path, {"w_con": {"grid": [1]}}, "--niter", "1")
    code, _, after, everything = search.run(interrupt_when=lambda proc: (search.folder / "tuner.pkl").exists())
    one_line(code, after, everything, "interrupted (Ctrl-C): 0 of 1 trials finished", "--name s --restore")
    assert search.rows() == [] and (search.folder / "results.csv").read_text().startswith("trial,status,w_con,")

    code, stdout, _, everything = search.run("--restore")
    assert code == 0, everything
    [row] = search.rows()
    assert row["status"] == "done" and row["epochs"] == "1"


def test_ctrl_c_while_a_trial_runs_keeps_the_finished_one_and_restore_continues_the_other(tmp_path):
    # Epochs long enough (16x16 images, about 0.5 s each) that the trial that runs cannot finish its
    # last three before the search stops.
    search = Search(tmp_path, {"w_con": {"grid": [1, 2]}}, "--niter", "4", "--isize", "16")
    code, _, after, everything = search.run(interrupt_when=lambda proc: search.epochs() == [4, 1])
    one_line(code, after, everything, "interrupted (Ctrl-C): 1 of 2 trials finished", "results.csv",
             "--name s --restore")
    [first] = search.rows()
    assert first["status"] == "done" and first["epochs"] == "4"

    code, stdout, _, everything = search.run("--restore")
    assert code == 0, everything
    rows = {row["trial"]: row for row in search.rows()}
    assert len(rows) == 2 and all(row["status"] == "done" and row["epochs"] == "4" for row in rows.values())
    assert rows[first["trial"]] == first  # finished before: not trained again
    assert search.epochs() == [4, 4]  # the other went on from its checkpoint: each epoch once in its run

    # The command it prints is one train.py takes (its own parse), and sets what the best trial set.
    command = next(line for line in stdout.splitlines() if line.startswith("reproduce: "))
    argv = shlex.split(command.removeprefix("reproduce: "))
    assert argv[:2] == ["python", "train.py"]
    parsed, defaults = vars(options.parse(argv[2:])), options.defaults()
    best = search.rows()[0]
    trained = changed_options(search.folder / "runs" / best["trial"] / "opt.txt")
    # The trial's own run folder, the data it read (as an absolute path), the checkpoint it went on from.
    where = {"name", "outf", "dataroot", "resume"}
    assert {name: str(value) for name, value in parsed.items() if value != defaults[name] and name not in where} \
        == {name: value for name, value in trained.items() if name not in where}


def test_ctrl_c_as_the_last_trial_finishes_keeps_what_finished_and_restore_completes_it(tmp_path):
    search = Search(tmp_path, {"w_con": {"grid": [1]}}, "--niter", "2")
    code, _, after, everything = search.run(interrupt_when=lambda proc: search.epochs() == [2])
    # Tune may or may not have seen the trial end before it stopped: either way, nothing is lost.
    line = one_line(code, after, everything, "interrupted (Ctrl-C)")
    rows = search.rows()
    assert all(row["status"] == "done" and row["epochs"] == "2" for row in rows)
    assert ("after every trial had finished" if rows else "0 of 1 trials finished") in line

    code, stdout, _, everything = search.run("--restore")
    assert code == 0, everything
    [row] = search.rows()
    assert row["status"] == "done" and row["epochs"] == "2" and search.epochs() == [2]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_sigterm_or_sighup_stops_a_search_as_ctrl_c_does_with_its_exit_status(tmp_path, signal_number):
    # As a batch system stops a job, or a closed terminal: the same clean stop, the exit status saying which
    # signal came (SIGHUP once came out as Ctrl-C's 130: it was not one of the search's signals).
    search = Search(tmp_path, {"w_con": {"grid": [1]}}, "--niter", "1")
    code, _, after, everything = search.run(interrupt_when=lambda proc: (search.folder / "tuner.pkl").exists(),
                                            signal_number=signal_number)
    name = signal.Signals(signal_number).name
    one_line(code, after, everything, f"interrupted ({name}): 0 of 1 trials finished", "--name s --restore",
             status=128 + signal_number)
    assert search.rows() == []
