"""Without the 'outputs' fix (`--original`) a run writes and prints what the original code did, so
that scripts written for the original's files work unchanged; with it, nothing of that appears."""
import argparse
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lib import options
from lib.display.visualizer import NullVisualizer
from lib.scoring import metrics
from lib.training.original_outputs import OPTIONS_END, OPTIONS_HEAD, OriginalOutputs, options_text, original_image
from lib.training.outputs import RunOutputs
from tests.helpers import TINY, read_csv, train_cli

# TINY under --original: 1076 training images (16 batches of 64, the last partial one dropped) and
# 721 test images (12 batches). The original's image counter reaches 1024 in epoch 1; its test pass
# restarts it and leaves it at 12 x 64 = 768, so epoch 2 counts 832, 896, ..., 1792.
PRINT_FREQ = 832  # 13 batches: epoch 1 batch 13; epoch 2 batches 1 (832) and 14 (1664)
SAVE_IMAGE_FREQ = 640  # epoch 1 batch 10; epoch 2 batch 8 (1280): iterations would never reach 640
PERFORMANCE = re.compile(r"^   Avg Run Time \(ms/batch\): \d+\.\d{3} AUC: (\d\.\d{3}) max AUC: (\d\.\d{3})$")


class LossPoints(NullVisualizer):
    """A dashboard that remembers where (in epochs) each loss point was drawn."""

    def __init__(self):
        self.points = []

    def losses(self, epoch, losses):
        self.points.append(epoch)


