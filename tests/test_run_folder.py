"""Never lose a run: what train.py does with a run folder that already holds work.

Every case runs `train.py` as a real process on real files, and checks that what the user
had before is byte-identical afterwards.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_folder_dataset
from tests.helpers import ONE_EPOCH, ROOT, RUN, TINY, one_line_error, process, read_csv


def snapshot(folder: Path) -> dict:
    """Every file below `folder` (links as their target text) -> its content hash."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(folder))] = "link:" + os.readlink(path)
        elif path.is_file() and path.name != ".lock":
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def run(trained_run_copy, tmp_path):
    """(working directory, run folder): the session's finished `ONE_EPOCH --outf out` run, copied to ./out."""
    return tmp_path, trained_run_copy


@pytest.mark.slow
def test_the_same_command_twice_refuses_and_leaves_the_first_run_whole(run):
    cwd, folder = run
    before = snapshot(folder)
    proc = process("train.py", [*ONE_EPOCH, "--outf", "out", "--manualseed", "7"], cwd)
    one_line_error(proc, "already holds a run", f"--resume {folder.relative_to(cwd)}", "--overwrite")
    assert snapshot(folder) == before


@pytest.mark.slow
def test_overwrite_deletes_the_old_run_and_leaves_only_the_new_one(run):
    cwd, folder = run
    (folder / "my_notes.txt").write_text("mine")
    images = folder / "train" / "images"
    one_epochs_images = set(p.name for p in images.iterdir())  # what the new run writes again
    # What the old run wrote and the new one does not: a later epoch's images, and predictions.
    shutil.copy(images / "fixed_normal_epoch_001.png", images / "fixed_normal_epoch_002.png")
    (folder / "predict").mkdir()
    (folder / "predict" / "predictions.csv").write_text("path,score\n")
    proc = process("train.py", [*ONE_EPOCH, "--outf", "out", "--manualseed", "7", "--overwrite"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "manualseed: 7" in (folder / "opt.txt").read_text()
    log = (folder / "loss_log.txt").read_text()
    assert log.count("Training Loss") == 1 and log.count("epoch 1/1") == 1
    assert (folder / "my_notes.txt").read_text() == "mine"  # not the tool's: left alone
    assert set(p.name for p in images.iterdir()) == one_epochs_images
    assert not (folder / "predict").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--w_con", "nan"], "--w_con must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--batchsize", "4000"], "larger than the"),  # found only after the data is read
    (["--model", "w_skipganomaly", "--n_critic", "50"], "the generator would never be updated"),
    (["--w_adv", "0", "--w_con", "0", "--w_lat", "0"], "would never learn"),
    (["--resume", "out/" + RUN, "--overwrite"], "give one of them"),
])
def test_a_refused_run_writes_nothing_into_an_existing_run(run, args, message):
    cwd, folder = run
    before = snapshot(folder)
    one_line_error(process("train.py", [*ONE_EPOCH, "--outf", "out", *args], cwd), message)
    assert snapshot(folder) == before


@pytest.mark.slow
def test_phase_test_writes_its_own_files_and_never_the_training_record(run):
    cwd, folder = run
    before = snapshot(folder)
    proc = process("train.py", ["--dataset", "digits", "--abnormal_class", "3", "--device", "cpu", "--outf", "out",
                                "--model", "skipganomaly", "--phase", "test", "--load_weights", "--batchsize", "7"],
                   cwd)
    assert proc.returncode == 0, proc.stderr
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if not k.startswith("test/")} == before
    assert {"test/opt.txt", "test/histogram.csv", "test/results.json"} <= set(after)
    assert "phase: test" in (folder / "test" / "opt.txt").read_text()
    # Scoring is in eval mode, so another batch size gives the training run's scores (to float
    # rounding: the score chosen on validation may be a distance, summed in other batches).
    ours, trained = (read_csv(folder / name) for name in ("test/histogram.csv", "histogram.csv"))
    assert [r["labels"] for r in ours] == [r["labels"] for r in trained]
    assert [float(r["scores"]) for r in ours] == pytest.approx([float(r["scores"]) for r in trained], rel=1e-5)


