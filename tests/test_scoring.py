"""Score functions and measurements, each held to a value computed by hand on a tiny example."""
import math

import numpy as np
import pytest
import torch

from lib.scoring import functions as sf, measures
from lib.scoring.metrics import average_precision, roc_auc


def image(*rows):
    """A one-channel image batch of one image from rows of pixel values."""
    return torch.tensor([[list(rows)]], dtype=torch.float64)


def test_image_errors_are_the_mean_squared_and_absolute_pixel_differences():
    real, fake = image([0.0, 1.0], [0.5, -1.0]), image([1.0, 1.0], [0.0, 1.0])
    # differences 1, 0, 0.5, 2
    assert measures.image_mse(real, fake).item() == pytest.approx((1 + 0 + 0.25 + 4) / 4)
    assert measures.image_l1(real, fake).item() == pytest.approx((1 + 0 + 0.5 + 2) / 4)


def test_local_error_is_the_largest_patch_mean_of_squared_errors():
    real = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    fake = real.clone()
    fake[0, 0, 0, 0] = 2.0  # squared error 4 in one corner
    fake[0, 0, 2, 2] = 1.0  # squared error 1 in the other
    # 2x2 patches: the top-left one holds the 4 (mean 1), the bottom-right one the 1 (mean 0.25)
    assert measures.local_error_max(real, fake, window=2).item() == pytest.approx(1.0)
    # the whole image as one window: the mean error
    assert measures.local_error_max(real, fake, window=3).item() == pytest.approx(5 / 9)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.5, -0.25
    real, fake = torch.full((1, 1, 4, 4), a, dtype=torch.float64), torch.full((1, 1, 4, 4), b, dtype=torch.float64)
    c1 = (0.01 * 2) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the structure term is c2/c2 = 1
    assert measures.ssim(real, fake).item() == pytest.approx(expected)
    assert measures.ssim_error(real, fake).item() == pytest.approx(1 - expected)


def test_ssim_of_an_image_with_itself_is_one_and_falls_with_noise():
    real = torch.rand(2, 3, 16, 16) * 2 - 1
    assert measures.ssim_error(real, real).abs().max().item() < 1e-5
    worse = measures.ssim_error(real, real + 0.5 * torch.randn_like(real))
    assert (worse > 0.1).all()


def test_feature_mse_averages_over_every_feature():
    assert measures.feature_mse(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0]])).item() == \
        pytest.approx((0 + 4 + 9) / 3)


def test_the_original_score_weighs_image_and_feature_error_nine_to_one():
    m = {sf.IMAGE_MSE: np.array([1.0, 0.0]), sf.FEATURE_MSE: np.array([0.0, 10.0])}
    stats = sf.fit("original", {}, {})
    assert sf.apply("original", m, stats) == pytest.approx([0.9, 1.0])
    assert sf.apply("original", m, sf.fit("original", {}, {}, weight=0.5)) == pytest.approx([0.5, 5.0])


def test_the_standardised_score_puts_both_parts_on_the_normal_validation_scale():
    val = {sf.IMAGE_MSE: np.array([1.0, 3.0]), sf.FEATURE_MSE: np.array([100.0, 300.0])}  # means 2, 200; stds 1, 100
    stats = sf.fit("standardised", {}, val)
    m = {sf.IMAGE_MSE: np.array([4.0, 2.0]), sf.FEATURE_MSE: np.array([200.0, 500.0])}
    # image z = 2, 0; feature z = 0, 3
    assert sf.apply("standardised", m, stats) == pytest.approx([1.0, 1.5])


def test_the_standardised_score_falls_back_to_training_normals_without_validation_images():
    train = {sf.IMAGE_MSE: np.array([0.0, 2.0]), sf.FEATURE_MSE: np.array([5.0, 5.0])}  # a constant part
    stats = sf.fit("standardised", train, {})
    assert stats["image_mse_mean"] == 1.0 and stats["image_mse_std"] == 1.0
    scores = sf.apply("standardised", {sf.IMAGE_MSE: np.array([3.0]), sf.FEATURE_MSE: np.array([5.0])}, stats)
    assert np.isfinite(scores).all() and scores == pytest.approx([1.0])


def test_knn_distance_is_the_mean_distance_to_the_k_nearest_normal_embeddings():
    train = {sf.ADVERSARY_EMBEDDING: np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 10.0]])}
    query = {sf.ADVERSARY_EMBEDDING: np.array([[0.0, 0.0], [3.0, 0.0]])}
    one = sf.fit("knn_adversary", train, {}, k=1)
    assert sf.apply("knn_adversary", query, one) == pytest.approx([0.0, 3.0])
    two = sf.fit("knn_adversary", train, {}, k=2)
    assert sf.apply("knn_adversary", query, two) == pytest.approx([2.5, 3.5])  # (0 + 5) / 2, (3 + 4) / 2


