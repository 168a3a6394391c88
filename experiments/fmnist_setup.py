"""What the Fashion-MNIST study runs: its variants, budgets, seeds and learning-curve runs, and
how a run folder is named. fmnist_study.py runs them and fmnist_report.py tables them; both
import this module, so neither imports the other's definitions."""

VARIANTS = {  # row label -> train.py flags
    "Skip-GANomaly": ["--model", "skipganomaly"],
    "Skip-WGANomaly": ["--model", "w_skipganomaly"],
    "Skip-WGANomaly (no skip connections)": ["--model", "w_skipganomaly", "--no_skip"],
    "Skip-WGANomaly (weight clipping)": ["--model", "w_skipganomaly", "--wgan", "clip"],
    # The investigation: the score weighting chosen on the validation split instead of 0.9.
    "Skip-GANomaly (score weight chosen on validation)": ["--model", "skipganomaly", "--score_weight", "val"],
    "Skip-WGANomaly (score weight chosen on validation)": ["--model", "w_skipganomaly", "--score_weight", "val"],
    # The model both descend from (its own score: the distance of the codes).
    "GANomaly": ["--model", "ganomaly"],
}
# The stored runs were trained with every fix, the default until the ablation turned four of them
# off (lib/original.py, `reverted`); a resumed study must train its missing runs the same way.
# GANomaly's runs are the same either way: none of those four concerns it. They were scored with
# each model's own score, before score_on_validation existed: the score study
# (experiments/score_study.py) measures every score on these same runs instead.
STUDY_FIXES = ["--fixes", "all,-score_on_validation"]
BUDGETS = {
    # Fits a few hours on a 2-core CPU: 16x16 images, quarter-width networks, 2 epochs.
    "cpu": ["--isize", "16", "--ngf", "16", "--ndf", "16", "--nz", "32", "--niter", "2", "--device", "cpu",
            *STUDY_FIXES],
    # The original's: 32x32, full width, 15 epochs.
    "gpu": ["--isize", "32", "--niter", "15", "--device", "gpu", *STUDY_FIXES],
}
MAIN, ABLATIONS, SCORE_WEIGHT, GANOMALY = list(VARIANTS)[:2], list(VARIANTS)[2:4], list(VARIANTS)[4:6], ["GANomaly"]
SEED_CLASSES = ("Sandal", "Shirt")  # extra seeds to show the spread: an easy and a hard class
EXTRA_SEEDS = (1, 2)
# Learning curves: the main models trained for the original's 15 epochs on one class whose
# score parts disagree most (Skip-WGANomaly's image error alone 0.88, its score 0.51).
CURVE_CLASS, CURVE_EPOCHS = "Bag", 15


def slug(text: str) -> str:
    """A variant or class name as a run-folder name: "Skip-GANomaly" -> "skip_ganomaly"."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()
