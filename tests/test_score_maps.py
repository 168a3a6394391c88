"""predict.py's strips say what a person needs to act on (issue 34): which image, its score against the
threshold, the decision, and a map of what the chosen score measures, labelled as what it is."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from lib.images import CAPTION_SIZE, PAD, text_band
from lib.models import build_model
from lib.predict.maps import caption
from lib.scoring import functions, measures
from lib.scoring.functions import ADVERSARY_EMBEDDING, ENCODER_EMBEDDING, SCORES, Scoring
from lib.scoring.located import ScoreMap, knn_shares, mahalanobis_shares, score_map, ssim_error_map
from tests.helpers import make_opt, read_csv, run_main

EMBEDDINGS = [("skipganomaly", ENCODER_EMBEDDING), ("skipganomaly", ADVERSARY_EMBEDDING),
              ("w_skipganomaly", ENCODER_EMBEDDING), ("w_skipganomaly", ADVERSARY_EMBEDDING),
              ("ganomaly", ENCODER_EMBEDDING), ("ganomaly", ADVERSARY_EMBEDDING)]


def images(n=5, seed=0, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def trained(name):
    """A tiny model of `name` after two steps (BatchNorm's statistics no longer the initial ones), in fp32:
    the split is computed in fp32, and a bf16 embedding differs from it by bf16's rounding."""
    torch.manual_seed(0)
    model = build_model(make_opt(model=name, n_critic=1), torch.device("cpu"), amp=False)
    for seed in range(2):
        model.train_step(images(8, seed))
    return model


def test_location_shares_sum_to_the_k_nn_and_mahalanobis_distances():
    rng = np.random.default_rng(0)
    parts = rng.normal(size=(7, 6, 3, 3))  # 7 images, 6-dimensional embeddings, 3x3 locations
    embeddings, bank = parts.sum((2, 3)), rng.normal(size=(40, 6))
    np.testing.assert_allclose(knn_shares(parts, bank, 5).sum((1, 2)), functions.knn_distance(embeddings, bank, 5))
    stats = functions.fit("mahalanobis_encoder", {ENCODER_EMBEDDING: bank}, {})
    np.testing.assert_allclose(mahalanobis_shares(parts, stats["mean"], stats["precision"]).sum((1, 2)),
                               functions.mahalanobis_distance(embeddings, stats["mean"], stats["precision"]))


@pytest.mark.parametrize("name,embedding", EMBEDDINGS)
def test_each_models_embedding_split_by_location_sums_to_the_embedding_it_scores(name, embedding):
    model = trained(name)
    x = images()
    parts = model.embedding_by_location(x, embedding)
    assert parts.dim() == 4 and parts.shape[2] * parts.shape[3] > 1
    torch.testing.assert_close(parts.sum((2, 3)), model.score_parts(x, needs={embedding})[embedding],
                               rtol=1e-4, atol=1e-5)


def test_a_model_without_a_split_says_so():
    model = build_model(make_opt(model="toy_model"), torch.device("cpu"))
    assert model.embedding_by_location(images(), ENCODER_EMBEDDING) is None


def test_the_ssim_map_is_zero_where_the_window_does_not_fit_and_its_mean_is_the_ssim_score():
    real, fake = images(3, 0, 20), images(3, 1, 20)
    error = ssim_error_map(real, fake)
    assert error.shape == (3, 20, 20) and (error[:, :5] == 0).all() and (error[:, :, -5:] == 0).all()
    torch.testing.assert_close(error[:, 5:15, 5:15].mean((1, 2)), measures.ssim_error(real, fake))


@pytest.mark.parametrize("score", sorted(SCORES))
def test_every_scores_map_is_its_own_per_location_form_or_says_it_has_none(score):
    model = trained("ganomaly" if score == "latent" else "skipganomaly")
    x, reference = images(), images(40, 9)
    measured = model.score_parts(reference, needs=SCORES[score].needs)
    model.scoring = Scoring(score, functions.fit(score, measured, measured, weight=0.9))
    fake = model.score_parts(x)["fake"]
    shown = score_map(model, x, fake, threshold=1.0)
    assert shown.values.shape == (5, 16, 16) and shown.full > 0 and shown.label.isascii()
    if score in ("knn_encoder", "mahalanobis_encoder", "knn_adversary", "mahalanobis_adversary"):
        assert "share of the score" in shown.label and shown.short == "share of the score"
        block = int(re.search(r"each (\d+)x\d+-pixel block", shown.label)[1])
        per_block = shown.values[:, ::block, ::block].sum((1, 2))  # each block's share counted once
        torch.testing.assert_close(per_block.double(), torch.as_tensor(model.scoring(model.score_parts(x))).double(),
                                   rtol=1e-3, atol=1e-5)
    elif score == "ssim":
        assert shown.label.startswith("1 - SSIM per position")
    else:
        assert shown.label.startswith("pixel error |x - G(x)|")
        if score in ("feature", "adversary", "latent"):
            assert f"the score {score} has no per-location form" in shown.label


def test_a_caption_names_the_image_its_score_the_threshold_and_the_decision():
    shown = ScoreMap(torch.zeros(1, 8, 8), 0.5, "pixel error")
    lines = caption("a/b.png", 0.25, 0.25, "abnormal", "knn_encoder", shown)
    assert lines == ["image: a/b.png", "ABNORMAL: score 0.25 >= threshold 0.25 (score: knn_encoder)",
                     "map: pixel error", "colour: none at 0, full at 0.5: a pixel error of half the intensity range"]
    assert caption("c.png", 0.1234567, 0.5, "normal", "image", shown)[1] == \
        "NORMAL: score 0.123457 < threshold 0.5 (score: image)"


def test_a_distance_maps_colour_scale_says_its_value_and_what_it_is_against():
    torch.manual_seed(0)
    bank = torch.randn(20, 4)

    class Model:  # a k-NN score of a 4-channel, 2x2 embedding
        scoring = type("S", (), {"name": "knn_encoder", "stats": {"bank": bank.numpy(), "k": 3}})()

        def embedding_by_location(self, real, which):
            return torch.randn(len(real), 4, 2, 2).numpy()
    for threshold, of in ((0.8, "threshold"), (float("nan"), "largest score")):
        shown = score_map(Model(), torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16), threshold)
        assert shown.scale.startswith(f"2 x a block's even share of the {of} (2 x ")
        assert shown.scale.endswith(" / 4 blocks)") and shown.values.shape == (2, 16, 16)
    assert shown.full == pytest.approx(2 * float(re.search(r"\(2 x (\S+) /", shown.scale)[1]) / 4, rel=1e-2)


