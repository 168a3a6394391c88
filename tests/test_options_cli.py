"""The command line as people type it: `--config` replays a recorded run (flags given override it),
`--print_config` shows the effective options and creates nothing, dashes stand for underscores
(`--abnormal-class`), and a misspelt flag gets the nearest ones ("did you mean")."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, RUN, TINY, one_line_error, process, read_csv, tiny, train_cli

SAME = ("loss", "auroc", "auprc", "f1", "eer")  # metrics.csv's columns that a replay must repeat exactly


def numbers(run):
    return [{k: v for k, v in row.items() if any(part in k for part in SAME)} for row in read_csv(run / "metrics.csv")]


@pytest.mark.slow
def test_a_run_replayed_from_its_opt_txt_repeats_it_and_flags_given_override_it(tmp_path):
    # A seed drawn by the run (-1) is recorded, so the replay draws nothing and repeats the run.
    train_cli([*tiny(manualseed=-1), "--niter", "1", "--outf", "a"], tmp_path)
    first = tmp_path / "a" / RUN
    train_cli(["--config", first / "opt.txt", "--outf", "b"], tmp_path)
    again = tmp_path / "b" / RUN
    assert numbers(again) == numbers(first) and numbers(first)
    seed = json.loads((first / "results.json").read_text())["seed"]
    assert json.loads((again / "results.json").read_text())["seed"] == seed
    # A class given on the command line overrides the recorded one, and the run is named after it.
    shown = process("train.py", ["--config", first, "--abnormal_class", "5", "--print_config"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "abnormal_class: 5\t[default: None]" in shown.stdout and "name: skipganomaly/digits/5\t" in shown.stdout
    assert f"manualseed: {seed}\t" in shown.stdout and "outf: a\t" in shown.stdout


def test_print_config_shows_every_option_with_the_changed_ones_marked_and_creates_nothing(tmp_path):
    proc = process("train.py", [*TINY, "--w-adv", "2", "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "------------ Options -------------" and lines[-1] == "-------------- End ----------------"
    assert "w_adv: 2.0\t[default: 1.0]" in lines and "name: skipganomaly/digits/3\t[default: None]" in lines
    assert "lr: 0.0002" in lines and not any(line.startswith(("config", "print_config")) for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_a_config_from_a_resumed_or_overwritten_run_replays_neither(tmp_path):
    record = tmp_path / "opt.txt"
    record.write_text("------------ Options -------------\ndataset: digits\t[default: cifar10]\n"
                      "overwrite: True\t[default: False]\nresume: out/x\t[default: ]\nfast: False\t[default: True]\n"
                      "-------------- End ----------------\n")
    proc = process("train.py", ["--config", record, "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "overwrite: False" in proc.stdout and "resume: " in proc.stdout.splitlines()
    assert "fast: False\t[default: True]" in proc.stdout and "dataset: digits\t" in proc.stdout


@pytest.mark.parametrize("content,fragment", [
    (None, "cannot read it (No such file or directory)"),
    ("name: x\n", "is not an opt.txt written by train.py"),
    ("------------ Options -------------\nthis is no option\n-------------- End ----------------\n",
     "line 2 is not 'option: value'"),
    ("------------ Options -------------\nnot_an_option: 3\t[default: 1]\n-------------- End ----------------\n",
     "sets not_an_option, which train.py does not have"),
    ("------------ Options -------------\nisize: big\t[default: 32]\n-------------- End ----------------\n",
     "argument --isize: invalid int value: 'big'"),
])
def test_a_config_that_is_no_run_record_is_refused_in_one_line(tmp_path, content, fragment):
    if content is not None:
        (tmp_path / "opt.txt").write_text(content)
    proc = process("train.py", ["--config", tmp_path / "opt.txt", "--outf", tmp_path / "out"], tmp_path)
    one_line_error(proc, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("line,shown", [
    ("fast: true", "fast: True"), ("fast: True ", "fast: True"), ("fast: false", "fast: False\t[default: True]"),
    ("droplast: FALSE", "droplast: False\t[default: True]"), ("no_skip: true", "no_skip: True\t[default: False]"),
    ("no_skip: true\t[default: False]", "no_skip: True\t[default: False]"),
    ("save_test_images: False", "save_test_images: False"), ("amp: True ", "amp: True\t[default: None]"),
    ("amp: none", "amp: None"),
    ("fast: yes", "error: --config 'opt.txt': 'fast: yes' is not on or off: write True or False"),
    ("droplast: 1", "error: --config 'opt.txt': 'droplast: 1' is not on or off"),
    ("save_test_images: 1\t[default: False]", "'save_test_images: 1' is not on or off"),
    ("amp: auto", "'amp: auto' is not on or off: write True, False or None"),
    ("niter: 1_0", "error: argument --niter: invalid int value: '1_0'"),
])
def test_an_on_off_option_edited_by_hand_is_read_as_written_or_refused(tmp_path, line, shown):
    """An edited switch once read as off whenever it was not exactly 'True' (`fast: true` trained with
    --no-fast, `no_skip: true` with the skips): the words True/False in any case are read, others refused;
    a number with digit separators, which Python's int() reads, is refused as on the command line."""
    (tmp_path / "opt.txt").write_text("------------ Options -------------\ndataset: digits\t[default: cifar10]\n"
                                      f"{line}\nname: skipganomaly/digits/3\t[default: None]\n"
                                      "-------------- End ----------------\n")
    proc = process("train.py", ["--config", "opt.txt", "--print_config"], tmp_path)
    if shown.startswith("error") or "is not on or off" in shown:
        one_line_error(proc, shown.removeprefix("error: "))
    else:
        assert proc.returncode == 0 and shown in proc.stdout.splitlines(), proc.stdout + proc.stderr


