"""What a train_tune.py search says and writes at its end: results.csv, the best trial and the
train.py command that reproduces it, or, after an interruption, one line saying how to continue."""
import math
import sys

from ..files import write_text
from .checks import reproduce_argv
from .trials import command_line, results_csv, sort_rows, trial_options, trial_row

FINISHED = ("TERMINATED", "ERROR")  # Tune's trial states that are final (ray.tune.experiment.Trial)


def ranked_on_test(objective: str) -> str:
    """The summary's line that says the ranking looked at the test set."""
    return (f"note: trials are ranked on the TEST set ({objective}; each trial's best epoch is also chosen on "
            "the test set), as the original did, so the best trial's score is optimistic; without --original "
            "(the validation_selection fix) they are ranked on a validation split")


def not_started(stop) -> str:
    """The line for a signal that came before Tune wrote anything."""
    return f"interrupted ({stop.name}) before the search started: nothing was written; run the same command again"


def stopped_at_once(name: str, saved: bool) -> str:
    """The line for a second signal: Tune did not save its state one last time."""
    how = (f"continue it with --name {name} --restore (from the state Tune saved last)" if saved
           else "nothing of the search was written; run the same command again")
    return f"stopped at once by a second signal, without results.csv: {how}"


def saved_states(folder) -> dict:
    """{trial id: its state} as Tune saved the search last, which --restore continues. (In memory, Tune
    marks every trial TERMINATED once an interrupted search has stopped them.)"""
    from ray.tune import ExperimentAnalysis
    return {trial.trial_id: trial.status for trial in ExperimentAnalysis(str(folder)).trials}


def report(results, objective, space, raw, actions, name, folder, stop) -> int:
    """Write results.csv (the trials that finished), then print the best trial and the train.py command
    that reproduces it; after a signal, one line instead, unless every trial had finished."""
    saved = saved_states(folder)
    # ResultGrid holds one Result per trial, in the order of its analysis's trials.
    trials = results._experiment_analysis.trials
    done = [result for trial, result in zip(trials, results, strict=True) if saved.get(trial.trial_id) in FINISHED]
    rows = sort_rows([trial_row(r, objective, space, folder / "runs") for r in done], objective)
    write_text(folder / "results.csv", results_csv(rows, objective, space))
    unfinished = len(trials) - len(done)
    if unfinished:
        cause = f"interrupted ({stop.name})" if stop.signal else "the search ended early"
        print(f"{cause}: {len(done)} of {len(trials)} trials finished ({folder / 'results.csv'}); "
              f"continue it with --name {name} --restore", file=sys.stderr)
        return stop.exit_code if stop.signal else 1
    print(f"{len(rows)} trials: {folder / 'results.csv'}")
    print(summary_table(rows, objective, space))
    failed = [r for r in rows if r["status"] == "error"]
    if failed:  # the first one's cause here: a full disk says how to go on (--restore) without opening a file
        print(f"warning: {len(failed)} trial(s) failed, each with its cause in the error column of results.csv; "
              f"the first: {failed[0]['error'] or 'unknown'}", file=sys.stderr)
    code = best_trial(rows, objective, space, raw, actions, folder)
    if stop.signal:
        print(f"interrupted ({stop.name}) after every trial had finished: the search is complete", file=sys.stderr)
        return stop.exit_code
    return code


def summary_table(rows, objective, space, most: int = 20) -> str:
    """The trials, best first, as aligned text: searched values, the objective at the epoch it selects,
    test AUROC there, status; past `most` rows, a line says how many more results.csv holds."""
    def shown(value, digits=True):
        return "–" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}" if digits and isinstance(
            value, float) else str(value)
    header = ["trial", *space, f"{objective} (epoch)", "test_auroc", "status"]
    table = [header] + [[r["trial"], *(shown(r[k], False) for k in space),
                         f"{shown(r[objective])} ({r['best_epoch'] if r['best_epoch'] is not None else '–'})",
                         shown(r["test_auroc"]), r["status"]] for r in rows[:most]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    if len(rows) > most:
        lines.append(f"... and {len(rows) - most} more in results.csv")
    return "\n".join(lines)


def best_trial(rows, objective, space, raw, actions, folder) -> int:
    """Print the best trial and the command that reproduces it (also into best_command.txt)."""
    best = rows[0] if rows and not math.isnan(rows[0][objective]) else None
    if best is None:
        print(f"error: no trial reported {objective}", file=sys.stderr)
        return 1
    config = {k: best[k] for k in space}
    best_opt = trial_options(vars(raw), {**config, "manualseed": best["seed"]})
    command = command_line(reproduce_argv(best_opt, actions))  # train.py parses it back to the trial's options
    write_text(folder / "best_command.txt", command + "\n")
    test = "" if objective == "test_auroc" else f", test auroc {best['test_auroc']:.4f}"
    print(f"best trial {best['trial']}: {objective} {best[objective]:.4f} (epoch {best['best_epoch']}){test}")
    if objective.startswith("test_"):
        print(ranked_on_test(objective))
    print("best config: " + (", ".join(f"{k}={v}" for k, v in config.items()) or "(nothing searched)"))
    print(f"reproduce: {command}")
    return 0