@pytest.fixture(scope="module")
def original_run(tmp_path_factory):
    """(run folder, stdout, loss points) of a 2-epoch --original run saving test images, with --verbose."""
    cwd = tmp_path_factory.mktemp("original")
    dashboard = LossPoints()
    args = [*TINY, "--niter", "2", "--outf", "out", "--original", "--save_test_images", "--verbose",
            "--print_freq", PRINT_FREQ, "--save_image_freq", SAVE_IMAGE_FREQ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lib.runs.setup.make_visualizer", lambda *args, **kwargs: dashboard)
        proc = train_cli(args, cwd)
    return cwd / "out" / "skipganomaly-original" / "digits" / "3", proc.stdout, dashboard.points


@pytest.fixture(scope="module")
def our_run(tmp_path_factory):
    """(run folder, stdout) of a 1-epoch run with every fix, --metric f1_score and --save_test_images."""
    cwd = tmp_path_factory.mktemp("ours")
    proc = train_cli([*TINY, "--niter", "1", "--outf", "out", "--metric", "f1_score", "--save_test_images"], cwd)
    return cwd / "out" / "skipganomaly" / "digits" / "3", proc.stdout


def improved_epochs(table) -> list[int]:
    """Epochs (from 0) whose test AUROC beat every earlier one and 0, as the original's `best_auc`."""
    best, found = 0.0, []
    for row in table:
        if float(row["test_auroc"]) > best:
            best = float(row["test_auroc"])
            found.append(int(row["epoch"]) - 1)
    return found


@pytest.mark.slow
def test_original_writes_its_opt_txt_in_train_in_its_format(original_run):
    folder, stdout, _ = original_run
    lines = (folder / "train" / "opt.txt").read_text().splitlines()
    assert lines[0] == OPTIONS_HEAD and lines[-1] == OPTIONS_END
    names = [line.split(": ")[0] for line in lines[1:-1]]
    assert names == sorted(names) and "[default" not in "".join(lines)
    assert {"niter: 2", "isTrain: True", "gpu_ids: [0]", "original: True"} <= set(lines)
    assert "[default: 15]" in (folder / "opt.txt").read_text()  # ours stays: the result tables read it
    assert "\n".join(lines) in stdout  # --verbose prints the same block, then the networks
    assert "UNet(" in stdout and "Discriminator(" in stdout


@pytest.mark.slow
def test_original_loss_log_has_its_header_and_one_performance_line_per_epoch(original_run):
    folder, stdout, _ = original_run
    lines = (folder / "loss_log.txt").read_text().split("\n")
    assert re.fullmatch(r"================ .+ ================", lines[0])
    assert lines[1:3] == ["3, 8, 1, 50, 1", ""]  # abnormal class, nz, w_adv, w_con, w_lat; a blank line
    assert len(lines) == 6 and lines[5] == ""
    table = read_csv(folder / "metrics.csv")
    best = 0.0
    for line, row in zip(lines[3:5], table):
        auc, max_auc = PERFORMANCE.match(line).groups()
        best = max(best, float(row["test_auroc"]))
        assert (auc, max_auc) == (f"{float(row['test_auroc']):.3f}", f"{best:.3f}")
        assert line in stdout.splitlines()


@pytest.mark.slow
def test_original_prints_its_lines_instead_of_ours(original_run):
    folder, stdout, _ = original_run
    lines = stdout.splitlines()
    start = lines.index(">> Training skip-ganomaly on digits to detect 3")
    shown = [PERFORMANCE.sub("<performance>", line) for line in lines[start:]]
    assert shown == [">> Training skip-ganomaly on digits to detect 3",
                     ">> Training model skip-ganomaly. Epoch 1/2", "   Testing skip-ganomaly", "<performance>",
                     ">> Training model skip-ganomaly. Epoch 2/2", "   Testing skip-ganomaly", "<performance>",
                     ">> Training model skip-ganomaly.[Done]", "outputs: out/skipganomaly-original/digits/3"]


@pytest.mark.slow
def test_original_saves_net_g_and_net_d_whenever_the_test_auc_improves(original_run):
    folder, _, _ = original_run
    weights = folder / "train" / "weights"
    epochs = improved_epochs(read_csv(folder / "metrics.csv"))
    assert sorted(p.name for p in weights.glob("*.pth")) == sorted(
        f"net{n}_{e}.pth" for e in epochs for n in "GD")
    assert (weights / "last.pt").is_file() and (weights / "best.pt").is_file()  # resume and predict.py's
    best = torch.load(weights / "best.pt", weights_only=True)
    for net, name in (("G", "generator"), ("D", "adversary")):
        saved = torch.load(weights / f"net{net}_{epochs[-1]}.pth", weights_only=True)
        assert set(saved) == {"epoch", "state_dict"} and saved["epoch"] == epochs[-1]
        # The last improvement is the epoch the original selects: best.pt holds the same networks.
        assert best["epoch"] == epochs[-1] + 1
        assert saved["state_dict"].keys() == best["state"][name].keys()
        assert all(torch.equal(v, best["state"][name][k]) for k, v in saved["state_dict"].items())


@pytest.mark.slow
def test_original_saves_its_image_files_in_its_names_and_formats(original_run):
    folder, _, _ = original_run
    train = folder / "train" / "images"
    assert sorted(p.name for p in train.iterdir()) == ["fakes.png", "fixed_fakes_001.png", "fixed_fakes_002.png",
                                                       "reals.png"]
    assert Image.open(train / "reals.png").size == (82, 82)  # 8 x 8 tiles of 8 pixels, 2-pixel borders
    fixed = Image.open(train / "fixed_fakes_002.png")
    assert (fixed.size, fixed.mode) == ((8, 8), "RGB")  # one reconstruction, no border
    test = folder / "test" / "images"
    assert sorted(p.name for p in test.iterdir()) == sorted(f"{kind}_{n:03d}.eps" for kind in ("real", "fake")
                                                            for n in range(1, 13))
    for n, size in ((1, (82, 82)), (12, (82, 32))):  # the last batch holds 721 - 11 x 64 = 17 images
        image = Image.open(test / f"fake_{n:03d}.eps")
        assert (image.format, image.size, image.mode) == ("EPS", size, "RGB")


@pytest.mark.slow
def test_original_draws_no_plots_and_ours_does(original_run, our_run):
    assert not (original_run[0] / "plots").exists()  # the original drew a histogram each epoch and saved none
    assert {p.name for p in (our_run[0] / "plots").iterdir()} == {
        "roc.png", "precision_recall.png", "score_histogram.png", "learning_curves.png"}


@pytest.mark.slow
def test_original_frequencies_count_training_images_restarted_by_each_test_pass(original_run):
    _, _, points = original_run
    assert points == [pytest.approx(13 / 16), pytest.approx(1 + 1 / 16), pytest.approx(1 + 14 / 16)]


@pytest.mark.slow
def test_original_histogram_is_min_max_scaled(original_run):
    folder, _, _ = original_run
    scores = [float(r["scores"]) for r in read_csv(folder / "histogram.csv")]
    assert min(scores) == 0 and max(scores) == 1


@pytest.mark.slow
def test_with_every_fix_nothing_of_the_originals_outputs_appears(our_run):
    folder, stdout = our_run
    assert not (folder / "train" / "opt.txt").exists()
    assert not list(folder.rglob("*.pth")) and not list(folder.rglob("*.eps"))
    names = {p.name for p in (folder / "train" / "images").iterdir()}
    assert {"real_samples.png", "fake_samples_epoch_001.png", "fixed_normal_epoch_001.png"} <= names
    assert not names & {"reals.png", "fakes.png", "fixed_fakes_001.png"}
    assert {"real_0001.png", "fake_0001.png"} <= {p.name for p in (folder / "test" / "images").iterdir()}
    log = (folder / "loss_log.txt").read_text().splitlines()
    assert log[0].startswith("================ Training Loss") and log[1].startswith("(epoch: 1, iters: 5)")
    assert "Avg Run Time" not in stdout and ">> Training" not in stdout
    assert "test f1_score: " in stdout


@pytest.mark.slow
def test_metric_f1_score_is_the_originals_f1_of_the_run_scores(our_run):
    folder, _ = our_run
    table = read_csv(folder / "histogram.csv")  # raw scores with every fix
    labels = np.array([int(r["labels"]) for r in table])
    scores = np.array([float(r["scores"]) for r in table], dtype=np.float32)
    row = read_csv(folder / "metrics.csv")[0]
    assert float(row["test_f1_score"]) == pytest.approx(metrics.original_f1_score(labels, scores))
    assert "test_f1" in row and "test_auroc" in row


def test_original_f1_score_thresholds_min_max_scaled_scores_at_0_2():
    labels = np.array([0, 0, 0, 1, 1, 0])
    scores = np.array([10.0, 11.0, 13.0, 14.0, 20.0, 12.0])  # scaled: 0, 0.1, 0.3, 0.4, 1, 0.2
    # Abnormal at >= 0.2: images 3, 4, 5 and 6; true positives 2, false positives 2, false negatives 0.
    assert metrics.original_f1_score(labels, scores) == pytest.approx(2 * 2 / (2 * 2 + 2 + 0))
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 200), rng.normal(size=200).astype(np.float32)
    scaled = (scores - scores.min()) / (scores.max() - scores.min())
    assert metrics.original_f1_score(labels, scores) == pytest.approx(f1_score(labels, scaled >= np.float32(0.2)))
    assert math.isnan(metrics.original_f1_score([0, 1], [3.0, 3.0]))


