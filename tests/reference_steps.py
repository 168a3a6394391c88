"""The oracle: each model's training step and score written out in full, the way the papers
describe them, with no shared passes and no speed settings.

The models' own steps (lib/models/) share discriminator passes and run inside the speed
layer (lib/fast/); tests/test_speed.py holds them to these, loss for loss and weight for
weight. These functions drive a model's public networks and optimisers directly.
"""
import torch
import torch.nn.functional as F

from lib.models.losses import gradient_penalty
from lib.models.networks import init_weights
from lib.scoring.functions import weighted
from lib.scoring.measures import feature_mse, image_mse


def skipganomaly_step(model, images: torch.Tensor) -> dict[str, float]:
    model.train()
    model.step += 1
    generator, adversary, opt_g, opt_d = model.generator, model.adversary, model.optimizers["g"], model.optimizers["d"]
    fake = generator(model.add_noise(images))
    prob_real, features_real = adversary(images)
    prob_fake, features_fake = adversary(fake)

    # update G: minimize w_adv·BCE(D(G(x)), real) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
    g_adv = F.binary_cross_entropy(prob_fake, torch.ones_like(prob_fake))
    loss_g, g_con, g_lat = model.generator_loss(g_adv, fake, images, features_real, features_fake)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    # update D: maximize log D(x) + log(1 − D(G(x))), on the G(x) made before G stepped
    prob_fake, _ = adversary(fake.detach())
    d_real = F.binary_cross_entropy(prob_real, torch.ones_like(prob_real))
    d_fake = F.binary_cross_entropy(prob_fake, torch.zeros_like(prob_fake))
    loss_d = d_real + d_fake
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    if loss_d.item() < 1e-5:
        init_weights(adversary)
    return {"g_adv": g_adv.item(), "g_con": g_con.item(), "g_lat": g_lat.item(),
            "g": loss_g.item(), "d_real": d_real.item(), "d_fake": d_fake.item(), "d": loss_d.item()}


def w_skipganomaly_step(model, images: torch.Tensor) -> dict[str, float]:
    model.train()
    model.step += 1
    generator, adversary, opt_g, opt_d = model.generator, model.adversary, model.optimizers["g"], model.optimizers["d"]
    # After n critic updates with the generator_phase fix, at steps n-1, 2n-1, ... without it (the original's).
    update_generator = model.step % model.n_critic == model.generator_phase
    with torch.set_grad_enabled(update_generator):
        fake = generator(model.add_noise(images))

    # update critic: maximize the Wasserstein estimate C(x) − C(G(x)) (minus λ·GP)
    value_real, _ = adversary(images)
    value_fake, _ = adversary(fake.detach())
    wasserstein = value_real.mean() - value_fake.mean()
    loss_c = -wasserstein
    losses = {"wasserstein": wasserstein.item()}
    if model.wgan == "gp":
        penalty = gradient_penalty(adversary, images, fake.detach(), of_sum=not model.gp_of_mean)
        loss_c = loss_c + model.lambda_gp * penalty
        losses["gp"] = penalty.item()
    opt_d.zero_grad(set_to_none=True)
    loss_c.backward()
    opt_d.step()
    if model.wgan == "clip":
        with torch.no_grad():
            for p in adversary.parameters():
                p.clamp_(-model.clip_value, model.clip_value)
    losses["critic"] = loss_c.item()

    if update_generator:
        # update G: minimize −w_adv·C(G(x)) + w_con·|G(x) − x|₁ + w_lat·‖f(G(x)) − f(x)‖²
        value_fake, features_fake = adversary(fake)
        with torch.no_grad():
            _, features_real = adversary(images)
        g_adv = -value_fake.mean()
        loss_g, g_con, g_lat = model.generator_loss(g_adv, fake, images, features_real, features_fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses.update(g_adv=g_adv.item(), g_con=g_con.item(), g_lat=g_lat.item(), g=loss_g.item())
    return losses


STEPS = {"skipganomaly": skipganomaly_step, "w_skipganomaly": w_skipganomaly_step}


@torch.no_grad()
def score(model, images: torch.Tensor) -> torch.Tensor:
    """Skip-GANomaly's score with one discriminator pass per image set, in eval mode."""
    model.eval()
    fake = model.generator(images)
    _, features_real = model.adversary(images)
    _, features_fake = model.adversary(fake)
    return weighted(image_mse(images, fake), feature_mse(features_real, features_fake), model.score_weight)
