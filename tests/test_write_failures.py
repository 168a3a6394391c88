"""A disk that refuses a write (full, a file-size limit, failing): one line naming the file and the space
left, the last good checkpoint kept, and `--resume` finishing the run once there is room."""
import errno
import json
import os
import resource
import shutil
import signal
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from lib.files import WriteFailed, atomic_write, write_text
from lib.training import checkpoint
from tests.helpers import ONE_EPOCH, RUN, one_line_error, process, run_main, train_cli

# No file of a TINY run but its checkpoints (~470 kB) is larger.
FILE_SIZE_LIMIT = 100_000


def with_file_size_limit(script, args, cwd, limit=FILE_SIZE_LIMIT):
    """A real `python SCRIPT ARGS` process that may write no file larger than `limit` bytes
    (ulimit -f): a larger write fails with EFBIG (SIGXFSZ, which would kill it, is ignored)."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return process(script, args, cwd, preexec_fn=set_limit)


def train_with_file_size_limit(args, cwd):
    return with_file_size_limit("train.py", args, cwd)


def checkpoints(run) -> dict:
    return {p.name: p.read_bytes() for p in sorted((run / "train" / "weights").iterdir())}


def predict_accepts(run, cwd) -> None:
    """predict.py scores an image with the run's best.pt and its stored threshold."""
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(cwd / "image.png")
    result = run_main(predict.main, ["--path", cwd / "image.png", "--weights", run, "--out", cwd / "scored",
                                     "--device", "cpu"], cwd)
    assert result.returncode == 0, result.stderr
    assert (cwd / "scored" / "predictions.csv").is_file()


@pytest.mark.slow
def test_a_checkpoint_the_disk_refuses_is_one_line_and_resume_finishes_the_run(tmp_path, trained_run_copy):
    run, before = trained_run_copy, checkpoints(trained_run_copy)
    proc = train_with_file_size_limit(["--resume", run, "--niter", "2", "--device", "cpu"], tmp_path)
    one_line_error(proc, f"cannot write '{run / 'train' / 'weights' / 'best.pt'}' (File too large; ",
                   " free there): raise the file-size limit (ulimit -f), "
                   f"then continue with --resume {run} --niter 2")
    assert checkpoints(run) == before  # epoch 1's best.pt and last.pt, byte for byte
    assert not list(run.rglob("*.tmp"))

    train_cli(["--resume", run, "--niter", "2"], tmp_path)  # room again: the run goes on from epoch 1
    assert checkpoint.load(run)["epoch"] == 2 and checkpoint.load(run, "best")["epoch"] == 2
    assert json.loads((run / "results.json").read_text())["epochs"] == 2
    predict_accepts(run, tmp_path)


@pytest.mark.slow
def test_a_first_checkpoint_the_disk_refuses_says_to_run_the_command_again_with_overwrite(tmp_path):
    proc = train_with_file_size_limit([*ONE_EPOCH, "--outf", "out"], tmp_path)
    one_line_error(proc, "best.pt' (File too large; ", "then run the same command with --overwrite")
    run = tmp_path / "out" / RUN
    assert checkpoints(run) == {} and (run / "results.json").is_file()  # a run, but no checkpoint to resume


@pytest.mark.slow
def test_a_plot_the_disk_refuses_is_the_same_one_line_as_any_write(tmp_path):
    # The training grids (under 20 kB) and histogram.csv (19 kB) fit; the learning curves (about 50 kB) do not.
    proc = with_file_size_limit("train.py", [*ONE_EPOCH, "--outf", "out"], tmp_path, limit=30_000)
    run = tmp_path / "out" / RUN
    plot = run.relative_to(tmp_path) / "plots" / "learning_curves.png"
    one_line_error(proc, f"cannot write '{plot}' (File too large; ",
                   " free there): raise the file-size limit (ulimit -f), then run the same command with --overwrite")
    assert not list(run.rglob("*.tmp")) and not (run / "plots" / "learning_curves.png").exists()


