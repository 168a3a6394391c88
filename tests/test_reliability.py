"""What happens when things go wrong: bad input, faults, interruptions, untrusted checkpoints."""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib import files
from lib.errors import UserError
from lib.training import checkpoint
from tests.conftest import make_folder_dataset
from tests.helpers import ONE_EPOCH, ROOT, RUN, TINY, one_line_error, tiny, train_cli as train


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": checkpoint.FORMAT, "x": Evil()}, f)
    proc = train(["--dataset", "digits", "--abnormal_class", "1", "--resume", str(tmp_path / "evil.pt")],
                 tmp_path, check=False)
    one_line_error(proc, "refusing to load")
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint_gives_a_clear_error(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    proc = train(["--dataset", "digits", "--abnormal_class", "1", "--load_weights", str(tmp_path / "notes.pt"),
                  "--phase", "test"], tmp_path, check=False)
    one_line_error(proc, "cannot read checkpoint")


def test_a_checkpoint_of_another_model_is_refused_naming_the_setting(trained_run_copy, tmp_path):
    # A copy: were the refusal lost, the resume would train on in the run it names.
    proc = train(["--dataset", "digits", "--abnormal_class", "3", "--model", "w_skipganomaly",
                  "--resume", str(trained_run_copy)], tmp_path, check=False)
    one_line_error(proc, "--model w_skipganomaly: checkpoint", "was trained with --model skipganomaly", "drop --model")


def test_incompatible_network_settings_name_the_setting_that_differs(trained_run, tmp_path):
    proc = train(["--dataset", "digits", "--abnormal_class", "3", "--ngf", "16", "--phase", "test",
                  "--load_weights", str(trained_run)], tmp_path, check=False)
    one_line_error(proc, "--ngf 16: checkpoint", "was trained with --ngf 8", "drop --ngf")


def test_an_unwritable_output_folder_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    proc = train([*TINY, "--niter", "1", "--outf", str(tmp_path / "file" / "out")], tmp_path, check=False)
    one_line_error(proc, "cannot write the output folder", "--outf")


def test_a_batch_larger_than_the_training_set_with_droplast_fails_before_writing(tmp_path):
    proc = train([*tiny(batchsize=4096), "--niter", "1", "--outf", "out"], tmp_path, check=False)
    one_line_error(proc, "--no-droplast")
    assert not (tmp_path / "out").exists()


def test_a_non_finite_loss_stops_the_run_naming_epoch_iteration_and_loss(tmp_path):
    proc = train([*TINY, "--niter", "1", "--outf", "out", "--w_con", "1e39"], tmp_path, check=False)
    one_line_error(proc, "loss 'g' became inf at epoch 1, iteration 1")


def test_verbose_shows_the_traceback(tmp_path):
    proc = train(["--isize", "30", "--verbose"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "power of two" in proc.stderr


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "results.json"
    files.write_text(target, "old")

    def crash(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        files.atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_missing_checkpoint_names_what_it_looked_for(tmp_path):
    with pytest.raises(UserError, match="train/weights/last.pt"):
        checkpoint.load(tmp_path)


def test_two_runs_with_the_same_seed_give_identical_scores(trained_run, tmp_path):
    train([*ONE_EPOCH, "--outf", "again"], tmp_path)
    assert (tmp_path / "again" / RUN / "histogram.csv").read_bytes() == (trained_run / "histogram.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_epoch_saves_a_checkpoint_and_resume_ends_like_an_uninterrupted_run(tmp_path, sig):
    args = [*TINY, "--model", "skipganomaly", "--batchsize", "32", "--print_freq", "1"]
    train([*args, "--niter", "2", "--outf", "straight"], tmp_path)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--niter", "2", "--outf", "cut"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / RUN / "loss_log.txt"
    deadline = time.time() + 120
    while not (log.exists() and "(epoch: 1, iters: 3)" in log.read_text()):
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "--resume" in err and "Traceback" not in err
    saved = torch.load(tmp_path / "cut" / RUN / "train/weights/last.pt", weights_only=True)
    assert saved["epoch"] == 0 and saved["batch"] >= 3

    train(["--resume", f"cut/{RUN}", "--niter", "2"], tmp_path)
    straight = (tmp_path / "straight" / RUN / "histogram.csv").read_bytes()
    assert (tmp_path / "cut" / RUN / "histogram.csv").read_bytes() == straight


# TINY's networks on a folder dataset, which has no class to choose: its folders say what is abnormal.
FOLDER = [*tiny(dataset="custom", abnormal_class=None, manualseed=None, print_freq=None, save_image_freq=None,
                batchsize=4), "--niter", "1", "--outf", "out"]


@pytest.mark.parametrize("breakage,message", [
    (lambda d: shutil.rmtree(d), "custom"),
    (lambda d: shutil.rmtree(d / "test" / "1.abnormal"), "test/1.abnormal"),
    (lambda d: [p.unlink() for p in (d / "train" / "0.normal").rglob("*.*") if p.is_file()], "train/0.normal"),
    (lambda d: (d / "train" / "0.normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 30),
     "broken.png"),
])
def test_a_broken_folder_dataset_fails_before_training_naming_the_path(tmp_path, breakage, message):
    dataset = make_folder_dataset(tmp_path / "data")
    breakage(dataset)
    proc = train([*FOLDER, "--dataroot", "data"], tmp_path, check=False)
    one_line_error(proc, message)
    assert not (tmp_path / "out").exists()


def test_images_with_other_channels_are_converted_with_one_notice(tmp_path):
    make_folder_dataset(tmp_path / "data")
    proc = train([*FOLDER, "--dataroot", "data", "--nc", "1"], tmp_path)
    notices = [line for line in proc.stdout.splitlines() if line.startswith("notice:") and "convert" in line]
    assert len(notices) == 1
    assert (tmp_path / "out").is_dir()


def test_a_missing_dataroot_names_it(tmp_path):
    proc = train([*FOLDER, "--dataroot", "nowhere"], tmp_path, check=False)
    one_line_error(proc, "nowhere")


def test_result_files_get_ordinary_permissions(tmp_path):
    files.write_text(tmp_path / "results.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("args,message", [
    (["--score_weight", "heavy"], "expected a number in [0, 1] or 'val'"),
    (["--score_weight", "1.5"], "--score_weight must be in [0, 1] or 'val'"),
    (["--score_weight", "val", "--val_ratio", "0"], "give --val_ratio > 0"),
])
def test_a_bad_score_weight_is_a_one_line_error(tmp_path, args, message):
    one_line_error(train([*TINY, *args], tmp_path, check=False), message)
