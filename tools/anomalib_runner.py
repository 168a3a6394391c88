"""Train and test anomalib's Ganomaly on a folder dataset, for experiments/anomalib_crosscheck.py.

    <python with anomalib 2.x> tools/anomalib_runner.py --data DIR --isize 32 --batchsize 64 \\
        --niter 1 --seed 0 --out result.json

Run by a Python that has anomalib (its own environment: anomalib is never a dependency of this
project, and nothing here imports this file). DIR holds train/0.normal (training), test/0.normal
and test/1.abnormal (the test set, kept whole: validation is the test set, which anomalib uses
only to scale scores). anomalib's model is used as it ships, but for the image size and widths;
writes the test AUROC of the last epoch and what ran to --out as JSON.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the folder dataset")
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--batchsize", type=int, default=64)
    p.add_argument("--niter", type=int, default=1, help="epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ngf", type=int, default=64, help="anomalib's n_features")
    p.add_argument("--nz", type=int, default=100, help="anomalib's latent_vec_size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--out", required=True, help="the JSON file to write")
    args = p.parse_args(argv)

    import anomalib
    import torch
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Ganomaly
    from lightning.pytorch import seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True)
    data = Folder(name="crosscheck", root=args.data, normal_dir="train/0.normal", abnormal_dir="test/1.abnormal",
                  normal_test_dir="test/0.normal", train_batch_size=args.batchsize, eval_batch_size=args.batchsize,
                  num_workers=0, val_split_mode="same_as_test", seed=args.seed)
    model = Ganomaly(batch_size=args.batchsize, n_features=args.ngf, latent_vec_size=args.nz,
                     pre_processor=Ganomaly.configure_pre_processor(image_size=(args.isize, args.isize)),
                     visualizer=False)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="anomalib-run-") as work:
        # anomalib adds its own checkpoint callback: its files go to the scratch folder with the rest.
        engine = Engine(max_epochs=args.niter, accelerator="cpu", devices=1, logger=False, default_root_dir=work,
                        enable_progress_bar=False)
        engine.fit(model=model, datamodule=data)
        tested = engine.test(model=model, datamodule=data, verbose=False)
    result = {"auroc": float(tested[0]["image_AUROC"]), "seconds": round(time.time() - start, 1),
              "anomalib": anomalib.__version__, "torch": torch.__version__,
              "pre_processor": str(model.pre_processor.transform)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
