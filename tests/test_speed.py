"""The models' steps train as the oracle's (tests/reference_steps.py), with and without the speed layer;
the speed layer's pieces match the kernels they replace."""
import time

import pytest
import torch

from lib import fast as speed_layer
from lib.fast import hardware
from lib.fast.adam import ChannelsLastAdam
from lib.fast.matmul import MatmulConv2d, MatmulConvTranspose2d, use_matmul_convolutions
from lib.models import MODELS
from lib.models.networks import UNet
from tests import reference_steps
from tests.helpers import make_opt

SETTINGS = [("skipganomaly", {}), ("skipganomaly", {"noise_std": 0.1}),
            ("w_skipganomaly", {"wgan": "gp"}), ("w_skipganomaly", {"wgan": "clip"})]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: with a second thread, a busy shared core stalls every operation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(name, fast, steps=4, amp=False, reference=False, **overrides):
    """A model after `steps` steps: its own step (`fast` on or off), or the oracle's (`reference`);
    fp32 unless `amp`, whatever this CPU would choose, as the oracle computes in fp32."""
    torch.manual_seed(0)
    opt = make_opt(model=name, n_critic=2, **overrides)  # Skip-WGANomaly's generator steps twice in 4 steps
    model = MODELS[name](opt, torch.device("cpu"), fast=fast, amp=amp)
    step = (lambda x: reference_steps.STEPS[name](model, x)) if reference else model.train_step
    data = torch.Generator().manual_seed(1)
    losses = [step(torch.rand(8, 3, 16, 16, generator=data) * 2 - 1) for _ in range(steps)]
    return model, losses


def assert_same_training(model, losses, oracle, oracle_losses):
    for a, b in zip(oracle_losses, losses, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    # Weights, BatchNorm running statistics and step counters included.
    for net in ("generator", "adversary"):
        ref, got = oracle.state_dict()[net], model.state_dict()[net]
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-5, msg=key)
    assert model.step == oracle.step
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.testing.assert_close(model.score(images), reference_steps.score(oracle, images), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("name,overrides", SETTINGS)
def test_the_models_step_reaches_the_oracles_losses_weights_and_scores(name, overrides, fast):
    """With and without the speed layer, the one step each model has trains as the step
    written out in full (tests/reference_steps.py) does."""
    oracle, oracle_losses = train(name, fast=False, reference=True, **overrides)
    model, losses = train(name, fast=fast, **overrides)
    assert_same_training(model, losses, oracle, oracle_losses)


@pytest.mark.parametrize("name,overrides", SETTINGS)
def test_bf16_autocast_used_on_cuda_trains_and_scores_close_to_fp32(name, overrides):
    fp32, fp32_losses = train(name, fast=True, **overrides)
    bf16, bf16_losses = train(name, fast=True, amp=True, **overrides)
    assert bf16.speed.amp and not fp32.speed.amp
    for a, b in zip(fp32_losses, bf16_losses, strict=True):
        for key in a:
            # The penalty squares the gradient norm's distance from 1: penalising the sum of the
            # features (the default, as the original) makes that norm about 2, and the 3 % that bf16
            # weights move it after a few steps become 10 % of the penalty and of the critic's loss.
            rel = 0.15 if key in ("gp", "critic") else 0.05
            assert b[key] == pytest.approx(a[key], rel=rel, abs=0.02), key
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    scores = bf16.score(images)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, fp32.score(images), rtol=0.05, atol=1e-3)


def test_fast_is_the_default_and_can_be_turned_off():
    assert MODELS["skipganomaly"](make_opt(), torch.device("cpu")).speed.fast
    assert not MODELS["skipganomaly"](make_opt(), torch.device("cpu"), fast=False).speed.fast
    assert not MODELS["skipganomaly"](make_opt(fast=False), torch.device("cpu")).speed.fast


