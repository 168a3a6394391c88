"""Train (or, with --phase test, evaluate) Skip-GANomaly / Skip-WGANomaly.

    python train.py --dataset cifar10 --abnormal_class airplane --model w_skipganomaly
"""
import sys

import options
from lib import checkpoint
from lib.errors import UserError, run_cli
from lib.metrics import all_metrics
from lib.run import build_trainer, load_checkpoint
from lib.trainer import Interrupted, evaluate, histogram_csv


def main(argv):
    opt = options.parse(argv)
    if opt.tune:
        raise UserError("--tune runs a Ray Tune search: use `python train_tune.py ... --tune True`")
    trainer = build_trainer(opt, options.defaults(), load_checkpoint(opt, options.explicit_options(argv)))
    model, split, device, folder = trainer.model, trainer.split, trainer.device, trainer.dir

    if opt.phase == "test":
        parts = evaluate(model, split.test_images, opt.batchsize, device)
        labels = split.test_labels.numpy()
        hist = histogram_csv(parts["score"], labels)
        checkpoint.write_text(folder / "histogram.csv", hist)
        checkpoint.write_text("histogram.csv", hist)
        metrics = all_metrics(labels, parts["score"])
        print("test: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return score_path(opt, folder)

    try:
        results = trainer.fit()
    except Interrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return 128 + stop.signal
    finally:
        trainer.vis.close()
    h = results["metric"]
    print(f"test {h}: {results['last']['test'][h]:.4f} (last epoch {results['last']['epoch']}), "
          f"{results['best']['test'][h]:.4f} (epoch {results['best']['epoch']}, best on validation)")
    print(f"outputs: {folder}")
    return score_path(opt, folder)


def score_path(opt, folder) -> int:
    """--path: score those images with the run's best weights, as predict.py does."""
    if not opt.path:
        return 0
    import predict  # only when asked: it is the scoring command line
    args = ["--path", opt.path, "--weights", str(folder), "--batchsize", str(opt.batchsize),
            "--device", "cpu" if str(opt.gpu_ids).strip() == "-1" else opt.device]
    return predict.main(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
