"""A Ray Tune trial that trains in several processes (`train_tune.py --ngpu N`).

The trial's own process is rank 0: it alone evaluates, writes the run folder and reports each
epoch to Tune, as rank 0 of `train.py --ngpu N` does. It starts ranks 1..N-1 here as processes
of its own, on the same machine (Ray gives the trial N GPUs, or N CPUs, on one node), and they
meet through torch.distributed's environment variables exactly as torchrun's processes do, so
the training is lib/parallel/distributed.py's, unchanged. Each started rank receives the trial's options
(pickled on its standard input) and builds the same trainer through `trial_trainer`.

Nothing outlives the trial: the ranks are stopped when it ends however it ends, and die with it
if Ray kills its process (Linux's parent-death signal).
"""
import contextlib
import ctypes
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
PARENT = "SKIP_WGANOMALY_TRIAL_PID"  # the trial's process: a started rank ends with it
ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK")
STOP_WAIT_S = 30  # after the trial ends: time the ranks get to finish their last step on their own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In a started rank, first: SIGTERM when the trial's thread is gone (Linux's PR_SET_PDEATHSIG),
    and an exit now if it has gone already. Set here rather than in a `preexec_fn`: that makes
    Python fork the trial's many-threaded Ray process and run its fork handlers (gRPC's), which
    stalled the trial for minutes; without one, the rank is spawned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get(PARENT, str(os.getppid())):
        sys.exit(3)


@contextlib.contextmanager
def ranks(processes: int, payload: tuple):
    """With `processes` > 1: this process as rank 0 of `processes`, the others started (with
    `payload`, the arguments of `trial_trainer`) and stopped at the end; else nothing."""
    if processes <= 1:
        yield
        return
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(processes),
              "LOCAL_WORLD_SIZE": str(processes)}
    import torch

    # The trial's CPUs (Ray set torch's threads to them), shared out: one process per core at least.
    threads, threads_before = max(1, torch.get_num_threads() // processes), torch.get_num_threads()
    data = pickle.dumps(payload)
    started = []
    saved = {name: os.environ.get(name) for name in ENV}
    try:
        for rank in range(1, processes):
            env = {**os.environ, **shared, "RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": str(threads),
                   PARENT: str(os.getpid()),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, env=env,
                                    cwd=os.getcwd())
            started.append(proc)
            proc.stdin.write(data)
            proc.stdin.close()
        os.environ.update(shared, RANK="0", LOCAL_RANK="0")
        torch.set_num_threads(threads)
        yield
        for proc in started:  # the same epochs as rank 0: they end on their own (else are stopped below;
            with contextlib.suppress(subprocess.TimeoutExpired):  # the trial's results are rank 0's, complete)
                proc.wait(timeout=STOP_WAIT_S)
    finally:
        torch.set_num_threads(threads_before)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def trial_trainer(opt, defaults: dict, explicit: set, restored: str | None, on_epoch=None):
    """A trial's trainer: new (anything in its folder is an earlier, failed start of the trial) or,
    paused or failed before, continuing from the checkpoint Tune `restored` (its last epoch)."""
    from ..runs.setup import build_trainer, load_checkpoint

    if restored is None:
        return build_trainer(opt, defaults, load_checkpoint(opt, explicit), on_epoch=on_epoch, overwrite=True)
    opt.resume = restored
    trainer = build_trainer(opt, defaults, load_checkpoint(opt, explicit), on_epoch=on_epoch)
    best = Path(restored) / "best.pt"
    if trainer.context.writes and best.is_file() and not (trainer.weights / "best.pt").is_file():
        shutil.copy(best, trainer.weights / "best.pt")
    return trainer


def main() -> int:
    """A started rank: the trial's trainer, trained to the end (rank 0 reports and writes)."""
    from ..parallel import distributed
    from ..training.stopping import Interrupted

    opt, defaults, explicit, restored = pickle.load(sys.stdin.buffer)
    context = distributed.Context.from_env()
    trainer = trial_trainer(opt, defaults, explicit, restored)
    try:
        trainer.fit()
    except Interrupted as stop:  # the trial ended first and stopped this rank
        return 128 + stop.signal
    except Exception as err:
        if distributed.lost_peer(err):  # rank 0 (the trial) has gone: it says why, not us
            return 3
        raise
    finally:
        trainer.close()
        distributed.finish(context)
    return 0


if __name__ == "__main__":
    _die_with_parent()
    from ..errors import run_cli
    sys.exit(run_cli(lambda argv: main(), sys.argv[1:]))
