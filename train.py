"""Train (or, with --phase test, evaluate) Skip-GANomaly / Skip-WGANomaly.

    python train.py --dataset cifar10 --abnormal_class airplane --model w_skipganomaly
"""
import sys

import options
from lib import checkpoint
from lib.data import load_split
from lib.errors import UserError, run_cli
from lib.models import build_model
from lib.run import (adopt_checkpoint_options, prepare_run_dir, resolve_device, run_dir,
                     seed_everything, write_options)
from lib.trainer import Interrupted, Trainer, evaluate, histogram_csv
from lib.metrics import all_metrics
from lib.visualizer import make_visualizer

# On --resume these come from the command line, never from the checkpoint.
SESSION_OPTIONS = {"resume", "load_weights", "phase", "verbose", "display", "display_server",
                   "display_port", "display_id", "device", "gpu_ids", "ngpu", "workers", "niter"}


def load_checkpoint(opt, argv):
    """The checkpoint named by --resume or --load_weights (or None), with its options adopted."""
    explicit = options.explicit_options(argv)
    if opt.resume:
        ckpt = checkpoint.load(opt.resume, "last")
        keys = [k for k in ckpt["options"] if k not in SESSION_OPTIONS]
        adopt_checkpoint_options(opt, ckpt["options"], explicit, keys, f"checkpoint '{ckpt['path']}'")
        return ckpt
    if opt.load_weights is not None:
        source = run_dir(opt) if opt.load_weights == "run" else opt.load_weights
        ckpt = checkpoint.load(source, "best")
        adopt_checkpoint_options(opt, ckpt["options"], explicit, options.NETWORK_OPTIONS,
                                 f"checkpoint '{ckpt['path']}'")
        return ckpt
    if opt.phase == "test":
        raise UserError("--phase test evaluates trained weights: add --load_weights [RUN_OR_FILE]")
    return None


def main(argv):
    opt = options.parse(argv)
    if opt.tune:
        raise UserError("--tune runs a Ray Tune search: use `python train_tune.py ... --tune True`")
    ckpt = load_checkpoint(opt, argv)
    device = resolve_device(opt)
    seed_everything(opt)
    split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, abnormal_class=opt.abnormal_class,
                       normal_class=opt.normal_class, val_ratio=opt.val_ratio, workers=opt.workers)
    model = build_model(opt, device)
    folder = prepare_run_dir(opt)
    write_options(opt, options.defaults())
    trainer = Trainer(opt, model, split, device, folder, make_visualizer(opt, opt.name))
    if opt.resume:
        trainer.restore(ckpt)
    elif ckpt is not None:
        model.load_state_dict(ckpt["state"], weights_only=True)

    if opt.phase == "test":
        parts = evaluate(model, split.test_images, opt.batchsize, device)
        labels = split.test_labels.numpy()
        hist = histogram_csv(parts["score"], labels)
        checkpoint.write_text(folder / "histogram.csv", hist)
        checkpoint.write_text("histogram.csv", hist)
        metrics = all_metrics(labels, parts["score"])
        print("test: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return 0

    try:
        results = trainer.fit()
    except Interrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return 130
    finally:
        trainer.vis.close()
    h = results["metric"]
    print(f"test {h}: {results['last']['test'][h]:.4f} (last epoch {results['last']['epoch']}), "
          f"{results['best']['test'][h]:.4f} (epoch {results['best']['epoch']}, best on validation)")
    print(f"outputs: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
