"""What a run leaves to look at (issue 34): plots/ with the score's curves and histograms and the
learning curves, and image grids that say what they show."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as sk

from lib.images import text_band, wrap
from lib.models import build_model
from lib.scoring import metrics
from lib.training import plots
from lib.training.outputs import labelled_comparison
from tests.helpers import make_opt, process, read_csv

# The issue's tiny run, with a training grid and the test images saved.
ISSUE_RUN = ["--dataset", "digits", "--isize", "16", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batchsize", "32",
             "--niter", "1", "--device", "cpu", "--nc", "1", "--manualseed", "0", "--outf", "TMP"]
FILES = (plots.ROC, plots.PRECISION_RECALL, plots.HISTOGRAM, plots.LEARNING)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run folder of the issue's tiny run, trained by `python train.py` as a user runs it."""
    cwd = tmp_path_factory.mktemp("plots")
    proc = process("train.py", [*ISSUE_RUN, "--save_image_freq", "20", "--save_test_images"], cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd / "TMP" / "skipganomaly" / "digits" / "0"


def ties(n=300, seed=0):
    """Labels and scores with many tied scores, as a score of few distinct values has."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.round(rng.normal(size=n) + labels, 1)


def assert_png(path, least=(300, 200)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
        image.verify()
    assert least[0] <= size[0] <= 3000 and least[1] <= size[1] <= 3000, size
    with Image.open(path) as image:
        assert len(image.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 8  # a picture, not a blank


def test_roc_points_are_scikit_learns():
    labels, scores = ties()
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    expected = sk.roc_curve(labels, scores, drop_intermediate=False)
    for ours, theirs in zip((fpr, tpr, thresholds), expected):
        np.testing.assert_allclose(ours, theirs)


def test_precision_recall_points_are_scikit_learns():
    labels, scores = ties(seed=1)
    for ours, theirs in zip(metrics.precision_recall_curve(labels, scores), sk.precision_recall_curve(labels, scores)):
        np.testing.assert_allclose(ours, theirs)


def test_each_class_histogram_shares_the_bins_and_sums_to_one_and_the_threshold_lies_inside():
    labels, scores = ties(seed=2)
    edges = plots.histogram_edges([scores[:100], scores[100:]], threshold=9.0, bins=30)
    assert len(edges) == 31 and edges[0] == scores.min() and edges[-1] == 9.0
    shares = plots.class_histograms(labels, scores, edges)
    assert set(shares) == {"normal", "abnormal"} and all(s.sum() == pytest.approx(1) for s in shares.values())
    normal = np.histogram(scores[labels == 0], edges)[0]
    np.testing.assert_allclose(shares["normal"], normal / normal.sum())
    assert plots.flagged(labels, scores, 0.5) == {"normal": np.mean(scores[labels == 0] >= 0.5),
                                                  "abnormal": np.mean(scores[labels == 1] >= 0.5)}
    assert set(plots.class_histograms(np.zeros(5), np.arange(5.0), edges)) == {"normal"}


@pytest.mark.parametrize("name", ["skipganomaly", "w_skipganomaly", "ganomaly"])
def test_the_learning_curves_plot_every_loss_a_model_reports_and_nothing_else(name):
    model = build_model(make_opt(model=name, n_critic=1), torch.device("cpu"))
    losses = model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    row = {"epoch": 1, **losses, "val_auroc": 0.5, "test_auroc": 0.6, "val_auroc_image_mse": 0.4, "lr": 2e-4,
           **{key: 1 for key in plots.BOOKKEEPING if key != "epoch"}}
    assert plots.loss_columns([row]) == list(losses)


def test_the_curves_legends_give_the_areas_of_the_scores_they_draw():
    labels, scores = ties(seed=3)
    roc = plots.roc_figure({"test": (labels, scores)}, "t").axes[0].get_legend_handles_labels()[1]
    assert f"test: AUROC {sk.roc_auc_score(labels, scores):.3f}" in roc
    pr = plots.precision_recall_figure({"test": (labels, scores)}, "t").axes[0].get_legend_handles_labels()[1]
    assert f"test: AP {sk.average_precision_score(labels, scores):.3f}" in pr


def test_an_untrained_controls_learning_curves_say_there_was_no_training():
    figure = plots.learning_curves_figure([{"epoch": 0, "val_auroc": 0.7, "test_auroc": 0.6, "lr": 0}], 0,
                                          "val_auroc", "t")
    assert len(figure.axes) == 1 and "untrained control" in figure.axes[0].texts[0].get_text()


def test_a_caption_wraps_to_the_width_it_is_drawn_in_and_draws_ink():
    name = "incoming/" + "x" * 120 + ".png"
    lines = wrap(f"image: {name} and more words", 200)
    assert len(lines) > 2 and "".join(lines).replace(" ", "") == f"image:{name}andmorewords"
    band = text_band(["ABNORMAL: score 3 >= threshold 2"], 300)
    assert band.shape[1] == 300 and (band < 128).any() and (band[:, -5:] == 255).all()


def test_fixed_images_show_input_reconstruction_and_error_rows_and_no_error_where_they_agree():
    real = torch.full((2, 1, 16, 16), 0.2)
    fake = real.clone()
    fake[:, :, :4, :4] = -1.0  # a badly reconstructed corner
    picture = labelled_comparison(real, fake, ["caption"])
    rows = labelled_comparison(real, fake, [])  # the same without a caption line
    assert picture.shape[1] == rows.shape[1] and picture.shape[0] > rows.shape[0]
    # Each row: a 120-pixel label column, then tiles of 16 pixels with 2-pixel borders, all enlarged 4 times.
    top = lambda r: r * rows.shape[0] // 3 + 8  # noqa: E731 (row r's first tile's top)
    corner = lambda r: rows[top(r):top(r) + 16, 128:144]  # noqa: E731 (its top-left 4x4 pixels)
    far = lambda r: rows[top(r) + 48:top(r) + 64, 176:192]  # noqa: E731 (its bottom-right 4x4 pixels)
    assert (far(2) == far(0)).all()  # no error: the input shows through
    assert not (corner(2) == corner(0)).all()  # error: heat colour
    assert (corner(1) == 0).all()  # the reconstruction, -1 shown black


@pytest.mark.slow
def test_a_finished_run_has_its_plots_as_pngs_of_the_chosen_score(run):
    for name in FILES:
        assert_png(run / "plots" / name)
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow
def test_the_score_plots_are_drawn_from_the_scores_the_run_wrote(run):
    """The run's test scores (histogram.csv) drawn again give the run's own numbers in the legends."""
    results = json.loads((run / "results.json").read_text())
    table = read_csv(run / "histogram.csv")
    labels, scores = np.array([int(r["labels"]) for r in table]), np.array([float(r["scores"]) for r in table])
    legend = plots.roc_figure({"test": (labels, scores)}, "t").axes[0].get_legend_handles_labels()[1]
    assert f"test: AUROC {results['best']['test']['auroc']:.3f}" in legend
    threshold = results["threshold"]
    shares = plots.flagged(labels, scores, threshold["value"])
    assert 0 <= shares["normal"] <= shares["abnormal"] <= 1


@pytest.mark.slow
def test_image_grids_carry_captions_and_keep_their_names(run):
    images = run / "train" / "images"
    assert {"real_samples.png", "fake_samples_epoch_001.png", "fixed_normal_epoch_001.png",
            "fixed_abnormal_epoch_001.png"} <= {p.name for p in images.iterdir()}
    for path in [*images.iterdir(), run / "test" / "images" / "real_0001.png", run / "test" / "images" /
                 "fake_0001.png"]:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        band = pixels[:20]
        assert (band == 255).mean() > 0.5 and (band < 100).any(), path  # a caption: dark text on white
    # 8 abnormal test images of 16 pixels, enlarged to 64, in three labelled rows under a caption.
    assert Image.open(images / "fixed_abnormal_epoch_001.png").size[0] == 120 + 4 * (8 * (16 + 2) + 2)


@pytest.mark.slow
def test_an_untrained_control_writes_its_plots_too(tmp_path):
    proc = process("train.py", [*ISSUE_RUN[:-2], "--niter", "0", "--outf", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "out" / "skipganomaly-control" / "digits" / "0"
    for name in FILES:
        assert_png(folder / "plots" / name)


@pytest.mark.slow
def test_phase_test_draws_the_score_plots_of_the_weights_it_evaluates(run):
    proc = process("train.py", ["--dataset", "digits", "--device", "cpu", "--outf", "TMP", "--nc", "1", "--model",
                                "skipganomaly", "--phase", "test", "--load_weights"], run.parents[3])
    assert proc.returncode == 0, proc.stderr
    for name in (plots.ROC, plots.PRECISION_RECALL, plots.HISTOGRAM):
        assert_png(run / "test" / "plots" / name)
