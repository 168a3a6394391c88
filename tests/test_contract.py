"""The model contract, on every registered model: the two of the paper and the throwaway
tests/toy_model.py (registered by conftest.py), which proves that a new model needs one
file and one line and then trains, resumes, evaluates and predicts like the others."""
import json
import subprocess
import sys

import pytest
import torch

import predict
from lib import options
from lib.errors import UserError
from lib.models import MODELS, build_model, register
from lib.models.base import AnomalyModel
from lib.runs.setup import make_schedulers
from lib.training import checkpoint, checkpoint_fit
from tests.helpers import ROOT, TINY, make_opt, run_main, train_cli

GENERIC = sorted(MODELS)  # the toy model included


def tiny_opt(name):
    """Tiny options for model `name`; one critic step per generator step, so one step updates every network."""
    return make_opt(model=name, n_critic=1)


def batch(n=6, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_toy_model_is_registered_by_its_one_line():
    assert "toy_model" in MODELS and {"skipganomaly", "w_skipganomaly"} <= set(MODELS)


@pytest.mark.parametrize("name", GENERIC)
def test_a_step_returns_finite_losses_and_changes_every_network(name):
    torch.manual_seed(0)
    model = build_model(tiny_opt(name), torch.device("cpu"))
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in model.networks.items()}
    losses = model.train_step(batch())
    assert losses and all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in losses.values())
    assert model.step == 1
    for n, net in model.networks.items():
        assert any(not torch.equal(b, p) for b, p in zip(before[n], net.parameters())), n