def test_knn_keeps_an_evenly_spaced_bank_of_at_most_bank_size_training_embeddings(monkeypatch):
    monkeypatch.setattr(sf, "BANK_SIZE", 3)
    train = {sf.ENCODER_EMBEDDING: np.arange(10, dtype=np.float32)[:, None]}
    stats = sf.fit("knn_encoder", train, {})
    assert stats["bank"].flatten().tolist() == [0.0, 4.0, 9.0] and stats["k"] == sf.KNN_K
    # k larger than the bank: every bank row counts
    assert sf.apply("knn_encoder", {sf.ENCODER_EMBEDDING: np.array([[4.0]])}, stats) == pytest.approx([(4 + 0 + 5) / 3])


def test_mahalanobis_distance_divides_each_direction_by_its_spread():
    # mean 0, covariance diag(0.5, 2): the point (1, 2) is sqrt(1/0.5 + 4/2) = 2 away
    precision = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    stats = {"mean": torch.zeros(2, dtype=torch.float64), "precision": precision}
    m = {sf.ADVERSARY_EMBEDDING: np.array([[1.0, 2.0], [0.0, 0.0]])}
    assert sf.apply("mahalanobis_adversary", m, stats) == pytest.approx([2.0, 0.0])


def test_mahalanobis_fits_a_shrunk_covariance_that_works_with_fewer_images_than_dimensions():
    rng = np.random.default_rng(0)
    train = {sf.ENCODER_EMBEDDING: rng.normal(size=(5, 20))}  # a plain covariance would be singular
    stats = sf.fit("mahalanobis_encoder", train, {})
    scores = sf.apply("mahalanobis_encoder", {sf.ENCODER_EMBEDDING: rng.normal(size=(3, 20)) * 10}, stats)
    assert np.isfinite(scores).all()
    assert (scores > sf.apply("mahalanobis_encoder", train, stats).max()).all()


def test_every_score_function_is_fitted_and_applied_from_its_needs_alone():
    rng = np.random.default_rng(1)
    measured = {name: rng.random(8) for name in (sf.IMAGE_MSE, sf.IMAGE_L1, sf.LOCAL_ERROR, sf.SSIM_ERROR,
                                                 sf.FEATURE_MSE, sf.ADVERSARY, sf.LATENT_MSE)}
    measured |= {sf.ADVERSARY_EMBEDDING: rng.random((8, 3)), sf.ENCODER_EMBEDDING: rng.random((8, 4))}
    for name, function in sf.SCORES.items():
        only = {need: measured[need] for need in function.needs}
        scores = sf.apply(name, only, sf.fit(name, only, only))
        assert scores.shape == (8,) and np.isfinite(scores).all(), name
    assert sf.needs(["original", "knn_encoder"]) == {sf.IMAGE_MSE, sf.FEATURE_MSE, sf.ENCODER_EMBEDDING}


def test_choose_takes_the_best_validation_auroc_and_the_first_on_a_tie():
    labels = np.array([0, 0, 1, 1])
    candidates = {"backwards": np.array([4.0, 3, 2, 1]), "half": np.array([1.0, 3, 2, 4]),
                  "right": np.array([1.0, 2, 3, 4]), "also_right": np.array([0.0, 1, 5, 6])}
    assert sf.choose(labels, candidates, roc_auc) == "right"
    assert sf.choose(np.array([0, 0]), candidates, roc_auc) == "backwards"  # nothing to rank: the first
    assert math.isnan(roc_auc(np.array([0, 0]), candidates["right"]))


def test_only_the_distances_to_normal_embeddings_need_a_pass_over_the_training_images():
    assert {name for name, f in sf.SCORES.items() if f.fits_on_training} == {
        "knn_adversary", "mahalanobis_adversary", "knn_encoder", "mahalanobis_encoder"}


def test_the_score_weight_chosen_on_validation_drops_a_part_that_ranks_backwards():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(50)]
    reconstruction = rng.normal(size=250) + 2 * labels  # ranks anomalies high
    features = 100 * (rng.normal(size=250) - 2 * labels)  # larger scale and backwards
    weight = sf.choose_score_weight(labels, reconstruction, features)
    assert weight == 1.0
    # The default 0.9 would have let the backwards part dominate.
    fixed = roc_auc(labels, sf.weighted(reconstruction, features, 0.9))
    chosen = roc_auc(labels, sf.weighted(reconstruction, features, weight))
    assert fixed < 0.5 < chosen


