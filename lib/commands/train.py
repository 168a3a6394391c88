"""The code of train.py (its docstring has the usage): train, or with --phase test evaluate, one run."""
if __name__ == "__main__":  # python -m lib.commands.train: run as the installed command is, importing this
    from ..errors import run_command_module  # module inside the error handling (no numpy: one line)
    run_command_module(__spec__.name)

import json
import os
import shutil
import sys
from pathlib import Path

from .. import options
from ..errors import UserError
from ..files import WriteFailed, disk_error, write_text
from ..runs.folder import evaluation_dir, in_run, probe_writable, run_folder_of


class HistogramCopy:
    """The original README's ./histogram.csv: a convenience copy that never costs the run anything.

    The run's own histogram.csv is written first; this copy is skipped, with one notice, where
    the working directory cannot take it.
    """

    def __init__(self, run_copy: Path, log=print):
        self.run_copy, self.log, self.ok = run_copy, log, True
        try:
            probe_writable(Path.cwd())
        except OSError as err:
            self._give_up(err)

    def _give_up(self, err: OSError) -> None:
        self.ok = False
        self.log(f"notice: ./histogram.csv is not written ({err.strerror} in the working directory); "
                 f"the run's own copy is {self.run_copy}")

    def write(self, text: str) -> None:
        if self.ok:
            try:
                write_text("histogram.csv", text)
            except OSError as err:
                self._give_up(err)

    def after_epoch(self, trainer, row) -> None:
        """Trainer's on_epoch hook: the run's histogram.csv has just been written."""
        try:
            self.write(self.run_copy.read_text())
        except OSError as err:
            self._give_up(err)


def main(argv):
    from ..parallel.launch import end_with_launcher
    end_with_launcher()  # first: a job's process whose launcher is killed while it starts must stop too
    argv, show = options.with_config(argv)
    opt = options.parse(argv)
    if show and not opt.resume and opt.load_weights is None:  # else the checkpoint's options are part of them
        print(options.options_text(opt, options.defaults()), end="")
        return 0
    if opt.tune:
        raise UserError("--tune runs a Ray Tune search: use `python train_tune.py ... --tune True`")
    if opt.path and not Path(opt.path).exists():  # found out now, not after the training it follows
        raise UserError(f"--path '{opt.path}' does not exist; give an image file or a folder of images to score")
    # torch and the rest load only now: a command line that is refused is refused at once.
    from ..errors import deferred_interrupts
    with deferred_interrupts():  # Ctrl-C while torch loads: delivered once it has, as one line
        from ..original import applies
        from ..runs.setup import build_trainer, load_checkpoint, run_dir
        from ..training.stopping import Interrupted
    if opt.path:  # images predict.py can read, known before the training that comes first
        check_images(Path(opt.path))

    explicit = options.explicit_options(argv)
    ckpt = load_checkpoint(opt, explicit)
    if show:
        print(options.options_text(opt, options.defaults()), end="")
        return 0
    if opt.phase == "test":  # one process evaluates (under torchrun: rank 0; the others have nothing to do)
        from ..parallel.distributed import Context
        check_path_out(opt, run_folder_of(ckpt["path"]))
        return evaluate_weights(opt, ckpt) if Context.from_env().writes else 0

    folder = resume_folder(opt, ckpt, explicit) if opt.resume else run_dir(opt)
    if opt.resume:  # (a new run's folder is new, or replaced as a whole by --overwrite)
        check_path_out(opt, folder)
    from ..parallel import distributed
    context = distributed.Context.from_env()  # under torchrun: rank 0 alone writes and prints
    if not context.active:
        import torch

        from ..parallel.launch import check_processes, launch, on_gpus, processes_for
        processes = processes_for(opt, "ngpu" in explicit, torch.cuda.is_available())
        if processes > 1:
            opt.ngpu = processes
            check_processes(opt)
            return launch([*argv, "--ngpu", str(processes)] if "ngpu" not in explicit else argv, processes, folder,
                          on_gpus(opt))
    histogram = HistogramCopy(folder / "histogram.csv") if context.writes else None
    trainer = build_trainer(opt, options.defaults(), ckpt, on_epoch=histogram and histogram.after_epoch,
                            folder=folder, overwrite=opt.overwrite)
    stopped = None
    try:
        results = trainer.fit()
    except Interrupted as stop:
        if context.writes:
            print(f"interrupted: {stop}", file=sys.stderr)
        stopped = 128 + stop.signal
    except Exception as err:
        if context.active and distributed.lost_peer(err):  # another process is gone: the launcher says so
            from ..parallel.launch import PEER_LOST
            return PEER_LOST
        raise
    finally:
        trainer.close()
        distributed.finish(context)
    if stopped is not None:
        return distributed.leave(stopped) if context.active else stopped
    if not context.writes:  # (distributed.leave: a job's process ends without the teardown that can abort)
        return distributed.leave(0) if context.active else 0
    if applies(opt, "outputs"):  # the original's last line, its [Done], has been printed instead
        h = results["metric"]
        on = "validation" if results["best"]["selected_by"].startswith("val_") else "the test set (as the original)"
        print(f"test {h}: {results['last']['test'][h]:.4f} (last epoch {results['last']['epoch']}), "
              f"{results['best']['test'][h]:.4f} (epoch {results['best']['epoch']}, best on {on})")
        print(score_line(results, opt.score not in (None, "val")))
    print(f"outputs: {folder}")
    code = score_path(opt, folder)
    return distributed.leave(code) if context.active else code


