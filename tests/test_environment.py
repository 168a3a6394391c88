"""A command started outside the project's environment (the README's first trip: `make demo`, then the
system `python`): every script and sweep says so in one line naming the way in, with no traceback."""
import subprocess
import sys
import venv

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A real Python 3.11 with none of the requirements: a fresh virtual environment without packages."""
    where = tmp_path_factory.mktemp("bare") / "venv"
    venv.create(where, with_pip=False, system_site_packages=False)
    python = where / "bin" / "python"
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    return python


@pytest.mark.parametrize("script,args", [
    ("train.py", ["--dataset", "digits", "--niter", "1", "--outf", "out"]),
    ("predict.py", ["--path", "images", "--weights", "run"]),
    ("export.py", ["--weights", "run", "--out", "exported"]),
    ("train_tune.py", ["--dataset", "digits", "--niter", "1", "--outf", "out"]),
])
@pytest.mark.parametrize("form", ["script", "module"])  # python train.py, or python -m lib.commands.train
def test_a_script_run_by_a_python_without_the_requirements_says_how_to_enter_the_environment(
        bare_python, tmp_path, script, args, form):
    (tmp_path / "images").mkdir()  # what the command names exists: the missing requirement is the one fault
    (tmp_path / "images" / "a.png").write_bytes(b"")
    (tmp_path / "run").mkdir()
    command = [ROOT / script] if form == "script" else ["-m", f"lib.commands.{script.removesuffix('.py')}"]
    proc = subprocess.run([bare_python, *command, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: cannot load ") and "No module named" in lines[0]
    assert ". .venv/bin/activate" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "run"]


@pytest.mark.parametrize("module", ["tools.sample_images", "tools.make_textures", "tools.collect_results",
                                    "experiments.inspection_study"])
def test_a_tool_or_study_run_by_a_python_without_the_requirements_says_so_in_one_line(bare_python, tmp_path, module):
    proc = subprocess.run([bare_python, "-m", module, "--out", tmp_path / "o"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and proc.stderr.startswith("error: cannot load numpy") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_sweep_run_by_a_python_without_the_requirements_stops_before_any_run(bare_python, tmp_path):
    proc = subprocess.run(["bash", ROOT / "experiments" / "run_mnist.sh"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": str(bare_python)})
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.splitlines() == [
        f'error: PYTHON="{bare_python}" lacks the project\'s requirements (torch torchvision numpy sklearn PIL): '
        "enter the project's environment (after make demo: . .venv/bin/activate) or set PYTHON=.venv/bin/python"]
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_whose_python_runs_no_python_code_stops_before_any_run(tmp_path):
    proc = subprocess.run(["bash", ROOT / "experiments" / "run_mnist.sh"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": "/bin/true"})
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout  # it once said "Running ..." and wrote nothing
    assert proc.stderr.splitlines()[0].startswith(
        'error: PYTHON="/bin/true" lacks the project\'s requirements (it does not run Python code)')


def test_the_tests_python_has_them():  # the check above must not refuse the environment it asks for
    proc = subprocess.run(["bash", "-c", f'source {ROOT}/experiments/common.sh; python=({sys.executable}); '
                           "ALL_CLASSES=(0); seeds=(); check_sweep"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
