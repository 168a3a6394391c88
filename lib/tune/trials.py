"""Ray Tune searches over train.py's options (Skip-GANomaly, Skip-WGANomaly or GANomaly).

Owns: the trial that trains one configuration through lib.runs.setup's loop and reports every
epoch, where a search folder may lie among run folders, the results table of a search and
the train.py command that reproduces a trial.
The search-space file is lib.tune.space's. Ray is imported only inside the trial.
"""
import argparse
import contextlib
import math
import os
import shlex
from pathlib import Path

from .. import options
from ..errors import UserError
from ..files import WriteFailed, rows_csv
from ..runs.folder import enclosing_run, runs_inside

# Left out of a reproducing command line: train.py derives or ignores them.
NOT_IN_COMMAND = {"name", "tune", "resume", "overwrite"}
# Options naming files or folders: trials run in a working directory of their own, so these are absolute.
PATH_OPTIONS = ("dataroot", "outf", "path", "load_weights")


def train_actions(parser) -> dict:
    """train.py's options by name (dest), as `parser` defines them."""
    return options.run_options(parser)


def trial_base(opt: dict) -> dict:
    """The options every trial starts from: the command line's, paths absolute, not a search."""
    # The search's --overwrite replaced the search folder; a trial's folder is its own and new.
    base = {**opt, "tune": False, "overwrite": False}
    for name in PATH_OPTIONS:
        if base.get(name):
            base[name] = os.path.abspath(base[name])
    return base


def trial_options(base: dict, config: dict) -> argparse.Namespace:
    """The options of one trial: the command line's, with `config` on top, validated."""
    opt = argparse.Namespace(**{**base, **config})
    options.validate(opt)
    return opt


# Here, not in lib.tune.space: a search's saved state names it lib.tune.trials.Follow, and --restore loads it.
class Follow:
    """A tied option's value in Ray: the option it follows, read from the trial's config once Ray has
    expanded the grid and drawn the samples (Ray calls it with the trial's spec, config inside)."""

    def __init__(self, target: str):
        self.target = target

    def __call__(self, spec):
        # Attribute access: Ray's guard raises for a value not yet drawn, and retries after the others.
        return getattr(spec.config, self.target)



# ------------------------------------------------------------------ the search folder

def check_search_place(folder: Path, replace: bool) -> None:
    """A new search folder lies in no run folder; its trials' runs (<search>/runs/<trial>) are the only
    runs in it, so --overwrite (`replace`) never deletes a run someone put there by hand."""
    run = enclosing_run(folder)
    if run is not None:
        raise UserError(f"'{run}' is a run folder and the search folder '{folder}' would be inside it: "
                        "choose another --outf")
    if replace:
        other = next((r for r in runs_inside(folder) if r.parent != folder / "runs"), None)
        if other is not None:
            raise UserError(f"'{other}' is a run that is not one of the search's trials, and --overwrite would "
                            f"delete it with '{folder}': move it out first, or choose another --name")


# ------------------------------------------------------------------ one trial

def run_trial(config: dict, base: dict, defaults: dict, explicit: set, search: str) -> None:
    """Train one configuration; report metrics and a checkpoint after every epoch. With --ngpu N
    the trial is rank 0 of N processes on its machine (lib/tune/ranks.py)."""
    import ray
    from ray import tune

    from ..parallel import distributed
    from . import ranks as trial_ranks

    opt = trial_options(base, config)
    opt.name = f"tune/{search}/runs/{tune.get_context().get_trial_id()}"
    if ray.get_gpu_ids():  # Ray shows each trial only its own GPU(s), numbered from 0
        opt.gpu_ids = ",".join(str(i) for i in range(len(ray.get_gpu_ids())))
    explicit = explicit | set(config)
    restored = tune.get_checkpoint()
    with restored.as_directory() if restored is not None else contextlib.nullcontext() as folder:
        with trial_ranks.ranks(opt.ngpu, (opt, defaults, explicit, folder)):
            trainer = trial_ranks.trial_trainer(opt, defaults, explicit, folder, on_epoch=_report)
            try:
                trainer.fit()
            except WriteFailed as err:  # a trial goes on with its search, never with --resume of its run alone
                raise err.followed_by(f"then continue the search with --name {search} --restore") from None
            finally:
                trainer.close()
                distributed.finish(trainer.context)


def _report(trainer, row: dict) -> None:
    """After each epoch: the epoch's metrics (ASHA decides on them), the Ray node the trial runs on
    (its IP is not enough: several nodes can share a machine) and the weights folder."""
    import ray
    from ray import tune
    tune.report({**row, "seed": trainer.opt.manualseed, "node": ray.get_runtime_context().get_node_id()},
                checkpoint=tune.Checkpoint.from_directory(str(trainer.weights)))


# ------------------------------------------------------------------ results

def trial_row(result, objective: str, space: dict, runs) -> dict:
    """One results.csv row: config, the metrics of the epoch the objective selects, epochs run, time."""
    trial = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix("trial_")
    row = {"trial": trial, "status": "error" if result.error else "done"}
    row.update({name: (result.config or {}).get(name) for name in space})  # no config: never started
    row.update({objective: math.nan, "test_auroc": math.nan, "best_epoch": None, "epochs": 0,
                f"last_{objective}": math.nan, "last_test_auroc": math.nan, "time_s": math.nan, "seed": None,
                "node": "", "host": ""})
    history = result.metrics_dataframe
    if history is not None and objective in history:
        values = history[objective].astype(float)
        # The epoch train.py would keep: the first with the best objective (validation, or the
        # test set's without the validation_selection fix, as the original).
        best = history.loc[values.idxmax()] if values.notna().any() else history.iloc[-1]
        last = history.iloc[-1]
        row.update({objective: float(best[objective]), "test_auroc": float(best["test_auroc"]),
                    "best_epoch": int(best["epoch"]), "epochs": int(last["epoch"]),
                    f"last_{objective}": float(last[objective]), "last_test_auroc": float(last["test_auroc"]),
                    "time_s": round(float(last["time_total_s"]), 1), "seed": int(last["seed"]),
                    "node": str(last.get("node", "")), "host": str(last.get("hostname", ""))})
    row["run"] = str(Path(runs) / trial)
    row["error"] = str(result.error).strip().splitlines()[-1][:1000] if result.error else ""  # whole paths
    return row


def results_csv(rows: list[dict], objective: str, space: dict) -> str:
    """results.csv: the rows, or only the header when no trial has finished."""
    columns = ["trial", "status", *space, objective, "test_auroc", "best_epoch", "epochs", f"last_{objective}",
               "last_test_auroc", "time_s", "seed", "node", "host", "run", "error"]
    return rows_csv(rows) if rows else ",".join(columns) + "\n"


def sort_rows(rows: list[dict], objective: str) -> list[dict]:
    """Best objective first; trials without one last."""
    def key(row):
        value = row[objective]
        return -value if isinstance(value, float) and not math.isnan(value) else math.inf
    return sorted(rows, key=key)


def command_tokens(opt: dict, actions: dict, names) -> list[str]:
    """train.py's arguments giving the options `names` their values in `opt`."""
    tokens = []
    for name in (n for n in actions if n in names):
        action, value = actions[name], opt.get(name)
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            tokens.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:
            tokens.append(flag)
        else:
            tokens += [flag, str(value)]
    return tokens


def command_line(argv: list[str]) -> str:
    """`python train.py ARGV`, quoted for a shell."""
    return shlex.join(["python", "train.py", *argv])