def test_the_speed_layer_swaps_kernels_layouts_and_optimisers_and_nothing_else(monkeypatch):
    plain = MODELS["w_skipganomaly"](make_opt(model="w_skipganomaly"), torch.device("cpu"), fast=False)
    fast = MODELS["w_skipganomaly"](make_opt(model="w_skipganomaly"), torch.device("cpu"), fast=True)
    assert {type(m) for net in plain.networks.values() for m in net.modules()}.isdisjoint(
        {MatmulConv2d, MatmulConvTranspose2d})
    assert any(isinstance(m, MatmulConv2d) for m in fast.adversary.modules())
    assert all(type(o) is torch.optim.Adam for o in plain.optimizers.values())
    assert all(isinstance(o, ChannelsLastAdam) and o.param_groups[0]["fused"] for o in fast.optimizers.values())
    assert fast.adversary.features.main[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.state_dict().keys() == fast.state_dict().keys()
    for name in plain.networks:  # same parameters, names and shapes
        assert {k: v.shape for k, v in plain.networks[name].state_dict().items()} == \
            {k: v.shape for k, v in fast.networks[name].state_dict().items()}


@pytest.mark.parametrize("source_fast", [False, True])
def test_checkpoints_move_between_speed_settings_and_training_continues_alike(source_fast):
    source, _ = train("skipganomaly", fast=source_fast, steps=1)
    state = source.state_dict()
    plain, fast = (MODELS["skipganomaly"](make_opt(), torch.device("cpu"), fast=f, amp=False) for f in (False, True))
    plain.load_state_dict(state)
    fast.load_state_dict(state)
    assert all(g["fused"] for o in fast.optimizers.values() for g in o.param_groups)
    assert not any(g["fused"] for o in plain.optimizers.values() for g in o.param_groups)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a, b = plain.train_step(x), fast.train_step(x)
    assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    torch.testing.assert_close(fast.score(x), plain.score(x), rtol=1e-4, atol=1e-6)


MATMUL_CASES = [  # (layer, input size): the innermost UNet/encoder shapes, padding-only taps included
    (lambda: torch.nn.Conv2d(6, 5, 4, 2, 1, bias=False), 2), (lambda: torch.nn.Conv2d(6, 5, 4, 2, 1), 4),
    (lambda: torch.nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=False), 1),
    (lambda: torch.nn.ConvTranspose2d(6, 5, 4, 2, 1), 2), (lambda: torch.nn.Conv2d(6, 5, 3, 1, 1), 1),
    (lambda: torch.nn.Conv2d(6, 5, 4, 1, 0, bias=False), 4), (lambda: torch.nn.Conv2d(6, 5, 3, 1, 1), 8),
    # transposed blocks that overlap at stride 1, and that only touch at kernel = stride
    (lambda: torch.nn.ConvTranspose2d(6, 5, 3, 1, 1), 2), (lambda: torch.nn.ConvTranspose2d(6, 5, 2, 2, 0), 2)]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", range(len(MATMUL_CASES)))
def test_matmul_convolutions_match_the_usual_kernels_forward_and_backward(case, channels_last):
    torch.manual_seed(0)
    make, size = MATMUL_CASES[case]
    layer = make()
    x = torch.randn(3, 6, size, size, requires_grad=True)
    if channels_last:
        layer.to(memory_format=torch.channels_last)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    expected = layer(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, *layer.parameters()))
    use_matmul_convolutions(layer)
    assert isinstance(layer, (MatmulConv2d, MatmulConvTranspose2d))
    got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got.square().sum(), (x, *layer.parameters())), expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_matmul_convolutions_keep_the_state_dict_and_support_double_backward():
    net = UNet(3, 4, 8)
    keys = list(net.state_dict())
    use_matmul_convolutions(net)
    assert list(net.state_dict()) == keys
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    grad.square().sum().backward()  # the gradient penalty's double backward
    assert all(p.grad is not None for p in net.parameters())


def _tensor_copies_in_step(optimizer) -> int:
    """Copies of whole tensors during one step (the step counters' 0-d copies aside)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        optimizer.step()
    return sum(1 for e in prof.events() if e.name == "aten::copy_" and e.input_shapes[0])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_channels_last_adam_updates_like_fused_adam_without_copying(amsgrad):
    def model():
        torch.manual_seed(0)
        layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.BatchNorm2d(8),
                                     torch.nn.ConvTranspose2d(8, 3, 4, 2, 1))
        return layers.to(memory_format=torch.channels_last)
    nets = model(), model()
    usual = torch.optim.Adam(nets[0].parameters(), lr=0.01, betas=(0.5, 0.999), amsgrad=amsgrad, fused=True)
    ours = ChannelsLastAdam(nets[1].parameters(), lr=0.01, betas=(0.5, 0.999), amsgrad=amsgrad, fused=True)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for step in range(3):
        for net in nets:
            net.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
        copies = _tensor_copies_in_step(usual), _tensor_copies_in_step(ours)
        for a, b in zip(*(net.parameters() for net in nets)):
            assert torch.equal(a, b)
            assert b.dim() != 4 or b.is_contiguous(memory_format=torch.channels_last)
    assert copies[0] > 0 and copies[1] == 0  # the usual kernel copies the 4-D weights; ours none
    assert ours.state_dict()["state"].keys() == usual.state_dict()["state"].keys()


def pin_cpu(monkeypatch, *flags):
    """Make this CPU one with `flags` (its /proc/cpuinfo flags)."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))