@pytest.fixture
def small_disk(tmp_path, request):
    """A file system of its own, 4 MiB unless the test's `disk_size` mark says otherwise (a tmpfs: mounting
    one needs root), unmounted afterwards."""
    mark = request.node.get_closest_marker("disk_size")
    size = mark.args[0] if mark else "4M"
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_with_the_space_left_and_resume_finishes_once_space_is_freed(
        tmp_path, trained_run, small_disk):
    run = small_disk / "out" / RUN
    shutil.copytree(trained_run, run)
    before = checkpoints(run)
    disk = os.statvfs(small_disk)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # room for epoch 2's tables and images, not for its checkpoint
        os.posix_fallocate(f.fileno(), 0, disk.f_bavail * disk.f_frsize - 200_000)
    failed = train_cli(["--resume", run, "--niter", "2"], tmp_path, check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.splitlines() == [
        f"error: cannot write '{run / 'train' / 'weights' / 'best.pt'}' (No space left on device; "
        f"{failed.stderr.split('device; ')[1].split(' free there')[0]} free there): free some space, "
        f"then continue with --resume {run} --niter 2"]
    assert "KiB free there" in failed.stderr
    assert checkpoints(run) == before and not list(run.rglob("*.tmp"))

    filler.unlink()
    train_cli(["--resume", run, "--niter", "2"], tmp_path)
    assert checkpoint.load(run)["epoch"] == 2


def fill(disk, leave: int):
    """Fill the file system of `disk` but for `leave` bytes; returns the filler file."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, stat.f_bavail * stat.f_frsize - leave)
    return filler


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.disk_size("20M")
def test_a_trial_the_disk_refuses_says_to_restore_the_search_and_restore_finishes_it(tmp_path, small_disk):
    (tmp_path / "space.json").write_text(json.dumps({"lr": {"grid": [0.0002]}}))
    search = ["--dataset", "digits", "--abnormal_class", "0", "--isize", "16", "--ngf", "8", "--ndf", "8",
              "--nz", "16", "--niter", "1", "--device", "cpu", "--num_cpus", "1", "--name", "s",
              "--space", tmp_path / "space.json", "--outf", small_disk / "out"]
    filler = fill(small_disk, 100_000)  # room for the search's state, not for a checkpoint
    failed = process("train_tune.py", search, tmp_path)
    # The trial's checkpoint fails, and results.csv too if the trial has used the last bytes.
    assert failed.returncode in (1, 2), failed.stderr
    then = "free some space, then continue the search with --name s --restore"
    said = [line for line in failed.stderr.splitlines() if line.startswith(("warning: 1 trial(s) failed", "error: "))]
    assert any(then in line and " free there)" in line for line in said), failed.stderr
    results = small_disk / "out" / "tune" / "s" / "results.csv"
    assert failed.returncode == 2 or then in results.read_text()  # the error column, whole

    filler.unlink()
    restored = process("train_tune.py", [*search, "--restore"], tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert ",done," in results.read_text() and "best trial" in restored.stdout


def test_a_finished_run_left_without_best_pt_gets_it_on_resume_and_predict_accepts_it(tmp_path, trained_run_copy):
    """What a failed write left before best.pt was written ahead of last.pt: last.pt at the last epoch alone."""
    run = trained_run_copy
    (run / "train" / "weights" / "best.pt").unlink()
    result = train_cli(["--resume", run], tmp_path)
    assert "outputs:" in result.stdout
    assert checkpoint.load(run, "best")["epoch"] == 1
    predict_accepts(run, tmp_path)


def test_a_write_the_disk_refuses_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.csv"
    write_text(path, "old\n")

    def half_then_full(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(WriteFailed) as caught:
        atomic_write(path, half_then_full)
    message = str(caught.value)
    assert message.startswith(f"cannot write '{path}' (No space left on device; ") and "\n" not in message
    assert message.endswith(" free there): free some space, then run the command again")
    assert caught.value.errno == errno.ENOSPC  # still the OSError, for code that handles one
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["metrics.csv"]


@pytest.mark.parametrize("name", ["x" * 255, "y" * 241, "é" * 127])  # 255, 241 and 254 bytes
def test_a_file_of_the_longest_name_the_file_system_takes_is_written_whole_with_no_temporary_left(tmp_path, name):
    seen = []

    def write(tmp):
        seen.append(os.path.basename(tmp))
        with open(tmp, "w") as f:
            f.write("new\n")
    atomic_write(tmp_path / name, write)
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).read_text() == "new\n"
    assert seen[0].startswith(".") and seen[0].endswith(".tmp") and len(os.fsencode(seen[0])) <= 255


def test_a_disk_error_that_torch_wraps_in_a_runtime_error_is_still_named(tmp_path, monkeypatch):
    def save(obj, f):
        try:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(WriteFailed, match=r"best\.pt' \(Input/output error; .* free there\): check the disk"):
        checkpoint.save(tmp_path / "best.pt", {})
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_predictions_the_disk_refuses_are_one_line_with_the_space_left_and_the_earlier_ones_kept(
        tmp_path, trained_run):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):  # a predictions.csv of ~4 kB, over the limit below; each image is ~80 bytes
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(images / f"{'image-with-a-long-name-' * 3}{i:03}.png")
    args = ["--path", images, "--weights", trained_run, "--out", tmp_path / "scored", "--device", "cpu",
            "--maps", "none"]
    proc = with_file_size_limit("predict.py", args, tmp_path, limit=2000)
    one_line_error(proc, f"cannot write '{tmp_path / 'scored' / 'predictions.csv'}' (File too large; ",
                   " free there): raise the file-size limit (ulimit -f), then run the command again; "
                   "the earlier ones, if any, are unchanged")
    assert not (tmp_path / "scored" / "predictions.csv").exists() and not list(tmp_path.rglob("*.tmp"))
    assert process("predict.py", args, tmp_path).returncode == 0  # room again: the same command works


@pytest.mark.slow
def test_an_evaluation_the_disk_refuses_is_one_line_with_the_space_left(tmp_path, trained_run_copy):
    run = trained_run_copy
    proc = with_file_size_limit("train.py", ["--phase", "test", "--load_weights", run, "--device", "cpu"],
                                tmp_path, limit=500)
    one_line_error(proc, f"cannot write '{run / 'test'}", "(File too large; ",
                   " free there): raise the file-size limit (ulimit -f), then run the command again")
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_run_file_made_immutable_is_one_line_and_resume_goes_on_once_it_is_writable(tmp_path, trained_run_copy):
    run, before = trained_run_copy, checkpoints(trained_run_copy)
    if subprocess.run(["chattr", "+i", run / "metrics.csv"], capture_output=True).returncode != 0:
        pytest.skip("this file system or user cannot make a file immutable")
    try:
        proc = process("train.py", ["--resume", run, "--niter", "2", "--device", "cpu"], tmp_path)
    finally:
        subprocess.run(["chattr", "-i", run / "metrics.csv"], check=True)
    one_line_error(proc, f"cannot write '{run / 'metrics.csv'}' (Operation not permitted): give the run folder's "
                   "files back their "
                   f"write permission (chmod u+w, chattr -i); then continue with --resume {run} --niter 2")
    assert checkpoints(run) == before
    train_cli(["--resume", run, "--niter", "2"], tmp_path)
    assert checkpoint.load(run)["epoch"] == 2


@pytest.mark.slow
def test_an_evaluation_that_cannot_be_written_whole_leaves_none_and_the_earlier_one_stays(trained_run_copy, tmp_path):
    """--phase test writes its folder whole or not at all: a file-size limit that its histogram.csv exceeds
    once left a test/opt.txt describing an evaluation that was never written."""
    run = trained_run_copy
    refused = with_file_size_limit("train.py", ["--phase", "test", "--resume", run], tmp_path, limit=10_000)
    one_line_error(refused, "histogram.csv")
    assert not (run / "test").exists() and not list(run.glob(".test*"))
    assert process("train.py", ["--phase", "test", "--resume", run], tmp_path).returncode == 0
    earlier = {p.name: p.read_bytes() for p in (run / "test").iterdir() if p.is_file()}
    one_line_error(with_file_size_limit("train.py", ["--phase", "test", "--resume", run], tmp_path, limit=10_000),
                   "histogram.csv")
    assert {p.name: p.read_bytes() for p in (run / "test").iterdir() if p.is_file()} == earlier
