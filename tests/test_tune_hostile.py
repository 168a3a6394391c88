"""train_tune.py against bad input, as a real process: one line, exit code 2, before Ray starts
(and the train.py command a search prints for a trial, read back by train.py).

Every case here is refused before Ray starts, nearly all before torch is even imported, so each
costs a fraction of a second. Besides the message, each checks that nothing was written: no search folder, and every
file already there left as it was.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from lib import options
from lib.tune.checks import reproduce_argv
from lib.tune.trials import NOT_IN_COMMAND, train_actions, trial_base, trial_options
from tests.helpers import ROOT, process, tiny, without_searched

# TINY with anomaly class 0 for 2 epochs, and no seed (a fixed seed with --num_samples > 1 is refused on its own).
SEARCH = tiny(abnormal_class=0, manualseed=None, print_freq=None, save_image_freq=None, niter=2)
# More CPUs than any test machine has: a space that passes its checks is refused here, before Ray.
TOO_MANY_CPUS = ["--cpus_per_trial", "100000"]


def snapshot(folder):
    """Every path under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def refused(tmp_path, args, fragment, search=SEARCH):
    """Run train_tune.py ARGS in tmp_path; assert it refused with one line holding `fragment`, writing nothing."""
    before = snapshot(tmp_path)
    search = without_searched(search, args)
    done = process("train_tune.py", [*search, "--outf", tmp_path / "out", *args], tmp_path)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and not done.stdout, done.stderr + done.stdout
    assert fragment in lines[0], lines[0]
    assert snapshot(tmp_path) == before
    return lines[0]


