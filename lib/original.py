"""The original code's behaviour, one named switch per difference.

Each entry of `FIXES` is something this framework does differently from the original
Skip-WGANomaly code (../shared/reference/original-behaviour.md lists the original's defects).
A run applies the fixes named by `--fixes`: by default every fix but those the ablation found
no better than the original's way (`reverted` says what was measured), none with `--original`,
which reproduces the original step for step, defects included, to check its numbers.
Because each fix is a switch, a study can turn them one at a time (experiments/ablation.py).

`numbers` says whether a fix can change a trained model or its metrics (the ablation turns
those); the others change only what the run writes or prints, or (fastest_kernels) its numbers
in the last float digits.
"""
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Fix:
    numbers: bool
    ours: str  # what this framework does
    original: str  # what the original code does instead
    models: tuple[str, ...] = ()  # the models it concerns (none named: every model)
    training: bool = True  # False: it changes only how trained weights are scored or chosen
    # Why it is off by default: what docs/original_ablation.md measured ("" = on by default). A fix
    # that repairs a defect stays on whatever it measures; one that is only another choice is
    # reverted where the original's way scored at least as well.
    reverted: str = ""

    def concerns(self, model: str) -> bool:
        return not self.models or model in self.models


WGAN, SKIP = ("w_skipganomaly",), ("skipganomaly",)
# The reason a fix that repairs no defect is off by default (the numbers: docs/original_ablation.md).
NO_BETTER = "the original's way, a choice rather than a defect, scored at least as well"


FIXES = {
    # Skip-WGANomaly's training step
    "generator_gradients": Fix(True, "the generator's adversarial and latent losses reach it",
                               "both are detached: the generator learns from the L1 loss alone", WGAN),
    "gp_of_mean": Fix(True, "the gradient penalty constrains the critic's value, the mean of its features",
                      "it constrains the sum of the nz features: an nz-times larger gradient norm", WGAN,
                      reverted=NO_BETTER),
    "critic_no_reset": Fix(True, "the critic is never re-initialised",
                           "the critic is re-initialised whenever its loss is below 1e-5", WGAN),
    "generator_phase": Fix(True, "the generator learns at steps n, 2n, ... (after n critic updates)",
                           "it learns at steps n-1, 2n-1, ...", WGAN, reverted=NO_BETTER),
    "critic_affine": Fix(True, "the critic's InstanceNorm layers have a learnable scale and shift",
                         "they have none", WGAN, reverted=NO_BETTER),
    # Skip-GANomaly's training step
    "d_loss_bce_only": Fix(True, "the discriminator's loss is its cross-entropy",
                           "it adds the latent loss's value (no gradient), which moves the 1e-5 re-initialisation "
                           "threshold", SKIP),
    "classifier_bias": Fix(True, "the discriminator's classifier has a bias", "it has none", SKIP,
                           reverted=NO_BETTER),
    "bce_with_logits": Fix(True, "the cross-entropy is computed from logits (exact in bf16, no log clamp)",
                           "a sigmoid, then the cross-entropy of the probability (the same loss, other "
                           "rounding)", SKIP),
    # Evaluation, selection and data
    "eval_mode_scoring": Fix(True, "scores in eval mode: an image's score does not depend on its batch",
                             "scores in training mode over test batches in file order (normal images first), "
                             "so BatchNorm's batch statistics of nearly pure batches enter every score",
                             training=False),
    "score_on_validation": Fix(True, "the anomaly score is the one with the best validation AUROC among every score "
                                     "the model measures (--score val; docs/score_study.md), whenever there is a "
                                     "validation split",
                               "the score is 0.9 image MSE + 0.1 feature MSE, however it ranks (Skip-WGANomaly's "
                               "ranks anomalies as the most normal images on most Fashion-MNIST classes)",
                               training=False),
    "validation_selection": Fix(True, "the best epoch is chosen on a validation split (--val_ratio 0.1)",
                                "the best epoch is chosen on the test set's AUC; no validation split",
                                training=False),
    "own_data_order": Fix(True, "each epoch's order of the training images comes from a generator of its own, "
                          "seeded by --manualseed: the same images in the same order whatever else draws random "
                          "numbers", "a DataLoader draws it from torch's global generator, after every number "
                          "the run drew before (initial weights, penalties, each pass over the test set)"),
    "mnist_range": Fix(True, "MNIST is scaled to [-1, 1] like every dataset",
                       "MNIST is normalised with mean 0.1307 and std 0.3081"),
    "lr_schedule": Fix(True, "the learning-rate schedulers step once per epoch",
                       "they are built but never stepped (--lr_policy and --niter_decay do nothing)"),
    # Kernels (CUDA): the same numbers to float rounding
    "fastest_kernels": Fix(False, "cuDNN times its kernels per shape and keeps the fastest (cudnn.benchmark), and "
                                  "torch may use kernels that add in any order: two CUDA runs of one seed can differ "
                                  "in float rounding",
                           "cudnn.deterministic: the same kernels, which add in one order, on every run (here also "
                           "torch.use_deterministic_algorithms, warning where a kernel has no deterministic form)",
                           training=False),
    # What a run writes
    "outputs": Fix(False, "this framework's run folder (metrics.csv, results.json, checkpoints, captioned PNG "
                          "images, plots/ of the score's curves and histograms and of the learning curves) and lines",
                   "the original's: train/opt.txt, loss_log.txt with an AUC line per epoch, netG_<epoch>.pth and "
                   "netD_<epoch>.pth when the AUC improves, reals/fakes/fixed_fakes images, .eps test images, "
                   "min-max scaled histogram.csv, its console lines, no saved figure (it drew a score histogram "
                   "each test pass and never saved it); --print_freq and --save_image_freq count "
                   "images (lib/training/original_outputs.py)",
                   training=False),
}


