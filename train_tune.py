"""Search train.py's options with Ray Tune; each trial is one train.py run.

    python train_tune.py --dataset cifar10 --abnormal_class bird --model w_skipganomaly \
        --space experiments/tune_space.json --num_samples 1 --scheduler asha

Trials are ranked by the validation metric (held-out normal and abnormal images,
disjoint from the test set); test AUROC is only recorded. `--tune False` runs one
plain training instead, without Ray.
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

import options
from lib import checkpoint
from lib.errors import UserError, run_cli
from lib.metrics import HEADLINE
from lib.tune import (command_line, largest, ray_space, read_space, run_trial, sort_rows,
                      train_actions, trial_options, trial_row)

PROG = "train_tune.py"
ROOT = Path(__file__).resolve().parent
DEFAULT_SPACE = ROOT / "experiments" / "tune_space.json"
# ASHA keeps the best 1/REDUCTION of trials at each rung: halving suits searches of tens of trials.
REDUCTION = 2


def add_tune_arguments(parser) -> None:
    group = parser.add_argument_group("Ray Tune search (train_tune.py only)")
    a = group.add_argument
    a("--space", default=str(DEFAULT_SPACE), help="JSON search space: option -> {grid|choice|uniform|"
      "loguniform|randint: [...]}")
    a("--num_samples", type=int, default=1, help="samples of the space (each grid point this many times)")
    a("--cpus_per_trial", type=float, default=1, help="CPUs reserved for each trial")
    a("--gpus_per_trial", type=float, default=None,
      help="GPUs per trial; a fraction packs several trials on one GPU; unset: 1 with --device gpu "
           "when the cluster has GPUs, else 0")
    a("--scheduler", default="fifo", choices=("fifo", "asha"), help="asha stops poor trials early")
    a("--grace_period", type=int, default=1, help="asha: epochs every trial runs before it can be stopped")
    a("--address", default=None, help="Ray cluster to join (HOST:6379, or auto); unset: start Ray on this machine")
    a("--num_cpus", type=int, default=None, help="CPUs a Ray started on this machine may use; unset: all")
    a("--restore", action="store_true", help="continue the interrupted search named by --name")


def tune_only_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_tune_arguments(parser)
    return parser


def check_resources(args) -> None:
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be at least 1 (got {args.num_samples})")
    if args.cpus_per_trial <= 0:
        raise UserError(f"--cpus_per_trial must be positive (got {args.cpus_per_trial})")
    gpus = args.gpus_per_trial
    if gpus is not None and (gpus < 0 or (gpus > 1 and not float(gpus).is_integer())):
        raise UserError(f"--gpus_per_trial {gpus}: use a fraction below 1 (e.g. 0.25) or a whole number")
    if args.grace_period < 1:
        raise UserError(f"--grace_period must be at least 1 (got {args.grace_period})")


def search_name(opt, explicit: set, space: dict) -> str:
    """--name, else <model>_<dataset>_<class or 'classes'>_<time> (a rerun never overwrites)."""
    if "name" in explicit:
        return opt.name
    target = ("classes" if {"abnormal_class", "normal_class"} & set(space)
              else f"normal-{opt.normal_class}" if opt.normal_class is not None else opt.abnormal_class)
    parts = [opt.model, opt.dataset, str(target or "all"), time.strftime("%Y%m%d-%H%M%S")]
    return "_".join(p.replace("/", "-").replace(" ", "_") for p in parts)


def main(argv):
    parser = options.build_parser(PROG)
    add_tune_arguments(parser)
    parser.parse_args(argv)  # -h, and one-line errors for any flag
    args, train_argv = tune_only_parser().parse_known_args(argv)
    explicit = options.explicit_options(train_argv, PROG)
    raw = options.build_parser(PROG).parse_args(train_argv)
    if "tune" in explicit and not raw.tune:
        import train  # one plain training, through the same loop, no Ray
        return train.main(train_argv)

    # Everything the user can get wrong is checked here, before Ray starts.
    check_resources(args)
    opt = trial_options(vars(raw), {})
    if opt.resume:
        raise UserError("--resume continues one run: to continue a search, pass --name NAME --restore")
    if opt.phase != "train":
        raise UserError("a search trains: evaluate a run with train.py --phase test --load_weights RUN")
    if opt.val_ratio <= 0:
        raise UserError("a search ranks trials on the validation split: --val_ratio must be above 0")
    actions = train_actions(options.build_parser(PROG))
    base = {**vars(raw), "tune": False,
            "outf": os.path.abspath(raw.outf), "dataroot": os.path.abspath(raw.dataroot)}
    space = read_space(args.space, actions, base)
    name = search_name(opt, explicit, space)
    folder = Path(opt.outf) / "tune" / name
    if args.restore and not folder.is_dir():
        raise UserError(f"--restore: no search at '{folder}' (give the --name it printed)")
    if folder.exists() and not args.restore:
        raise UserError(f"'{folder}' exists: add --restore to continue that search, or choose another --name")
    objective = f"val_{HEADLINE[opt.metric]}"

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    started_here = not ray.is_initialized()
    if started_here:
        # Trials run in other processes: they import this project from the same path.
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus,
                     include_dashboard=False, runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError) as err:
            raise UserError(f"cannot join the Ray cluster at '{args.address}' ({str(err).splitlines()[0]}): check "
                            "`ray status` there; a cluster with token authentication (Ray's default from 2.59) "
                            "also needs RAY_AUTH_MODE=token and its token (`ray get-auth-token`) here") from None
    try:
        gpus = args.gpus_per_trial
        if gpus is None:
            gpus = 1 if opt.device == "gpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base, defaults=options.defaults(PROG),
                                 explicit=explicit, run_prefix=f"tune/{name}/runs"),
            {"cpu": args.cpus_per_trial, "gpu": gpus})
        storage = str(Path(base["outf"]) / "tune")
        print(f"search '{name}': {folder} ({objective}, {args.scheduler}, {args.cpus_per_trial:g} CPU + "
              f"{gpus:g} GPU per trial); continue it after an interruption with --name {name} --restore")
        if args.restore:
            if not tune.Tuner.can_restore(str(Path(storage) / name)):
                raise UserError(f"--restore: '{folder}' holds no search state to continue")
            tuner = tune.Tuner.restore(str(Path(storage) / name), trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            niter = largest(space, "niter", opt.niter)
            scheduler = (ASHAScheduler(time_attr="epoch", max_t=niter, grace_period=min(args.grace_period, niter),
                                       reduction_factor=REDUCTION)
                         if args.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=ray_space(space),
                tune_config=tune.TuneConfig(metric=objective, mode="max", num_samples=args.num_samples,
                                            scheduler=scheduler,
                                            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(name=name, storage_path=storage,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    return report(results, objective, space, raw, actions, name, folder)


def report(results, objective, space, raw, actions, name, folder) -> int:
    """Write results.csv, print the best trial and the train.py command that reproduces it."""
    rows = sort_rows([trial_row(r, objective, space, Path(raw.outf) / "tune" / name / "runs")
                      for r in results], objective)
    checkpoint.write_text(folder / "results.csv", checkpoint.rows_csv(rows))
    print(f"{len(rows)} trials: {folder / 'results.csv'}")
    failed = sum(r["status"] == "error" for r in rows)
    if failed:
        print(f"warning: {failed} trial(s) failed; see the error column of results.csv", file=sys.stderr)
    unfinished = len(rows) - results.num_terminated - results.num_errors
    if unfinished:
        print(f"search interrupted with {unfinished} trial(s) unfinished: continue it with "
              f"--name {name} --restore", file=sys.stderr)
    best = rows[0] if rows and not math.isnan(rows[0][objective]) else None
    if best is None:
        print(f"error: no trial reported {objective}", file=sys.stderr)
        return 1
    config = {k: best[k] for k in space}
    best_opt = trial_options(vars(raw), {**config, "manualseed": best["seed"]})
    command = command_line(vars(best_opt), actions, options.defaults(PROG))
    checkpoint.write_text(folder / "best_command.txt", command + "\n")
    print(f"best trial {best['trial']}: {objective} {best[objective]:.4f} (epoch {best['best_epoch']}), "
          f"test auroc {best['test_auroc']:.4f}")
    print("best config: " + (", ".join(f"{k}={v}" for k, v in config.items()) or "(nothing searched)"))
    print(f"reproduce: {command}")
    return 130 if unfinished else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
