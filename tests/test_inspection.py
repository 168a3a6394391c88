"""Inspection data: the MVTec AD layout with masks, pixel-level metrics and maps that localise (issue 36)."""
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from lib import options
from lib.data.datasets import load_split
from lib.errors import UserError
from lib.predict.masks import PIXEL_METRICS
from lib.scoring.localise import SIGMAS, choose_map, choose_sigma
from lib.scoring.located import map_kind
from lib.scoring.pixel import pixel_auroc, pro_auc, pro_curve, regions
from tests.helpers import one_line_error, process, read_csv, run_main, tool, train_cli
from tools.baselines import gaussian_baseline
from tools.make_textures import CATEGORIES, main as make_textures, make_category


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """Three small generated categories (32 x 32; 24 training and 12 test images each)."""
    root = tmp_path_factory.mktemp("textures")
    for category in CATEGORIES:
        make_category(root, category, seed=3, size=32, n_train=24, n_test=12)
    return root


def load(root, category, **kwargs):
    return load_split("mvtec", str(root), **{"isize": 16, "nc": 3, "category": category, "log": lambda _: None,
                                            **kwargs})


def copy_category(textures, tmp_path, category="weave"):
    import shutil
    shutil.copytree(textures / category, tmp_path / category)
    return tmp_path / category


# ---------------------------------------------------------------- the generator

