"""`train.py --ngpu N`: start N training processes under torch's elastic agent, as torchrun does.

The agent runs in this process, so a failure is reported in one line: which process ended and
how, that the others were stopped, and how to continue from the last checkpoint. A process that
ends because another stopped prints nothing itself (lib/commands/train.py), and rank 0 alone
prints a refusal or an interruption, so the job's output stays that of one run.
"""
import atexit
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

from ..errors import UserError

# Each process runs train.py's command as a module of this package, found where this package lies: a
# checkout (lib) or an installation (skip_wganomaly), whatever the working directory.
PACKAGE = __package__.split(".")[0]
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# A process stopped because another one had stopped first: it says nothing, the launcher does.
PEER_LOST = 3
INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM}
LAUNCHER_PID = "SKIP_WGANOMALY_LAUNCHER_PID"  # each process ends with this one (end_with_launcher)
SHUTDOWN_TIMEOUT_S = 90  # how long stopped processes may take to checkpoint before they are killed


def end_with_launcher(every_s: float = 0.5) -> None:
    """In a process of a job (torchrun's, or --ngpu's): stop it, as a SIGTERM would (it checkpoints), once
    its launcher is gone. A launcher killed with SIGKILL (`kill -9` to a job's process group, as schedulers
    do) cannot pass it on, and the agent starts each process in a process group of its own: they trained
    on, writing the run folder, with nobody to stop them. Watching the parent works whichever thread of
    the launcher started the process, which PR_SET_PDEATHSIG does not. `train.py --ngpu` names itself
    (LAUNCHER_PID, with the job's run id), so a launcher killed at any time is seen. Under torchrun the
    parent is taken for the launcher as the process starts, before torch loads (seconds); a process whose
    parent is already init then has lost it, unless init is torchrun itself (a container's first process)."""
    if os.environ.get("WORLD_SIZE", "1").strip() in ("", "0", "1") or "RANK" not in os.environ:
        return
    pid, _, run_id = os.environ.get(LAUNCHER_PID, "").partition(":")
    named = pid.isdigit() and run_id != "" and run_id == os.environ.get("TORCHELASTIC_RUN_ID")
    parent = int(pid) if named else os.getppid()
    if not named and parent == 1 and not _launches_jobs(1):
        parent = -1  # orphaned before this point: stop now

    ending = threading.Event()  # set as the process ends on its own: a launcher gone then is no news
    atexit.register(ending.set)

    def watch():
        while os.getppid() == parent and not ending.wait(every_s):
            pass
        if not ending.is_set() and not sys.is_finalizing():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-launcher", daemon=True).start()


def _launches_jobs(pid: int) -> bool:
    """Whether process `pid` is a Python (torchrun, or a launcher of ours), as far as /proc tells."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().lower()
    except OSError:
        return True  # unknown: not taken for an orphaning
    return b"python" in command or b"torch" in command


def processes_for(opt, ngpu_given: bool, cuda: bool) -> int:
    """How many processes a run trains in: --ngpu, or one per GPU that --gpu_ids names (the
    original put those in DataParallel) where CUDA is there to use them; a UserError when the two
    disagree."""
    ids = [i for i in str(opt.gpu_ids).replace(" ", "").split(",") if i]
    named = len(ids) if opt.device == "gpu" and cuda and ids and int(ids[0]) >= 0 else 1
    if named > 1 and ngpu_given and opt.ngpu != named:
        raise UserError(f"--gpu_ids {opt.gpu_ids} names {named} GPUs and --ngpu {opt.ngpu} asks for {opt.ngpu} "
                        f"processes: one process trains on each GPU named; drop --ngpu, or name {opt.ngpu} GPUs")
    return opt.ngpu if ngpu_given or named == 1 else named


def on_gpus(opt) -> bool:
    """Whether the processes train on GPUs (one each) rather than on shares of the CPU's cores."""
    import torch
    return opt.device == "gpu" and str(opt.gpu_ids).strip() != "-1" and torch.cuda.is_available()


def check_processes(opt) -> None:
    """A UserError, before anything starts, for --ngpu this machine or --batchsize cannot take."""
    import torch
    gpu = on_gpus(opt)
    have = torch.cuda.device_count() if gpu else len(os.sched_getaffinity(0))
    if opt.ngpu > have:
        what = f"{have} GPU(s)" if gpu else f"{have} CPU core(s) and no GPU in use (one process per core at most)"
        raise UserError(f"--ngpu {opt.ngpu}: this machine has {what}; give --ngpu {have} or fewer")
    from .distributed import check_batch_splits
    check_batch_splits(opt.batchsize, opt.ngpu)


def launch(argv: list[str], processes: int, folder: Path, gpus: bool) -> int:
    """Run train.py's command with ARGV in `processes` processes on this machine (`gpus`: one GPU each, else
    a share of the CPU's cores each); their exit code, or one line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # its reports and warnings: ours instead
        if name.startswith("torch.distributed.elastic"):  # (each module's logger has a level of its own)
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # The machine's cores shared out, one process per core at least (torchrun sets 1; a user's setting stays).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // processes)))
    each = "one GPU" if gpus else f"{os.environ['OMP_NUM_THREADS']} CPU thread(s)"
    print(f"training in {processes} processes on this machine, {each} each; the first one reports for all", flush=True)
    # After Ctrl-C or SIGTERM the processes finish their step (an evaluation, on a busy machine, can take
    # long) and rank 0 writes last.pt; torch's 30 s before SIGKILL once cut that short and lost its line.
    shutdown = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          shutdown_timeout=shutdown)
    os.environ[LAUNCHER_PID] = f"{os.getpid()}:{config.run_id}"  # the job's run id: a stale setting is no launcher
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
    try:
        elastic_launch(config, sys.executable)("-m", f"{PACKAGE}.commands.train", *argv)
    except SignalException as err:  # Ctrl-C or SIGTERM here: the processes got it too, rank 0 said so
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        return _failed(err.failures, processes, folder)
    return 0


def _failed(failures: dict, processes: int, folder: Path) -> int:
    """The exit code of a job some process of which failed; a UserError naming the first that did."""
    # The agent stops the others with SIGTERM once one has failed: the cause is the first other failure.
    stopped = INTERRUPTED | {PEER_LOST, -signal.SIGTERM}
    causes = [f for f in failures.values() if f.exitcode not in stopped]
    if not causes:  # Ctrl-C or SIGTERM reached the processes: rank 0 said so
        code = max(f.exitcode for f in failures.values())
        return code if code > 0 else 128 - code  # killed by a signal: the shell's 128 + its number
    first = min(causes, key=lambda f: f.timestamp)
    if first.exitcode == 2:  # a refusal (a run folder in use, bad data...): rank 0 printed it
        return 2
    code = first.exitcode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    resume = (f"continue with --resume {folder}" if (folder / "train" / "weights" / "last.pt").is_file()
              else "no checkpoint was written yet")
    raise UserError(f"process {first.local_rank} of {processes} ended with {how}, so the run stopped in every "
                    f"process; {resume}")
