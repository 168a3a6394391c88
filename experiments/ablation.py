"""What each fix changes: the original, the original plus each fix, every fix, every fix but one.

    python -m experiments.ablation                  # every step below, resumable, then the report
    python -m experiments.ablation --step scoring   # one step (see STEPS)
    python -m experiments.ablation --report         # only rebuild docs/original_ablation.md

Fashion-MNIST, leave-one-class-out, both models, at a budget a 2-core CPU affords (BUDGET).
A training variant is a `--fixes` value (lib/original.py); the fixes that change only how the
trained weights are scored or which epoch is kept are measured on the same runs, after each
epoch, so they cost no training:

- scoring: the networks as the run left them, scored three ways on the validation and the
  test split: eval mode (ours), training mode over batches in file order (normal images first,
  as the original scores: BatchNorm's batch statistics then differ between the normal and the
  abnormal batches), and training mode over shuffled batches (the last epoch only).
- selection: the epoch chosen on the validation split (ours) and on the test set (the original's).

Each finished run is one JSON file in results/ablation/runs/ and is never trained again, so
an interrupted study continues where it stopped. Runs that differ only in the fixes start from
the same seed, see the same images and are scored on the same test set.
"""
import copy
import sys
import time
from pathlib import Path

import torch

from experiments import parse_seeds
from experiments.ablation_report import DIFFERENCES, NOT_ABLATED, PAGE, write_report
from lib import options
from lib.classes import class_names
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.original import DEFAULT, FIXES
from lib.runs.collect import read_json
from lib.training.stopping import Interrupted

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "ablation"
SCRATCH = ROOT / "output" / "ablation"  # the runs' folders (checkpoints, logs): not kept
MODELS = ("skipganomaly", "w_skipganomaly")
# 32x32 like the original (its UNet needs at least 32), quarter width, 2 epochs, 12 000 normal
# training images and 1 200 validation normals: a run takes about a minute on a 2-core CPU.
BUDGET = ["--dataset", "fashion-mnist", "--isize", "32", "--nc", "3", "--ngf", "16", "--ndf", "16", "--nz", "32",
          "--niter", "2", "--batchsize", "64", "--device", "cpu", "--val_ratio", "0.1", "--score", "original"]
TRAIN_IMAGES, VAL_NORMALS = 12000, 1200
SEEDS = (0, 1, 2)
# Float rounding differs with the thread count, and a GAN run amplifies it: the same run on 1 and 2
# threads ended up to 0.08 AUROC apart. Every run therefore uses the same count; one thread each
# lets two processes (different --variants or --models) share a 2-core machine, 1.4x faster.
THREADS = 1
TABLE_CLASSES = ("T-shirt/top", "Dress", "Shirt", "Bag")  # the comparison table
ALWAYS_ON = ("own_data_order", "bce_with_logits")  # see NOT_ABLATED


def training_fixes(model: str) -> list[str]:
    return [name for name, fix in FIXES.items()
            if fix.training and fix.numbers and fix.concerns(model) and name not in NOT_ABLATED]


def variants(model: str, full: bool) -> dict[str, str]:
    """Variant name -> --fixes value: the original, all fixes, our default where it is not all fixes,
    and (`full`) one fix each way. The "original" variants keep ALWAYS_ON, so that every variant
    sees the same data order."""
    always = ",".join(name for name in ALWAYS_ON if FIXES[name].concerns(model))  # (train.py refuses others')
    found = {"original": always, "all fixes": "all"}
    if any(name not in DEFAULT for name in training_fixes(model)):
        found["our default"] = "default"
    if full:
        for name in training_fixes(model):
            found[f"original + {name}"] = f"{name},{always}"
            found[f"all fixes - {name}"] = f"all,-{name}"
    return found


STEPS = {  # step -> (classes, whether every variant or only the original and all fixes)
    "scoring": (TABLE_CLASSES, False),
    "fixes": (TABLE_CLASSES, True),
    "scoring-all-classes": (tuple(class_names("fashion-mnist")), False),
}


def run_file(model: str, variant: str, abnormal: str, seed: int) -> Path:
    slug = lambda text: "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()  # noqa: E731
    return RESULTS / "runs" / model / slug(variant) / slug(abnormal) / f"seed{seed}.json"


def subsample(split, generator: torch.Generator):
    """The budget's training images and validation normals, the same for every run of a class."""
    split.train = split.train[torch.randperm(len(split.train), generator=generator)[:TRAIN_IMAGES]]
    normal = (split.val_labels == 0).nonzero().flatten()
    keep = torch.cat([normal[torch.randperm(len(normal), generator=generator)[:VAL_NORMALS]],
                      (split.val_labels == 1).nonzero().flatten()])
    split.val_images, split.val_labels = split.val_images[keep], split.val_labels[keep]
    return split


def network_states(model) -> dict:
    return {name: copy.deepcopy(net.state_dict()) for name, net in model.networks.items()}


def load_network_states(model, states: dict) -> None:
    for name, net in model.networks.items():
        net.load_state_dict(states[name])