DEFAULT = frozenset(name for name, fix in FIXES.items() if not fix.reverted)


def parse_fixes(text: str) -> frozenset[str]:
    """'default', 'all', 'none', or a comma-separated list of fix names; '-name' removes one
    (e.g. 'all,-gp_of_mean': every fix but one; 'gp_of_mean': the original plus one fix)."""
    if not str(text).strip():  # an unset "$FIXES" in a script must not silently mean the original
        raise UserError("--fixes is empty: give default, all, none, or fix names separated by commas")
    items = [part.strip() for part in str(text).split(",") if part.strip()]
    if not items:
        raise UserError(f"--fixes {text!r} names nothing: give default, all, none, or fix names separated by commas")
    if items[0].startswith("-"):  # removed from nothing: it would silently train the original
        raise UserError(f"--fixes {text} starts by removing {items[0][1:]} from nothing: say what it is removed "
                        f"from, e.g. --fixes default,{items[0]} or --fixes all,{items[0]}")
    chosen: set[str] = set()
    for item in items:
        name = item.lstrip("-")
        if name == "all":
            group = set(FIXES)
        elif name == "default":
            group = set(DEFAULT)
        elif name == "none":
            group = set()
        elif name in FIXES:
            group = {name}
        else:
            raise UserError(f"--fixes: unknown fix '{name}'; choose from default, all, none, {', '.join(FIXES)}")
        chosen = chosen - group if item.startswith("-") else chosen | group
    named = [item.strip() for item in text.split(",") if item.strip().lstrip("-") in FIXES]
    both = sorted({n for n in named if n.startswith("-") and n[1:] in named})
    if both:  # "a,-a": which one was meant?
        raise UserError(f"--fixes names {both[0][1:]} both on and off ({both[0][1:]} and {both[0]}): keep one")
    return frozenset(chosen)


def fixes(opt) -> frozenset[str]:
    """The fixes a run applies (options saved before the flag existed lack it: those runs applied all)."""
    if getattr(opt, "original", False):
        return frozenset()
    return parse_fixes(getattr(opt, "fixes", "all"))


def applies(opt, name: str) -> bool:
    """Whether the run applies fix `name` (a KeyError for a name that is not a fix)."""
    FIXES[name]  # noqa: B018 -- a misspelt name must fail loudly, not read as "not applied"
    return name in fixes(opt)
