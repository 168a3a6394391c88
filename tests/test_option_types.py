"""Options keep their type: a float flag's default is a float, and a checkpoint's stored options are
checked by what each flag takes on the command line, never by the type of its default. So a run trained
with explicit weights (the README's first command, every experiments/run_*.sh sweep) can be scored,
resumed and tested; and --original refuses --extralayers, which the original code ignored."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib import options
from lib.errors import UserError
from lib.models import MODELS, registry
from lib.training import checkpoint
from tests.helpers import ROOT, STUB_START, TINY, one_line_error, process, tiny

ACTIONS = options.option_actions()  # every model's options, the tests' toy model's included (conftest.py)
FLOATS = [name for name, action in ACTIONS.items() if action.type is float]
TYPES = {"int": int, "float": float, "str": str}


def explicitly(action: argparse.Action, value) -> list[str]:
    """The command line that gives `action`'s option `value` as a user types it (None, or an empty text such
    as --path's default: not given, the only way to it, since every script refuses a flag given empty)."""
    if value is None or value == "":
        return []
    if isinstance(action, argparse.BooleanOptionalAction):
        return [action.option_strings[0] if value else action.option_strings[1]]
    if action.nargs == 0:  # a switch: given, it is on
        return [action.option_strings[0]] if value else []
    return [action.option_strings[0], str(value)]


def parsed(action: argparse.Action, value):
    """The value argparse gives `action`'s option from `explicitly(action, value)`."""
    return getattr(options.build_parser().parse_args(explicitly(action, value)), action.dest)


def saved_options(run: Path) -> dict:
    return torch.load(run / "train/weights/best.pt", weights_only=True)["options"]


# --- defaults ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIONS)
def test_every_options_default_has_the_type_its_flag_gives_when_typed_out(name):
    action = ACTIONS[name]
    if action.default is None:  # decided later when not given: given, the flag's own type
        value = parsed(action, True if action.nargs == 0 else "1")
        assert options.value_problem(action, value) == "" and options.value_problem(action, None) == ""
        return
    value = parsed(action, True if action.nargs == 0 else action.default)
    assert type(value) is type(action.default), f"--{name} {action.default!r} is parsed as {value!r}"
    assert options.value_problem(action, action.default) == ""


@pytest.mark.parametrize("model", MODELS)
def test_every_model_declares_defaults_of_their_declared_type(model):
    for entry in MODELS.options(model):
        if entry.get("default") is not None:
            assert type(entry["default"]) is TYPES[entry.get("type", "str")], entry


def test_a_model_declaring_a_whole_number_default_for_a_float_flag_is_told_to_write_a_float(tmp_path, monkeypatch):
    (tmp_path / "mistyped_model.py").write_text(
        'OPTIONS = [{"flag": "--w_mistyped", "type": "float", "default": 1, "help": "a weight"}]\n')
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(TypeError, match=r"--w_mistyped float and its default is int 1: write 1\.0"):
        registry.Registry("mistyped_model").options("mistyped_model")


# --- stored options ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIONS)
def test_a_checkpoint_accepts_each_option_as_the_command_line_gives_it(trained_run, name):
    stored = saved_options(trained_run)
    value = parsed(ACTIONS[name], stored.get(name, ACTIONS[name].default))
    checkpoint.check_options({**stored, name: value}, "best.pt")


@pytest.mark.parametrize("name", FLOATS)
def test_a_float_option_stored_as_a_whole_number_is_accepted(trained_run, name):
    # As a type: a whole number is as good as a float (the value itself must still pass the checks).
    stored = saved_options(trained_run)
    assert options.value_problem(ACTIONS[name], round(stored[name])) == ""


def test_a_checkpoint_whose_weights_older_versions_stored_as_whole_numbers_still_loads(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "train/weights/best.pt", weights_only=True)
    ckpt["options"].update(w_adv=1, w_con=50, w_lat=1, lambda_gp=10, w_enc=1)  # those versions' int defaults
    torch.save(ckpt, tmp_path / "best.pt")
    loaded = checkpoint.load(tmp_path / "best.pt")
    assert loaded["options"]["w_con"] == 50


