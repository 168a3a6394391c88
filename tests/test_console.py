"""What a probe of careless use found (issue 30): a reader that goes away, a closed stderr, Ctrl-C
while torch loads, names too long for the filesystem and empty values never cost a run or a traceback."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, TINY, one_line_error, process, tool

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RUN = "skipganomaly/digits/3"


@pytest.mark.slow
def test_a_reader_that_goes_away_costs_no_checkpoint(tmp_path):
    """`train.py | head -1`: the run trains on and saves its checkpoints."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--niter", "1", "--outf", "out"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as head -1 does after its line
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()[-2000:]
    assert {p.name for p in (tmp_path / "out" / RUN / "train" / "weights").iterdir()} == {"best.pt", "last.pt"}


@pytest.mark.slow
def test_a_closed_stderr_costs_no_checkpoint(tmp_path):
    """`train.py 2>&-`: Python leaves sys.stderr None; the run still trains and saves."""
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, "--niter", "1", "--outf", "out"],
                          cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(2),
                          timeout=300)
    assert proc.returncode == 0
    assert (tmp_path / "out" / RUN / "train" / "weights" / "last.pt").is_file()


@pytest.mark.slow
def test_ctrl_c_while_predict_py_loads_torch_is_one_line(tmp_path, trained_run):
    proc = subprocess.Popen([sys.executable, str(ROOT / "predict.py"), "--path", trained_run / "train" / "images",
                             "--weights", trained_run, "--out", tmp_path / "p"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.8)  # torch takes seconds to load: the probe's window where its C++ start-up aborted or
    proc.send_signal(signal.SIGINT)  # swallowed the interrupt, now held back until it has loaded
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines() == ["interrupted"], err


@pytest.mark.parametrize("where", ["name", "outf"])
def test_a_run_folder_name_too_long_for_the_filesystem_is_refused_in_one_line(tmp_path, where):
    long = "/".join(["y" * 250] * 20) if where == "name" else str(tmp_path / ("z" * 300))
    args = ["--name", long, "--outf", "out"] if where == "name" else ["--outf", long]
    proc = process("train.py", [*TINY, "--niter", "1", *args], tmp_path)
    one_line_error(proc, "(File name too long): choose a shorter or writable --outf/--name")


def test_an_empty_fixes_is_refused_and_a_datasets_spelling_names_one_run_folder(tmp_path):
    one_line_error(process("train.py", [*TINY, "--fixes", "", "--outf", "out"], tmp_path), "--fixes is empty")
    from lib import options
    assert options.parse([*map(str, TINY), "--dataset", "DIGITS "]).name == RUN


@pytest.mark.parametrize("module, args", [("tools.collect_results", ["out"]),
                                          ("tools.baselines", ["--dataset", "digits", "--classes", "3"]),
                                          ("experiments.score_study", []), ("experiments.compare_original", [])])
def test_an_empty_out_is_refused_in_one_line(tmp_path, module, args):
    one_line_error(tool(module, [*args, "--out", ""], tmp_path), "--out is empty")


def test_a_sweep_naming_a_class_or_seed_twice_is_refused_before_any_run(tmp_path):
    for env in ({"CLASSES": "3 3"}, {"CLASSES": "3", "SEEDS": "1 1"}):
        proc = subprocess.run(["bash", str(ROOT / "experiments" / "run_mnist.sh"), "--dataset", "digits"],
                              cwd=tmp_path, env={**ENV, "DEVICE": "cpu", "PYTHON": sys.executable, **env},
                              capture_output=True, text=True, timeout=60)
        one_line_error(proc, "twice")
        assert not (tmp_path / "output").exists()


def test_a_torch_that_cannot_load_is_one_line_naming_the_environment(tmp_path):
    """As under a memory limit (ulimit -v) the probe set: torch's import fails inside the command."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "raise ImportError('libtorch_cpu.so: failed to map segment from shared object', name='torch')\n")
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, "--outf", "out"], cwd=tmp_path,
                          env={**ENV, "PYTHONPATH": f"{tmp_path}:{ROOT}"}, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: cannot load torch (libtorch_cpu.so: failed to map segment")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env", [{"RANK": "1"}, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, {"WORLD_SIZE": "abc"},
                                 {"RANK": "0", "WORLD_SIZE": "2"}],
                         ids=["a leftover RANK", "no RANK", "not a number", "no MASTER_ADDR"])
def test_torchrun_variables_that_make_no_job_are_refused_in_one_line(tmp_path, env):
    # A leftover RANK=1 trained in silence as a rank that writes nothing; a partial set failed in torch.
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, "--niter", "1", "--outf", "out"],
                          cwd=tmp_path, env={**clean, **env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    one_line_error(proc, "which is no process of a torchrun job", "unset them")
    assert not (tmp_path / "out").exists()


def test_a_working_directory_removed_while_train_py_runs_is_one_line(tmp_path):
    # (Removed while torch itself loads, oneMKL's loader stops the process with a line of its own.)
    cwd = tmp_path / "gone"
    cwd.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--niter", "30"], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()  # the data's line: torch has loaded, the run is starting
    shutil.rmtree(cwd)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (1, 2) and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(("error: the working directory was removed", "error: the run folder")), err
