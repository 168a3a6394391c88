"""--original reproduces the original code step for step: its losses, weights and scores.

tests/data/original_reference.json holds what the original's own code computed (regenerate it
with `python -m tools.original_reference`): a tiny model of each kind, seeded, trained for ten
steps on seeded random batches, then scored on a test batch as the original scores. Here our
models in --original mode take the same seed and batches and must give the same numbers.
"""
import argparse
import json

import pytest
import torch

from lib.models import build_model
from tests.helpers import ROOT, make_opt

REFERENCE = json.loads((ROOT / "tests" / "data" / "original_reference.json").read_text())["models"]
# Float sums in another order (our fused passes, kernels chosen for other batch shapes) differ
# in the last bits; a real difference (a detached loss, a penalty 8 times stronger) is far larger.
RTOL = 2e-4


def synthetic_data(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The runner's data (tools/original/runner.py): training batches, then test images."""
    g = torch.Generator().manual_seed(spec["data_seed"])
    shape = (spec["nc"], spec["isize"], spec["isize"])
    train = torch.rand((spec["steps"], spec["batchsize"], *shape), generator=g) * 2 - 1
    test = torch.rand((spec["test_images"], *shape), generator=g) * 2 - 1
    return train, test


@pytest.fixture(params=[(m, fast) for m in ("skipganomaly", "w_skipganomaly") for fast in (False, True)],
                ids=lambda p: f"{p[0]}-{'fast' if p[1] else 'plain'}")
def replayed(request):
    """Our model in --original mode after the reference's steps and its test, with the speed layer
    off and on (as a user runs it): (reference, losses, scores, model)."""
    name, fast = request.param
    ref = REFERENCE[name]
    spec = ref["spec"]
    threads = torch.get_num_threads()
    torch.set_num_threads(ref["threads"])
    try:
        opt = make_opt(model=spec["model"], original=True, isize=spec["isize"], nc=spec["nc"], nz=spec["nz"],
                       ngf=spec["ngf"], ndf=spec["ndf"], batchsize=spec["batchsize"], fast=fast, **spec["flags"])
        torch.manual_seed(spec["seed"])  # the original seeds right before it builds its networks
        model = build_model(opt, "cpu")
        train, test = synthetic_data(spec)
        losses = [model.train_step(batch) for batch in train]
        # The original scores in training mode (its ScorePolicy's train_mode).
        scores = torch.cat([model.score(batch, train_mode=True) for batch in test.split(spec["batchsize"])])
    finally:
        torch.set_num_threads(threads)
    return ref, losses, scores, model


def original_losses(model: str, ours: dict, weights: dict) -> dict:
    """Our losses under the original's names and weighting (it reports weighted terms)."""
    names = {"err_g": "g", "err_g_adv": "g_adv", "err_g_con": "g_con", "err_g_lat": "g_lat"}
    weight = {"g_adv": weights["w_adv"], "g_con": weights["w_con"], "g_lat": weights["w_lat"]}
    named = {theirs: ours[mine] * weight.get(mine, 1) for theirs, mine in names.items() if mine in ours}
    if model == "skipganomaly":
        named.update(err_d=ours["d"], err_d_real=ours["d_real"], err_d_fake=ours["d_fake"])
    else:
        named.update(err_d=ours["critic"])
    return named


def test_the_first_steps_losses_equal_the_originals(replayed):
    ref, losses, _, model = replayed
    weights = {"w_adv": model.w_adv, "w_con": model.w_con, "w_lat": model.w_lat}
    for step, ours in zip(ref["steps"], losses):
        theirs = step["losses"]
        named = original_losses(ref["spec"]["model"], ours, weights)
        # Skip-WGANomaly's generator learns at the original's steps 4 and 9 and reports its losses then.
        assert ("g" in ours) == step["generator_updated"], step["step"]
        if not step["generator_updated"]:
            named = {"err_d": named["err_d"]}
        for name, value in named.items():
            assert value == pytest.approx(theirs[name], rel=RTOL, abs=1e-6), (step["step"], name)
        assert not step["discriminator_reinitialised"]


def test_weights_and_batchnorm_statistics_equal_the_originals_after_the_steps_and_the_test(replayed):
    ref, _, _, model = replayed
    # The original's state in its own order: the UNet's down levels outermost first, then its up
    # levels back out; the discriminator's layers in order. After the test too: the original
    # scores in training mode, so its BatchNorm statistics also took in the test batches.
    for net, original_name in (("generator", "netg"), ("adversary", "netd")):
        theirs = list(ref["after_test"][original_name].values())
        ours = list(_in_original_order(model, net).values())
        assert len(ours) == len(theirs), net
        for mine, their in zip(ours, theirs):
            value = mine.double()
            assert value.sum().item() == pytest.approx(their["sum"], abs=RTOL * their["abs_sum"] + 1e-6)
            assert value.abs().sum().item() == pytest.approx(their["abs_sum"], rel=RTOL, abs=1e-6)


def test_test_scores_equal_the_originals_min_max_scaled(replayed):
    ref, _, scores, _ = replayed
    scaled = (scores - scores.min()) / (scores.max() - scores.min())
    assert scaled.tolist() == pytest.approx(ref["test"]["scores_minmax"], abs=1e-4)


def _in_original_order(model, net: str) -> dict[str, torch.Tensor]:
    modules = [model.networks[net]]
    if net == "generator":
        unet = model.generator
        levels = range(len(unet.down))
        modules = [unet.down[i] for i in levels] + [unet.up[i] for i in reversed(levels)]
    state = {}
    for i, module in enumerate(modules):
        state.update({f"{i}.{k}": v for k, v in module.state_dict().items()})
    return state


@pytest.mark.slow
def test_weights_of_another_architecture_are_refused_in_one_line(trained_run_copy, tmp_path):
    """A run with every fix has a classifier bias; a default run's discriminator, like --original's, has none:
    --phase test refuses fixes that change training before it looks at the weights."""
    from tests.helpers import TINY, one_line_error, process
    run = trained_run_copy  # --phase test writes <run>/test/: never into the session's shared run
    proc = process("train.py", [*TINY, "--phase", "test", "--load_weights", run, "--fixes", "all"], tmp_path)
    one_line_error(proc, "--fixes all: checkpoint", "was trained without the fix 'classifier_bias'",
                   "give the run's own --original/--fixes")
    assert not (run / "test").exists()
    # A fix that changes no shape loads the same weights (one that --phase test applies itself).
    assert process("train.py", [*TINY, "--phase", "test", "--load_weights", run,
                                "--fixes", "default,-outputs"], tmp_path).returncode == 0
    # A fix of another model is no difference this run can have: refused, not recorded.
    one_line_error(process("train.py", [*TINY, "--phase", "test", "--load_weights", run, "--fixes",
                                        "default,-gp_of_mean"], tmp_path), "gp_of_mean concerns w_skipganomaly only")


def test_the_default_fixes_are_all_but_those_the_ablation_reverted_and_name_runs_by_their_difference():
    from lib.options import fixes_suffix
    from lib.original import DEFAULT, FIXES, parse_fixes
    reverted = {name for name, fix in FIXES.items() if fix.reverted}
    assert "classifier_bias" in reverted and "eval_mode_scoring" not in reverted
    assert parse_fixes("default") == DEFAULT == set(FIXES) - reverted
    assert parse_fixes("all") == set(FIXES) and parse_fixes("none") == set()
    assert parse_fixes("default,classifier_bias") == DEFAULT | {"classifier_bias"}
    assert fixes_suffix(DEFAULT) == "" and fixes_suffix(frozenset()) == "-original"
    assert fixes_suffix(parse_fixes("default,-generator_gradients")) == "-without_generator_gradients"
    both = parse_fixes("default,classifier_bias,-generator_gradients")
    assert fixes_suffix(both) == "-with_classifier_bias-without_generator_gradients"
    assert fixes_suffix(parse_fixes("gp_of_mean")) == "-original_with_gp_of_mean"
    # Options written before --fixes existed are read as the run applied them: every fix.
    from lib.original import fixes
    assert fixes(argparse.Namespace()) == set(FIXES)


def test_without_own_data_order_the_epochs_order_is_a_shuffling_dataloaders():
    """The original's DataLoader(shuffle=True, drop_last=True) draws its order from torch's global
    generator; the same seed must give the same batches, and leave the generator where it leaves it."""
    from torch.utils.data import DataLoader

    from lib.training.state import TrainingState
    torch.manual_seed(5)
    theirs = [batch.tolist() for batch in DataLoader(list(range(50)), batch_size=8, shuffle=True, drop_last=True)]
    after_theirs = torch.rand(1)
    torch.manual_seed(5)
    ours = [batch.tolist() for batch in TrainingState.start(0, 0).epoch_order(50, 8, True, global_draws=True)]
    assert ours == theirs and torch.rand(1) == after_theirs
    # With the fix, the order is the run's own: torch's global generator is left alone.
    torch.manual_seed(5)
    TrainingState.start(0, 0).epoch_order(50, 8, True)
    assert torch.rand(1) != after_theirs
