"""What a search prints while it runs. By default one line per trial as it ends, then report.py's summary;
Ray's log lines, Tune's status tables and every trial's own console stay out of the terminal (a
2-trial search printed 191 lines). `--verbose` gives all of them back. Ray imports here: only once a
search starts."""
import contextlib
import logging
import math
import os

from ray import tune

NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


def ray_init_quiet(verbose: bool) -> dict:
    """ray.init's arguments for the console: without `verbose`, trials' output and Ray's notices stay in
    Ray's own log files (/tmp/ray/session_*/logs), and only its errors reach the terminal."""
    logging.getLogger("ray").setLevel(logging.INFO if verbose else logging.ERROR)  # before init: its first notice
    if verbose:
        return {}
    return {"log_to_driver": False, "logging_level": logging.ERROR}


class Progress(tune.Callback):
    """One line per trial as it ends: its searched values, the objective of its last epoch, how many remain."""

    def __init__(self, objective: str, space: dict):
        self.objective, self.space, self.ended = objective, space, 0

    def _line(self, trials, trial, what: str) -> None:
        self.ended += 1
        config = ", ".join(f"{k}={trial.config.get(k)}" for k in self.space if k in (trial.config or {}))
        print(f"trial {trial.trial_id} ({config or 'nothing searched'}) {what} [{self.ended} of {len(trials)} "
              "ended]", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        value = result.get(self.objective, math.nan)
        self._line(trials, trial, f"done: {self.objective} {value:.4f} at epoch {result.get('epoch', '?')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, "failed (the cause: results.csv's error column)")


def quiet_run_config(verbose: bool) -> dict:
    """tune.RunConfig's console arguments: Tune's own tables only with `verbose`."""
    return {} if verbose else {"verbose": 0}


@contextlib.contextmanager
def tune_console(verbose: bool):
    """Around Tuner.fit: Tune's newer console prints its experiment box and TensorBoard hint even when
    silent; its older one, chosen by RAY_AIR_NEW_OUTPUT=0 (read as the search starts), prints nothing at
    verbosity 0. The variable is put back afterwards, so a later search in this process is not changed."""
    if verbose:
        yield
        return
    previous = os.environ.get(NEW_OUTPUT)
    os.environ[NEW_OUTPUT] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(NEW_OUTPUT, None)
        else:
            os.environ[NEW_OUTPUT] = previous


def quiet_restored(tuner, verbose: bool) -> None:
    """The same for a restored search, whose run config comes from the saved state."""
    local = getattr(tuner, "_local_tuner", None)  # None with Ray Client: Tune's defaults then
    if local is not None and not verbose:
        local.get_run_config().verbose = quiet_run_config(verbose)["verbose"]