def score_line(results: dict, named: bool) -> str:
    """Which score the run's numbers are of, and why that one (`named`: --score named it): a score chosen
    on validation has every candidate's validation AUROC beside it in results.json."""
    score = results.get("threshold", {}).get("score", "?")
    candidates = [key for key in results["best"]["val"] if key.startswith("auroc_score_")]
    why = (f"the best of {len(candidates)} scores on the validation split" if len(candidates) > 1
           else "--score" if named else "the model's own score")
    return f"score: {score} ({why})"


def check_images(path: Path) -> None:
    """UserError unless --path is an image file, or a folder holding some, of a type PIL reads."""
    from PIL import Image

    from ..predict.score import find_images
    if path.is_file() and path.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"--path {str(path)!r} is not an image of a type PIL reads ({path.suffix or 'no extension'}):"
                        " give an image file (.png, .jpg, ...) or a folder of them")
    find_images(path)


def resume_folder(opt, ckpt, explicit) -> Path:
    """--resume continues in the run folder it names, wherever the run was first written.

    The checkpoint's stored --outf/--name describe where the run began; a copied run folder
    continues in the copy. opt's outf/name are set to match, for opt.txt and the dashboard.
    """
    for flag in ("outf", "name"):
        if flag in explicit:
            raise UserError(f"--resume continues a run in its own folder: drop --{flag} (to branch a run, copy "
                            "its folder and resume the copy)")
    path = Path(ckpt["path"])
    if not in_run(path):  # a checkpoint taken out of its run
        raise UserError(f"--resume continues a run in its own folder, and '{path}' lies in none (a run keeps it as "
                        "<run>/train/weights/last.pt): resume the whole run folder it came from, or train a new run "
                        f"from these weights with --load_weights {path}")
    folder = run_folder_of(path)
    check_same_run(path, folder, ckpt["options"], explicit)
    name = Path(opt.name).parts
    if len(folder.parts) > len(name) and folder.parts[-len(name):] == name:
        opt.outf = str(Path(*folder.parts[:-len(name)]))
    else:
        opt.outf, opt.name = str(folder.parent), folder.name
    return folder


def check_same_run(path: Path, folder: Path, saved: dict, explicit=frozenset()) -> None:
    """The checkpoint is the run's own, as the folder's opt.txt records it: another run's last.pt copied in
    would continue here, its epochs added to this run's metrics.csv and its options to its record. Both were
    written by the process that trained last, so every option that shapes what a run computes must agree;
    those a resume may change (how the session runs, --niter, the precision) may not. --dataroot is compared
    unless given again: a run whose data moved is resumed with its new place."""
    from ..options.record import recorded_values
    from ..runs.adopted import RESUME_APPLIES
    recorded = recorded_values(folder / "opt.txt")
    exempt = RESUME_APPLIES - {"dataroot"} | ({"dataroot"} & set(explicit))
    if "-1" in (recorded.get("manualseed"), str(saved.get("manualseed"))):  # a random seed, recorded as drawn
        exempt |= {"manualseed"}
    for key in sorted(recorded.keys() & saved.keys() - exempt):
        if recorded[key] != str(saved[key]):
            raise UserError(f"'{path}' is the checkpoint of another run than '{folder}' ({key} {saved[key]}, where "
                            f"the run's opt.txt records {recorded[key]}): put the run's own last.pt back, or resume "
                            "the run the checkpoint came from")