def test_numbers_with_digit_separators_are_refused_on_the_command_line():
    one_line_error(process("train.py", ["--niter", "1_0", "--print_config"], ROOT), "--niter: invalid int value")
    one_line_error(process("train.py", ["--lr", "2_0e-4", "--print_config"], ROOT), "--lr: invalid float value")
    # A type of its own that reads a number (--score_weight: a number or 'val') refuses them too.
    one_line_error(process("train.py", ["--score_weight", "0.9_0", "--print_config"], ROOT),
                   "--score_weight: invalid number value: '0.9_0'")


def test_a_value_edited_by_hand_without_its_mark_is_replayed_and_a_bad_one_refused_once(tmp_path):
    block = ("------------ Options -------------\ndataset: digits\t[default: cifar10]\n{line}\n"
             "name: skipganomaly/digits/3\t[default: None]\n-------------- End ----------------\n")
    record = tmp_path / "opt.txt"
    record.write_text(block.format(line="niter: 3"))  # the run's own line read "niter: 15"
    shown = process("train.py", ["--config", record, "--print_config"], tmp_path)
    assert shown.returncode == 0 and "niter: 3\t[default: 15]" in shown.stdout, shown.stderr
    for line, fragment in (("model: bogus", "invalid choice: 'bogus'"), ("isize: nan", "invalid int value: 'nan'")):
        record.write_text(block.format(line=line))
        one_line_error(process("train.py", ["--config", record, "--outf", "out"], tmp_path), fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script,args,shown", [
    ("train.py", ["--abnormal-class", "5", "--dataset", "digits", "--score-weight=0.5"],
     ["abnormal_class: 5\t", "score_weight: 0.5\t"]),
    ("train.py", ["--no-fast", "--no-droplast"], ["fast: False\t", "droplast: False\t"]),  # dashed flags stay
    ("train_tune.py", ["--abnormal-class", "5", "--dataset", "digits"], ["abnormal_class: 5\t"]),
])
def test_dashed_spellings_of_flags_are_the_flags(tmp_path, script, args, shown):
    proc = process(script, [*args, "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for line in shown:
        assert line in proc.stdout


@pytest.mark.parametrize("script,args,fragment", [
    ("train.py", ["--abnormal-clss", "3"], "--abnormal-clss: did you mean --abnormal_class or --normal_class?"),
    ("train.py", ["--nitr", "3"], "--nitr: did you mean --niter"),
    ("train.py", ["--lamda_gp=3"], "--lamda_gp: did you mean --lambda_gp"),
    ("predict.py", ["--path", ".", "--weights", "run", "--treshold", "0.5"], "--treshold: did you mean --threshold"),
    ("train.py", ["--zzzzzz", "3"], "unrecognized arguments: --zzzzzz 3 (see: train.py -h)"),
])
def test_a_misspelt_flag_gets_the_nearest_ones(tmp_path, script, args, fragment):
    one_line_error(process(script, args, tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_refuses_the_dashed_spelling_of_a_flag_it_sets_itself(tmp_path):
    proc = subprocess.run(["bash", ROOT / "experiments" / "run_mnist.sh", "--abnormal-class", "3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                            "PYTHON": sys.executable})
    assert proc.returncode == 2 and proc.stderr.startswith("error: --abnormal-class: the sweep sets --abnormal_class")
