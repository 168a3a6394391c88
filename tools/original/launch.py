"""Starting runner.py on the original code: finding that code, a fresh working folder, one-line errors.

The runner imports the original's package `lib`, which would clash with ours, so it always runs in
a process of its own with only the original code on PYTHONPATH.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lib.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ORIGINAL_CODE = ROOT.parent / "shared" / "reference" / "original-code"
RUNNER = Path(__file__).with_name("runner.py")
# Files that say a folder is the original Skip-WGANomaly code, not merely some folder.
_SIGNATURE = ("options.py", "lib/models/skipganomaly.py", "lib/models/w_skipganomaly.py", "lib/data/dataloader.py")


def check_original_code(path) -> Path:
    """The original code's folder, absolute; a UserError when `path` is not it."""
    path = Path(path)
    missing = next((name for name in _SIGNATURE if not (path / name).is_file()), None)
    if missing:
        raise UserError(f"--original-code '{path}' is not the original Skip-WGANomaly code ({missing} is "
                        f"missing there); pass the folder that holds its options.py and lib/ "
                        f"(by default {DEFAULT_ORIGINAL_CODE})")
    return path.resolve()


def run_runner(original_code: Path, args: list[str], log: Path | None = None, env: dict | None = None) -> dict:
    """`runner.py ARGS --out ...` in a fresh temporary folder, with `env` added; its JSON result.

    Its output goes to `log` when given (a long training can be followed there), else is kept in
    memory; either way a failure becomes one line naming the runner's last line of output.
    """
    with tempfile.TemporaryDirectory(prefix="original-run-") as work:
        out = Path(work) / "result.json"
        # Only the original code on the path: ours (also a package named lib) must not be found.
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(original_code)}
        command = [sys.executable, str(RUNNER), *args, "--out", str(out)]
        if log is None:
            proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, errors="replace")
            output = proc.stdout + proc.stderr
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                proc = subprocess.run(command, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT)
            output = log.read_text(errors="replace")
        if proc.returncode != 0 or not out.is_file():
            last = (output.strip().splitlines() or ["(no output)"])[-1]
            where = f" (its full output: {log})" if log else ""
            raise UserError(f"the original's code failed in `runner.py {args[0]}` with exit code "
                            f"{proc.returncode}: {last}{where}")
        return json.loads(out.read_text())


def run_steps(original_code: Path, spec: dict) -> dict:
    """The runner's `steps` for one spec (see runner.steps)."""
    with tempfile.TemporaryDirectory(prefix="original-spec-") as folder:
        spec_file = Path(folder) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        return run_runner(original_code, ["steps", "--spec", str(spec_file)])