def evaluate_weights(opt, ckpt) -> int:
    """--phase test: score the test split with the loaded weights; results go to <run>/test/."""
    from ..options.record import options_text
    from ..original import applies
    from ..parallel.distributed import Context
    from ..runs.setup import build_evaluation, runtime_of
    from ..scoring.evaluate import evaluate
    from ..scoring.localise import chosen_sigma, evaluate_maps
    from ..scoring.metrics import HEADLINE, all_metrics
    from ..scoring.policy import score_policy
    from ..training.outputs import evaluation_plots, histogram_csv

    if opt.overwrite:
        raise UserError("--overwrite applies to training; --phase test writes only below <run>/test/")
    out = evaluation_dir(ckpt["path"])
    model, split, device = build_evaluation(opt, ckpt)
    parts = evaluate(model, split.test_images, opt.batchsize, device,
                     train_mode=score_policy(opt, type(model)).train_mode)
    labels = split.test_labels.numpy()
    hist = histogram_csv(parts["score"], labels, min_max=not applies(opt, "outputs"))
    metrics = all_metrics(labels, parts["score"], also=(HEADLINE[opt.metric],))
    if split.test_masks is not None:  # inspection data: the maps too, smoothed as the run chose (scoring/localise.py)
        metrics.update(evaluate_maps(model, split.test_images, split.test_masks.numpy(), split.test_defects,
                                     opt.batchsize, device, chosen_sigma(ckpt)[0]))
    # Written whole into a staging folder, then put in place: a disk that fills half-way leaves the earlier
    # evaluation (or none), never an opt.txt describing one that was not written.
    staging = out.parent / f".{out.name}.partial"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write_text(staging / "opt.txt", options_text(opt, options.defaults(), runtime_of(model, device, Context())))
        write_text(staging / "histogram.csv", hist)
        write_text(staging / "results.json", json.dumps(
            {"weights": ckpt["path"], "epoch": ckpt.get("epoch"), "seed": opt.manualseed, "test": metrics},
            indent=2) + "\n")
        evaluation_plots(staging, opt, labels, parts["score"], model.scoring.name, ckpt.get("threshold"),
                         ckpt.get("epoch"))
        out.mkdir(exist_ok=True)
        for item in staging.iterdir():
            if (out / item.name).is_dir():
                shutil.rmtree(out / item.name)
            os.replace(item, out / item.name)
    except OSError as err:
        error = disk_error(err)
        if error is not None:  # a full disk: name the file (as it would be in place) and the space left
            path = str(err.path) if isinstance(err, WriteFailed) else str(out)
            raise WriteFailed(path.replace(str(staging), str(out)), error) from None
        raise UserError(f"cannot write the evaluation folder '{out}' ({err.strerror})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    HistogramCopy(out / "histogram.csv").write(hist)
    print("test: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"outputs: {out}")
    return score_path(opt, ckpt["path"])


def check_path_out(opt, run: Path) -> None:
    """--path writes into <run>/predict: predictions already there (of other images, perhaps of these very
    weights) are refused now, before any training or scoring, never replaced without a word."""
    from ..predict.out import earlier_predictions
    out = run / "predict"
    earlier = earlier_predictions(out) if opt.path else []
    if earlier:
        raise UserError(f"'{out}' already holds predictions ({' and '.join(earlier)}) that --path would replace: "
                        f"move them away, or drop --path and score the images with `python predict.py --weights "
                        f"{run} --path {opt.path} --out FOLDER`")


def score_path(opt, weights) -> int:
    """--path: score those images with `weights` (a run folder: its best.pt; or the checkpoint that
    --phase test evaluated), as predict.py does, into the run's predict/ (free: check_path_out)."""
    if not opt.path:
        return 0
    from . import predict  # only when asked: it is the scoring command
    args = ["--path", opt.path, "--weights", str(weights), "--batchsize", str(opt.batchsize),
            "--device", "cpu" if str(opt.gpu_ids).strip() == "-1" else opt.device]
    return predict.main(args)
