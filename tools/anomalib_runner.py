"""Train and test anomalib's Ganomaly on a folder dataset, for experiments/anomalib_crosscheck.py.

    <python with anomalib 2.x> tools/anomalib_runner.py --data DIR --isize 32 --batchsize 64 \\
        --niter 1 --seed 0 [--undo adv_features,enc_l2,...] --out result.json

Run by a Python that has anomalib (its own environment: anomalib is never a dependency of this
project, and nothing here imports this file). DIR holds train/0.normal (training), test/0.normal
and test/1.abnormal (the test set, kept whole: validation is the test set, which anomalib uses
only to scale scores). anomalib's model is used as it ships, but for the image size and widths and
for the differences from GANomaly's paper that --undo names (UNDO below; anomalib's files are never
edited: a subclass changes only what it names); writes the test AUROC of the last epoch and what
ran to --out as JSON.
"""
import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

# Where anomalib 2.7.0's Ganomaly differs from the paper and its authors' code, and what undoing it does.
UNDO = {
    "adv_features": "adversarial loss: MSE of the discriminator's features of x and G(x), not of its probabilities",
    "enc_l2": "encoder loss: L2 (MSE), not smooth L1",
    "tanh_range": "pre-processor: images normalised to [-1, 1] (mean 0.5, sd 0.5), the generator's tanh range, "
                  "not with ImageNet's statistics",
    "reset_d": "the discriminator re-initialised when its loss falls below 1e-5",
    "dcgan_init": "DCGAN initialisation, N(0, 0.02) convolutions and N(1, 0.02) BatchNorm scales (anomalib calls "
                  "its weights_init on the two top modules, whose class names match neither, so it keeps "
                  "PyTorch's defaults)",
}


def parse_undo(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if names == ["all"]:
        return list(UNDO)
    unknown = [x for x in names if x not in UNDO]
    if unknown:
        raise SystemExit(f"--undo {','.join(unknown)}: unknown; choose from {', '.join(UNDO)} or all")
    return [x for x in UNDO if x in names]  # one order, whatever order they were named in


def variant(ganomaly_class, undo: list[str]):
    """anomalib's Ganomaly with the differences named in `undo` undone; the class itself when none are."""
    if not undo:
        return ganomaly_class
    from anomalib.models.image.ganomaly.torch_model import GanomalyModel
    from torch import nn

    def initialise(module: nn.Module) -> None:
        """The initialisation this variant starts from, used again for a reset."""
        if "dcgan_init" in undo:
            module.apply(GanomalyModel.weights_init)
        else:
            for m in module.modules():
                if m is not module and hasattr(m, "reset_parameters"):
                    m.reset_parameters()

    class Undone(ganomaly_class):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.d_resets = 0
            if "enc_l2" in undo:
                self.generator_loss.loss_enc = nn.MSELoss()
            if "dcgan_init" in undo:
                initialise(self.model.generator)
                initialise(self.model.discriminator)

        def training_step(self, batch, batch_idx):
            # anomalib's step, but for the adversarial term's inputs and the reset, which are what --undo names.
            d_opt, g_opt = self.optimizers()
            padded, fake, latent_i, latent_o = self.model(batch.image)
            pred_real, features_real = self.model.discriminator(padded)
            pred_fake, features_fake = self.model.discriminator(fake)
            # GeneratorLoss applies its MSE to whatever it is given as the two predictions.
            adv_real, adv_fake = ((features_real, features_fake) if "adv_features" in undo
                                  else (pred_real, pred_fake))
            g_loss = self.generator_loss(latent_i, latent_o, padded, fake, adv_real, adv_fake)
            g_opt.zero_grad()
            self.manual_backward(g_loss, retain_graph=True)
            g_opt.step()
            pred_fake, _ = self.model.discriminator(fake.detach())
            d_loss = self.discriminator_loss(pred_real, pred_fake)
            d_opt.zero_grad()
            self.manual_backward(d_loss)
            d_opt.step()
            if "reset_d" in undo and d_loss.item() < 1e-5:
                initialise(self.model.discriminator)
                self.d_resets += 1
            return {"generator_loss": g_loss, "discriminator_loss": d_loss}

    return Undone


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
    p.add_argument("--undo", default="", help=f"differences to undo, comma-separated, or all: {', '.join(UNDO)}")
    p.add_argument("--out", required=True, help="the JSON file to write")
    args = p.parse_args(argv)
    undo = parse_undo(args.undo)
    if importlib.util.find_spec("anomalib") is None:  # the project's own Python: one line, not a traceback
        print(f"error: anomalib is not installed in this Python ({sys.executable}): run this helper through "
              "python -m experiments.anomalib_crosscheck --anomalib-python PYTHON, with the Python that has "
              "anomalib (docs/ganomaly.md says how to make one)", file=sys.stderr)
        return 1

    import anomalib
    import torch
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Ganomaly
    from anomalib.pre_processing import PreProcessor
    from lightning.pytorch import seed_everything
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True)
    data = Folder(name="crosscheck", root=args.data, normal_dir="train/0.normal", abnormal_dir="test/1.abnormal",
                  normal_test_dir="test/0.normal", train_batch_size=args.batchsize, eval_batch_size=args.batchsize,
                  num_workers=0, val_split_mode="same_as_test", seed=args.seed)
    size = (args.isize, args.isize)
    pre_processor = (PreProcessor(transform=Compose([Resize(size, antialias=True),
                                                     Normalize(mean=[0.5] * 3, std=[0.5] * 3)]))
                     if "tanh_range" in undo else Ganomaly.configure_pre_processor(image_size=size))
    model = variant(Ganomaly, undo)(batch_size=args.batchsize, n_features=args.ngf, latent_vec_size=args.nz,
                                    pre_processor=pre_processor, visualizer=False)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="anomalib-run-") as work:
        # anomalib adds its own checkpoint callback: its files go to the scratch folder with the rest.
        engine = Engine(max_epochs=args.niter, accelerator="cpu", devices=1, logger=False, default_root_dir=work,
                        enable_progress_bar=False)
        engine.fit(model=model, datamodule=data)
        tested = engine.test(model=model, datamodule=data, verbose=False)
    result = {"auroc": float(tested[0]["image_AUROC"]), "seconds": round(time.time() - start, 1),
              "anomalib": anomalib.__version__, "torch": torch.__version__,
              "pre_processor": str(model.pre_processor.transform), "undo": undo}
    if "reset_d" in undo:
        result["discriminator_resets"] = model.d_resets
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
