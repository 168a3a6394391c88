"""The code of train_tune.py (its docstring has the usage and what is checked before Ray starts)."""
if __name__ == "__main__":  # python -m lib.commands.train_tune: run as the installed command is, importing this
    from ..errors import run_command_module  # module inside the error handling (no numpy: one line)
    run_command_module(__spec__.name)

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import options
from ..errors import UserError
from ..files import WriteFailed
from ..scoring.metrics import HEADLINE
from ..tune.arguments import (
    add_tune_arguments,
    check_processes_per_trial,
    check_resources,
    check_search,
    given_tune_options,
    original_search,
    tune_only_parser,
)
from ..tune.checks import check_space
from ..tune.cluster import (
    check_cluster_fits,
    check_local_resources,
    check_reachable,
    cluster_address,
    held_stderr,
    join_or_start,
)
from ..tune.folder import (
    SPACE_COPY,
    check_name,
    check_restore,
    check_search_folder,
    check_writable,
    record_search,
    recorded_space,
    search_name,
)
from ..tune.report import not_started, ranked_on_test, report, stopped_at_once
from ..tune.space import largest, ray_space, read_space
from ..tune.trials import check_search_place, run_trial, train_actions, trial_base, trial_options

PROG = "train_tune.py"
ROOT = Path(__file__).resolve().parents[2]  # the repository
# ASHA keeps the best 1/REDUCTION of trials at each rung: halving suits searches of tens of trials.
REDUCTION = 2
def main(argv):
    argv, show = options.with_config(argv, PROG)
    parser = options.build_parser(PROG)
    add_tune_arguments(parser)
    parser.parse_args(argv)  # -h, and one-line errors for any flag
    args, train_argv = tune_only_parser().parse_known_args(argv)
    given = given_tune_options(argv)
    explicit = options.explicit_options(train_argv, PROG)
    raw = options.build_parser(PROG).parse_args(train_argv)
    if show:  # every trial's options before the space's values replace some of them
        print(options.options_text(raw, options.defaults(PROG)), end="")
        return 0
    if "tune" in explicit and not raw.tune:
        if given:
            raise UserError(f"--{sorted(given)[0]} is for a search, and --tune False runs one plain training: "
                            "drop one of them")
        from . import train  # one plain training, through the same loop, no Ray
        return train.main(train_argv)

    # Everything the user can get wrong is checked here, before Ray starts.
    on_test = original_search(args, given, raw, explicit)
    check_resources(args)
    opt = trial_options(vars(raw), {})
    if opt.resume:
        raise UserError("--resume continues one run: to continue a search, pass --name NAME --restore")
    if opt.phase != "train":
        raise UserError("a search trains: evaluate a run with train.py --phase test --load_weights RUN")
    if opt.path:  # no trial scores images: it would be recorded in every trial, never applied
        raise UserError(f"--path {opt.path}: a search trains and scores no images; score them with the best trial's "
                        "run afterwards: python predict.py --weights RUN --path IMAGES")
    if opt.val_ratio <= 0 and not on_test:
        raise UserError("a search ranks trials on the validation split: --val_ratio must be above 0 (--original "
                        "ranks them on the test set, as the original did)")
    if args.restore and "name" not in explicit:
        raise UserError("--restore continues the search named by --name: give the name it printed")
    actions = train_actions(options.build_parser(PROG))
    base = trial_base(vars(raw))
    restored = Path(base["outf"]) / "tune" / raw.name if args.restore and raw.name else None
    saved = recorded_space(restored, given) if restored else None
    space = read_space(saved or args.space, actions)
    if saved:
        args.space = saved
    check_space(args.space, space, base, explicit, actions)
    check_search(args, given, opt, space)
    check_processes_per_trial(args, given, opt)
    name = search_name(opt, explicit, space)
    check_name(name)
    folder = Path(base["outf"]) / "tune" / name
    replace = check_search_folder(folder, args.restore, raw.overwrite)
    if args.restore:
        copy = folder / SPACE_COPY
        check_restore(folder, space, read_space(copy, actions) if copy.is_file() else None, base)
    if not args.restore:  # never inside a run, and --overwrite deletes no run but its own trials'
        check_search_place(folder, replace)
    check_writable(folder)
    objective = f"{'test' if on_test else 'val'}_{HEADLINE[opt.metric]}"
    address, source = cluster_address(args.address)
    if address is None:
        check_local_resources(args)
    elif args.num_cpus is not None:
        raise UserError(f"--num_cpus sets the CPUs of a Ray started here, not of the cluster {source} names "
                        "(its machines set theirs with ray start --num-cpus): drop --num_cpus")
    else:
        check_reachable(address, source)

    from ..tune.interrupts import SearchStop, StopNow
    with SearchStop() as stop:  # Ctrl-C or SIGTERM, in any phase from here: lib/tune/interrupts.py
        try:
            return search(Search(args, opt, raw, explicit, base, actions, space, name, folder, objective, on_test,
                                 address, replace), stop)
        except StopNow as now:
            from ray import tune
            print(stopped_at_once(name, tune.Tuner.can_restore(str(folder))), file=sys.stderr)
            return 128 + now.signal
        except WriteFailed as err:  # e.g. results.csv on a full disk: Tune's state, if saved, continues it
            from ray import tune
            if not tune.Tuner.can_restore(str(folder)):
                raise
            raise err.followed_by(f"then continue the search with --name {name} --restore") from None


