"""The original's own code as a path of tools/benchmark.py: its optimize_params() and test(),
timed in a process of its own (runner.py `serve`) and taking turns with ours.

The original's package is named `lib` like ours, so it cannot be imported here: one process per
measurement holds the original's model, does the work asked on its stdin and answers with the
seconds it took, measured there (the pipe's latency is not in them). Both processes use the same
number of threads and never work at the same time, since each waits for the other's answer.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lib.errors import UserError
from tools.original.launch import RUNNER, check_original_code

# What the original code can run: its Skip-WGANomaly has the gradient penalty only, and its
# generator learns every 5th step.
MODELS = ("skipganomaly", "w_skipganomaly")


def check_settings(args) -> None:
    """A UserError for settings the original code has no way to run."""
    if args.model not in MODELS:
        raise UserError(f"--model {args.model} with --original-code: the original code has no such model; "
                        f"use {' or '.join(MODELS)}")
    if args.model == "w_skipganomaly" and (args.wgan != "gp" or args.n_critic != 5):
        raise UserError("--original-code runs the original's Skip-WGANomaly, which has the gradient penalty and "
                        "5 critic steps per generator step only: drop --wgan and --n_critic")
    if args.nc != 3:
        raise UserError(f"--nc {args.nc} with --original-code: the original's code takes colour images only (its "
                        "noise buffer has 3 channels); use --nc 3")
    if args.batchsize < 5:
        raise UserError(f"--batchsize {args.batchsize} with --original-code: the original's test() shows one of "
                        "the first 5 images of its second batch and fails on smaller batches; use 5 or more")
    if args.device != "cpu":
        raise UserError("--original-code times the original on the CPU only (its GPU path needs CUDA ids): "
                        "use --device cpu")


class OriginalCode:
    """A running original model: `time_train(n)` and `time_eval(n)` return (wall, cpu) seconds."""

    def __init__(self, original_code, args, threads: int):
        check_settings(args)
        code = check_original_code(original_code)
        self._work = tempfile.TemporaryDirectory(prefix="original-timing-")  # its histogram.csv and output/
        spec = {name: getattr(args, name) for name in ("model", "isize", "nc", "batchsize", "ngf", "ndf", "nz", "seed")}
        spec.update(threads=threads, warmup=max(args.warmup, 1))
        spec_file = Path(self._work.name) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        self._log = open(Path(self._work.name) / "output.txt", "w+")
        env = {**os.environ, "PYTHONPATH": str(code)}
        self._proc = subprocess.Popen([sys.executable, str(RUNNER), "serve", "--spec", str(spec_file)],
                                      cwd=self._work.name, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._log.seek(0)
            last = (self._log.read().strip().splitlines() or ["(no output)"])[-1]
            self.close()
            raise UserError(f"the original's code failed in `runner.py serve` with exit code "
                            f"{self._proc.returncode}: {last}")
        return json.loads(line)

    def _ask(self, request: dict) -> tuple[float, float]:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        self.last = self._answer()
        return self.last["wall"], self.last["cpu"]

    def time_train(self, steps: int) -> tuple[float, float]:
        return self._ask({"train": steps})

    def time_eval(self, batches: int) -> tuple[float, float]:
        return self._ask({"eval": batches})

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        self._work.cleanup()
