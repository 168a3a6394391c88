"""Run by a Python with anomalib (tests/test_anomalib_crosscheck.py): each --undo of
tools/anomalib_runner.py changes what it names in anomalib's Ganomaly, in one real training step.

    <python with anomalib> tests/anomalib_undo_probe.py DATA_FOLDER
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import anomalib_runner  # noqa: E402


def make(model_class):
    from anomalib.models import Ganomaly
    return model_class(batch_size=16, n_features=8, latent_vec_size=8, visualizer=False,
                       pre_processor=Ganomaly.configure_pre_processor(image_size=(32, 32)))


def step(model, data):
    """Train `model` for one batch of `data`; returns it."""
    import tempfile

    import torch
    from anomalib.engine import Engine

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:  # anomalib adds a checkpoint callback of its own
        Engine(max_epochs=1, limit_train_batches=1, limit_val_batches=0, accelerator="cpu", devices=1, logger=False,
               default_root_dir=work, enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule=data)
    return model


def main(folder: str) -> None:
    import torch
    from anomalib.data import Folder
    from anomalib.models import Ganomaly

    data = Folder(name="probe", root=folder, normal_dir="train/0.normal", abnormal_dir="test/1.abnormal",
                  normal_test_dir="test/0.normal", train_batch_size=16, eval_batch_size=16, num_workers=0,
                  val_split_mode="same_as_test")
    assert anomalib_runner.variant(Ganomaly, []) is Ganomaly  # nothing undone: anomalib's own class

    # What the generator loss's adversarial term is given: probabilities (N,) as shipped, features when undone.
    for undo, rank in (([], 1), (["adv_features"], 4)):
        model_class = anomalib_runner.variant(Ganomaly, undo) if undo else Ganomaly
        seen = []
        model = make(model_class)
        model.generator_loss.register_forward_hook(lambda _m, args, _out: seen.append(args[4].dim()))
        step(model, data)
        assert seen == [rank], (undo, seen)

    assert type(make(anomalib_runner.variant(Ganomaly, ["enc_l2"])).generator_loss.loss_enc).__name__ == "MSELoss"

    # DCGAN's N(0, 0.02) against PyTorch's default (uniform, sd 1/sqrt(3 * fan_in) = 0.083 for the first layer).
    def first_conv_sd(model_class):
        conv = next(m for m in make(model_class).model.generator.modules() if isinstance(m, torch.nn.Conv2d))
        return conv.weight.std().item()
    assert 0.06 < first_conv_sd(Ganomaly) < 0.11
    assert 0.015 < first_conv_sd(anomalib_runner.variant(Ganomaly, ["dcgan_init"])) < 0.025

    # The discriminator's loss forced below 1e-5 (a discriminator that wins outright), its first layer set to
    # ones: reset_d re-initialises it (one Adam step alone would leave it near 1), and nothing else does.
    class Tiny(torch.nn.Module):
        def forward(self, real, fake):
            return (real.mean() + fake.mean()) * 0 + 1e-6
    for undo, resets in ((["reset_d"], 1), (["enc_l2"], 0)):
        model = make(anomalib_runner.variant(Ganomaly, undo))
        model.discriminator_loss = Tiny()
        conv = next(m for m in model.model.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
        torch.nn.init.ones_(conv.weight)
        step(model, data)
        assert model.d_resets == resets and (conv.weight.min().item() > 0.99) == (resets == 0), undo
    print("probe passed")


if __name__ == "__main__":
    main(sys.argv[1])