def test_bf16_is_a_cpu_default_only_where_the_cpu_has_it_natively(monkeypatch):
    pin_cpu(monkeypatch, "avx2", "fma")
    assert hardware.cpu_bf16() == hardware.Choice(False, f"fp32: this CPU ({hardware.capability()}) has no native "
                                                         "bf16 (avx512_bf16 or amx_bf16)")
    pin_cpu(monkeypatch, "avx512f", "avx512_bf16", "amx_bf16")
    assert hardware.cpu_bf16() == hardware.Choice(True, "bf16: native on this CPU (amx_bf16, avx512_bf16)")


@pytest.mark.parametrize("flags", [("avx2", "fma"), ("avx512f", "avx512_bf16")])
def test_matrix_product_convolutions_are_the_cpu_default_and_not_cudas(monkeypatch, flags):
    pin_cpu(monkeypatch, *flags)
    speed = speed_layer.settings(make_opt(), torch.device("cpu"))
    assert speed.matmul and speed.why[1].startswith("matrix products")
    model = MODELS["skipganomaly"](make_opt(), torch.device("cpu"))
    assert model.speed.matmul and any(isinstance(m, MatmulConv2d) for m in model.generator.modules())
    assert not speed_layer.settings(make_opt(), torch.device("cuda")).matmul


def test_no_timing_decides_a_choice_the_same_options_on_the_same_machine_choose_alike(monkeypatch):
    """A busy CPU once made one run choose bf16 and the next fp32: choices are rules, not timings."""
    def no_clock():
        raise AssertionError("a speed choice read a clock")
    for clock in ("perf_counter", "perf_counter_ns", "monotonic", "time", "process_time"):
        monkeypatch.setattr(time, clock, no_clock)
    for flags in (("avx2",), ("avx512_bf16",), ("amx_bf16",)):
        pin_cpu(monkeypatch, *flags)
        for name in MODELS:
            opt = make_opt(model=name)
            assert len({speed_layer.settings(opt, torch.device("cpu"), bf16_safe=MODELS[name].bf16_safe(opt))
                        for _ in range(3)}) == 1


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("flags", [{}, {"fast": False}, {"amp": True}, {"original": True}])
def test_building_a_model_draws_the_same_random_numbers_whatever_the_speed_settings(name, flags):
    """The speed layer draws no random number: the weights and everything drawn after them
    (data order, noise, penalties) follow --manualseed alone, fast path or not."""
    def build(**speed):
        torch.manual_seed(0)
        model = MODELS[name](make_opt(model=name, **{**flags, **speed}), torch.device("cpu"))
        return model, torch.get_rng_state(), torch.rand(3)
    plain, plain_state, plain_next = build(fast=False)
    model, state, after = build()
    assert torch.equal(state, plain_state) and torch.equal(after, plain_next)
    for net in plain.networks:
        for key, value in plain.networks[net].state_dict().items():
            assert torch.equal(model.networks[net].state_dict()[key], value), key


def test_original_computes_in_fp32_without_autotuning_unless_amp_is_asked_for(monkeypatch):
    pin_cpu(monkeypatch, "avx512_bf16")
    for device in ("cpu", "cuda"):
        speed = speed_layer.settings(make_opt(model="w_skipganomaly", original=True), torch.device(device))
        assert (speed.amp, speed.autotune, speed.why[0]) == (False, False, "fp32: --original computes as the "
                                                                           "original did")
        assert speed_layer.settings(make_opt(model="w_skipganomaly", original=True, amp=True),
                                    torch.device(device)).amp
    assert speed_layer.settings(make_opt(model="w_skipganomaly"), torch.device("cuda")).autotune