def test_the_generator_writes_the_mvtec_layout_with_a_mask_of_0_and_255_for_each_defective_image(textures):
    for category, (defects, grey) in CATEGORIES.items():
        root = textures / category
        assert len(list((root / "train" / "good").iterdir())) == 24
        tests = sorted(p for p in (root / "test").rglob("*.png"))
        assert len(tests) == 12 and {p.parent.name for p in tests} == {"good", *defects}
        for image in (p for p in tests if p.parent.name != "good"):
            mask = np.asarray(Image.open(root / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"))
            assert set(np.unique(mask)) == {0, 255} and mask.shape == (32, 32)
            assert Image.open(image).mode == ("L" if grey else "RGB")


def test_a_mask_holds_exactly_the_pixels_its_defect_changed():
    from tools.make_textures import defective, normal
    for category, (defects, _) in CATEGORIES.items():
        for defect in defects:
            # The same draws up to the defect: the image without it is the normal image of that state.
            clean = normal(np.random.default_rng(5), category, 32)
            image, mask = defective(np.random.default_rng(5), category, defect, 32)
            changed = np.abs(image - clean).max(-1) > 0.1
            assert mask.sum() >= 4 and (changed == mask).all(), (category, defect)


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_images(tmp_path):
    args = ["--size", "16", "--train", "3", "--test", "4"]
    for out, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert make_textures(["--out", str(tmp_path / out), "--seed", str(seed), *args]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_the_generator_refuses_to_write_over_categories_in_one_line(tmp_path):
    (tmp_path / "weave").mkdir()
    one_line_error(tool("tools.make_textures", ["--out", tmp_path], tmp_path), "weave already exists")
    one_line_error(tool("tools.make_textures", ["--out", tmp_path / "big", "--size", "100000"], tmp_path),
                   "give 16 (the least a defect can be drawn at) to 2048 pixels")
    assert not (tmp_path / "big").exists()


@pytest.mark.slow
def test_ctrl_c_to_the_generator_leaves_no_half_category_and_a_rerun_writes_all(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT, default_interrupts
    out = tmp_path / "new" / "data"
    proc = subprocess.Popen([sys.executable, "-m", "tools.make_textures", "--out", out, "--size", "256", "--train",
                             "2000"], cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=default_interrupts)
    deadline = time.monotonic() + 60
    while not any(out.glob(".weave-*/weave/train/good/*.png")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130 and proc.stderr.read().strip() == "interrupted"
    assert not (tmp_path / "new").exists()  # the category being written, and the folders made for it, are gone
    assert tool("tools.make_textures", ["--out", out, "--size", "16", "--train", "2", "--test", "4"],
                tmp_path).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(CATEGORIES)


# ---------------------------------------------------------------- reading the layout

def test_mvtec_reads_a_category_with_masks_that_follow_their_images_into_val_and_test(textures):
    split = load(textures, "washer")
    # 24 normal training images (10 %: 2 held out), 4 normal test images, 8 defective ones (1 held out).
    assert (len(split.train), int(split.val_labels.sum()), int(split.test_labels.sum())) == (22, 1, 7)
    assert split.val_masks.shape == (3, 16, 16) and split.test_masks.shape == (11, 16, 16)
    for masks, labels, defects in ((split.val_masks, split.val_labels, split.val_defects),
                                   (split.test_masks, split.test_labels, split.test_defects)):
        assert set(masks.unique().tolist()) <= {0, 1}
        # A normal image has an empty mask, a defective one some anomalous pixels, and its kind of defect.
        assert ((masks.flatten(1).amax(1) == 1) == (labels == 1)).all()
        assert [d == "good" for d in defects] == (labels == 0).tolist()
    assert set(split.test_defects) == {"good", "missing", "colour", "scratch"}


def test_a_mask_is_cropped_and_resized_as_its_image(tmp_path):
    """A wide image and its mask: the centre square of both, the mask with the nearest pixel (still 0/1)."""
    root = tmp_path / "wide"
    for part in ("train/good", "test/good", "test/hole", "ground_truth/hole"):
        (root / part).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 16), 100, np.uint8)).save(root / "train" / "good" / f"{i}.png")
    Image.fromarray(np.full((8, 16), 100, np.uint8)).save(root / "test" / "good" / "0.png")
    image, mask = np.full((8, 16), 100, np.uint8), np.zeros((8, 16), np.uint8)
    image[:4, 4:8], mask[:4, 4:8] = 250, 255  # the top-left quarter of the centre square
    Image.fromarray(image).save(root / "test" / "hole" / "0.png")
    Image.fromarray(mask).save(root / "ground_truth" / "hole" / "0_mask.png")
    split = load(tmp_path, "wide", isize=4, nc=1, val_ratio=0)
    assert split.test_masks[-1].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert (split.test_images[-1, 0] > 200).tolist() == split.test_masks[-1].bool().tolist()


def test_grey_categories_read_at_either_channel_count(textures):
    assert load(textures, "grain", nc=1).train.shape[1:] == (1, 16, 16)
    assert load(textures, "grain", nc=3).train.shape[1:] == (3, 16, 16)


@pytest.mark.parametrize("spoil, message", [
    (lambda c: (c / "ground_truth" / "spot" / "000_mask.png").unlink(), "has no mask: add"),
    (lambda c: (c / "test" / "spot" / "000.png").unlink(), "is a mask without an image"),
    (lambda c: Image.new("L", (16, 16)).save(c / "ground_truth" / "spot" / "000_mask.png"),
     "a mask must have its image's size"),
    (lambda c: [p.unlink() for p in (c / "train" / "good").iterdir()], "holds no readable images"),
    (lambda c: shutil.rmtree(c / "test" / "good"), "test/good holds no images: add normal test images"),
    # Two files of one name: one mask would stand for both (the second image was dropped).
    (lambda c: Image.open(c / "test" / "spot" / "000.png").save(c / "test" / "spot" / "000.bmp"), "have one name"),
    (lambda c: Image.open(c / "ground_truth" / "spot" / "000_mask.png").save(
        c / "ground_truth" / "spot" / "000_mask.bmp"), "have one name"),
    (lambda c: (c / "ground_truth" / "good").mkdir() or Image.new("L", (64, 64), 255).save(
        c / "ground_truth" / "good" / "000_mask.png"), "marks a defect in a good image"),
    (lambda c: (c / "ground_truth" / "rust").mkdir() or Image.new("L", (64, 64)).save(
        c / "ground_truth" / "rust" / "000_mask.png"), "is a mask without an image: .*test/rust is missing"),
])
def test_a_bad_layout_is_refused_naming_the_file_and_the_fix(textures, tmp_path, spoil, message):
    spoil(copy_category(textures, tmp_path))
    with pytest.raises(UserError, match=message) as err:
        load(tmp_path, "weave")
    assert str(tmp_path / "weave") in str(err.value) and "\n" not in str(err.value)


def test_a_good_images_empty_mask_is_accepted_and_changes_nothing(textures, tmp_path):
    category = copy_category(textures, tmp_path)
    before = load(tmp_path, "weave")
    (category / "ground_truth" / "good").mkdir()
    Image.new("L", (64, 64)).save(category / "ground_truth" / "good" / "000_mask.png")  # as converted sets ship
    after = load(tmp_path, "weave")
    assert torch.equal(before.test_images, after.test_images) and torch.equal(before.test_masks, after.test_masks)


def test_an_unknown_or_missing_category_lists_the_ones_there(textures):
    with pytest.raises(UserError, match="unknown category 'wool'.*grain, washer, weave"):
        load(textures, "wool")
    with pytest.raises(UserError, match="needs --category.*grain, washer, weave"):
        load(textures, None)


@pytest.mark.slow
def test_category_is_refused_for_other_datasets_and_an_unknown_one_in_one_line(textures, tmp_path):
    one_line_error(process("train.py", ["--dataset", "digits", "--category", "weave", "--niter", "1"], tmp_path),
                   "--category is read only with --dataset mvtec")
    one_line_error(process("train.py", ["--dataset", "mvtec", "--dataroot", textures, "--category", "wool",
                                        "--device", "cpu"], tmp_path), "unknown category 'wool'")


def test_an_inspection_run_is_named_after_its_category_and_takes_no_class():
    assert options.parse(["--dataset", "mvtec", "--category", "washer", "--model", "ganomaly"]).name == \
        "ganomaly/mvtec/washer"
    with pytest.raises(UserError, match=r"--normal_class does not apply to 'mvtec'.*train/good, test/good"):
        options.parse(["--dataset", "mvtec", "--category", "washer", "--normal_class", "good"])


def test_other_datasets_have_no_masks(tmp_path):
    split = load_split("digits", isize=8, nc=1, abnormal_class=3, log=lambda _: None)
    assert split.val_masks is None and split.test_masks is None and split.test_defects is None


# ---------------------------------------------------------------- pixel metrics, on hand-computed cases

def test_a_map_that_ranks_every_abnormal_pixel_first_scores_1():
    masks, maps = np.array([[[0, 0, 1, 1]]]), np.array([[[0.1, 0.2, 0.9, 0.8]]])
    assert pixel_auroc(masks, maps) == 1.0 and pro_auc(masks, maps) == 1.0


def test_pro_weighs_each_region_the_same_where_pixel_auroc_weighs_each_pixel():
    """Regions {0} (1 pixel) and {2, 3, 4} (3 pixels); normal pixels 1 and 5 score 0.5 and 0.1.

    The large region found first: the PRO curve holds 0.5 from fpr 0 to 0.5, so PRO = 0.5; pixel
    AUROC counts pairs: 3 pixels of 0.9 beat both normals (6), the pixel of 0.2 beats one (1): 7/8.
    The small region found first: PRO is the same 0.5, pixel AUROC (2 + 3) / 8."""
    masks = np.array([[[1, 0, 1, 1, 1, 0]]])
    large_first, small_first = [[[0.2, 0.5, 0.9, 0.9, 0.9, 0.1]]], [[[0.9, 0.5, 0.2, 0.2, 0.2, 0.1]]]
    assert pro_auc(masks, large_first) == pytest.approx(0.5) == pro_auc(masks, small_first)
    assert pixel_auroc(masks, large_first) == pytest.approx(7 / 8)
    assert pixel_auroc(masks, small_first) == pytest.approx(5 / 8)


def test_the_pro_curve_is_cut_at_a_false_positive_rate_of_0_3_on_its_straight_line():
    """10 normal pixels, 2 above the region's pixel, 2 tied with it: the curve goes (0, 0), (0.2, 0),
    (0.4, 1), (1, 1); cut at 0.3 (PRO 0.5 there) the area is 0.1 * 0.5 / 2 = 0.025, / 0.3."""
    masks = np.array([[[0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]])
    fpr, pro = pro_curve(masks, maps)
    assert fpr.tolist() == [0, 0.2, 0.4, 1] and pro.tolist() == [0, 0, 1, 1]
    assert pro_auc(masks, maps) == pytest.approx(0.025 / 0.3)


def test_regions_are_counted_per_image_and_touching_corners_join_them():
    masks = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0]], [[1, 0, 1], [0, 0, 1], [0, 0, 0]]])
    assert regions(masks).max() == 3  # the diagonal pair is one region; the second image has two
    # Half of the regions found at no false positive: image 1's diagonal and image 2's left pixel.
    maps = np.where(masks.astype(bool), 0.0, 0.5)
    maps[0, 0, 0] = maps[0, 1, 1] = maps[1, 0, 0] = 1.0
    assert pro_auc(masks, maps) == pytest.approx(2 / 3)