def space(tmp_path, content, name="space.json"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return ["--space", path]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RESOURCES = {
    "cpus nan": (["--cpus_per_trial", "nan"], "--cpus_per_trial must be a number above 0"),
    "cpus inf": (["--cpus_per_trial", "inf"], "--cpus_per_trial must be a number above 0"),
    "cpus negative": (["--cpus_per_trial", "-1"], "--cpus_per_trial must be a number above 0"),
    "cpus zero": (["--cpus_per_trial", "0"], "--cpus_per_trial must be a number above 0"),
    "cpus beyond the machine": (TOO_MANY_CPUS, "no trial could start"),
    "cpus beyond --num_cpus": (["--num_cpus", "1", "--cpus_per_trial", "2"], "more than the 1 CPUs"),
    "cpus finer than Ray counts": (["--cpus_per_trial", "0.33333"], "steps of 0.0001"),
    "gpus nan": (["--gpus_per_trial", "nan"], "--gpus_per_trial must be a number 0 or more"),
    "gpus inf": (["--gpus_per_trial", "inf"], "--gpus_per_trial must be a number 0 or more"),
    "gpus negative": (["--gpus_per_trial", "-0.5"], "--gpus_per_trial must be a number 0 or more"),
    "gpus fractional above one": (["--gpus_per_trial", "1.5"], "a fraction below 1"),
    "gpus beyond the machine": pytest.param(["--device", "gpu", "--gpus_per_trial", "100000"], "no trial could start",
                                            marks=pytest.mark.slow),  # counting GPUs imports torch
    "gpus for cpu trials": (["--gpus_per_trial", "0.5"], "with --device cpu"),
    "num_cpus zero": (["--num_cpus", "0"], "--num_cpus must be a whole number from 1"),
    "num_cpus negative": (["--num_cpus", "-2"], "--num_cpus must be a whole number from 1"),
    "num_cpus beyond the machine": (["--num_cpus", "100000"], "this machine has"),
    "num_samples zero": (["--num_samples", "0"], "--num_samples must be a whole number from 1"),
    "grace_period zero": (["--scheduler", "asha", "--grace_period", "0"], "--grace_period must be a whole number"),
    "grace_period nan": (["--grace_period", "nan"], "invalid int value"),
    "an abbreviated flag": (["--num_samp", "0"], "--num_samples must be a whole number from 1"),
    "processes per trial without a core each": (["--ngpu", "2", "--cpus_per_trial", "1"],
                                                "give each process a core"),
    "processes per trial beyond the machine": (["--ngpu", "64"], "no trial could start"),
}


@pytest.mark.parametrize("args, fragment", RESOURCES.values(), ids=RESOURCES.keys())
def test_resources_ray_could_never_grant_are_refused_before_it_starts(tmp_path, args, fragment):
    refused(tmp_path, args, fragment)


@pytest.mark.parametrize("flag", ["--num_cpus", "--num_samples", "--grace_period", "--niter", "--batchsize"])
def test_huge_integers_give_one_line_not_an_overflow_traceback(tmp_path, flag):
    refused(tmp_path, ["--scheduler", "asha", flag, "99999999999999999999"], "99999999999999999999")


def test_an_address_where_no_cluster_listens_fails_within_seconds(tmp_path):
    start = time.monotonic()
    refused(tmp_path, ["--address", f"127.0.0.1:{free_port()}"], "no Ray cluster answers there")
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("address", ["foo", "host:99999", ":6379", "http://127.0.0.1:8265", "127.0.0.1:6379 "])
def test_a_malformed_address_is_refused_naming_the_form_ray_expects(tmp_path, address):
    refused(tmp_path, ["--address", address], "is not a Ray address: give HOST:PORT")


def test_ray_address_in_the_environment_is_checked_like_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    refused(tmp_path, [], "RAY_ADDRESS")


def test_num_cpus_with_a_cluster_address_is_refused(tmp_path):
    refused(tmp_path, ["--address", "127.0.0.1:1", "--num_cpus", "2"], "drop --num_cpus")


SPACES = {
    "fractions for an integer option": ('{"niter": {"uniform": [1, 5]}}', "use randint"),
    "a range reaching zero for a positive option": ('{"ngf": {"randint": [0, 10]}}', "ngf = 0 is rejected"),
    "a range crossing sizes that are not powers of two": ('{"isize": {"randint": [8, 32]}}',
                                                          "isize = 9 is rejected"),
    "a wide range crossing them": ('{"isize": {"randint": [8, 100000]}}', "isize = 9 is rejected"),
    "a range crossing a forbidden channel count": ('{"nc": {"randint": [1, 3]}}', "nc = 2 is rejected"),
    "a float range reaching an excluded bound": ('{"beta1": {"uniform": [0.1, 1]}}', "beta1 = 1.0 is rejected"),
    "NaN": ('{"lr": {"grid": [NaN]}}', "NaN is not a number"),
    "Infinity": ('{"lr": {"uniform": [0.001, Infinity]}}', "Infinity is not a number"),
    "a number too large for a float": ('{"lr": {"uniform": [0.001, 1e400]}}', "too large for a number"),
    "the string nan": ('{"lr": {"grid": ["nan"]}}', "must be a finite number"),
    "a word for a number": ('{"lr": {"grid": ["fast"]}}', '"fast": expected a number'),
    "a fraction for a whole number": ('{"ngf": {"grid": ["3.5"]}}', "expected a whole number"),
    "a huge integer for a float option": ('{"lr": {"grid": [1' + "0" * 400 + ']}}', "too large for a number"),
    "a huge range bound": ('{"lr": {"uniform": [0.001, 1' + "0" * 400 + ']}}', "a bound is too large"),
    "null": ('{"abnormal_class": {"grid": [null]}}', "expected a string"),
    "a nested list": ('{"lr": {"grid": [[0.1, 0.2]]}}', "expected a number"),
    "an object for a list": ('{"lr": {"grid": {"low": 0.1}}}', "needs a non-empty list"),
    "an option given twice": ('{"lr": {"grid": [0.1]}, "--lr": {"grid": [0.2]}}', "'lr' is given twice"),
    "randint bounds beyond a C int": ('{"manualseed": {"randint": [0, 99999999999999999999]}}',
                                      "randint bounds must be within"),
    "an integer of thousands of digits": ('{"ngf": {"grid": [' + "9" * 5000 + "]}}", "is not valid JSON"),
    "deep nesting": ("[" * 100000 + "]" * 100000, "nested too deeply"),
    "options valid alone but not together": ('{"iter": {"grid": [0, 3]}, "niter": {"grid": [2, 5]}}',
                                             "iter = 3, niter = 2 together are rejected"),
    "all loss weights zero together": ('{"w_adv": {"grid": [0, 1]}, "w_con": {"grid": [0, 1]}, '
                                       '"w_lat": {"grid": [0]}}', "all 0"),
    "a score weight above one": ('{"score_weight": {"grid": [0.5, "val", 2]}}', "score_weight = 2.0 is rejected"),
    "an option of another model": ('{"n_critic": {"grid": [1, 5]}}', "only applies to --model w_skipganomaly"),
    # Ties: {"same": "OTHER"} gives an option the value OTHER takes in each trial.
    "a tie to no name": ('{"w_adv": {"grid": [1]}, "w_lat": {"same": ["w_adv"]}}', "needs the name of the searched"),
    "a tie to an unknown option": ('{"w_adv": {"grid": [1]}, "w_lat": {"same": "w_advv"}}', "unknown option 'w_advv'"),
    "a tie to an option the space does not search": ('{"w_lat": {"same": "w_adv"}}',
                                                     "'w_adv' is not searched in this space: add it"),
    "a tie to an option no search may set": ('{"w_lat": {"same": "val_ratio"}}', "so nothing can follow it"),
    "a tie to itself": ('{"w_lat": {"same": "w_lat"}}', "an option cannot follow itself"),
    "a chain of ties": ('{"w_con": {"grid": [1, 2]}, "w_adv": {"same": "w_con"}, "w_lat": {"same": "w_adv"}}',
                        "'w_adv' itself follows 'w_con': make 'w_lat' follow 'w_con' directly"),
    "a circle of ties": ('{"w_adv": {"same": "w_lat"}, "w_lat": {"same": "w_con"}, "w_con": {"same": "w_adv"}}',
                         "'w_adv', 'w_lat', 'w_con' follow each other in a circle"),
    "a tie to an option of another type": ('{"niter": {"grid": [1, 2]}, "w_lat": {"same": "niter"}}',
                                           "'w_lat' takes numbers and 'niter' takes whole numbers"),
    "a value the tied option rejects": ('{"abnormal_class": {"grid": ["1"]}, '
                                        '"normal_class": {"same": "abnormal_class"}}',
                                        "abnormal_class = '1' (with normal_class following it) is rejected"),
    "tied values rejected together": ('{"w_con": {"grid": [0]}, "w_adv": {"grid": [0, 1]}, '
                                      '"w_lat": {"same": "w_adv"}}',
                                      "w_con = 0.0, w_adv = 0.0, w_lat = 0.0 together are rejected"),
}


@pytest.mark.parametrize("text, fragment", SPACES.values(), ids=SPACES.keys())
def test_a_space_that_could_draw_an_invalid_value_is_refused_before_ray_starts(tmp_path, text, fragment):
    refused(tmp_path, space(tmp_path, text), fragment)


# Runs a space can draw that train.py would refuse, found by trying every combination of its values
# (a range at its ends) as train.py checks a command line.
COMBINATIONS = {
    "a model with another model's flag": (
        '{"model": {"choice": ["ganomaly", "w_skipganomaly"]}, "n_critic": {"grid": [1, 2]}, "niter": {"grid": [5]}}',
        [], "model = 'ganomaly', n_critic = 1, niter = 5 together are rejected: --n_critic only applies to "
            "--model w_skipganomaly, not --model ganomaly"),
    "a searched model with another model's flag given": (
        '{"model": {"grid": ["ganomaly", "w_skipganomaly"]}, "niter": {"grid": [5]}}', ["--n_critic", "2"],
        "model = 'ganomaly' is rejected: --n_critic only applies to --model w_skipganomaly"),
    "--original with a score scored in eval mode": (
        '{"original": {"grid": [true, false]}, "score": {"choice": ["ssim", "original"]}}', [],
        "original = True, score = 'ssim' together are rejected: --score ssim scores in eval mode"),
    "--extralayers under --original": (
        '{"extralayers": {"grid": [0, 2]}, "original": {"grid": [true, false]}}', [],
        "extralayers = 2, original = True together are rejected: --extralayers 2: the original code accepts"),
    "a batch size --ngpu cannot split": ('{"batchsize": {"randint": [62, 66]}}', ["--ngpu", "2"],
                                         "batchsize = 63 is rejected: --batchsize 63 does not split into 2"),
    "more critic steps than the run takes": pytest.param(  # counting the steps reads the data (torch)
        '{"model": {"grid": ["w_skipganomaly"]}, "n_critic": {"randint": [1, 100]}}', [],
        "n_critic = 31 is rejected: --n_critic 31 but the run takes only 30 training steps",
        marks=pytest.mark.slow),
    "a training weight searched over controls": ('{"w_adv": {"grid": [1, 2]}}', ["--niter", "0"],  # trials alike
                                                 "--niter 0 builds the untrained control, which never applies --w_adv"),
    "a niter that can draw the control with a rate": ('{"niter": {"grid": [0, 2]}, "lr": {"grid": [0.001]}}', [],
                                                      "niter = 0, lr = 0.001 together are rejected: --niter 0 builds"),
    "more combinations than are checked": (
        json.dumps({name: {"grid": [1, 2, 3, 4, 5, 6]} for name in ("w_con", "w_adv", "w_lat", "lr")}), [],
        "can draw 1296 combinations of values"),
    "a dataset neither built in nor in --dataroot": (
        '{"dataset": {"grid": ["digits", "nonexistent_ds"]}}', ["--dataroot", "data"],
        "dataset = 'nonexistent_ds' is rejected: dataset 'nonexistent_ds' is not built in"),
    "a --dataroot without the folder dataset": (
        '{"dataroot": {"grid": ["data", "elsewhere"]}}', ["--dataset", "mine"],
        "is rejected: dataset 'mine' is not built in (cifar10, mnist, fashion-mnist, digits) and "
        "'{tmp}/elsewhere/mine' does not exist"),
    "a folder dataset missing from one --dataroot": (
        '{"dataset": {"grid": ["mine"]}, "dataroot": {"grid": ["data", "elsewhere"]}}', [],
        "together are rejected: dataset 'mine' is not built in (cifar10, mnist, fashion-mnist, digits) and "
        "'{tmp}/elsewhere/mine' does not exist"),
}


@pytest.mark.parametrize("text, args, fragment", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_a_space_that_could_draw_a_combination_train_py_refuses_is_refused_before_ray_starts(
        tmp_path, text, args, fragment):
    (tmp_path / "data" / "mine" / "train").mkdir(parents=True)  # a folder dataset in data/, none in elsewhere/
    folders = "dataset" in text + str(args) or "dataroot" in text  # a folder dataset has no --abnormal_class
    search = [a for a in SEARCH if a not in ("--abnormal_class", "0")] if folders else SEARCH
    refused(tmp_path, space(tmp_path, text) + args, fragment.replace("{tmp}", str(tmp_path)), search=search)


def test_a_refused_combination_never_imports_ray(tmp_path):
    path = space(tmp_path, COMBINATIONS["--original with a score scored in eval mode"][0])[1]
    script = ("import sys, train_tune; from lib.errors import run_cli\n"
              f"try: run_cli(train_tune.main, {[*map(str, SEARCH), '--space', str(path)]!r})\n"
              "except SystemExit as stop: print(stop.code, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "together are rejected" in done.stderr


def test_each_trial_of_a_space_searching_original_gets_a_command_that_trains_it_again():
    # train.py --original holds no validation split out unless told: a trial of a search with one is
    # reproduced with it given explicitly, and train.py's own parse reads the command back to the trial's options.
    actions = train_actions(options.build_parser("train_tune.py"))
    base = trial_base(vars(options.build_parser("train_tune.py").parse_args(list(map(str, SEARCH)))))
    for config in ({"original": True}, {"fixes": "none"}, {"original": False}, {"model": "ganomaly", "w_enc": 2.0}):
        trial = trial_options(base, config)
        argv = reproduce_argv(trial, actions)
        assert ("--val_ratio" in argv) == ("original" in config and config["original"] or "fixes" in config)
        parsed = options.parse(argv)
        assert all(getattr(parsed, name) == getattr(trial, name) for name in actions if name not in NOT_IN_COMMAND)


def test_a_tie_may_come_before_the_option_it_follows(tmp_path):
    # The space passes its checks: the refusal is the CPUs', the first check after the space.
    refused(tmp_path, space(tmp_path, '{"w_lat": {"same": "w_adv"}, "w_adv": {"grid": [0.5, 2]}}') + TOO_MANY_CPUS,
            "--cpus_per_trial 100000")


def test_original_takes_the_originals_space_and_no_validation_split_without_refusing(tmp_path):
    # experiments/tune_space_original.json passes its checks, and --val_ratio 0 is not refused: the original
    # ranks trials on the test set.
    refused(tmp_path, ["--original", "--val_ratio", "0"] + TOO_MANY_CPUS, "--cpus_per_trial 100000")


def test_original_repeats_each_grid_point_so_a_fixed_seed_is_refused_naming_the_default(tmp_path):
    line = refused(tmp_path, ["--original", "--manualseed", "1"], "would train identical trials")
    assert "--num_samples 2 (the original's" in line and "--num_samples 1" in line


def test_a_space_file_written_as_utf16_with_a_byte_order_mark_is_read(tmp_path):
    # Windows PowerShell's `echo ... > space.json` writes UTF-16 with a BOM; its values are checked as usual.
    refused(tmp_path, space(tmp_path, '{"ngf": {"grid": [8, 0]}}'.encode("utf-16")), "ngf = 0 is rejected")


def test_a_space_file_with_a_utf8_byte_order_mark_is_read(tmp_path):
    refused(tmp_path, space(tmp_path, b"\xef\xbb\xbf" + b'{"w_con": {"grid": [1]}}') + TOO_MANY_CPUS,
            "--cpus_per_trial 100000")


@pytest.mark.parametrize("where", ["latin-1 bytes", "a folder", "missing", "endless"])
def test_a_space_path_that_is_not_a_readable_utf8_file_is_refused(tmp_path, where):
    path, fragment = {"latin-1 bytes": (space(tmp_path, '{"abnormal_class": {"grid": ["café"]}}'.encode("latin-1"))[1],
                                        "is not UTF-8 text (byte 0xe9"),
                      "a folder": (tmp_path, "is a folder, not a regular file"),
                      "missing": (tmp_path / "none.json", "No such file"),
                      "endless": ("/dev/zero", "is a character device, not a regular file: a search space is a "
                                               "small JSON file")}[where]
    refused(tmp_path, ["--space", path], fragment)


def test_a_space_path_that_is_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "space.json")  # opened for reading, it would wait for a writer forever
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, str(ROOT / "train_tune.py"), *SEARCH, "--outf", tmp_path / "out",
                           "--space", "space.json"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not done.stdout and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == ("error: space file 'space.json' is a named pipe, not a regular file: a search space is "
                           "a small JSON file like experiments/tune_space.json\n")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_space_file_is_refused(tmp_path):
    args = space(tmp_path, '{"w_con": {"grid": [1]}}')
    args[1].chmod(0)
    refused(tmp_path, args, "Permission denied")


@pytest.mark.parametrize("name, fragment", [("a/b", "one folder name"), ("..", "no '..'"), ("", "empty"),
                                            ("a\nb", "control characters"), ("caf\udce9", "not UTF-8"),
                                            ("n" * 300, "300 bytes long")])
def test_a_name_that_is_not_one_utf8_folder_name_is_refused(tmp_path, name, fragment):
    refused(tmp_path, ["--name", name], fragment)


def test_an_outf_that_is_not_utf8_is_refused(tmp_path):
    refused(tmp_path, ["--outf", str(tmp_path / "out\udcff")], "--outf holds bytes that are not UTF-8")


def test_an_outf_below_a_file_is_refused_before_ray_starts(tmp_path):
    (tmp_path / "afile").write_text("mine")
    refused(tmp_path, ["--outf", tmp_path / "afile" / "out"], "is a file, not a folder")


def test_an_existing_search_is_kept_and_the_ways_on_are_named(tmp_path):
    search = tmp_path / "out" / "tune" / "s"
    search.mkdir(parents=True)
    (search / "tuner.pkl").write_bytes(b"state")
    line = refused(tmp_path, ["--name", "s"], "exists")
    assert "--restore" in line and "--overwrite" in line


def test_overwrite_deletes_only_a_folder_holding_a_search(tmp_path):
    folder = tmp_path / "out" / "tune" / "notes"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    refused(tmp_path, ["--name", "notes", "--overwrite"], "deletes only a search this tool wrote")
    (tmp_path / "out" / "tune" / "link").symlink_to(folder)
    refused(tmp_path, ["--name", "link", "--overwrite"], "deletes only a search this tool wrote")


def test_overwrite_keeps_the_old_search_until_every_check_has_passed(tmp_path):
    search = tmp_path / "out" / "tune" / "s"
    search.mkdir(parents=True)
    (search / "tuner.pkl").write_bytes(b"state")
    refused(tmp_path, ["--name", "s", "--overwrite"] + TOO_MANY_CPUS, "--cpus_per_trial")


@pytest.mark.parametrize("args, fragment", [
    (["--restore", "--overwrite", "--name", "s"], "give one of them"),
    (["--restore"], "give the name it printed"),
    (["--restore", "--name", "never"], "no search at"),
])
def test_restore_needs_the_name_of_an_existing_search(tmp_path, args, fragment):
    refused(tmp_path, args, fragment)


CONFLICTS = {
    "grace period beyond the epochs": (["--scheduler", "asha", "--grace_period", "5"],
                                       "more than the 2 epochs a trial runs"),
    "grace period without asha": (["--grace_period", "2"], "applies to --scheduler asha"),
    "asha over classes": (["--scheduler", "asha", "--space", "{space}"], "ASHA would compare"),
    "repeats of one seed": (["--num_samples", "3", "--manualseed", "1"], "identical trials"),
    "search flags with --tune False": (["--tune", "False", "--num_samples", "2"], "--tune False runs one plain"),
    "load_weights without a path": (["--load_weights"], "each trial's own new run"),
    "load_weights missing": (["--load_weights", "nowhere.pt"], "does not exist"),
    "resume": (["--resume", "run"], "--restore"),
    "phase test": (["--phase", "test"], "a search trains"),
    "no validation split": (["--val_ratio", "0"], "--original ranks them on the test set"),
    "lr nan": (["--lr", "nan"], "--lr must be a finite number"),
    "w_con infinite": (["--w_con", "inf"], "--w_con must be a finite number"),
    "a flag of another model": (["--n_critic", "3"], "only applies to --model w_skipganomaly"),
    "an abbreviation matching two flags": (["--num", "2"], "ambiguous option"),
    "tune neither true nor false": (["--tune", "maybe"], "expected true or false"),
}


@pytest.mark.parametrize("args, fragment", CONFLICTS.values(), ids=CONFLICTS.keys())
def test_settings_that_cannot_work_together_are_refused_before_ray_starts(tmp_path, args, fragment):
    classes = str(space(tmp_path, json.dumps({"abnormal_class": {"grid": ["1", "2"]}}))[1])
    refused(tmp_path, [a.replace("{space}", classes) for a in args], fragment)


def test_a_folder_dataset_that_is_not_there_is_refused_before_ray_starts(tmp_path):
    folder_dataset = [a for a in SEARCH if a not in ("--abnormal_class", "0")] + ["--dataset", "mine"]
    refused(tmp_path, ["--dataroot", "data"], "'data/mine' does not exist", search=folder_dataset)


def test_a_search_whose_folder_would_lie_inside_a_run_is_refused_before_ray_starts(tmp_path, trained_run_copy):
    """train_tune.py --outf <a run>: the search folder <run>/tune/<name> would nest in the run."""
    before = snapshot(trained_run_copy)
    done = process("train_tune.py", [*SEARCH, "--outf", trained_run_copy], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "is a run folder and the search folder" in done.stderr and "would be inside it" in done.stderr
    assert snapshot(trained_run_copy) == before


@pytest.mark.parametrize("dataset, fragment", [("cifar10", "put it in data/cifar-10-batches-py"),
                                               ("mnist", "put it in data/MNIST/raw")])
def test_a_built_in_dataset_missing_here_is_refused_once_before_ray_starts(tmp_path, dataset, fragment):
    """Not each of the default space's 27 trials failing to download it in Ray's tracebacks."""
    proc = process("train_tune.py", ["--dataset", dataset, "--abnormal_class", "1", "--tune", "True",
                                     "--model", "w_skipganomaly"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert f"{dataset} not found and could not be downloaded" in proc.stderr and fragment in proc.stderr
    assert list(tmp_path.iterdir()) == []  # the folders the failed download made went too