def test_the_chosen_score_weight_is_the_best_on_the_grid_and_ties_go_to_the_default():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(100), np.ones(100)]
    reconstruction, features = rng.normal(size=200) + labels, rng.normal(size=200) + labels
    weight = sf.choose_score_weight(labels, reconstruction, features, metric="auprc")
    best = max(average_precision(labels, sf.weighted(reconstruction, features, w))
               for w in np.linspace(0, 1, 21))
    assert average_precision(labels, sf.weighted(reconstruction, features, weight)) == best
    # Both parts separate perfectly: every weight ties, so the default stays.
    assert sf.choose_score_weight(labels, labels, labels) == 0.9
    # Without anomalies there is nothing to choose on.
    assert sf.choose_score_weight(np.zeros(5), np.arange(5), np.arange(5), default=0.7) == 0.7


# ------------------------------------------------------------------ through the models

def trained_tiny(name):
    from lib.models import build_model
    from tests.helpers import make_opt

    torch.manual_seed(0)
    model = build_model(make_opt(model=name, isize=16, ngf=4, ndf=4, nz=8), torch.device("cpu"))
    model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    return model


@pytest.mark.parametrize("name", ["skipganomaly", "w_skipganomaly", "ganomaly"])
def test_a_score_that_needs_no_adversary_runs_no_adversary_pass(name):
    model = trained_tiny(name)
    calls = []
    model.adversary.features.register_forward_hook(lambda *_: calls.append(1))
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    for score in ("image", "image_l1", "local_error", "ssim", "knn_encoder", "latent"):
        if not set(sf.SCORES[score].needs) <= model.measurements:
            continue  # the code distance: GANomaly's alone
        model.scoring = sf.Scoring(score)
        model.score_parts(images)
    assert calls == []
    model.scoring = sf.Scoring("original", {"weight": 0.9})
    model.score_parts(images)
    assert calls  # the original score needs the adversary's features of x and G(x)


@pytest.mark.parametrize("name", ["skipganomaly", "w_skipganomaly", "ganomaly"])
def test_every_score_a_model_can_measure_scores_from_statistics_fitted_on_normal_images(name):
    from lib.images import to_float
    from lib.scoring.evaluate import evaluate
    from lib.scoring.policy import ScorePolicy

    model = trained_tiny(name)
    normal, other = (torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8) for n in (12, 7))
    candidates = ScorePolicy("val").candidates(model.measurements)
    # every score but the code distance of an encoder-decoder-encoder
    assert set(candidates) == set(sf.SCORES) - ({"latent"} if name != "ganomaly" else set())
    for score in candidates:
        function = sf.SCORES[score]
        train = evaluate(model, normal, 5, "cpu", needs=function.needs)
        model.scoring = sf.Scoring(score, sf.fit(score, train, train))
        scores = evaluate(model, other, 5, "cpu")["score"]
        assert scores.shape == (7,) and np.isfinite(scores).all(), score
        # the same images score the same alone, batched otherwise (eval mode)
        again = np.concatenate([model.score(to_float(other[i:i + 1], "cpu")).numpy() for i in range(7)])
        np.testing.assert_allclose(scores, again, rtol=1e-4, atol=1e-6, err_msg=score)


def test_the_generator_code_comes_from_the_same_pass_as_the_reconstruction():
    from lib.models.networks import UNet

    torch.manual_seed(0)
    net = UNet(3, 4, 16).eval()
    images = torch.rand(2, 3, 16, 16)
    fake, code = net.encode_and_decode(images)
    assert torch.equal(fake, net(images)) and code.shape == (2, 32, 1, 1)


# ------------------------------------------------------------------ --score, through training and predict.py

def train_with_score(tmp_path, *flags):
    """A tiny model (Skip-WGANomaly unless `flags` name one) trained one epoch on a folder dataset; its run folder."""
    from tests.conftest import make_folder_dataset
    from tests.helpers import train_cli

    make_folder_dataset(tmp_path / "data", n_train=24, n_test_normal=10, n_test_abnormal=10)
    train_cli(["--dataset", "custom", "--dataroot", "data", "--isize", "16", "--nc", "3", "--ngf", "4", "--ndf", "4",
               "--nz", "8", "--niter", "1", "--device", "cpu", "--batchsize", "4", "--manualseed", "1",
               "--outf", "out", "--name", "run", *(["--model", "w_skipganomaly", "--n_critic", "2"]
                                                   if "--model" not in flags else []), *flags], tmp_path)
    return tmp_path / "out" / "run"


@pytest.mark.parametrize("flags", [["--score", "knn_adversary", "--val_ratio", "0"],
                                   ["--score", "val", "--val_ratio", "0.4"],
                                   ["--model", "ganomaly", "--score", "val", "--val_ratio", "0.4"]],
                         ids=["knn", "val", "ganomaly-val"])
