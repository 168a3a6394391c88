"""Runs the original Skip-WGANomaly code and writes what it computes as JSON.

    PYTHONPATH=<original code> python tools/original/runner.py steps --spec SPEC.json --out OUT.json
    PYTHONPATH=<original code> python tools/original/runner.py train --dataroot FOLDER --model M --niter N \
        --batchsize B --isize I --seed S --out OUT.json [--extra "--ngf 4 --ndf 4"]
    PYTHONPATH=<original code> python tools/original/runner.py serve --spec SPEC.json   # timing, see serve()

Run it as a script, in an empty working folder (tools/original/launch.py does both): the original
writes ./histogram.csv and its --outf folder there, and as a script this file's folder comes first
on sys.path, so `lib` is the original's package, never this repository's. That is why it imports
nothing from the repository but its sibling standins.py.

`steps`: a tiny model of each kind trained for a few steps on seeded random data, its losses at
every step, a fingerprint of its weights and its test scores: reference values for a parity test.
`train`: the original's own training on a folder dataset, its losses at every step and the
histogram.csv its last test() wrote, then the final weights scored three ways by the original's
test() (see `train`).
"""
import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import standins
import torch
from torch.utils.data import DataLoader, TensorDataset

# Every loss attribute either model may hold after optimize_params(). Skip-WGANomaly sets the
# generator's only at its first generator update (its step 4).
LOSSES = ("err_d", "err_d_real", "err_d_fake", "err_d_wloss", "err_g", "err_g_adv", "err_g_con", "err_g_lat")
# Without these two the original's options module asks for CUDA.
CPU = ["--device", "cpu", "--gpu_ids", "-1", "--outf", "output"]


def load_original():
    """The original's Options, load_data, Data and load_model, imported behind the stand-ins."""
    standins.install()
    from lib.data.dataloader import Data, load_data

    from lib.models import load_model
    from options import Options
    standins.patch_original()
    return Options, load_data, Data, load_model


def parse_options(Options, flags: list[str]):
    """The original's options from a command line, as its train.py parses them (from sys.argv)."""
    sys.argv = ["train.py", *flags, *CPU]
    return Options().parse()


