"""What a run needs around the training loop: device, seed, data, run folder, opt.txt.

Everything a run can be refused for is checked before its first byte is written.
"""
import os
import random
from pathlib import Path

import numpy as np
import torch

from .. import options
from ..data.datasets import load_split
from ..display.visualizer import NullVisualizer, make_visualizer
from ..errors import UserError, working_directory_exists
from ..files import write_text
from ..models import build_model, model_class
from ..options.record import options_text
from ..original import applies
from ..parallel import distributed
from ..resources import check_fits, network_bytes
from ..training import checkpoint, checkpoint_fit
from ..training.schedules import make_schedulers
from ..training.trainer import Trainer
from .adopted import NETWORK_OPTIONS, adopt, check_same_precision, speed_record
from .folder import RunFolder, check_new_run_place, run_folder_of


def resolve_device(opt, log=print, context: distributed.Context = distributed.Context()) -> torch.device:
    """`--device gpu` uses CUDA when present, else the CPU with a one-line notice. Under torchrun,
    process LOCAL_RANK takes the LOCAL_RANK-th of --gpu_ids (or of the GPUs, with one id given)."""
    ids = [int(i) for i in str(opt.gpu_ids).split(",") if i.strip()]
    if opt.device == "cpu" or not ids or ids[0] < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log("notice: CUDA is not available, training on the CPU (--device cpu silences this)")
        return torch.device("cpu")
    gpu = ids[context.local_rank] if len(ids) > context.local_rank else ids[0] + context.local_rank
    if gpu >= torch.cuda.device_count():
        raise UserError(f"--gpu_ids {opt.gpu_ids}: process {context.local_rank} would use GPU {gpu}, and this "
                        f"machine has {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(gpu)
    return torch.device(f"cuda:{gpu}")


def seed_everything(opt) -> int:
    """Seed torch, numpy and Python's random as the original did; -1 picks a seed and records it
    in opt so opt.txt can reproduce the run. Without the fastest_kernels fix (--original) torch is
    also asked for deterministic algorithms (cuDNN's included, no autotuning), as the original asked
    cuDNN. Both are process-wide, so each run sets them either way."""
    if opt.manualseed < 0:
        opt.manualseed = random.SystemRandom().randrange(2**31)
    random.seed(opt.manualseed)
    np.random.seed(opt.manualseed % 2**32)  # numpy takes 32-bit seeds
    torch.manual_seed(opt.manualseed)
    deterministic = not applies(opt, "fastest_kernels")
    if deterministic:  # cuBLAS is deterministic only with this workspace, set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False
    return opt.manualseed


def _silent(*args, **kwargs) -> None:
    pass


def run_dir(opt) -> Path:
    return Path(opt.outf) / opt.name


def _short(path: Path, most: int = 160) -> str:
    """A path as a one-line message shows it: a very long one cut in the middle."""
    text = str(path)
    return text if len(text) <= most else f"{text[:most // 2]}...{text[-most // 2:]}"


def claim_run_dir(folder: Path, resume: bool, overwrite: bool) -> RunFolder:
    """Lock the run folder for this run and check what it holds; returns the held lock."""
    if not resume:  # before the folder exists: never inside another run, nor around one
        try:
            check_new_run_place(folder, overwrite)
        except OSError as err:  # e.g. a name too long for the filesystem (ENAMETOOLONG)
            if not working_directory_exists():  # run_cli says so
                raise
            raise UserError(f"cannot use the output folder '{_short(folder)}' ({err.strerror}): choose a shorter "
                            "or writable --outf/--name") from None
    claim = RunFolder(folder).acquire("training" + (" (resumed)" if resume else ""))
    try:
        if resume:
            claim.check_resume()
        else:
            claim.check_new(overwrite)
        for sub in ("weights", "images"):
            (folder / "train" / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        claim.release()
        if not working_directory_exists():  # run_cli says so
            raise
        raise UserError(f"cannot write the output folder '{_short(folder)}' ({err.strerror}): "
                        "choose a writable --outf") from None
    except BaseException:
        claim.release()
        raise
    return claim


def runtime_of(model, device: torch.device, context: distributed.Context) -> dict:
    """What a training run chose from the machine it runs on, for opt.txt."""
    from ..fast import hardware
    precision, convolutions = model.speed.why or ("", "")
    return {"device": str(device), "processes": context.world, "threads": torch.get_num_threads(),
            "cpu": f"{hardware.cpu_name()} ({hardware.capability()})", "torch": torch.__version__,
            "precision": precision, "convolutions": convolutions}


def write_options(folder: Path, opt, defaults: dict, runtime: dict | None = None) -> None:
    write_text(Path(folder) / "opt.txt", options_text(opt, defaults, runtime))


def check_memory(opt, device, training: bool) -> None:
    """Refuse networks and batches that cannot fit, before any of them is allocated."""
    model = checkpoint_fit.networks_template(opt)
    needed = network_bytes(list(model.networks.values()), (opt.batchsize, opt.nc, opt.isize, opt.isize),
                           training)
    check_fits(needed, f"--model {opt.model} at --isize {opt.isize}, --batchsize {opt.batchsize}, "
                       f"--ngf {opt.ngf}, --ndf {opt.ndf}, --nz {opt.nz}",
               "lower --batchsize, --isize or the widths", device)


def check_generator_updates(opt, n_train: int) -> None:
    """A critic-driven model updates the generator every --n_critic steps: make sure it ever does."""
    n_critic = model_class(opt.model).generator_every(opt)
    per_epoch = n_train // opt.batchsize if opt.droplast else -(-n_train // opt.batchsize)
    steps = per_epoch * (opt.niter - opt.iter)
    if opt.phase == "train" and not opt.resume and opt.niter > 0 and steps < n_critic:  # (0: the control)
        raise UserError(f"--n_critic {n_critic} but the run takes only {steps} training steps "
                        f"({opt.niter - opt.iter} epoch(s) of {per_epoch} batches): the generator would never "
                        "be updated; lower --n_critic or train longer")


def adopt_network_options(opt, saved: dict, explicit: set[str], source: str) -> None:
    """A new run from loaded weights (--load_weights) takes their networks' settings; one given
    explicitly must match them."""
    for key in NETWORK_OPTIONS:
        if key not in saved:
            continue
        if key in explicit and getattr(opt, key) != saved[key]:
            raise UserError(f"{source} was made with --{key} {saved[key]}, not {getattr(opt, key)}: "
                            f"drop --{key} or use a checkpoint made with matching settings")
        setattr(opt, key, saved[key])


def check_outside_dataset(opt, ckpt) -> None:
    """A run moved into its own folder dataset after it began: resumed or tested there, it would read
    its own images as data (a new run's --outf is checked when it starts)."""
    run = run_folder_of(ckpt["path"])
    folder = options.dataset_folder_around(opt, run)
    if folder is not None:
        raise UserError(f"the run '{run}' lies inside its dataset's folder {folder}, where its own images would be "
                        "read as data: move the run folder out of the dataset, then use it from there")


def check_test_session(opt, explicit: set[str]) -> None:
    """--phase test's flags that would be recorded in <run>/test/opt.txt without being applied, refused: it
    evaluates in one process, into the test/ folder of the run its weights name (--outf and --name find
    that run only for a bare --load_weights)."""
    if "ngpu" in explicit and opt.ngpu > 1 and os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        raise UserError(f"--ngpu {opt.ngpu}: --phase test evaluates in one process; drop --ngpu")
    if opt.resume or opt.load_weights not in (None, "run"):
        weights = f"--resume {opt.resume}" if opt.resume else f"--load_weights {opt.load_weights}"
        for flag in ("outf", "name"):
            if flag in explicit:
                raise UserError(f"--{flag}: --phase test writes into the test/ folder of the run {weights} names; "
                                f"drop --{flag}")


def load_checkpoint(opt, explicit: set[str]):
    """The checkpoint named by --resume or --load_weights (or None), with its options adopted.

    Nothing is built from it before all of it is checked: its stored options as the command line's
    are; its states must fit the networks (on --resume also the optimisers and schedulers) they describe.
    """
    if opt.phase == "test":
        check_test_session(opt, explicit)
    if opt.resume:
        ckpt = checkpoint.load(opt.resume, "last")
        if ckpt["options"].get("niter") == 0 and opt.phase != "test":  # (--phase test evaluates it, as any run)
            raise UserError(f"'{ckpt['path']}' is an untrained control (--niter 0): there is no training to "
                            "continue; train a run with the same flags and --niter N")
        adopt(opt, ckpt["options"], explicit, f"checkpoint '{ckpt['path']}'")
        options.validate(opt)  # the run's options with the flags given now
        check_outside_dataset(opt, ckpt)
        if opt.niter < ckpt["epoch"] and opt.phase != "test":  # it would train nothing, yet record the shorter run
            raise UserError(f"--niter {opt.niter} is below the {ckpt['epoch']} epochs '{ckpt['path']}' has trained: "
                            f"give --niter {ckpt['epoch']} or more (or score it as it is with predict.py)")
        checkpoint_fit.check_states(ckpt, opt, make_schedulers)
        if opt.phase != "test":  # (--phase test scores in the precision it is given, as with --load_weights)
            check_same_precision(opt, explicit, ckpt)
        return ckpt
    if opt.load_weights is not None:
        source = run_dir(opt) if opt.load_weights == "run" else opt.load_weights
        ckpt = checkpoint.load(source, "best")
        if opt.phase == "test":
            adopt(opt, ckpt["options"], explicit, f"checkpoint '{ckpt['path']}'")
            options.validate(opt)
            check_outside_dataset(opt, ckpt)
        else:
            adopt_network_options(opt, ckpt["options"], explicit, f"checkpoint '{ckpt['path']}'")
        checkpoint_fit.check_states(ckpt, opt, make_schedulers)
        checkpoint_fit.check_same_networks(ckpt, opt)
        return ckpt
    if opt.phase == "test":
        raise UserError("--phase test evaluates trained weights: add --load_weights [RUN_OR_FILE]")
    return None


def build_trainer(opt, defaults: dict, ckpt=None, on_epoch=None, log=print, folder=None,
                  overwrite: bool = False) -> Trainer:
    """Device, seed, data, model, run folder and visualizer for `opt`, ready to `fit`.

    `defaults` are the option defaults (opt.txt marks what differs from them). The run is
    written into `folder` (default `<outf>/<name>`), which is locked until `trainer.close()`.
    A new run refuses a folder holding another run unless `overwrite`.
    """
    folder = Path(folder) if folder is not None else run_dir(opt)
    context = distributed.Context.from_env()
    if not context.writes:
        log = _silent  # rank 0 alone prints, writes and talks to Visdom
    device = resolve_device(opt, log, context)
    if context.active and not applies(opt, "eval_mode_scoring"):
        raise UserError("a run in several processes scores in eval mode: rank 0 scores alone, and training-mode "
                        "scoring would need the others' batches; drop --original, or keep the eval_mode_scoring fix")
    distributed.start(context, device)
    seed_everything(opt)
    check_memory(opt, device, training=True)
    split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, abnormal_class=opt.abnormal_class,
                       normal_class=opt.normal_class, val_ratio=opt.val_ratio, workers=opt.workers, log=log,
                       category=opt.category)
    if opt.phase == "train" and opt.droplast and len(split.train) < opt.batchsize:
        raise UserError(f"--batchsize {opt.batchsize} is larger than the {len(split.train)} training images "
                        "and --droplast drops every batch: lower --batchsize or pass --no-droplast")
    check_generator_updates(opt, len(split.train))
    distributed.check_batch_splits(opt.batchsize, context.world)
    last = 0 if opt.droplast else len(split.train) % opt.batchsize
    if last % context.world:  # found now, not at the end of the first epoch
        raise UserError(f"--no-droplast keeps a last batch of {last} training images, which does not split into "
                        f"{context.world} processes: drop --no-droplast, or choose a --batchsize that leaves a "
                        f"multiple of {context.world}")
    digest = split.digest()
    if opt.resume and "data_digest" not in ckpt and opt.dataroot != ckpt["options"].get("dataroot"):
        raise UserError(f"'{folder}' was saved before checkpoints recorded their data, so its images under --dataroot "
                        f"{opt.dataroot} cannot be checked: resume it from its own --dataroot "
                        f"{ckpt['options'].get('dataroot')}")
    if opt.resume and ckpt.get("data_digest", digest) != digest:  # (checkpoints before the digest: not known)
        data = f"--dataset {opt.dataset} --dataroot {opt.dataroot}" + (f" --category {opt.category}"
                                                                        if opt.category else "")
        raise UserError(f"the images of {data} differ from those '{folder}' was trained on (now: {split.counts()}): "
                        "continuing would mix two datasets in one run; restore the data, or train a new run")
    model = build_model(opt, device, recorded=speed_record(ckpt) if opt.resume else None)
    if model.speed.notice:
        log(f"notice: {model.speed.notice}")
    trainer = Trainer(opt, model, split, device, folder,
                      make_visualizer(opt, opt.name, log=log) if context.writes else NullVisualizer(),
                      log=log, on_epoch=on_epoch if context.writes else None, context=context)
    trainer.state.data_digest = digest
    if opt.resume:
        trainer.restore(ckpt)
    elif ckpt is not None:
        model.load_state_dict(ckpt["state"], weights_only=True)
    distributed.prepare(model, context)  # after the weights are in place: every process gets rank 0's
    if not context.writes:
        return trainer
    # Only now, with nothing left to refuse, does the run touch its folder.
    try:
        trainer.claim = claim_run_dir(folder, resume=bool(opt.resume), overwrite=overwrite)
        write_options(folder, opt, defaults, runtime_of(model, device, context))
    except BaseException:
        trainer.close()
        raise
    return trainer


def build_evaluation(opt, ckpt, log=print):
    """(model with the checkpoint's weights, data split, device) for `--phase test`."""
    device = resolve_device(opt, log)
    seed_everything(opt)
    check_memory(opt, device, training=False)
    split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, abnormal_class=opt.abnormal_class,
                       normal_class=opt.normal_class, val_ratio=opt.val_ratio, workers=opt.workers, log=log,
                       category=opt.category)
    model = build_model(opt, device, recorded=speed_record(ckpt))
    if model.speed.notice:
        log(f"notice: {model.speed.notice}")
    model.load_state_dict(ckpt["state"], weights_only=True)
    return model, split, device