def test_pixel_metrics_are_nan_without_anomalies_or_without_normal_pixels():
    assert np.isnan(pro_auc(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))
    assert np.isnan(pixel_auroc(np.ones((1, 4, 4)), np.random.rand(1, 4, 4)))
    assert np.isnan(pro_auc(np.zeros((0, 4, 4)), np.zeros((0, 4, 4))))  # no validation images (--val_ratio 0)
    assert choose_sigma(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))[0] == SIGMAS[0]


def test_a_map_of_noise_scores_about_half_the_limit_in_pro_and_one_half_in_pixel_auroc():
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 32, 32), np.uint8)
    masks[:, 8:16, 8:16] = 1
    maps = rng.random(masks.shape)
    assert pro_auc(masks, maps) == pytest.approx(0.15, abs=0.02)
    assert pixel_auroc(masks, maps) == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------- maps evaluated in a run

INSPECT = ["--dataset", "mvtec", "--isize", "16", "--ngf", "8", "--ndf", "8", "--nz", "8", "--batchsize", "8",
           "--device", "cpu", "--manualseed", "1", "--print_freq", "5", "--save_image_freq", "10", "--niter", "1"]


@pytest.fixture(scope="module")
def inspected(textures, tmp_path_factory):
    """A real `train.py` process: one tiny epoch of Skip-GANomaly on the generated washers."""
    cwd = tmp_path_factory.mktemp("inspected")
    proc = process("train.py", [*INSPECT, "--dataroot", textures, "--category", "washer", "--outf", "out"], cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, cwd / "out" / "skipganomaly" / "mvtec" / "washer"


@pytest.mark.slow
def test_a_run_on_inspection_data_reports_pixel_auroc_and_pro_beside_image_auroc(inspected):
    proc, run = inspected
    assert "test pixel auroc" in proc.stdout and ", pro " in proc.stdout
    row = read_csv(run / "metrics.csv")[-1]
    for key in ("test_auroc", "test_pixel_auroc", "test_pro", "val_pixel_auroc", "val_pro"):
        assert 0 <= float(row[key]) <= 1, key
    assert float(row["val_map_sigma"]) in SIGMAS
    # The map that localises, chosen among the kinds the fitted scores draw by validation PRO.
    pros = {key.removeprefix("val_pro_map_"): float(v) for key, v in row.items() if key.startswith("val_pro_map_")}
    assert {"pixel", "ssim", "knn_encoder", "knn_adversary"} <= set(pros), pros
    chosen = json.loads((run / "results.json").read_text())["threshold"]["map"]
    assert pros[map_kind(chosen["score"])] == max(v for v in pros.values() if v == v)
    assert float(row["val_pro"]) == pytest.approx(pros[map_kind(chosen["score"])])
    assert chosen["sigma"] == float(row["val_map_sigma"])
    best = json.loads((run / "results.json").read_text())["best"]
    # Per kind of defect, on the test images of that kind.
    for defect in CATEGORIES["washer"][0]:
        assert 0 <= best["test"][f"pixel_auroc_{defect}"] <= 1 and 0 <= best["test"][f"pro_{defect}"] <= 1
    assert best["test"]["pro"] == float(row["test_pro"])


@pytest.mark.slow
def test_phase_test_reports_the_maps_pixel_metrics_smoothed_as_the_run_chose(inspected, tmp_path):
    _, run = inspected
    train_cli(["--phase", "test", "--load_weights", run, "--device", "cpu"], tmp_path)
    tested = json.loads((run / "test" / "results.json").read_text())["test"]
    best = json.loads((run / "results.json").read_text())["best"]["test"]
    # The same weights, images, masks and smoothing as the run's best epoch: the same numbers.
    for key in ("pixel_auroc", "pro", *(f"pro_{d}" for d in CATEGORIES["washer"][0])):
        assert tested[key] == pytest.approx(best[key], abs=1e-6), key


@pytest.mark.slow
def test_another_category_is_refused_by_resume_and_evaluated_by_phase_test(inspected, tmp_path):
    _, run = inspected
    one_line_error(process("train.py", ["--resume", run, "--niter", "2", "--category", "weave"], tmp_path),
                   "--category weave: checkpoint", "was trained with --category washer")
    other = process("train.py", ["--phase", "test", "--load_weights", run, "--category", "weave", "--device", "cpu"],
                    tmp_path)
    assert other.returncode == 0 and "pixel_auroc" in other.stdout, other.stderr
    assert "category: weave" in (run / "test" / "opt.txt").read_text()
    # --phase test --resume RUN scores the run's last.pt: a test, so it too takes another category.
    last = process("train.py", ["--phase", "test", "--resume", run, "--category", "weave", "--device", "cpu"], tmp_path)
    assert last.returncode == 0 and "pixel_auroc" in last.stdout, last.stderr


@pytest.mark.slow
def test_the_collector_tables_pixel_metrics_with_a_column_per_category(inspected, tmp_path):
    _, run = inspected
    best = json.loads((run / "results.json").read_text())
    assert best["category"] == "washer"
    for metric in ("pro", "pixel_auroc"):
        proc = tool("tools.collect_results", [run.parent.parent.parent, "--metric", metric, "--out",
                                              tmp_path / metric], tmp_path)
        assert proc.returncode == 0, proc.stderr
        row, = [r for r in read_csv(tmp_path / f"{metric}.csv") if r["model"].startswith("Skip-GANomaly")]
        assert f"### mvtec: test {metric} per category" in proc.stdout
        assert float(row["washer"]) == pytest.approx(best["best"]["test"][metric], abs=1e-4), row


def test_other_datasets_record_no_pixel_metrics(trained_run):
    assert not any("pixel" in key or key.endswith("_pro") for key in read_csv(trained_run / "metrics.csv")[0])


def test_the_smoothing_is_chosen_on_the_validation_masks_alone():
    """Noisy maps of a large defect: smoothing helps, and the widest Gaussian is chosen; the test split
    does not enter the choice (choose_sigma is given the validation masks and maps only)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:3, 8:20, 8:20] = 1
    maps = masks + rng.normal(0, 1.0, masks.shape)
    sigma, pros = choose_sigma(masks, maps)
    assert sigma == max(SIGMAS) and pros[sigma] > pros[0.0] + 0.2
    # Without a defective validation image nothing can choose: the literature's width.
    assert choose_sigma(np.zeros_like(masks), maps)[0] == SIGMAS[0]


def test_the_map_is_chosen_among_the_kinds_on_the_validation_masks_alone():
    """Of three kinds of map, the one that finds the validation defects wins with its own smoothing; a tie goes
    to the first kind (the run's own score's); without a defective validation image, the first at SIGMAS[0]."""
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:3, 8:20, 8:20] = 1
    noise = rng.normal(0, 1.0, masks.shape)
    maps = {"knn_encoder": noise, "pixel": masks + 0.3 * noise, "ssim": 0.5 * masks + noise}
    kind, sigma, pros = choose_map(masks, maps)
    assert kind == "pixel" and sigma == choose_sigma(masks, maps["pixel"])[0]
    assert pros["pixel"] == max(pros.values()) and pros["pixel"] > pros["knn_encoder"] + 0.3
    assert choose_map(masks, {"ssim": maps["pixel"], "pixel": maps["pixel"]})[0] == "ssim"
    assert choose_map(np.zeros_like(masks), maps)[:2] == ("knn_encoder", SIGMAS[0])


@pytest.mark.slow
def test_predict_scores_its_maps_against_masks_laid_out_as_the_images(inspected, textures, tmp_path):
    _, run = inspected
    category = textures / "washer"
    proc = process("predict.py", ["--path", category / "test", "--weights", run, "--masks", category / "ground_truth",
                                  "--device", "cpu", "--maps", "none", "--out", tmp_path / "p"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = json.loads((tmp_path / "p" / PIXEL_METRICS).read_text())
    assert (written["images"], written["with_masks"]) == (12, 8) and "pixel auroc" in proc.stdout
    assert "notice" not in proc.stdout  # every image outside good/ has its mask
    assert 0 <= written["pixel_auroc"] <= 1 and 0 <= written["pro"] <= 1
    assert set(written["by_defect"]) == {f"{m}_{d}" for m in ("pixel_auroc", "pro") for d in CATEGORIES["washer"][0]}
    best = json.loads((run / "results.json").read_text())["best"]
    assert written["map_sigma"] == best["val"]["map_sigma"]  # the map and smoothing the run chose on validation
    chosen = json.loads((run / "results.json").read_text())["threshold"]["map"]["score"]
    assert written["map"] == map_kind(chosen) and f"the {written['map']} map" in proc.stdout
    # A folder holding no mask of these images (here the images' own): refused before anything is scored.
    refused = run_main(predict.main, ["--path", category / "test", "--weights", run, "--masks", category / "test",
                                      "--device", "cpu", "--out", tmp_path / "q"], tmp_path)
    one_line_error(refused, "no mask in")
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_predict_checks_the_masks_before_scoring_and_keeps_pixel_metrics_with_their_predictions(
        inspected, textures, tmp_path):
    _, run = inspected
    category = copy_category(textures, tmp_path, "washer")
    truth = category / "ground_truth"
    args = ["--path", category / "test", "--weights", run, "--device", "cpu", "--maps", "none"]
    first = next(truth.glob("*/*_mask.png"))
    kept, size = first.read_bytes(), Image.open(first).size
    def replaced_by(kind):  # something else at the mask's place: once skipped, its image scored as normal
        first.unlink()
        first.mkdir() if kind == "folder" else first.symlink_to("/dev/zero")

    for spoil, message in ((lambda: Image.new("L", (20, 20)).save(first), "a mask must have its image's size"),
                           (lambda: first.write_bytes(b"not a png"), "cannot read image"),
                           (lambda: [Image.new("L", size).save(m) for m in truth.glob("*/*_mask.png")],
                            "mark no pixel as defective"),
                           (lambda: replaced_by("folder"), "is not a readable file"),
                           (lambda: (first.rmdir(), first.touch(), replaced_by("device")), "is not a readable file")):
        spoil()
        one_line_error(run_main(predict.main, [*args, "--masks", truth, "--out", tmp_path / "q"], tmp_path), message)
        assert not (tmp_path / "q").exists()  # refused before anything was scored or written
    shutil.rmtree(category)
    category = copy_category(textures, tmp_path, "washer")
    assert first.read_bytes() == kept
    out = tmp_path / "p"
    lost = next(truth.glob("*/*_mask.png"))
    lost.unlink()  # a defect's image without its mask: scored as normal, as documented, and said so
    done = run_main(predict.main, [*args, "--masks", truth, "--out", out], tmp_path)
    assert done.returncode == 0 and "notice: 1 image(s) outside 'good' folders have no mask" in done.stdout
    one_line_error(run_main(predict.main, [*args, "--out", out], tmp_path), "already holds earlier predictions")
    (out / "predictions.csv").unlink()  # pixel metrics alone are earlier predictions too
    one_line_error(run_main(predict.main, [*args, "--out", out], tmp_path), f"({PIXEL_METRICS})")
    assert run_main(predict.main, [*args, "--out", out, "--overwrite"], tmp_path).returncode == 0
    assert not (out / PIXEL_METRICS).exists()  # they described the predictions --overwrite replaced


def test_the_studys_per_pixel_gaussian_finds_the_generated_defects(textures):
    """The classical baseline of tools/baselines.py (and the study), on the same split as the runs."""
    found = gaussian_baseline(load(textures, "washer"))
    assert found["auroc"] > 0.8 and found["pixel_auroc"] > 0.8 and found["pro"] > 0.5, found


@pytest.mark.slow
def test_the_baselines_tool_takes_categories_and_reports_the_gaussians_pixel_metrics(textures, tmp_path):
    proc = tool("tools.baselines", ["--dataset", "mvtec", "--dataroot", textures, "--nc", "3", "--isize", "16",
                                    "--category", "washer", "--out", tmp_path / "b.csv"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["method"]: r for r in read_csv(tmp_path / "b.csv")}
    assert set(rows) == {"pca", "knn", "gaussian"} and rows["gaussian"]["class"] == "washer"
    assert float(rows["gaussian"]["pro"]) == pytest.approx(gaussian_baseline(load(textures, "washer"))["pro"])
    assert rows["pca"]["pro"] == "nan"  # an image-level method has no map
    one_line_error(tool("tools.baselines", ["--dataset", "mvtec", "--dataroot", textures], tmp_path),
                   "needs --category NAME ... (under")


@pytest.mark.slow
def test_the_study_runs_on_an_mvtec_copy_given_as_dataroot_with_its_own_categories(textures, tmp_path):
    shutil.copytree(textures / "grain", tmp_path / "mvtec" / "carpet")  # a "real" category of another name
    args = ["--dataroot", tmp_path / "mvtec", "--out", tmp_path / "study", "--report", "--models", "ganomaly"]
    done = tool("experiments.inspection_study", args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| carpet | per-pixel Gaussian |" in done.stdout and "weave" not in done.stdout
    assert not (tmp_path / "study" / "data").exists()  # nothing generated beside a given copy
    one_line_error(tool("experiments.inspection_study", [*args, "--categories", "weave"], tmp_path),
                   "weave is neither a model", "nor a category of")
    one_line_error(tool("experiments.inspection_study", ["--dataroot", tmp_path / "study", "--report"], tmp_path),
                   "holds no category")


def test_a_checkpoints_smoothing_outside_the_widths_a_run_chooses_from_is_refused_as_damaged():
    from lib.scoring.localise import chosen_sigma
    ckpt = {"path": "r/best.pt", "epoch": 1, "history": [{"epoch": 1, "val_map_sigma": 2.0}]}
    assert chosen_sigma(ckpt)[0] == 2.0
    for edited in (-3.0, 1e9, True):  # -3 scored every map perfect; 1e9 asked scipy for 60 GiB
        ckpt["history"][0]["val_map_sigma"] = edited
        with pytest.raises(UserError, match="is damaged: its smoothing of the maps"):
            chosen_sigma(ckpt)
    ckpt["history"][0]["val_map_sigma"] = float("nan")  # a run without masks to choose it
    assert chosen_sigma(ckpt)[0] == SIGMAS[0]


def test_the_studys_report_leaves_out_a_results_file_it_cannot_read_naming_it(tmp_path, capsys):
    from experiments.inspection_study import best_test
    (tmp_path / "results.json").write_text("{broken")
    assert best_test(tmp_path / "results.json") is None
    (tmp_path / "other.json").write_text('{"last": {}}')
    assert best_test(tmp_path / "other.json") is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("notice: left out ") for line in err) and "KeyError" in err[1]


@pytest.mark.slow
def test_the_generator_and_the_study_refuse_an_out_through_a_file_in_one_line(tmp_path):
    (tmp_path / "file").write_text("mine")
    one_line_error(tool("tools.make_textures", ["--out", tmp_path / "file" / "x"], tmp_path), "give another --out")
    one_line_error(tool("experiments.inspection_study", ["--out", tmp_path / "file", "--report"], tmp_path),
                   "is a file")
    assert (tmp_path / "file").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1