def synthetic_data(spec: dict):
    """(train batches, test images, test labels) of `steps`, uniform in [-1, 1].

    tests/test_original_runner.py and the parity test make the same tensors from the same spec:
    one generator seeded with data_seed draws the training batches, then the test images; the
    first half of the test images is labelled normal (0), the second half abnormal (1).
    """
    g = torch.Generator().manual_seed(spec["data_seed"])
    shape = (spec["nc"], spec["isize"], spec["isize"])
    train = torch.rand((spec["steps"], spec["batchsize"], *shape), generator=g) * 2 - 1
    test = torch.rand((spec["test_images"], *shape), generator=g) * 2 - 1
    labels = (torch.arange(spec["test_images"]) >= spec["test_images"] // 2).long()
    return train, test, labels


def noise_state(noise: torch.Tensor) -> dict:
    """What the uninitialised noise buffer holds (it is added to every training input)."""
    return {"all_zero": bool((noise == 0).all()), "finite": bool(torch.isfinite(noise).all()),
            "nonzero_fraction": float((noise != 0).double().mean()), "max_abs": float(noise.double().abs().max())}


def fingerprint(net: torch.nn.Module) -> dict:
    """Sum and sum of absolute values of every state_dict entry (weights and BatchNorm statistics)."""
    return {name: {"sum": float(t.double().sum()), "abs_sum": float(t.double().abs().sum())}
            for name, t in net.state_dict().items()}


class CallCounter:
    """Replaces a method on one object with a wrapper that counts its calls."""

    def __init__(self, obj, method: str):
        self.calls, wrapped = 0, getattr(obj, method)

        def counted(*args, **kwargs):
            self.calls += 1
            return wrapped(*args, **kwargs)
        setattr(obj, method, counted)


def recorder(model) -> list[dict]:
    """A list that gets, after each optimize_params() of `model`, that step's record as `steps` has it."""
    reinits, g_updates = CallCounter(model, "reinit_d"), CallCounter(model, "update_netg")
    records, optimize = [], model.optimize_params

    def recorded():
        reinit_before, g_before = reinits.calls, g_updates.calls
        optimize()
        records.append({
            "step": len(records) + 1,
            # A loss the step did not recompute keeps its earlier value: generator_updated says which.
            "losses": {name: getattr(model, name).detach().item() for name in LOSSES if hasattr(model, name)},
            "generator_updated": g_updates.calls > g_before,
            "discriminator_reinitialised": reinits.calls > reinit_before,
        })
    model.optimize_params = recorded
    return records


def steps(spec: dict) -> dict:
    """Losses per step, weight fingerprints after the steps and after test(), and test()'s scores."""
    # One thread: the reference must not depend on the machine's core count.
    torch.set_num_threads(1)
    Options, _, Data, load_model = load_original()
    flags = ["--model", spec["model"], "--manualseed", str(spec["seed"])]
    for name in ("isize", "nc", "nz", "ngf", "ndf", "batchsize"):
        flags += [f"--{name}", str(spec[name])]
    for name, value in spec.get("flags", {}).items():
        flags += [f"--{name}", str(value)]
    opt = parse_options(Options, flags)
    model = load_model(opt, Data(train=None, valid=None))  # seeds torch with --manualseed, then builds

    # The noise buffer is torch.empty and never filled; zeros make the reference deterministic.
    noise_at_construction = noise_state(model.noise)
    model.noise.zero_()

    train, test, labels = synthetic_data(spec)
    records = recorder(model)
    for k in range(spec["steps"]):
        model.set_input((train[k], torch.zeros(spec["batchsize"], dtype=torch.long)))
        model.optimize_params()
    after_steps = {"netg": fingerprint(model.netg), "netd": fingerprint(model.netd)}

    # test() reads len(self.data.valid.dataset), so it needs a real DataLoader, in file order.
    model.data.valid = DataLoader(TensorDataset(test, labels), batch_size=spec["batchsize"], shuffle=False)
    modes = {"netg_training": model.netg.training, "netd_training": model.netd.training}
    performance = model.test()
    return {
        "spec": spec, "torch": torch.__version__, "threads": 1, "patches": standins.PATCHES,
        "noise_at_construction": noise_at_construction, "noise_filled_with_zeros": True,
        "steps": records,
        "after_steps": after_steps,
        "test": {**modes, "scores_minmax": model.an_scores.tolist(), "labels": model.gt_labels.tolist(),
                 "auc": float(performance["AUC"])},
        # The original tests in training mode, so BatchNorm's running statistics move during test().
        "after_test": {"netg": fingerprint(model.netg), "netd": fingerprint(model.netd)},
    }


def train(args) -> dict:
    """The original's training (its losses at every step, as `steps` records them, and the text of
    the histogram.csv its last epoch's test() wrote), then its test() on the final weights in three ways.

    as_original: training mode, test batches in file order (normal images first): what it reports.
    train_mode_shuffled: training mode over the same images in seeded shuffled batches; test()
        stores each score beside its own label in loop order, so the AUC stays correct.
    eval_mode: netg.eval() and netd.eval(): BatchNorm uses its running statistics.
    The weights scored are those at the end of the last epoch's training, taken before that epoch's
    own test() pass, which (in training mode) moves the running statistics toward the test set's.
    They are restored before each way, since training-mode scoring moves the statistics again.
    """
    Options, load_data, _, load_model = load_original()
    flags = ["--dataset", "folder", "--dataroot", args.dataroot, "--model", args.model,
             "--niter", str(args.niter), "--batchsize", str(args.batchsize), "--isize", str(args.isize),
             "--manualseed", str(args.seed), *shlex.split(args.extra)]
    opt = parse_options(Options, flags)
    data = load_data(opt)
    model = load_model(opt, data)

    epoch_aucs, trained, histogram = [], {}, {}
    original_test = model.test
    records = recorder(model)

    def test_after_epoch():
        trained.update(netg=copy.deepcopy(model.netg.state_dict()), netd=copy.deepcopy(model.netd.state_dict()))
        performance = original_test()
        epoch_aucs.append(float(performance["AUC"]))
        # test() has just written ./histogram.csv; the scorings below write it again.
        histogram["text"] = Path("histogram.csv").read_text()
        return performance

    model.test = test_after_epoch
    start = time.time()
    model.train()
    seconds = time.time() - start
    model.test = original_test
    noise_after_training = noise_state(model.noise)

    file_order = data.valid
    shuffled = DataLoader(file_order.dataset, batch_size=opt.batchsize, shuffle=True,
                          generator=torch.Generator().manual_seed(args.seed))

    def score(valid, eval_mode: bool) -> float:
        model.netg.load_state_dict(trained["netg"])
        model.netd.load_state_dict(trained["netd"])
        model.netg.train(not eval_mode)
        model.netd.train(not eval_mode)
        model.data.valid = valid
        return float(original_test()["AUC"])

    final = {"as_original": score(file_order, False), "train_mode_shuffled": score(shuffled, False),
             "eval_mode": score(file_order, True)}
    print(f"original {args.model}, {args.niter} epoch(s): epoch AUC {', '.join(f'{a:.4f}' for a in epoch_aucs)}; "
          f"final weights: as the original {final['as_original']:.4f}, shuffled batches "
          f"{final['train_mode_shuffled']:.4f}, eval mode {final['eval_mode']:.4f} ({seconds:.0f} s)")
    return {
        "settings": {"model": args.model, "niter": args.niter, "batchsize": args.batchsize, "isize": args.isize,
                     "seed": args.seed, "extra": args.extra},
        "torch": torch.__version__, "patches": standins.PATCHES,
        "train_images": len(data.train.dataset), "train_batches_per_epoch": len(data.train),
        "test_images": len(file_order.dataset), "train_seconds": seconds,
        "epoch_aucs": epoch_aucs, "final_aucs": final,
        "noise_after_training": noise_after_training,
        "steps": records, "histogram_csv": histogram.get("text"),
    }


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def serve(spec: dict) -> None:
    """Time the original's own optimize_params() and test() on request, for tools/benchmark.py.

    Builds the model of `spec` (as `steps` does) on uniform random batches, answers one JSON line
    on stdout ({"ready": true, "peak_mem_mb": ...} first: the peak resident memory that warmup
    steps and a test() added), then for each line on stdin:
    {"train": N}: N optimize_params() calls; {"eval": N}: test() over N batches (in file order, half
    of them labelled abnormal: test() computes an AUC); the answer is {"wall": s, "cpu": s} (and, after
    training, the original's last "err_d"). The
    timing happens here, so the pipe's latency is not in it. Ends at end of input.
    """
    torch.set_num_threads(spec["threads"])
    Options, _, Data, load_model = load_original()
    flags = ["--model", spec["model"], "--manualseed", str(spec["seed"])]
    for name in ("isize", "nc", "nz", "ngf", "ndf", "batchsize"):
        flags += [f"--{name}", str(spec[name])]
    opt = parse_options(Options, flags)
    model = load_model(opt, Data(train=None, valid=None))
    model.noise.zero_()  # an uninitialised buffer, added to every input: zeros, as steps() has it
    g = torch.Generator().manual_seed(spec["seed"])
    batches = [torch.rand(spec["batchsize"], spec["nc"], spec["isize"], spec["isize"], generator=g) * 2 - 1
               for _ in range(4)]
    labels = torch.zeros(spec["batchsize"], dtype=torch.long)
    out = sys.stdout
    sys.stdout = sys.stderr  # the original prints as it goes: keep stdout for the answers

    def train(n):
        for i in range(n):
            model.set_input((batches[i % len(batches)], labels))
            model.optimize_params()

    def evaluate(n):
        images = torch.cat([batches[i % len(batches)] for i in range(n)])
        truth = (torch.arange(len(images)) >= len(images) // 2).long()
        model.data.valid = DataLoader(TensorDataset(images, truth), batch_size=spec["batchsize"], shuffle=False)
        model.test()

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) from here on, as tools/benchmark.py measures its own paths
    base = _peak_rss_mb()
    for _ in range(spec["warmup"]):
        train(1)
        evaluate(1)
    print(json.dumps({"ready": True, "peak_mem_mb": round(max(_peak_rss_mb() - base, 0.0), 1)}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        work, n = (train, request["train"]) if "train" in request else (evaluate, request["eval"])
        wall, cpu = time.perf_counter(), time.process_time()
        work(n)
        answer = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        if "train" in request:  # the original's own last discriminator loss: evidence that it trained
            answer["err_d"] = float(model.err_d)
        print(json.dumps(answer), file=out, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="tools/original/runner.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps", help="reference steps of a tiny model on seeded random data")
    p.add_argument("--spec", required=True, help="JSON file: model, seed, data_seed, sizes, steps, flags")
    p.add_argument("--out", required=True)
    p = sub.add_parser("train", help="the original's training on a folder dataset, then three scorings")
    p.add_argument("--dataroot", required=True, help="folder with train/0.normal, test/0.normal, test/1.abnormal")
    p.add_argument("--model", required=True, choices=("skipganomaly", "w_skipganomaly"))
    for name in ("niter", "batchsize", "isize", "seed"):
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--extra", default="", help="more of the original's flags, e.g. '--ngf 4 --ndf 4'")
    p.add_argument("--out", required=True)
    p = sub.add_parser("serve", help="time optimize_params() and test() on request (stdin/stdout JSON lines)")
    p.add_argument("--spec", required=True, help="JSON file: model, seed, sizes, threads, warmup")
    args = parser.parse_args()
    if args.command == "serve":
        with open(args.spec) as f:
            serve(json.load(f))
        return
    if args.command == "steps":
        with open(args.spec) as f:
            result = steps(json.load(f))
    else:
        result = train(args)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