@pytest.mark.slow
def test_resume_of_a_copied_run_continues_in_the_copy_and_leaves_the_original_alone(run):
    cwd, folder = run
    original = snapshot(folder)
    shutil.copytree(cwd / "out", cwd / "copy")
    proc = process("train.py", ["--resume", f"copy/{RUN}", "--niter", "2"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(folder) == original
    copy = cwd / "copy" / RUN
    assert (copy / "loss_log.txt").read_text().count("epoch 2/2") == 1
    assert "outf: copy" in (copy / "opt.txt").read_text()


@pytest.mark.slow
def test_resume_of_a_checkpoint_taken_out_of_its_run_is_refused_and_its_folder_left_alone(run):
    """A lone checkpoint (copied into a folder of the user's) has no run folder to continue in: training
    there would write opt.txt, metrics.csv... over the user's own files."""
    cwd, folder = run
    downloads = cwd / "Downloads"
    downloads.mkdir()
    shutil.copy(folder / "train" / "weights" / "last.pt", downloads / "model.pt")
    (downloads / "metrics.csv").write_text("my,own\n1,2\n")
    before = snapshot(downloads)
    one_line_error(process("train.py", ["--resume", "Downloads/model.pt", "--niter", "2"], cwd),
                   "lies in none", "--load_weights Downloads/model.pt")
    assert snapshot(downloads) == before


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--phase test --load_weights", "--resume"])
def test_path_never_replaces_the_predictions_a_run_already_holds(run, how):
    """--path writes into <run>/predict: predictions there (of other images, perhaps of the same weights)
    are refused up front, before any training or scoring, and stay as they were."""
    cwd, folder = run
    images = cwd / "images"
    shutil.copytree(folder / "train" / "images", images)
    assert process("predict.py", ["--path", images, "--weights", folder], cwd).returncode == 0
    before = snapshot(folder / "predict")
    args = [*how.split(), str(folder), "--path", str(images), *(["--niter", "2"] if how == "--resume" else [])]
    one_line_error(process("train.py", args, cwd), "already holds predictions", "predict.py --weights")
    assert snapshot(folder / "predict") == before and "epoch 2/2" not in (folder / "loss_log.txt").read_text()
    assert not (folder / "test").exists()


@pytest.mark.slow
def test_resume_refuses_outf_and_name_which_would_write_elsewhere(run):
    cwd, folder = run
    before = snapshot(folder)
    one_line_error(process("train.py", ["--resume", f"out/{RUN}", "--niter", "2", "--outf", "other"], cwd),
                   "drop --outf")
    assert snapshot(folder) == before and not (cwd / "other").exists()


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["loss_log.txt", ".lock", "train/images", "opt.txt"])
def test_a_symlink_planted_in_a_run_folder_is_never_written_through(run, planted):
    cwd, folder = run
    victim = cwd / "victim"
    victim.mkdir() if planted == "train/images" else victim.write_text("precious\n")
    target = folder / planted
    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    target.symlink_to(victim)
    before = snapshot(folder), snapshot(cwd / "victim") if victim.is_dir() else victim.read_text()
    proc = process("train.py", ["--resume", f"out/{RUN}", "--niter", "2"], cwd)
    one_line_error(proc, "symbolic link")
    assert (snapshot(folder), snapshot(victim) if victim.is_dir() else victim.read_text()) == before


@pytest.mark.slow
def test_a_symlink_planted_in_a_fresh_folder_is_refused_too(tmp_path):
    folder = tmp_path / "out" / RUN
    folder.mkdir(parents=True)
    (tmp_path / "victim").write_text("precious\n")
    (folder / "loss_log.txt").symlink_to(tmp_path / "victim")
    one_line_error(process("train.py", [*ONE_EPOCH, "--outf", "out", "--overwrite"], tmp_path), "symbolic link")
    assert (tmp_path / "victim").read_text() == "precious\n"


def _start(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(folder: Path, proc, timeout=600):
    log = folder / "loss_log.txt"
    deadline = time.time() + timeout
    while not (log.exists() and "iters:" in log.read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_refuses_and_the_first_keeps_it(tmp_path):
    # The first run is long enough to be still training when the second one checks the folder.
    args = [*TINY, "--model", "skipganomaly", "--niter", "500", "--print_freq", "1", "--batchsize", "16",
            "--outf", "out"]
    first = _start([*args, "--manualseed", "1"], tmp_path)
    folder = tmp_path / "out" / RUN
    _wait_for_training(folder, first)
    second = process("train.py", [*args, "--manualseed", "2", "--overwrite"], tmp_path)
    assert first.poll() is None, "the first run ended before the second checked the folder"
    one_line_error(second, "is in use by", f"process {first.pid}")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    assert "manualseed: 1" in (folder / "opt.txt").read_text()
    assert (folder / "loss_log.txt").read_text().count("Training Loss") == 1


@pytest.mark.slow
def test_a_killed_runs_lock_is_no_obstacle_to_resuming_it(tmp_path):
    args = [*TINY, "--model", "skipganomaly", "--niter", "4", "--print_freq", "1", "--batchsize", "16",
            "--outf", "out"]
    first = _start(args, tmp_path)
    folder = tmp_path / "out" / RUN
    log, last = folder / "loss_log.txt", folder / "train" / "weights" / "last.pt"
    deadline = time.time() + 600
    while not last.exists():  # the first checkpoint is written (last.pt last of an epoch's files)
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert (folder / ".lock").exists()  # left behind, but nobody holds it
    proc = process("train.py", ["--resume", f"out/{RUN}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().count("epoch 4/4") == 1


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can create files in, root included (a read-only mount where we are root)."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only folder here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
def test_a_read_only_working_directory_costs_only_the_convenience_copy(read_only_dir, tmp_path):
    out = tmp_path / "out"
    proc = process("train.py", [*ONE_EPOCH, "--outf", str(out)], read_only_dir)
    assert proc.returncode == 0, proc.stderr
    assert "./histogram.csv is not written" in proc.stdout
    folder = out / RUN
    for name in ("histogram.csv", "results.json", "train/weights/best.pt", "train/weights/last.pt"):
        assert (folder / name).is_file(), name
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--name", "../escape"], "relative folder inside --outf"),
    (["--name", "/abs/run"], "relative folder inside --outf"),
    (["--name", b"caf\xe9".decode("utf-8", "surrogateescape")], "not UTF-8"),
    (["--batchsize", "99999999999999999999"], "out of range"),
    (["--manualseed", str(2**64)], "--manualseed"),
    (["--display_port", "70000"], "TCP port"),
    pytest.param(["--isize", "4096", "--ngf", "512", "--ndf", "512"], "needs at least",
                 marks=pytest.mark.slow),  # the memory check imports torch
    (["--model", "skipganomaly", "--wgan", "clip"], "only applies to --model w_skipganomaly"),
    (["--gpu_ids", "abc"], "give GPU numbers separated by commas"),
    (["--name", "a\nb"], "control characters"),
    (["--path", "nothing/here"], "--path 'nothing/here' does not exist"),
])
def test_values_that_cannot_work_are_refused_before_anything_is_written(tmp_path, args, message):
    argv = [*TINY, "--niter", "1", "--outf", "out", *args]
    if "--model" not in args:
        argv += ["--model", "skipganomaly"]
    one_line_error(process("train.py", argv, tmp_path), message)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()


def test_class_flags_a_folder_dataset_ignores_are_refused(tmp_path):
    make_folder_dataset(tmp_path / "data")
    proc = process("train.py", ["--dataset", "custom", "--abnormal_class", "3", "--isize", "8", "--device", "cpu",
                                "--outf", "out"], tmp_path)
    one_line_error(proc, "does not apply to 'custom'", "split comes from its folders")
    assert not (tmp_path / "out").exists()


def test_a_file_that_vanishes_while_the_folder_is_still_being_deleted_is_the_folder_gone(tmp_path):
    """CI caught this race: the deletion had removed the file being written but not yet the folder."""
    import threading

    from lib.errors import UserError
    from lib.training.outputs import failed_write
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    vanished = FileNotFoundError(2, "No such file or directory", str(run / ".results.json.x.tmp"))
    deleter = threading.Timer(0.3, shutil.rmtree, [run])
    deleter.start()
    failure = failed_write(vanished, run, "then run the command again")
    deleter.join()
    assert isinstance(failure, UserError) and "is gone (deleted or moved" in str(failure)
    run.mkdir()  # a folder that stays: the error is not hidden behind a wrong reason
    assert failed_write(vanished, run, "then run the command again") is vanished


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_a_run_folder_deleted_or_moved_while_it_trains_is_one_line(tmp_path, how):
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--model", "skipganomaly", "--niter",
                             "30", "--outf", "out"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "out" / RUN
    deadline = time.monotonic() + 300
    # Deleted as epoch 1's files are being written (the first of them is there); moved between epochs.
    first = run / ("metrics.csv" if how == "deleted" else "train/weights/last.pt")
    while not first.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    if how == "deleted":
        shutil.rmtree(run)
    else:
        run.rename(tmp_path / "moved")
    _, err = proc.communicate(timeout=600)
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
                   f"the run folder '{Path('out') / RUN}' is gone (deleted or moved while the run trained)")
    if how == "moved":  # what it says works: the run goes on at its new place
        resumed = process("train.py", ["--resume", tmp_path / "moved", "--niter", "2", "--device", "cpu"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr


def test_a_run_killed_before_its_first_checkpoint_is_said_to_have_none_to_continue(tmp_path, trained_run_copy):
    shutil.rmtree(trained_run_copy / "train" / "weights")  # as kill -9 in epoch 1 leaves it
    proc = process("train.py", [*ONE_EPOCH, "--outf", "out"], tmp_path)
    one_line_error(proc, "holds a run stopped before its first epoch ended (no checkpoint): pass --overwrite")
    assert "--resume" not in proc.stderr


@pytest.mark.slow
def test_phase_test_of_a_checkpoint_out_of_its_run_writes_beside_it_and_never_into_the_users_folders(run):
    cwd, folder = run
    downloads = cwd / "Downloads"
    (downloads / "test").mkdir(parents=True)
    (downloads / "test" / "results.json").write_text('{"mine": true}')
    shutil.copy(folder / "train" / "weights" / "best.pt", downloads / "model.pt")
    # The second replaces its own earlier evaluation, whichever way the checkpoint's path is spelt.
    for where, spelt in ((cwd, "Downloads/model.pt"), (downloads, "model.pt"), (downloads, "../Downloads/model.pt")):
        proc = process("train.py", ["--phase", "test", "--load_weights", spelt], where)
        assert proc.returncode == 0 and "model-test" in proc.stdout.split("outputs: ")[-1], proc.stderr
    proc = process("train.py", ["--phase", "test", "--load_weights", "Downloads/model.pt"], cwd)
    assert (downloads / "test" / "results.json").read_text() == '{"mine": true}'
    assert json.loads((downloads / "model-test" / "results.json").read_text())["weights"] == "Downloads/model.pt"
    shutil.copy(downloads / "model.pt", downloads / "other.pt")
    (downloads / "other-test").mkdir()
    (downloads / "other-test" / "notes.txt").write_text("mine")
    one_line_error(process("train.py", ["--phase", "test", "--load_weights", "Downloads/other.pt"], cwd),
                   "holds other files")
    assert [p.name for p in (downloads / "other-test").iterdir()] == ["notes.txt"]
    for inside in (folder, folder / "predict"):  # a copy put into a run: its evaluation would nest in it
        inside.mkdir(exist_ok=True)
        shutil.copy(downloads / "model.pt", inside / "model.pt")
        before = snapshot(folder)
        one_line_error(process("train.py", ["--phase", "test", "--load_weights", inside / "model.pt"], cwd),
                       "lies inside the run folder", "move it out")
        assert snapshot(folder) == before and not (inside / "model-test").exists()
    shutil.copy(downloads / "model.pt", downloads / "third.pt")
    (downloads / "third-test").write_text("a file of mine")
    one_line_error(process("train.py", ["--phase", "test", "--load_weights", "Downloads/third.pt"], cwd),
                   "is a file")
    assert (downloads / "third-test").read_text() == "a file of mine"


@pytest.mark.slow
def test_a_link_to_a_runs_checkpoint_names_that_run(run):
    cwd, folder = run
    (cwd / "last.pt").symlink_to(folder / "train" / "weights" / "last.pt")
    (cwd / "best.pt").symlink_to(folder / "train" / "weights" / "best.pt")
    tested = process("train.py", ["--phase", "test", "--load_weights", "best.pt"], cwd)
    assert tested.returncode == 0 and (folder / "test" / "results.json").is_file(), tested.stderr
    resumed = process("train.py", ["--resume", "last.pt", "--niter", "2"], cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert len(read_csv(folder / "metrics.csv")) == 2 and not (cwd / "metrics.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("differs,shown", [
    (["--abnormal_class", "5"], ("abnormal_class 5", "records 3")),
    # A twin of the same class, seed and sizes, trained otherwise: once resumed as this run's own.
    (["--w_con", "1"], ("w_con 1.0", "records 50.0")),
    (["--no_skip"], ("no_skip True", "records False")),
    (["--original"], ("original True", "records False")),
])
def test_another_runs_last_pt_copied_into_a_run_is_refused_by_resume(run, tmp_path, differs, shown):
    cwd, folder = run
    other = process("train.py", [*ONE_EPOCH, *differs, "--outf", "other", "--name", "twin"], cwd)
    assert other.returncode == 0, other.stderr
    shutil.copy(cwd / "other" / "twin" / "train" / "weights" / "last.pt", folder / "train" / "weights" / "last.pt")
    before = snapshot(folder)
    one_line_error(process("train.py", ["--resume", folder, "--niter", "2"], cwd),
                   "is the checkpoint of another run", *shown)
    assert snapshot(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("extra,fragment", [
    (["--ngpu", "2"], "--phase test evaluates in one process"),
    (["--outf", "elsewhere"], "--outf: --phase test writes into the test/ folder of the run"),
    (["--name", "renamed"], "--name: --phase test writes into the test/ folder of the run"),
    (["--load_weights", "other"], "--resume loads a run's last.pt and --load_weights other weights"),
])
def test_phase_test_refuses_what_it_would_record_without_applying(run, extra, fragment):
    cwd, folder = run
    one_line_error(process("train.py", ["--phase", "test", "--resume", folder, *extra], cwd), fragment)
    assert not (folder / "test").exists() and not (cwd / "elsewhere").exists()


@pytest.mark.slow
def test_phase_test_resume_scores_in_the_precision_it_is_given_as_load_weights_does(run):
    cwd, folder = run
    proc = process("train.py", ["--phase", "test", "--resume", folder, "--amp"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "amp: True" in (folder / "test" / "opt.txt").read_text()