def test_a_checkpoints_recorded_choices_are_reused_and_a_device_change_is_said(monkeypatch):
    pin_cpu(monkeypatch, "avx2")  # by its rule this CPU would run fp32
    bf16_on_cpu = {"amp": True, "matmul": False, "device_type": "cpu"}
    speed = speed_layer.settings(make_opt(model="w_skipganomaly"), torch.device("cpu"), recorded=bf16_on_cpu)
    assert (speed.amp, speed.matmul) == (True, False) and "as this run was trained" in speed.why[0]
    assert speed.notice.endswith("emulated on this CPU, which has no native bf16: slower (--no-amp runs fp32)")
    assert not speed_layer.settings(make_opt(model="w_skipganomaly", amp=False), torch.device("cpu"),
                                    recorded=bf16_on_cpu).amp  # an explicit flag wins
    on_cuda = speed_layer.settings(make_opt(), torch.device("cpu"),
                                   recorded={"amp": True, "matmul": False, "device_type": "cuda"})
    assert on_cuda.amp and on_cuda.matmul  # precision follows the run; kernels are the CPU's
    assert on_cuda.notice.startswith("this run was trained on cuda; on cpu it keeps its precision (bf16)")
    pin_cpu(monkeypatch, "avx512_bf16")
    same = speed_layer.settings(make_opt(model="w_skipganomaly"), torch.device("cpu"), recorded=bf16_on_cpu)
    assert same.notice == "" and same.amp


@pytest.mark.parametrize("flags, device, amp, why", [
    ({"amp": True}, "cpu", True, "bf16: --amp"),
    ({"amp": False}, "cuda", False, "fp32: --no-amp"),
    ({}, "cuda", True, "bf16: CUDA"),
    ({"fast": False, "amp": True}, "cpu", False, "fp32: --no-fast"),
])
def test_amp_and_no_amp_override_the_machine_and_cuda_defaults_to_bf16(flags, device, amp, why):
    speed = speed_layer.settings(make_opt(**flags), torch.device(device))  # a model measured safe in bf16
    assert (speed.amp, speed.why[0]) == (amp, why)
    assert not speed.matmul or device == "cpu"


def test_bf16_is_a_default_only_for_a_model_whose_auroc_it_was_measured_to_keep(monkeypatch):
    assert speed_layer.settings(make_opt(), torch.device("cuda"), bf16_safe=False).why[0] == (
        "fp32: CUDA favours bf16, but it is not measured to keep this model's AUROC (docs/benchmarks.md); "
        "--amp turns it on")
    assert speed_layer.settings(make_opt(amp=True), torch.device("cuda"), bf16_safe=False).amp
    pin_cpu(monkeypatch, "avx512_bf16")
    # Skip-GANomaly: measured to keep its AUROC under the default score (chosen on validation), not under the
    # original's (bf16 cost it 0.03 on two classes there); Skip-WGANomaly under both; GANomaly not yet measured.
    assert MODELS["skipganomaly"](make_opt(), torch.device("cpu")).speed.amp
    original = MODELS["skipganomaly"](make_opt(score="original"), torch.device("cpu")).speed
    assert not original.amp and "AUROC with --score original" in original.why[0]
    assert MODELS["w_skipganomaly"](make_opt(model="w_skipganomaly", score="original"), torch.device("cpu")).speed.amp
    assert not MODELS["ganomaly"](make_opt(model="ganomaly"), torch.device("cpu")).speed.amp


@pytest.mark.slow
def test_compile_trains_a_run_that_scores_as_the_uncompiled_one_and_prints_no_warnings(tmp_path):
    """torch.compile of the networks (--compile): a real run through inductor on this CPU. It once printed
    dynamo's warning about the tap indices' lru_cache and inductor's CUDA_HOME notice on every run."""
    import json

    from tests.helpers import ONE_EPOCH, RUN, process
    runs = {}
    for flags in ([], ["--compile"]):
        proc = process("train.py", [*ONE_EPOCH, "--no-amp", *flags, "--outf", f"out{len(flags)}"], tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        runs[bool(flags)] = json.loads((tmp_path / f"out{len(flags)}" / RUN / "results.json").read_text())
    compiled, plain = (runs[c]["best"]["test"]["auroc"] for c in (True, False))
    assert compiled == pytest.approx(plain, abs=0.02)  # the same seed and data; kernels round differently