@dataclass
class Search:
    """A search that has passed every check: what main decided before Ray starts."""
    args: argparse.Namespace  # the search's own options
    opt: argparse.Namespace  # train.py's options of the command line, validated
    raw: argparse.Namespace  # the same, as parsed (what a trial's options start from)
    explicit: set
    base: dict
    actions: dict
    space: dict
    name: str
    folder: Path
    objective: str
    on_test: bool
    address: str | None
    replace: bool  # --overwrite: the old search in `folder` goes once Ray is up


def search(s: Search, stop) -> int:
    """Start or join Ray, run the search (or continue it) and report it; `stop` holds a signal."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from ..tune.interrupts import Forward, forward_in
    from ..tune.progress import Progress, quiet_restored, quiet_run_config, ray_init_quiet, tune_console

    args, opt, name, folder, address = s.args, s.opt, s.name, s.folder, s.address
    storage = str(Path(s.base["outf"]) / "tune")
    if args.restore and not tune.Tuner.can_restore(str(folder)):
        raise UserError(f"--restore: '{folder}' holds no search state to continue")
    started_here = not ray.is_initialized()
    try:
        with held_stderr(address is not None and not opt.verbose):
            if started_here and not stop.signal:
                with stop.through_ray_init():
                    join_or_start(ray, address, args.num_cpus, ROOT, ray_init_quiet(opt.verbose))
            gpus = args.gpus_per_trial
            if gpus is None and not stop.signal:  # one GPU per process when the cluster has GPUs
                gpus = opt.ngpu if opt.device == "gpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
            if not stop.signal:
                check_cluster_fits(ray, args.cpus_per_trial, gpus, address or "this machine")
        if stop.signal:  # before Tune has written anything (an old search to --overwrite is kept)
            print(not_started(stop), file=sys.stderr)
            return stop.exit_code
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=s.base, defaults=options.defaults(PROG),
                                 explicit=s.explicit, search=name),
            {"cpu": args.cpus_per_trial, "gpu": gpus})
        if s.replace:  # the last check has passed: the old search goes only now
            try:
                shutil.rmtree(folder)
            except OSError as err:
                raise UserError(f"--overwrite: cannot delete '{folder}' ({err.strerror})") from None
        processes = f", {opt.ngpu} processes" if opt.ngpu > 1 else ""
        print(f"search '{name}': {folder} ({s.objective}, {args.scheduler}, {args.cpus_per_trial:g} CPU + "
              f"{gpus:g} GPU per trial{processes}); continue it after an interruption with --name {name} --restore")
        print(f"space {args.space}, {args.num_samples} sample(s) of it")
        if s.on_test:
            print(ranked_on_test(s.objective))
        if args.restore:
            tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=True)
            forward_in(tuner, Progress(s.objective, s.space))
            quiet_restored(tuner, opt.verbose)
        else:
            record_search(folder, args.space, s.base)
            niter = largest(s.space, "niter", opt.niter)
            scheduler = (ASHAScheduler(time_attr="epoch", max_t=niter, grace_period=args.grace_period,
                                       reduction_factor=REDUCTION)
                         if args.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=ray_space(s.space),
                tune_config=tune.TuneConfig(metric=s.objective, mode="max", num_samples=args.num_samples,
                                            scheduler=scheduler,
                                            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(name=name, storage_path=storage,
                                          callbacks=[Forward(), Progress(s.objective, s.space)],
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                          **quiet_run_config(opt.verbose)))
        with tune_console(opt.verbose):
            results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    return report(results, s.objective, s.space, s.raw, s.actions, name, folder, stop)