def wrongly_typed(action: argparse.Action, value):
    """A value of the wrong kind: a number where the flag takes text, else the value's text."""
    return 3 if action.type in (None, str) and action.nargs != 0 else str(value)


@pytest.mark.parametrize("name", ACTIONS)
def test_a_checkpoint_with_an_option_of_the_wrong_kind_is_refused_as_damaged(trained_run, name):
    stored = saved_options(trained_run)
    value = wrongly_typed(ACTIONS[name], stored.get(name, ACTIONS[name].default))
    with pytest.raises(UserError, match=f"is damaged: its option '{name}' is {type(value).__name__} .*, not "):
        checkpoint.check_options({**stored, name: value}, "best.pt")


@pytest.mark.parametrize("name, value, takes", [
    ("batchsize", 64.0, "a whole number"),
    ("batchsize", True, "a whole number"),
    ("w_adv", True, "a finite number"),
    ("w_adv", float("nan"), "a finite number"),
    ("score_weight", "best", "a finite number or 'val'"),
    ("model", "vae", "one of skipganomaly, "),
    ("wgan", "both", "one of gp, clip"),
    ("amp", "on", "true or false or None"),
])
def test_a_stored_value_no_command_line_gives_is_refused_saying_what_the_option_takes(trained_run, name, value,
                                                                                     takes):
    with pytest.raises(UserError, match=f"its option '{name}' is .*, not {takes}") as refused:
        checkpoint.check_options({**saved_options(trained_run), name: value}, "best.pt")
    assert len(str(refused.value).splitlines()) == 1


@pytest.mark.slow
def test_a_run_trained_with_explicit_weights_can_be_scored_resumed_and_tested(tmp_path):
    """The README's first command at tiny size, then every command that loads its checkpoint."""
    run = tmp_path / "out" / "w_skipganomaly" / "digits" / "3"
    commands = [
        ("train.py", [*tiny(ngf=4, ndf=4), "--model", "w_skipganomaly", "--niter", "1", "--outf", "out",
                      "--w_con", "50", "--w_adv", "1", "--w_lat", "1"]),
        ("predict.py", ["--weights", run, "--path", run / "train" / "images", "--device", "cpu"]),
        ("train.py", ["--resume", run, "--niter", "2", "--device", "cpu"]),
        ("train.py", ["--dataset", "digits", "--abnormal_class", "3", "--device", "cpu", "--load_weights", run,
                      "--phase", "test"]),
    ]
    for script, args in commands:
        proc = process(script, args, tmp_path)
        assert proc.returncode == 0, f"{script} {args}:\n{proc.stdout}\n{proc.stderr}"
    assert len(checkpoint.load(run / "train/weights/last.pt")["history"]) == 2  # the resumed run trained on
    assert (run / "predict" / "predictions.csv").is_file() and (run / "test").is_dir()


# --- --original and --extralayers ----------------------------------------------------------------
def test_original_refuses_extralayers_which_the_original_code_ignored(tmp_path):
    proc = process("train.py", [*TINY, "--original", "--extralayers", "1"], tmp_path)
    one_line_error(proc, "--extralayers 1: the original code accepts this flag but ignores it",
                   "drop --extralayers or drop --original")
    assert not (tmp_path / "output").exists()


def test_no_fixes_refuses_extralayers_as_original_does_and_both_take_none():
    with pytest.raises(UserError, match="--fixes none cannot reproduce a run with it"):
        options.parse([*TINY, "--fixes", "none", "--extralayers", "2"])
    options.parse([*TINY, "--original", "--extralayers", "0"])
    options.parse([*TINY, "--extralayers", "1"])  # with the fixes, the layers are built


RECORDER = STUB_START + """with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
"""


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "experiments").glob("run_*.sh")))
def test_every_sweep_runs_under_original(script, tmp_path):
    (tmp_path / "recorder.py").write_text(RECORDER)
    record = tmp_path / "runs.jsonl"
    env = {**os.environ, "PYTHON": f"{sys.executable} {tmp_path / 'recorder.py'}", "RECORD": str(record)}
    done = subprocess.run(["bash", str(ROOT / "experiments" / script), "--original"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert runs
    for argv in runs:
        assert "--extralayers" not in argv
        options.parse(argv)
