"""What the fourth hostile probe found, each as the user met it: a command started with its console closed
wrote its console into the run's log; a folder where opt.txt goes gave a traceback; SIGTERM and SIGHUP
killed predict.py mid-write; a Ctrl-C during a control's (or the last) evaluation was lost, so a sweep went
on; a search loaded a crafted checkpoint in every trial; the collector dropped folder-dataset runs and took
impossible AUROCs and copied runs; flags the run's other flags leave unread were accepted."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from lib import options
from lib.errors import UserError
from tests.conftest import make_folder_dataset
from tests.helpers import ONE_EPOCH, ROOT, RUN, TINY, one_line_error, process, read_csv, tool

PY = sys.executable


def start(script, args, cwd, **kwargs):
    return subprocess.Popen([PY, ROOT / script, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path, proc, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_started_with_its_console_closed_keeps_its_console_out_of_its_files(tmp_path):
    done = subprocess.run(["bash", "-c", f"exec {PY} {ROOT / 'train.py'} {' '.join(ONE_EPOCH)} --outf out 1>&- 2>&-"],
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0
    log = (tmp_path / "out" / RUN / "loss_log.txt").read_text()
    assert "outputs:" not in log and "digits from" not in log and "score:" not in log


def test_a_folder_where_opt_txt_goes_is_one_line_on_resume(trained_run_copy, tmp_path):
    (trained_run_copy / "opt.txt").unlink()
    (trained_run_copy / "opt.txt").mkdir()
    one_line_error(process("train.py", ["--resume", trained_run_copy, "--niter", "2"], tmp_path),
                   "opt.txt' is a folder where a file of that name is written: move or rename the folder")


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_predict_in_one_line_and_leave_no_out_behind(trained_run, tmp_path, sig, code):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(400):
        shutil.copy(ROOT / "docs" / "predict_example.png", images / f"{i}.png")
    # As from a terminal: SIGHUP's default, whatever this test runs under (nohup ignores it, and it stays so).
    proc = start("predict.py", ["--path", images, "--weights", trained_run, "--out", tmp_path / "p", "--device",
                                "cpu", "--batchsize", "1"], tmp_path,
                 preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    wait_for(tmp_path / "p" / ".lock", proc)  # scoring has begun: --out is created and locked
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code and err.strip().splitlines()[-1] == f"interrupted ({sig.name})", err
    assert not (tmp_path / "p").exists()  # it created --out: nothing of it stays


def test_sighup_ignored_as_under_nohup_stays_ignored(trained_run, tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copy(ROOT / "docs" / "predict_example.png", tmp_path / "images" / "x.png")
    done = subprocess.run(["bash", "-c", f"trap '' HUP; exec {PY} {ROOT / 'predict.py'} --path images --weights "
                           f"{trained_run} --out p --device cpu & sleep 3; kill -HUP $!; wait $!"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_csv(tmp_path / "p" / "predictions.csv")) == 1


@pytest.mark.slow
def test_ctrl_c_during_a_controls_evaluation_completes_the_run_and_exits_130(tmp_path):
    # A sweep stops at a run that exits 130; one that exits 0 after Ctrl-C made it go on to the next class.
    proc = start("train.py", [*TINY, "--niter", "0", "--isize", "32", "--ngf", "32", "--ndf", "32", "--outf", "out"],
                 tmp_path)
    control = tmp_path / "out" / "skipganomaly-control" / "digits" / "3"
    wait_for(control / "loss_log.txt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "during the last evaluation, after which the run is complete" in err
    assert json.loads((control / "results.json").read_text())["untrained_control"] is True


def test_a_search_refuses_a_crafted_checkpoint_before_ray_starts(tmp_path):
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system"
                                       b"\x94\x93\x94\x8c\x07touch x\x94\x85\x94R\x94.")
    (tmp_path / "space.json").write_text('{"w_con": {"grid": [1, 2]}}')
    proc = process("train_tune.py", [*TINY, "--niter", "1", "--space", "space.json", "--load_weights", "evil.pt",
                                     "--outf", "out"], tmp_path)
    one_line_error(proc, "refusing to load 'evil.pt'")
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_collector_tables_folder_datasets_and_skips_impossible_values_and_copies(trained_run, tmp_path):
    make_folder_dataset(tmp_path / "data")
    done = process("train.py", ["--dataset", "custom", "--dataroot", "data", "--isize", "8", "--ngf", "8", "--ndf",
                                "8", "--nz", "8", "--niter", "1", "--device", "cpu", "--manualseed", "0",
                                "--batchsize", "2", "--outf", "o"], tmp_path)
    assert done.returncode == 0, done.stderr
    shutil.copytree(trained_run, tmp_path / "o" / "digits_run")
    shutil.copytree(trained_run, tmp_path / "o" / "digits_copy")  # the same seed again: no second sample
    odd = tmp_path / "o" / "odd"
    shutil.copytree(trained_run, odd)
    results = json.loads((odd / "results.json").read_text())
    results["best"]["test"]["auroc"], results["seed"] = 37.0, 99
    (odd / "results.json").write_text(json.dumps(results))
    proc = tool("tools.collect_results", ["o", "--out", "table.md"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2 and any("outside [0, 1]" in w for w in warnings), warnings
    assert any("digits_copy" in w and "the same setting, class and seed" in w for w in warnings), warnings
    assert sorted(p.name for p in tmp_path.glob("table*")) == ["table.csv", "table.md"]
    rows = read_csv(tmp_path / "table.csv")
    folder = next(r for r in rows if r["dataset"] == "custom")
    assert folder["abnormal runs"] == "1" and 0 <= float(folder["abnormal"]) <= 1
    assert next(r for r in rows if r["dataset"] == "digits")["3 runs"] == "1"


@pytest.mark.parametrize("flags,message", [
    (["--model", "w_skipganomaly", "--wgan", "clip", "--lambda_gp", "3"], "--lambda_gp is read only with --wgan gp"),
    (["--model", "w_skipganomaly", "--clip_value", "0.5"], "--clip_value is read only with --wgan clip"),
    (["--lr_policy", "step", "--niter_decay", "7"], "--niter_decay is read only with --lr_policy lambda"),
    (["--lr_decay_iters", "7"], "--lr_decay_iters is read only with --lr_policy step"),
    (["--fixes", "outputs,-outputs"], "--fixes names outputs both on and off"),
    (["--model", "ganomaly", "--w_adv", "0", "--w_con", "0", "--w_enc", "0"], "--w_adv, --w_con, --w_enc are all 0"),
])
def test_a_flag_the_runs_other_flags_leave_unread_is_refused(flags, message):
    with pytest.raises(UserError, match=message.replace("-", r"\-")):
        options.parse([*TINY, *flags])


def test_the_flags_read_under_their_own_setting_are_taken():
    opt = options.parse([*TINY, "--model", "w_skipganomaly", "--wgan", "clip", "--clip_value", "0.1", "--lr_policy",
                         "step", "--lr_decay_iters", "3", "--fixes", "all,-outputs"])
    assert (opt.clip_value, opt.lr_decay_iters) == (0.1, 3)


def test_a_run_into_a_controls_folder_is_not_offered_resume_which_a_control_refuses(tmp_path):
    assert process("train.py", [*TINY, "--niter", "0", "--outf", "o"], tmp_path).returncode == 0
    for niter in ("0", "1"):
        again = process("train.py", [*TINY, "--niter", niter, "--outf", "o", "--name", "skipganomaly-control/digits/3"],
                        tmp_path)
        one_line_error(again, "already holds a run: pass --overwrite to delete it")
        assert "--resume" not in again.stderr


def test_a_config_that_is_a_pipe_is_refused_and_an_editors_byte_order_mark_is_read(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe")
    one_line_error(process("train.py", ["--config", "pipe"], tmp_path), "'pipe' is not a regular file")
    (tmp_path / "opt.txt").write_bytes("\ufeff------------ Options -------------\ndataset: digits\t[default: cifar10]\n"
                                       "save_test_images: False\t[default: False]\n"
                                       "-------------- End ----------------\n".encode())
    shown = process("train.py", ["--config", "opt.txt", "--print_config"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "dataset: digits\t" in shown.stdout and "save_test_images: False\n" in shown.stdout  # off, as recorded


@pytest.mark.parametrize("env,fragment", [
    ({"SEEDS": "1 01"}, 'SEEDS="1 01" names 1 twice'),
    ({"CLASSES": " \t"}, "names no class"),
])
def test_a_sweep_reads_seeds_and_classes_as_train_py_would(tmp_path, env, fragment):
    proc = subprocess.run(["bash", ROOT / "experiments" / "run_mnist.sh"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": PY, **env})
    assert proc.returncode == 2 and fragment in proc.stderr and proc.stdout == "", proc.stderr


def test_a_sweep_takes_seeds_over_several_lines(tmp_path):
    stub = tmp_path / "stub.py"
    stub.write_text("import os, sys\nif sys.argv[1:2] == ['-c']:\n    os.execv(sys.executable, [sys.executable, "
                    "*sys.argv[1:]])\nprint('RUN', sys.argv[sys.argv.index('--manualseed') + 1])\n")
    proc = subprocess.run(["bash", ROOT / "experiments" / "run_mnist.sh"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": f"{PY} {stub}",
                                                       "SEEDS": "0\t1\n2", "CLASSES": "4"})
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("RUN")] == ["RUN 0", "RUN 1", "RUN 2"]


@pytest.mark.parametrize("space,flags,fragment", [
    ('{"overwrite": {"grid": [true]}}', [], "'overwrite' cannot be searched"),
    ('{"w_con": {"grid": [1, 2]}}', ["--w_con", "7"], "--w_con is given on the command line and space file"),
    # No trial scores images: a path would be recorded in every trial and never applied.
    ('{"path": {"grid": ["/etc"]}}', [], "'path' cannot be searched (a search trains and scores no images"),
    ('{"w_con": {"grid": [1, 2]}}', ["--path", "."], "--path .: a search trains and scores no images"),
])
def test_a_space_cannot_search_what_the_command_sets(tmp_path, space, flags, fragment):
    (tmp_path / "space.json").write_text(space)
    proc = process("train_tune.py", [*TINY, "--space", "space.json", *flags, "--outf", "out"], tmp_path)
    one_line_error(proc, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--classes", "Bogus"], "unknown class 'Bogus' for fashion-mnist"),
    (["--models", "bogus"], "--models bogus is not a model"),
    (["--report", "--out", "empty"], "no runs of one-class under 'empty'"),
    (["--seeds", str(2**64)], "--seeds must be whole numbers from 0 to 2^32 - 1"),  # once, not by each run
    (["--seeds", "0", "1", "00"], "--seeds names 0 twice"),  # one run, which the table would count twice
])
def test_the_control_study_refuses_what_would_run_nothing(tmp_path, args, fragment):
    one_line_error(tool("experiments.control_study", args, tmp_path), fragment)
    one_line_error(tool("experiments.inspection_study", ["--seeds", "-1", "--out", "o"], tmp_path), "--seeds must be")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--class", "Bogus"], "unknown class 'Bogus' for fashion-mnist"),
    (["--class", "Bag", "--model", "bogus"], "--model bogus is not a model"),
    (["--class", "Bag", "--epochs", "0"], "--epochs 0: give 1 to 1000"),
    (["--class", "Bag", "--seeds", "-1"], "--seeds must be whole numbers"),
    (["--class", "Bag", "--seeds", "0", "0"], "--seeds names 0 twice"),
    (["--class", "Bag", "--report", "--out", "o"], "no finished pair of runs under"),
    (["--class", "Bag", "--isize", "-3", "--out", "o"], "--isize"),
])
def test_the_learning_curves_refuse_what_would_run_nothing(tmp_path, args, fragment):
    one_line_error(tool("experiments.learning_curves", args, tmp_path), fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("study", ["experiments.learning_curves", "experiments.control_study",
                                   "experiments.bf16_default", "experiments.inspection_study"])
@pytest.mark.parametrize("where", ["run/studies", "run", "link/studies"])
def test_a_study_refuses_an_out_at_or_inside_a_run_folder(tmp_path, study, where):
    """A study's runs are made with --overwrite: inside a run (or through a link into one) they could replace
    its files. Refused up front, in one line, as the tools refuse such an --out."""
    (tmp_path / "run" / "train" / "weights").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "run")
    args = ["--class", "Bag"] if study.endswith("curves") else []
    proc = tool(study, [*args, "--seeds", "0", "--out", where], tmp_path)
    one_line_error(proc, "is a run folder" if where == "run" else "would be inside the run folder")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["train"]


@pytest.mark.slow
def test_a_study_never_replaces_a_run_of_another_kind_at_the_place_of_one_of_its_own(tmp_path):
    """A study trains each of its unfinished runs again with --overwrite: a user's run at that place (here a
    digits run named as the study's control) was deleted without a word."""
    setting = tmp_path / "lc" / "one-class-T-shirt-top-w_skipganomaly-16px-width8-nz8-1epochs"
    mine = process("train.py", [*ONE_EPOCH, "--outf", setting, "--name", "control/seed0"], tmp_path)
    assert mine.returncode == 0, mine.stderr
    before = sorted(p.relative_to(setting) for p in setting.rglob("*"))
    proc = tool("experiments.learning_curves", ["--class", "0", "--epochs", "1", "--isize", "16", "--width", "8",
                                                 "--nz", "8", "--seeds", "0", "--out", "lc"], tmp_path)
    one_line_error(proc, "holds something other than this study's run", "--dataset digits")
    assert sorted(p.relative_to(setting) for p in setting.rglob("*")) == before