def scored_three_ways(trainer, row: dict, last: bool, trained: dict) -> dict[str, float]:
    """AUROCs of the networks as the epoch's training left them (`trained`, taken before the
    run's own evaluation): eval mode, training mode over batches in file order and (last epoch,
    test split) over shuffled batches. The run's own way is in `row` already.

    `trained` matters for a run that scores in training mode: its own passes moved BatchNorm's
    running statistics toward the test batches' (the last ones, abnormal images), and eval mode
    normalises with those statistics. Every way here starts from `trained`, and the run's state
    is put back afterwards; training itself never reads running statistics."""
    from lib.scoring.evaluate import evaluate
    from lib.scoring.metrics import roc_auc

    model, split, opt = trainer.model, trainer.split, trainer.opt
    own = "train_ordered" if trainer.policy.train_mode else "eval"
    found = {f"val_{own}": row["val_auroc"], f"test_{own}": row["test_auroc"]}
    saved = network_states(model)
    order = torch.randperm(len(split.test_labels), generator=torch.Generator().manual_seed(opt.manualseed))
    other = "eval" if own != "eval" else "train_ordered"
    wanted = [("val", other, split.val_images, split.val_labels),
              ("test", other, split.test_images, split.test_labels)]
    if last:
        wanted.append(("test", "train_shuffled", split.test_images[order], split.test_labels[order]))
    try:
        for name, way, images, labels in wanted:
            load_network_states(model, trained)
            scores = evaluate(model, images, opt.batchsize, trainer.device, train_mode=way != "eval")["score"]
            found[f"{name}_{way}"] = roc_auc(labels.numpy(), scores)
    finally:
        load_network_states(model, saved)
    return found


def train_one(model: str, fixes: str, abnormal: str, seed: int, log, extra: tuple[str, ...] = ()) -> dict:
    """Train one run in this process and return its per-epoch AUROCs (`extra`: more train.py flags)."""
    from lib.data.datasets import load_split
    from lib.display.visualizer import NullVisualizer
    from lib.models import build_model
    from lib.runs.setup import claim_run_dir, resolve_device, seed_everything, write_options
    from lib.training.trainer import Trainer

    folder = (SCRATCH / model / "_".join([fixes.replace(",", "_")[:60], *(f.strip("-") for f in extra)])
              / abnormal.replace("/", "-") / f"seed{seed}")
    opt = options.parse([*BUDGET, "--model", model, "--fixes", fixes, "--abnormal_class", abnormal,
                         "--manualseed", str(seed), "--outf", str(SCRATCH), "--name", "ablation", *extra])
    device = resolve_device(opt)
    seed_everything(opt)
    split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, abnormal_class=opt.abnormal_class,
                       val_ratio=opt.val_ratio, log=log)
    split = subsample(split, torch.Generator().manual_seed(0))
    epochs, trained = [], {}
    trainer = Trainer(opt, build_model(opt, device), split, device, folder, NullVisualizer(), log=log,
                      on_epoch=lambda t, row: epochs.append(
                          {"epoch": row["epoch"], **scored_three_ways(t, row, row["epoch"] == opt.niter, trained)}))
    own_evaluation = trainer.evaluate_splits

    def keep_trained_then_evaluate():  # the weights and statistics as training left them
        trained.update(network_states(trainer.model))
        return own_evaluation()

    trainer.evaluate_splits = keep_trained_then_evaluate
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        trainer.claim = claim_run_dir(folder, resume=False, overwrite=True)
        write_options(folder, opt, options.defaults())
        trainer.fit()
    finally:
        trainer.close()
        torch.set_num_threads(threads)
    return {"model": model, "fixes": fixes, "abnormal_class": abnormal, "seed": seed, "budget": BUDGET,
            "threads": THREADS, **({"extra": list(extra)} if extra else {}),
            "train_images": len(split.train), "val": split.counts(), "seconds": round(time.perf_counter() - start),
            "adversary_restarts": trainer.model.restarts, "epochs": epochs}


def run_step(step: str, seeds, models, only=(), log=print) -> None:
    """Train the step's missing runs; `only`: just these variant names (all when empty)."""
    classes, full = STEPS[step]
    for abnormal in classes:
        for model in models:
            for variant, fixes in variants(model, full).items():
                if only and variant not in only:
                    continue
                for seed in seeds:
                    path = run_file(model, variant, abnormal, seed)
                    if path.is_file():
                        continue
                    log(f"{step}: {model} | {variant} | {abnormal} | seed {seed}")
                    result = train_one(model, fixes, abnormal, seed, log=lambda *_: None)
                    result["variant"] = variant
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_text(path, _json(result))
                    last = result["epochs"][-1]
                    log(f"  {result['seconds']} s; last epoch test AUROC: eval {last['test_eval']:.3f}, "
                        f"train-mode ordered {last['test_train_ordered']:.3f}, "
                        f"shuffled {last['test_train_shuffled']:.3f}")


def finished_runs() -> list[dict]:
    return [read_json(path) for path in sorted((RESULTS / "runs").rglob("seed*.json"))]


def _json(value) -> str:
    import json
    return json.dumps(value, indent=1) + "\n"


def main(argv) -> int:
    p = OneLineParser(prog="python -m experiments.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--step", choices=tuple(STEPS), action="append",
                   help="run only these steps (default: all, in order)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds, separated by commas")
    p.add_argument("--models", default=",".join(MODELS), help="models, separated by commas")
    p.add_argument("--variants", default="",
                   help='only these variants, separated by commas, e.g. "all fixes - gp_of_mean"')
    p.add_argument("--report", action="store_true", help="only rebuild the report from the finished runs")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise UserError(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    only = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = {v for model in models for v in variants(model, True)}
    if set(only) - known:
        raise UserError(f"--variants: unknown {', '.join(sorted(set(only) - known))}; "
                        f"choose from {', '.join(sorted(known))}")
    if not args.report:
        try:
            for step in args.step or list(STEPS):
                run_step(step, seeds, models, only)
        except Interrupted as stop:  # as train.py: one line and 128 + the signal, no traceback
            print(f"interrupted: stopped by signal {stop.signal}; the finished runs are kept in {RESULTS / 'runs'}; "
                  "rerun the same command to continue (the interrupted run starts again)", file=sys.stderr)
            return 128 + stop.signal
    print(f"report: {write_report(finished_runs(), PAGE, RESULTS / 'runs.csv', DIFFERENCES)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