@pytest.mark.parametrize("name", GENERIC)
def test_scores_are_per_image_fp32_and_do_not_depend_on_the_batch(name):
    torch.manual_seed(0)
    model = build_model(tiny_opt(name), torch.device("cpu"))
    for seed in range(2):
        model.train_step(batch(8, seed))
    images = batch(6, 5)
    parts = model.score_parts(images)
    assert parts["fake"].shape == images.shape
    scores = model.score(images)
    assert scores.shape == (6,) and scores.dtype == torch.float32
    alone = torch.cat([model.score(images[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(scores, alone, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.score(images.flip(0)).flip(0), alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", GENERIC)
def test_the_speed_layer_changes_no_result(name):
    runs = []
    for fast in (False, True):
        torch.manual_seed(0)
        # fp32: bf16 (a CPU default where it is native) changes results by design (tests/test_speed.py)
        model = build_model(tiny_opt(name), torch.device("cpu"), fast=fast, amp=False)
        losses = [model.train_step(batch(8, seed)) for seed in range(3)]
        runs.append((losses, model.score(batch(5, 9))))
    (plain_losses, plain_scores), (fast_losses, fast_scores) = runs
    for a, b in zip(plain_losses, fast_losses, strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(fast_scores, plain_scores, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", GENERIC)
def test_a_checkpoint_restores_networks_optimisers_and_step(tmp_path, name):
    torch.manual_seed(0)
    opt = tiny_opt(name)
    a = build_model(opt, torch.device("cpu"))
    a.train_step(batch())
    checkpoint.save(tmp_path / "last.pt", {"state": a.state_dict()})
    state = torch.load(tmp_path / "last.pt", weights_only=True)["state"]
    # The checks a file must pass before anything is built from it know this model's names.
    checkpoint_fit.check_networks({"path": "last.pt", "state": state}, checkpoint_fit.networks_template(opt))
    b = build_model(opt, torch.device("cpu"))
    b.load_state_dict(state)
    assert b.step == a.step == 1
    torch.testing.assert_close(a.score(batch(3, 4)), b.score(batch(3, 4)))
    steps = []
    for model in (a, b):
        torch.manual_seed(3)  # the same random draws (noise, a penalty's interpolates) for both
        steps.append(model.train_step(batch(4, 7)))
    assert steps[1] == pytest.approx(steps[0], rel=1e-5, abs=1e-6)
    assert len(make_schedulers(opt, a.optimizers)) == len(a.optimizers)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--original"]], ids=["default", "original"])
@pytest.mark.parametrize("name", GENERIC)
def test_train_resume_evaluate_and_predict_from_the_command_line(tmp_path, name, mode):
    """Every user command, unchanged, on every model, in our default mode and as the original."""
    args = ["--model", name, *TINY, "--nc", "1", "--outf", tmp_path / "out", "--name", "run", *mode]
    train_cli([*args, "--niter", "1"], tmp_path)
    run = tmp_path / "out" / "run"
    train_cli(["--resume", run, "--niter", "2"], tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == name and results["epochs"] == 2 and 0 <= results["last"]["test"]["auroc"] <= 1
    train_cli([*args, "--phase", "test", "--load_weights"], tmp_path)
    # The best epoch's weights, scored again by --phase test, rank the test set as training saw it.
    evaluated = json.loads((run / "test" / "results.json").read_text())["test"]["auroc"]
    assert evaluated == pytest.approx(results["best"]["test"]["auroc"], abs=1e-6)
    (tmp_path / "images").mkdir()
    from PIL import Image
    Image.new("L", (8, 8), 128).save(tmp_path / "images" / "grey.png")
    out = run_main(predict.main, ["--path", tmp_path / "images", "--weights", run, "--out", tmp_path / "pred"],
                   tmp_path)
    assert out.returncode == 0, out.stderr
    assert "grey.png" in (tmp_path / "pred" / "predictions.csv").read_text()


def test_a_models_own_flag_is_refused_for_another_model_both_ways(tmp_path):
    with pytest.raises(UserError, match="--toy_width only applies to --model toy_model"):
        options.parse(["--toy_width", "3"])
    with pytest.raises(UserError, match="--wgan, --n_critic only apply to --model w_skipganomaly"):
        options.parse(["--model", "toy_model", "--wgan", "clip", "--n_critic", "2"])
    assert options.parse(["--model", "toy_model", "--toy_width", "3"]).toy_width == 3
    with pytest.raises(UserError, match="--toy_width must be positive"):
        options.parse(["--model", "toy_model", "--toy_width", "0"])
    assert options.model_option_names()["toy_model"] == ("toy_width",)


def model_flags() -> list[tuple[str, dict]]:
    """(model, a flag entry some model declares) for every registered model and declared flag."""
    entries = {e["flag"]: e for name in MODELS for e in MODELS.options(name)}
    return [(model, entry) for model in sorted(MODELS) for _, entry in sorted(entries.items())]


@pytest.mark.parametrize("model, entry", model_flags(), ids=lambda v: v if isinstance(v, str) else v["flag"])
def test_every_model_refuses_every_flag_it_does_not_read_in_one_line(model, entry):
    """Generated from the registry: a flag only other models read is refused, never accepted and ignored."""
    reads = entry["flag"].lstrip("-") in options.model_option_names()[model]
    given = [entry["flag"]] if entry.get("type") == "bool" else [entry["flag"], str(entry["default"])]
    if reads:  # under the setting it is read with (--clip_value with --wgan clip)
        setting = [item for other, values in entry.get("only_with", {}).items() for item in (f"--{other}", values[0])]
        options.parse(["--model", model, *given, *setting])
        return
    with pytest.raises(UserError, match=f"^{entry['flag']} only applies to --model .*not --model {model}: drop it"):
        options.parse(["--model", model, *given])


def test_run_name_suffixes_come_from_the_flags_a_model_declares():
    assert options.parse(["--model", "w_skipganomaly", "--no_skip", "--wgan", "clip"]).name.startswith(
        "w_skipganomaly-no_skip-clip/")
    assert options.model_option_names()["w_skipganomaly"][:3] == ("no_skip", "w_lat", "noise_std")  # extends
    assert options.parse(["--model", "ganomaly"]).name.startswith("ganomaly/")


def test_a_score_weight_no_score_of_the_run_uses_is_refused_before_training(tmp_path):
    from tests.helpers import TINY, one_line_error, train_cli
    proc = train_cli([*TINY, "--model", "ganomaly", "--score_weight", "0.5", "--niter", "1", "--outf", "out"],
                     tmp_path, check=False)
    one_line_error(proc, "--score_weight 0.5 weighs the original score, which this run does not score with",
                   "add --score original")
    assert not (tmp_path / "out").exists()


def test_a_half_written_model_is_refused_when_it_registers():
    class NoStep(AnomalyModel):
        name = "no_step"

        def build_networks(self, opt):
            return {}

        def build_optimizers(self, opt):
            return {}

        def outputs(self, images):
            return {}

    with pytest.raises(TypeError, match="NoStep does not implement update"):
        register(NoStep)
    assert "no_step" not in MODELS


def test_the_command_line_is_parsed_and_checked_without_importing_a_model_or_torch():
    """Models declare their flags as data: a refused command line or --help costs no torch import (3-4 s)."""
    script = ("import sys; from lib import options; "
              "options.parse(['--model', 'w_skipganomaly', '--wgan', 'clip', '--n_critic', '2']); "
              "options.build_parser().format_help(); options.model_option_names(); "
              "loaded = [m for m in ('torch', 'lib.models.base', 'lib.models.w_skipganomaly') if m in sys.modules]; "
              "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", GENERIC)
def test_measurements_of_the_image_alone_are_the_same_without_the_reconstruction(name):
    """A distance's bank, or a test split scored by one, needs no G(x): models may spare the decoder
    (lib/scoring/measures.py, OF_IMAGE_ALONE), and must then measure exactly what the full pass measures."""
    from lib.scoring.measures import OF_IMAGE_ALONE
    torch.manual_seed(0)
    model = build_model(tiny_opt(name), torch.device("cpu"))
    model.train_step(batch(8))
    needs = OF_IMAGE_ALONE & model.measurements
    images = batch(6, 5)
    full = model.score_parts(images, needs=needs)
    alone = model.score_parts(images, needs=needs, reconstruction=False)
    assert set(alone) <= set(full) and set(needs) <= set(alone)
    for key, value in alone.items():
        assert torch.equal(value, full[key]), key
    if needs and name != "toy_model":  # the paper's models and GANomaly skip the decoder
        assert "fake" not in alone