@pytest.mark.slow
def test_each_strip_carries_the_caption_of_its_row_in_predictions_csv(trained_run, tmp_path, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"image {i}.png")
    result = run_main(predict.main, ["--path", folder, "--weights", trained_run, "--out", tmp_path / "out",
                                     "--device", "cpu"], tmp_path)
    assert result.returncode == 0, result.stderr
    threshold = float(re.search(r"^threshold: (\S+),", result.stdout, re.M)[1])
    score = re.search(r"^score: (\w+)", result.stdout, re.M)
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 3
    for row in rows:
        strip = np.asarray(Image.open(row["map"]).convert("RGB"))
        lines = caption(row["path"].split("incoming/")[1], float(row["score"]), threshold, row["decision"],
                        score[1] if score else "original", ScoreMap(torch.zeros(1), 1, ""))[:2]
        top = PAD + 2 * (CAPTION_SIZE + 3)  # the first two lines: the image, the score and the decision
        assert (strip[:top] == text_band(lines, strip.shape[1])[:top]).all(), row["path"]
        assert strip.shape[0] > 128 + top  # the 8-pixel images enlarged to 128, below the caption and labels


def test_the_maps_of_distances_of_one_embedding_measure_it_once_per_batch_and_are_each_their_own():
    from lib.scoring.localise import anomaly_maps
    model = trained("skipganomaly")
    x, reference = images(6), images(40, 9)
    measured = model.score_parts(reference, needs={ENCODER_EMBEDDING})
    scorings = {name: Scoring(name, functions.fit(name, measured, measured))
                for name in ("knn_encoder", "mahalanobis_encoder")}
    uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    calls = []
    measure_embedding = model.embedding_by_location
    model.embedding_by_location = lambda real, kind: calls.append(kind) or measure_embedding(real, kind)
    maps = anomaly_maps(model, uint8, 4, torch.device("cpu"), (16, 16), scorings)
    assert calls == [ENCODER_EMBEDDING, ENCODER_EMBEDDING]  # two batches, each measured once for both distances
    del model.embedding_by_location
    for name, scoring in scorings.items():
        alone = anomaly_maps(model, uint8, 4, torch.device("cpu"), (16, 16), {name: scoring})[name]
        np.testing.assert_array_equal(maps[name], alone)