def test_metric_f1_score_is_an_option_recorded_only_when_chosen():
    assert "f1_score" in options.build_parser().format_help()
    opt = options.parse([*TINY, "--metric", "f1_score"])
    assert metrics.HEADLINE[opt.metric] == "f1_score"
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.4, 0.9])
    assert "f1_score" not in metrics.all_metrics(labels, scores)
    chosen = metrics.all_metrics(labels, scores, also=("f1_score",))
    assert chosen["f1_score"] == metrics.original_f1_score(labels, scores) and "f1" in chosen


def test_original_image_is_torchvisions_save_image(tmp_path):
    from torchvision.utils import save_image
    torch.manual_seed(0)
    batches = (torch.randn(11, 1, 8, 8), torch.randn(3, 3, 6, 6) * 5, torch.randn(1, 8, 8), torch.randn(1, 3, 4, 4))
    for images in batches:
        save_image(images, tmp_path / "torchvision.png", normalize=True)
        assert np.array_equal(original_image(images), np.asarray(Image.open(tmp_path / "torchvision.png")))


def opt_for_counting(**changes):
    return argparse.Namespace(**{**vars(options.parse(TINY)), "model": "skipganomaly", **changes})


def test_original_counts_images_and_ours_iterations(tmp_path):
    opt = opt_for_counting()
    batch = torch.zeros(64, 3, 8, 8)
    original = OriginalOutputs(tmp_path, opt, n_test_images=721)
    # Epoch 1 from 0; later epochs from the test pass's 12 x 64.
    assert [original.count(batch, 0, b, 16) for b in (1, 2, 16)] == [64, 128, 1024]
    assert [original.count(batch, 1, b, 16) for b in (1, 2)] == [832, 896]
    assert RunOutputs(tmp_path, opt).count(batch, 1, 2, 16) == 18
    # --print_freq 2 x --batchsize: every second iteration.
    assert [b for b in range(1, 17) if original.count(batch, 0, b, 16) % 128 == 0] == list(range(2, 17, 2))
    assert OriginalOutputs(tmp_path, opt_for_counting(iter=3), 721).count(batch, 3, 1, 16) == 64


def test_original_options_text_lists_gpu_ids_as_its_parse_left_them():
    text = options_text(opt_for_counting(gpu_ids="-1"))
    assert "gpu_ids: []" in text.splitlines() and "isTrain: True" in text.splitlines()
