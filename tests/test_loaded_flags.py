"""Every flag given to a command that loads a run is applied, and recorded, or refused in one line.

Generated from the option list: a flag added later is covered without editing this file.
"""
import argparse

import pytest

from lib import options
from lib.errors import UserError
from lib.runs.adopted import NETWORK_OPTIONS, RESUME_APPLIES, TEST_APPLIES
from lib.runs.setup import load_checkpoint
from tests.helpers import one_line_error, run_main, train_cli

# Flags that name what to load or which command this is: not options of a run.
STRUCTURAL = {"resume", "load_weights", "phase", "help"}
OTHER_TEXT = {"dataset": "mnist", "dataroot": "elsewhere", "name": "other", "outf": "other", "path": "images",
              "gpu_ids": "1", "display_server": "http://example.org", "abnormal_class": "4", "normal_class": "4",
              "fixes": "all", "score": "ssim", "score_weight": "0.5", "category": "weave"}


def other_value(action: argparse.Action, saved) -> list[str]:
    """Command-line words that set `action`'s option to a valid value other than `saved`."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag] if saved is not True else [f"--no-{flag[2:]}"]
    if action.nargs == 0:  # store_true
        return [flag]
    if action.type is options.str2bool:
        return [flag, str(not saved)]
    if action.choices:
        return [flag, str(next(c for c in action.choices if c != saved))]
    if action.dest in OTHER_TEXT:
        return [flag, OTHER_TEXT[action.dest]]
    if action.type is int:
        return [flag, str((saved or 0) + 1)]
    if action.type is float:
        return [flag, str(saved / 2 if saved else 0.5)]
    raise AssertionError(f"{flag}: no other value known; add one to OTHER_TEXT")


def flags():
    actions = options.option_actions()
    return [a for name, a in sorted(actions.items()) if name not in STRUCTURAL]


def loaded(command: list[str], given: list[str]):
    """(opt, None) after train.py's loading of a run with `given` added, or (None, the refusal)."""
    argv = [*command, *given]
    try:
        opt = options.parse(argv)
        load_checkpoint(opt, options.explicit_options(argv))
    except UserError as refusal:
        return None, str(refusal)
    return opt, None


@pytest.mark.parametrize("mode", ["resume", "phase test"])
@pytest.mark.parametrize("action", flags(), ids=lambda a: a.dest)
def test_a_flag_given_with_a_loaded_run_is_applied_or_refused_in_one_line(trained_run, mode, action):
    import torch
    saved = torch.load(trained_run / "train/weights/last.pt", weights_only=True)["options"]
    command = ["--resume", str(trained_run)] if mode == "resume" else \
        ["--phase", "test", "--load_weights", str(trained_run)]
    given = other_value(action, saved.get(action.dest))
    opt, refusal = loaded(command, given)
    if refusal is not None:
        assert "\n" not in refusal and refusal.strip()
        # What the command would have applied is refused only for a reason of its own (a bad value
        # for this run), never as "this run was trained with ...".
        applied = RESUME_APPLIES if mode == "resume" else TEST_APPLIES
        if action.dest in applied:
            assert "was trained with" not in refusal, refusal
        return
    # Accepted: the value given is the one the command runs with, and what opt.txt records.
    expected = options.parse([*command, *given]).__dict__[action.dest]
    assert getattr(opt, action.dest) == expected
    applied = (RESUME_APPLIES if mode == "resume" else TEST_APPLIES) | {"fixes", "original"}
    assert action.dest in applied or action.dest in NETWORK_OPTIONS and expected == saved[action.dest], action.dest


def test_phase_test_takes_the_runs_options_and_refuses_another_score(tmp_path, trained_run_copy):
    run = trained_run_copy
    tested = train_cli(["--phase", "test", "--load_weights", run, "--device", "cpu"], tmp_path)
    assert "test: auroc" in tested.stdout  # the run's dataset and class, without naming them again
    recorded = (run / "test" / "opt.txt").read_text()
    assert "dataset: digits" in recorded and "abnormal_class: 3" in recorded
    refused = train_cli(["--phase", "test", "--load_weights", run, "--score", "ssim"], tmp_path, check=False)
    one_line_error(refused, "--score ssim: checkpoint", "--phase test scores with what these weights were trained "
                   "and fitted with; drop --score")
    other_class = train_cli(["--phase", "test", "--load_weights", run, "--abnormal_class", "4", "--device", "cpu"],
                            tmp_path)
    assert "test: auroc" in other_class.stdout
    assert "abnormal_class: 4" in (run / "test" / "opt.txt").read_text()


@pytest.mark.parametrize("given, message", [
    (["--score", "ssim"], "--score ssim: checkpoint"),
    (["--fixes", "all"], "--fixes all: checkpoint"),
    (["--lr", "0.001"], "--lr 0.001: checkpoint"),
    (["--original"], "--original: checkpoint"),
])
def test_resume_refuses_a_flag_that_would_change_what_the_run_computes(tmp_path, trained_run_copy, given, message):
    proc = train_cli(["--resume", trained_run_copy, "--niter", "2", *given], tmp_path, check=False)
    one_line_error(proc, message, "a resumed run continues as it was trained")


def test_resume_applies_the_flags_that_change_only_the_session(tmp_path, trained_run_copy):
    train_cli(["--resume", trained_run_copy, "--niter", "2", "--no-fast", "--print_freq", "7"], tmp_path)
    recorded = (trained_run_copy / "opt.txt").read_text()
    assert "fast: False" in recorded and "print_freq: 7" in recorded and "niter: 2" in recorded
    import predict  # the run it leaves is one every command accepts
    assert run_main(predict.main, ["--path", trained_run_copy / "train/images", "--weights", trained_run_copy,
                                   "--device", "cpu", "--out", tmp_path / "p"], tmp_path).returncode == 0