@pytest.mark.slow
def test_the_control_study_fails_when_its_runs_fail(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "one-class").write_text("a file where the study's runs go")
    proc = tool("experiments.control_study", ["--classes", "Bag", "--seeds", "0", "--out", "out"], tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("failed: 2 run(s)"), proc.stderr


def test_a_config_of_the_originals_train_opt_txt_is_refused_as_it_replays_nothing(tmp_path):
    (tmp_path / "opt.txt").write_text("------------ Options -------------\ndataset: digits\nniter: 3\n"
                                      "-------------- End ----------------\n")
    one_line_error(process("train.py", ["--config", "opt.txt"], tmp_path), "marks no option as changed")


@pytest.mark.ray
@pytest.mark.slow
def test_restore_continues_the_search_as_it_was_started_or_refuses(tmp_path):
    (tmp_path / "a.json").write_text('{"w_con": {"grid": [1, 2]}}')
    (tmp_path / "b.json").write_text('{"w_adv": {"grid": [1, 2]}}')
    search = [*TINY, "--niter", "1", "--num_cpus", "2", "--cpus_per_trial", "1", "--outf", "out", "--name", "s"]
    assert process("train_tune.py", [*search, "--space", "a.json"], tmp_path).returncode == 0
    one_line_error(process("train_tune.py", [*search, "--space", "b.json", "--restore"], tmp_path),
                   "with the space it was started with")
    one_line_error(process("train_tune.py", [*search, "--restore", "--model", "ganomaly"], tmp_path),
                   "as it was started, with --model skipganomaly, and this command gives ganomaly")
    again = process("train_tune.py", [*search, "--restore"], tmp_path)  # its own space, without --space
    assert again.returncode == 0 and "best config: w_con=" in again.stdout, again.stderr


@pytest.mark.parametrize("flags,message", [
    (["--fixes", ","], "--fixes ',' names nothing"),
    (["--fixes", " , "], "names nothing"),
    (["--fixes=-gp_of_mean"], "starts by removing gp_of_mean from nothing"),  # it trained the original
    (["--original", "--fixes", "default"], "--original applies no fix and --fixes default names some"),
    (["--model", "w_skipganomaly", "--wgan", "clip", "--clip_value", "0"], "--clip_value must be above 0"),
    (["--display", "--display_server", "http://a\nb"], "holds control characters"),
])
def test_a_value_that_would_quietly_run_something_else_is_refused(flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        options.parse([*TINY, *flags])


@pytest.mark.parametrize("script", ["train.py", "train_tune.py", "predict.py"])
@pytest.mark.parametrize("flags", [["--resume", ""], ["--path="], ["--load_weights", " "], ["--config", ""],
                                   ["--display_server", ""], ["--weights", ""]])
def test_an_empty_value_is_refused_rather_than_taken_for_the_flag_left_out(tmp_path, script, flags):
    """`--resume "$RUN"` with RUN unset once trained a new run, `--path ""` scored nothing."""
    if script == "predict.py" and flags[0] not in ("--path=", "--weights"):
        return  # not one of its flags
    if script != "predict.py" and flags[0] == "--weights":
        return
    base = ["--weights", "run", "--path", "images"] if script == "predict.py" else ["--print_config"]
    flag = flags[0].rstrip("=")
    one_line_error(process(script, [*base, *flags], tmp_path), f"{flag} is empty (an unset variable?)")
    assert list(tmp_path.iterdir()) == []


def test_print_config_of_a_resumed_run_shows_its_checkpoints_options_or_refuses_a_missing_one(tmp_path, trained_run):
    one_line_error(process("train.py", ["--print_config", "--resume", "nowhere"], tmp_path), "no checkpoint at")
    shown = process("train.py", ["--print_config", "--resume", trained_run, "--niter", "3"], tmp_path)
    assert shown.returncode == 0 and "niter: 3" in shown.stdout and "abnormal_class: 3" in shown.stdout, shown.stderr
    assert "ngf: 8" in shown.stdout  # the checkpoint's, not the default 64


def test_a_bad_mplbackend_in_the_shell_does_not_stop_a_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "bogus"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *ONE_EPOCH, "--outf", "out"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / RUN / "plots" / "roc.png").is_file()


def test_a_run_inside_its_folder_datasets_folder_is_refused_as_its_images_would_become_data(tmp_path):
    make_folder_dataset(tmp_path / "data", "ds")
    args = ["--dataset", "ds", "--dataroot", tmp_path / "data", "--isize", "8", "--niter", "1", "--device", "cpu"]
    one_line_error(process("train.py", [*args, "--outf", tmp_path / "data" / "ds" / "train" / "0.normal" / "out"],
                           tmp_path), "is inside the dataset's folder")
    one_line_error(process("train.py", ["--dataset", "", "--outf", "o"], tmp_path), "--dataset is empty")
    assert not (tmp_path / "data" / "ds" / "train" / "0.normal" / "out").exists()


def test_a_run_moved_into_its_datasets_folder_is_refused_by_resume_and_phase_test(tmp_path):
    make_folder_dataset(tmp_path / "data", "ds")
    args = ["--dataset", "ds", "--dataroot", tmp_path / "data", "--isize", "8", "--ngf", "8", "--ndf", "8",
            "--nz", "8", "--batchsize", "4", "--niter", "1", "--device", "cpu", "--outf", tmp_path / "o"]
    assert process("train.py", args, tmp_path).returncode == 0
    inside = tmp_path / "data" / "ds" / "train" / "0.normal" / "o"
    shutil.move(tmp_path / "o", inside)
    run = inside / "skipganomaly" / "ds"
    before = sorted(p.name for p in (tmp_path / "data" / "ds" / "train" / "0.normal").rglob("*"))
    for argv in (["--resume", run, "--niter", "2"], ["--phase", "test", "--load_weights", run]):
        one_line_error(process("train.py", argv, tmp_path), "lies inside its dataset's folder")
    assert sorted(p.name for p in (tmp_path / "data" / "ds" / "train" / "0.normal").rglob("*")) == before


def test_resume_refuses_data_changed_since_the_run_began_and_continues_on_the_same(tmp_path):
    make_folder_dataset(tmp_path / "data", "ds")
    args = ["--dataset", "ds", "--dataroot", tmp_path / "data", "--isize", "8", "--ngf", "8", "--ndf", "8",
            "--nz", "8", "--batchsize", "4", "--niter", "1", "--device", "cpu", "--outf", tmp_path / "o"]
    assert process("train.py", args, tmp_path).returncode == 0
    run = tmp_path / "o" / "skipganomaly" / "ds"
    image = next((tmp_path / "data" / "ds" / "test" / "1.abnormal").glob("*.png"))
    kept = image.read_bytes()
    shutil.copy(next((tmp_path / "data" / "ds" / "test" / "0.normal").glob("*.png")), image)  # another picture
    before = (run / "metrics.csv").read_text()
    one_line_error(process("train.py", ["--resume", run, "--niter", "2"], tmp_path),
                   "differ from those", "was trained on (now: train 6 normal")
    assert (run / "metrics.csv").read_text() == before
    image.write_bytes(kept)
    shutil.move(tmp_path / "data", tmp_path / "moved")  # the same images elsewhere: the digest proves them
    assert process("train.py", ["--resume", run, "--niter", "2", "--dataroot", tmp_path / "moved"],
                   tmp_path).returncode == 0
    ckpt = torch.load(run / "train" / "weights" / "last.pt", weights_only=False)
    del ckpt["data_digest"]  # a checkpoint from before the digest: only its own --dataroot is trusted
    torch.save(ckpt, run / "train" / "weights" / "last.pt")
    shutil.move(tmp_path / "moved", tmp_path / "data")
    one_line_error(process("train.py", ["--resume", run, "--niter", "3", "--dataroot", tmp_path / "data"], tmp_path),
                   "saved before checkpoints recorded their data")
