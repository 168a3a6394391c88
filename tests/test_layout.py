"""lib/ stays readable: folders in layers (import-linter's contracts in pyproject.toml), modules of at
most 300 lines. The contracts are run here as `make lint` runs them, and shown to catch a breach."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

MAX_LINES = 300
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml")], cwd=root,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=300)


def test_no_module_of_lib_is_longer_than_300_lines():
    long = {str(path.relative_to(ROOT)): n for path in sorted((ROOT / "lib").rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules, one job each: {long}"


def test_the_layers_of_lib_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.fixture
def lib_copy(tmp_path):
    shutil.copytree(ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    ("models/base.py", "import lib.data.datasets", "models never import the data"),
    ("scoring/metrics.py", "import lib.training.trainer", "is layered"),  # an upward import
    ("tune/trials.py", "from lib.tune import report", "no import circles"),  # report imports trials
], ids=["a model imports data", "upward", "circle"])
def test_the_contracts_catch_a_breach(lib_copy, module, line, broken):
    path = lib_copy / "lib" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(lib_copy)
    assert result.returncode != 0
    assert any(broken in row and "BROKEN" in row for row in result.stdout.replace("\n", " ").split("KEPT")), \
        result.stdout
