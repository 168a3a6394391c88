"""Data-parallel training (lib/parallel/distributed.py) in real torchrun processes on gloo."""
import os
import subprocess
import sys

import pytest
import torch

from lib.parallel import distributed
from tests.helpers import ROOT

CHECK = ROOT / "tests" / "distributed_check.py"


def train(tmp_path, processes: int, model: str, *overrides: str) -> dict:
    out = tmp_path / f"{model}-{processes}.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
              if processes > 1 else [sys.executable])
    proc = subprocess.run([*launch, str(CHECK), str(out), model, *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("model,overrides", [("skipganomaly", ()), ("w_skipganomaly", ("wgan=clip",))])
def test_two_processes_train_as_one_process_on_the_whole_batch(tmp_path, model, overrides):
    """Two processes on halves of each batch, BatchNorm synchronised and gradients averaged, give the
    one-process run's losses and weights: the same arithmetic up to float summation order (the sums
    of BatchNorm's statistics and of the gradients are split in two), so to 1e-4 relative after 4
    Adam steps. Skip-WGANomaly with the gradient penalty is left out: each process draws its own
    interpolation points, so that penalty differs by design (same distribution, other draws)."""
    one, two = train(tmp_path, 1, model, *overrides), train(tmp_path, 2, model, *overrides)
    assert two["world"] == 2
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for net in ("generator", "adversary"):
        for key, value in one["state"][net].items():
            torch.testing.assert_close(two["state"][net][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_a_batch_is_shared_in_equal_contiguous_parts_in_its_order():
    batch = torch.arange(8)
    parts = [distributed.share(batch, distributed.Context(rank, 2)) for rank in range(2)]
    assert torch.equal(torch.cat(parts), batch) and all(len(p) == 4 for p in parts)
    assert torch.equal(distributed.share(batch, distributed.Context()), batch)
    with pytest.raises(ValueError, match="does not split into 3"):
        distributed.share(batch, distributed.Context(0, 3))


def test_outside_a_process_group_sync_batchnorm_is_batchnorm():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = distributed.synchronise_batchnorm(__import__("copy").deepcopy(plain))
    assert type(synced[1]) is distributed.SyncBatchNorm2d
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)


def train_py(tmp_path, processes: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
              if processes > 1 else [sys.executable])
    return subprocess.run([*launch, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_train_py_in_two_processes_trains_evaluates_and_resumes_as_one_process(tmp_path):
    """`torchrun --nproc-per-node 2 train.py` for one epoch, then `--resume` in one process for the
    second: rank 0 alone writes the run folder; its losses (the global batch's, averaged over the
    processes) and AUROCs are the one-process run's to float rounding (each process sums half of
    every batch: about 1e-7 here), in the two-process epoch and in the epoch resumed in one process."""
    from tests.helpers import RUN, read_csv, tiny
    # fp32: in bf16 (Skip-GANomaly's default on a CPU with native bf16) half-batch sums round far beyond 1e-7.
    args = [*tiny(niter=2, print_freq=1000, save_image_freq=1000), "--model", "skipganomaly", "--no-amp"]
    one = train_py(tmp_path, 1, *args, "--outf", "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = train_py(tmp_path, 2, *[a if a != "2" else "1" for a in args], "--outf", "two")  # --niter 1
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("outputs: ") == 1  # rank 0 alone prints
    assert not (tmp_path / "histogram.csv").read_text() == ""  # rank 0's copy, as one process writes it
    resumed = train_py(tmp_path, 1, "--resume", str(tmp_path / "two" / RUN), "--niter", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = {name: read_csv(tmp_path / name / RUN / "metrics.csv") for name in ("one", "two")}
    assert len(rows["two"]) == 2 and list(rows["two"][0]) == list(rows["one"][0])
    assert [r["processes"] for r in rows["two"]] == ["2", "1"]
    for a, b in zip(rows["one"], rows["two"], strict=True):
        assert int(b["train_images"]) == int(a["train_images"])  # the global batches, all of them
        for key in ("g", "d", "g_adv", "g_con", "g_lat", "val_auroc", "test_auroc"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "train.py --ngpu 2"])
def test_a_signal_to_the_launcher_stops_every_process_after_the_same_step_with_a_checkpoint(tmp_path, launcher):
    """SIGTERM to torchrun (or to train.py --ngpu 2) reaches both processes; they agree on the step,
    rank 0 writes last.pt and says so once, nothing else is printed, and the run resumes from there."""
    import signal
    import time

    from tests.helpers import RUN, tiny
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [*tiny(niter=50, batchsize=8, print_freq=1000, save_image_freq=1000), "--model", "skipganomaly",
            "--outf", "out"]
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(ROOT / "train.py"), *args] if launcher == "torchrun"
               else [sys.executable, str(ROOT / "train.py"), *args, "--ngpu", "2"])
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "out" / RUN / "metrics.csv"
    deadline = time.monotonic() + 240
    while not metrics.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)  # the first epoch has ended: both processes are in the loop
    assert metrics.is_file(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.count("interrupted: stopped by signal") == 1, err[-2000:]
    if launcher != "torchrun":  # torchrun adds its own report; ours adds nothing but the line it starts with
        assert out.startswith("training in 2 processes on this machine, 1 CPU thread(s) each"), out[:500]
        assert proc.returncode == 128 + signal.SIGTERM and len(err.strip().splitlines()) == 1, err[-2000:]
    assert (tmp_path / "out" / RUN / "train" / "weights" / "last.pt").is_file()
    from tests.helpers import read_csv
    finished = len(read_csv(metrics))
    resumed = train_py(tmp_path, 1, "--resume", str(tmp_path / "out" / RUN), "--niter", str(finished + 1))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(read_csv(metrics)) == finished + 1


def workers_of(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the training processes a launcher started (its children with a RANK)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except (OSError, ValueError):
            continue
        if parent == launcher_pid and b"RANK" in env:
            found[int(env[b"RANK"])] = int(entry)
    return found


def training_in_two_processes(tmp_path, epochs: int, started: bool = False, torchrun: bool = False,
                              **popen) -> tuple[subprocess.Popen, dict[int, int]]:
    """`train.py --ngpu 2` (or torchrun's job of two) started in `tmp_path` (run folder out/RUN) and
    {rank: pid} of its two training processes, once the first epoch has ended (both are in the loop), or
    with `started` as soon as both exist (still importing torch)."""
    import time

    from tests.helpers import RUN, tiny
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [*tiny(niter=epochs, batchsize=8, print_freq=1000, save_image_freq=1000), "--model", "skipganomaly",
            "--outf", "out"]
    command = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(ROOT / "train.py"), *args] if torchrun else [sys.executable, str(ROOT / "train.py"), *args,
                                                                 "--ngpu", "2"])
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, **popen)
    metrics = tmp_path / "out" / RUN / "metrics.csv"
    deadline = time.monotonic() + 240
    while not (len(workers_of(proc.pid)) == 2 if started else metrics.is_file()) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.05 if started else 0.5)
    workers = workers_of(proc.pid)
    assert sorted(workers) == [0, 1], proc.communicate()[1][-2000:]
    return proc, workers


@pytest.mark.slow
def test_train_py_ngpu_2_starts_two_processes_and_a_killed_one_ends_the_job_in_one_line(tmp_path):
    """`train.py --ngpu 2` is torchrun's job without torchrun: two processes (on the CPU here); when
    one is killed, the other stops and the launcher says what happened in one line, no traceback."""
    import signal

    from tests.helpers import RUN
    proc, workers = training_in_two_processes(tmp_path, 60, stdout=subprocess.PIPE, text=True)
    os.kill(workers[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("error: process 1 of 2 ended with signal SIGKILL") and "--resume" in lines[0]
    assert out.count("outputs: ") == 0 and (tmp_path / "out" / RUN / "train" / "weights" / "last.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["training", "starting", "training under torchrun", "starting under torchrun"])
def test_a_launcher_killed_with_sigkill_takes_its_processes_with_it(tmp_path, when):
    """`kill -9` to the launcher (a scheduler's kill of the job's process group) cannot be passed on, and
    each process has a process group of its own: they notice that their launcher is gone, stop together
    with a checkpoint as SIGTERM would, and stop writing the run folder; also when the launcher is killed
    while they are still starting."""
    import signal
    import time

    from tests.helpers import RUN
    proc, workers = training_in_two_processes(tmp_path, 200, when.startswith("starting"), "torchrun" in when,
                                              stdout=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "out" / RUN / "metrics.csv"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + 120
    while any(alive(pid) for pid in workers.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in workers.values() if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the processes trained on after their launcher was killed"
    if when.startswith("starting"):
        return
    assert (tmp_path / "out" / RUN / "train" / "weights" / "last.pt").is_file()
    size = metrics.stat().st_size
    time.sleep(2)
    assert metrics.stat().st_size == size


@pytest.mark.parametrize("args,message", [
    (["--ngpu", "999"], "give --ngpu"),
    (["--ngpu", "2", "--batchsize", "63"], "does not split into 2 processes"),
    # 947 training images: every epoch would end on a batch of 51, which two processes cannot share.
    (["--ngpu", "2", "--batchsize", "64", "--val_ratio", "0.12", "--no-droplast"],
     "keeps a last batch of 51 training images, which does not split into 2 processes"),
])
def test_ngpu_this_machine_or_batch_cannot_take_is_refused_before_anything_starts(tmp_path, args, message):
    from tests.helpers import one_line_error, process, tiny
    proc = process("train.py", [*tiny(), *args, "--outf", "out"], tmp_path)
    one_line_error(proc, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_same_ngpu_command_twice_is_refused_in_one_line_and_the_first_run_stays(tmp_path):
    from tests.helpers import RUN, tiny
    args = [*tiny(niter=1), "--model", "skipganomaly", "--ngpu", "2", "--outf", "out"]
    assert train_py(tmp_path, 1, *args).returncode == 0
    metrics = (tmp_path / "out" / RUN / "metrics.csv").read_bytes()
    again = train_py(tmp_path, 1, *args)
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a run" in lines[0], again.stderr[-2000:]
    assert (tmp_path / "out" / RUN / "metrics.csv").read_bytes() == metrics



@pytest.mark.parametrize("flags, ngpu_given, cuda, processes", [
    ({"gpu_ids": "0,1"}, False, True, 2),  # one process per GPU named, as the original's DataParallel used them
    ({"gpu_ids": "0,1"}, False, False, 1),  # no CUDA: one process on the CPU, with train.py's notice
    ({"gpu_ids": "0,1", "device": "cpu"}, False, True, 1),
    ({"gpu_ids": "0", "ngpu": 2}, True, True, 2),  # GPUs 0 and 1
    ({"gpu_ids": "2,3", "ngpu": 2}, True, True, 2),
    ({"ngpu": 2, "device": "cpu"}, True, False, 2),  # two CPU processes
])
def test_gpu_ids_naming_several_gpus_train_in_a_process_on_each(flags, ngpu_given, cuda, processes):
    import argparse

    from lib import options
    from lib.parallel.launch import processes_for
    assert processes_for(argparse.Namespace(**{**options.defaults(), **flags}), ngpu_given, cuda) == processes


def test_gpu_ids_and_ngpu_that_disagree_are_refused_in_one_line():
    import argparse

    from lib import options
    from lib.errors import UserError
    from lib.parallel.launch import processes_for
    opt = argparse.Namespace(**{**options.defaults(), "gpu_ids": "0,1", "ngpu": 3})
    with pytest.raises(UserError, match="--gpu_ids 0,1 names 2 GPUs and --ngpu 3 asks for 3 processes"):
        processes_for(opt, True, True)