def test_the_chosen_score_and_its_statistics_reach_predict_which_scores_as_training_did(tmp_path, flags, capsys):
    import predict
    from lib.errors import run_cli
    from tests.helpers import read_csv

    folder = train_with_score(tmp_path, *flags)
    state = torch.load(folder / "train" / "weights" / "best.pt", weights_only=True)
    stored = state["state"]
    assert sf.stats_problem(stored["score"], stored["score_stats"]) is None
    assert state["threshold"]["score"] == stored["score"]
    metrics = read_csv(folder / "metrics.csv")[0]
    if "val" in flags:  # every score the model can measure was fitted and ranked on validation
        # all, but GANomaly's code distance only where there is a second encoder
        measurable = set(sf.SCORES) - ({"latent"} if "ganomaly" not in flags else set())
        assert {f"val_auroc_score_{name}" for name in measurable} <= set(metrics)
        assert ("val_auroc_score_latent" in metrics) == ("ganomaly" in flags)
        ranked = {name: float(metrics[f"val_auroc_score_{name}"]) for name in measurable}
        assert ranked[stored["score"]] == max(ranked.values())
    else:
        assert stored["score"] == "knn_adversary" and stored["score_stats"]["bank"].shape == (24, 8)
    assert run_cli(predict.main, ["--path", str(tmp_path / "data/custom/test"), "--weights", str(folder),
                                  "--device", "cpu", "--maps", "none"]) in (0, None)
    assert f"score: {stored['score']}" in capsys.readouterr().out or stored["score"] == "original"
    predicted = read_csv(folder / "predict" / "predictions.csv")
    trained = read_csv(folder / "histogram.csv")
    # The test split is the folder's test images less those held out for validation.
    predicted_scores = np.array([float(p["score"]) for p in predicted])
    assert len(predicted) == 20 and len(trained) == (20 if flags[-1] == "0" else 16)
    for t in trained:
        assert np.abs(predicted_scores - float(t["scores"])).min() <= 1e-5


def test_damaged_score_statistics_are_named_not_used():
    bank = torch.ones(3, 2)
    assert sf.stats_problem("knn_adversary", {"bank": bank, "k": 2}) is None
    assert "lacks its statistic 'k'" in sf.stats_problem("knn_adversary", {"bank": bank})
    assert "not a count" in sf.stats_problem("knn_adversary", {"bank": bank, "k": 0})
    assert "not a 2-D float tensor" in sf.stats_problem("knn_adversary", {"bank": torch.ones(3), "k": 1})
    assert "not a 2-D float tensor" in sf.stats_problem("knn_adversary", {"bank": bank * float("nan"), "k": 1})
    assert "none of" in sf.stats_problem("magic", {})
    assert "not a weight" in sf.stats_problem("original", {"weight": 2.0})
    mismatch = {"mean": torch.zeros(3), "precision": torch.eye(2)}
    assert "does not match" in sf.stats_problem("mahalanobis_encoder", mismatch)


@pytest.mark.parametrize("flags,named", [(["--score", "magic"], "--score 'magic' is unknown"),
                                        (["--score", "ssim", "--original"], "--score ssim scores in eval mode"),
                                        (["--score", "val", "--val_ratio", "0"], "--score val chooses")])
def test_a_score_that_cannot_be_used_is_refused_in_one_line_before_anything_runs(flags, named):
    from lib import options
    from lib.errors import UserError

    with pytest.raises(UserError, match=named.replace("(", r"\(")) as refused:
        options.parse(["--dataset", "digits", *flags])
    assert "\n" not in str(refused.value)


def test_a_model_that_cannot_measure_the_named_score_is_refused_in_one_line(tmp_path):
    from tests.helpers import train_cli

    result = train_cli(["--dataset", "digits", "--model", "skipganomaly", "--score", "latent", "--device", "cpu",
                        "--outf", "out"], tmp_path, check=False)
    assert result.returncode == 2 and "--score latent needs latent_mse" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("model, flags, choice", [
    ("w_skipganomaly", {}, "val"),  # a validation split with anomalies: chosen on it
    ("ganomaly", {}, "val"),
    ("w_skipganomaly", {"val_ratio": 0}, "original"),  # nothing to choose on: the model's own
    ("ganomaly", {"val_ratio": 0}, "latent"),
    ("skipganomaly", {"score_weight": "val"}, "original"),  # the original score's weighting asked for
    ("skipganomaly", {"fixes": "default,-score_on_validation"}, "original"),
    ("skipganomaly", {"fixes": "none", "val_ratio": 0}, "original"),  # --original
    ("skipganomaly", {"score": "ssim"}, "ssim"),
])
def test_the_default_score_is_chosen_on_validation_wherever_there_is_a_validation_split(model, flags, choice):
    from lib.models import MODELS
    from lib.scoring.policy import score_policy
    from tests.helpers import make_opt
    assert score_policy(make_opt(model=model, **flags), MODELS[model]).choice == choice
