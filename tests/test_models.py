"""Networks, losses and what is particular to Skip-GANomaly and Skip-WGANomaly, on tiny random tensors."""
import pytest
import torch

from lib.errors import UserError
from lib.models import build_model
from lib.models.losses import gradient_penalty
from lib.models.networks import Critic, Discriminator, UNet
from tests.helpers import make_opt

SKIP_MODELS = ("skipganomaly", "w_skipganomaly")  # the generic tests of every model: test_contract.py


@pytest.mark.parametrize("isize", [8, 16, 32, 64])
@pytest.mark.parametrize("skip", [True, False])
def test_unet_reconstructs_images_of_every_supported_size(isize, skip):
    net = UNet(nc=3, ngf=4, isize=isize, skip=skip)
    assert net(torch.randn(2, 3, isize, isize)).shape == (2, 3, isize, isize)
    with torch.no_grad():  # small initial weights stay in [-1, 1] anyway; these would leave it but for the Tanh
        for p in net.parameters():
            p.mul_(100)
    assert net(torch.randn(2, 3, isize, isize)).abs().max() <= 1  # the data range


def test_unet_has_log2_isize_downsamplings_and_original_widths():
    net = UNet(nc=3, ngf=64, isize=32)
    widths = [down[-1].num_features if isinstance(down[-1], torch.nn.BatchNorm2d) else down[-1].out_channels
              for down in net.down]
    assert widths == [64, 128, 256, 512, 512]


def test_no_skip_removes_the_skip_connections():
    with_skip, without = UNet(3, 8, 16, skip=True), UNet(3, 8, 16, skip=False)
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_skip.parameters())
    # Without skips, the output depends on the input only through the bottleneck.
    assert without.up[1][1].in_channels == without.down[1][1].out_channels


def test_discriminator_returns_probability_and_features_and_critic_returns_unbounded_value():
    x = torch.randn(4, 1, 32, 32)
    prob, feats = Discriminator(32, 1, 8, 10)(x)
    assert prob.shape == (4,) and feats.shape == (4, 10) and ((prob > 0) & (prob < 1)).all()
    value, feats = Critic(32, 1, 8, 10)(x)
    assert value.shape == (4,) and torch.allclose(value, feats.mean(1))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in Critic(32, 1, 8, 10).modules())


def test_gradient_penalty_matches_a_critic_with_known_gradient_norm():
    class Linear(torch.nn.Module):
        """C(x) = <w, x>: its gradient norm is ‖w‖ everywhere."""
        def __init__(self, w):
            super().__init__()
            self.w = w

        def forward(self, x):
            value = (x * self.w).flatten(1).sum(1)
            return value, value[:, None]

    w = torch.full((1, 1, 4, 4), 0.75)  # ‖w‖ = 0.75 · 4 = 3
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    assert gradient_penalty(Linear(w), real, fake).item() == pytest.approx((3 - 1) ** 2)


def test_weight_clipping_keeps_every_critic_weight_in_bounds():
    model = build_model(make_opt(model="w_skipganomaly", wgan="clip", clip_value=0.01), torch.device("cpu"))
    model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert all(p.abs().max() <= 0.01 + 1e-9 for p in model.adversary.parameters())


@pytest.mark.parametrize("name", SKIP_MODELS)
def test_generator_learns_from_the_adversarial_loss_alone(name):
    # The original detached Skip-WGANomaly's adversarial loss: w_adv did nothing.
    torch.manual_seed(0)
    model = build_model(make_opt(model=name, w_con=0, w_lat=0, w_adv=1, n_critic=1), torch.device("cpu"))
    before = [p.detach().clone() for p in model.generator.parameters()]
    model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.generator.parameters()))


def test_generator_learns_from_the_latent_loss_alone():
    torch.manual_seed(0)
    model = build_model(make_opt(model="w_skipganomaly", w_con=0, w_lat=1, w_adv=0, n_critic=1),
                        torch.device("cpu"))
    before = [p.detach().clone() for p in model.generator.parameters()]
    losses = model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert losses["g_lat"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.generator.parameters()))


@pytest.mark.parametrize("fixes,phase", [("all", [False, False, True, False, False, True]),
                                          ("default", [False, True, False, False, True, False])])
def test_generator_updates_once_every_n_critic_steps(fixes, phase):
    """After n critic updates with the generator_phase fix; at steps n-1, 2n-1, ... as the original."""
    model = build_model(make_opt(model="w_skipganomaly", n_critic=3, fixes=fixes), torch.device("cpu"))
    steps = [model.train_step(torch.rand(2, 3, 16, 16) * 2 - 1) for _ in range(6)]
    assert ["g" in s for s in steps] == phase
    assert all("gp" in s and "wasserstein" in s for s in steps)


def test_score_is_the_weighted_sum_of_its_parts():
    model = build_model(make_opt(model="skipganomaly", score_weight=0.9), torch.device("cpu"))
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    parts = model.score_parts(images)
    torch.testing.assert_close(model.score(images), 0.9 * parts["image_mse"] + 0.1 * parts["feature_mse"])


def test_input_noise_is_gaussian_of_the_given_std_and_absent_by_default():
    model = build_model(make_opt(noise_std=0.5), torch.device("cpu"))
    x = torch.zeros(64, 3, 16, 16)
    assert model.add_noise(x).std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(build_model(make_opt(), torch.device("cpu")).add_noise(x), x)


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(UserError, match="skipganomaly, w_skipganomaly"):
        build_model(make_opt(model="no_such_model"), torch.device("cpu"))


@pytest.mark.parametrize("fixes,restarts", [("all", 0), ("all,-critic_no_reset", 1)])
def test_the_critic_is_reset_below_1e_minus_5_only_without_the_critic_no_reset_fix(fixes, restarts):
    model = build_model(make_opt(model="w_skipganomaly", fixes=fixes), torch.device("cpu"))
    model.train_step(torch.rand(4, 3, 16, 16) * 2 - 1)
    trained = [p.detach().clone() for p in model.adversary.parameters()]
    model.after_update({"critic": 1.0})  # above the threshold: never a reset
    model.after_update({"critic": -3.0})  # a critic loss is unbounded below: the original resets it
    assert model.restarts == restarts
    changed = any(not torch.equal(a, b) for a, b in zip(trained, model.adversary.parameters()))
    assert changed == bool(restarts)
