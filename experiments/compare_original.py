"""Ours against the original code on identical Fashion-MNIST data: test AUROC of the last epoch.

    python -m experiments.compare_original --classes "T-shirt/top,Shirt" \\
        --models skipganomaly,w_skipganomaly --train_images 12000 --niter 1 --seed 0 \\
        --out results/compare_original/

For each abnormal class, one folder dataset of PNG files that both read (OUT/data/<class>/):
train/0.normal holds a seeded sample of --train_images training images of the nine other classes;
test/0.normal every normal test image, then test/1.abnormal every image of the abnormal class,
training and test images alike (the original's protocol for its built-in datasets; our
leave-one-class-out split). The 28x28 grey images are resized once here (lib/data/datasets.py's bilinear
resize) and stored as --isize RGB PNGs, so neither program resizes: both read the same pixels.

On it, for each model, with the same flags (batch 64, default widths unless given, one seed):
  ours             train.py in its default mode (every fix), --val_ratio 0;
  ours --original  train.py --original (only once train.py accepts that flag);
  original         the original's own code (tools/original/runner.py train), which reports the
                   AUC of training-mode networks over test batches in file order (normal first),
                   and its final weights scored again over shuffled batches and in eval mode.
Every finished run is kept as OUT/results/<class>/<model>/<system>.json and reused by the next
invocation with the same settings, so an interrupted comparison continues where it stopped.
The table is printed and written to OUT/table.md.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from experiments.fmnist_setup import slug
from lib.classes import class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.runs.collect import shown
from tools.original.launch import DEFAULT_ORIGINAL_CODE, check_original_code, run_runner

ROOT = Path(__file__).resolve().parent.parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
MODELS = ("skipganomaly", "w_skipganomaly")
# system -> extra train.py flags; "original" is the original's code, run by tools/original/runner.py.
OURS = {"ours": [], "ours_original": ["--original"]}
ORIGINAL_MODES = {"as_original": "original", "train_mode_shuffled": "original, shuffled test batches",
                  "eval_mode": "original, eval mode"}


def differences(stored, wanted: dict) -> str:
    """What a stored file's settings have that the command line does not: "train_images 256, not 255"."""
    stored = stored if isinstance(stored, dict) else {}
    return ", ".join(f"{k} {stored.get(k)}, not {v}" for k, v in wanted.items() if stored.get(k) != v)


# ---------------------------------------------------------------- the data both read

def prepare_data(root: Path, abnormal: str, settings: dict) -> Path:
    """OUT/data/<class>/ with train/0.normal, test/0.normal, test/1.abnormal; made once per settings."""
    import torch

    from lib.data.datasets import load_split

    folder = root / slug(abnormal)
    manifest_path = folder / "manifest.json"
    wanted = {"dataset": "fashion-mnist", "abnormal_class": abnormal,
              **{k: settings[k] for k in ("train_images", "test_images", "data_seed", "isize")}}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} != wanted:
            raise UserError(f"{shown(folder)} holds data made with other settings ({differences(manifest, wanted)}); "
                            "choose another --out or delete that folder")
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # a folder without a manifest was interrupted
    split = load_split("fashion-mnist", dataroot=FASHION_MNIST, isize=settings["isize"], nc=3,
                       abnormal_class=abnormal, val_ratio=0, log=lambda *_: None)
    generator = torch.Generator().manual_seed(settings["data_seed"])
    normal = split.train
    if settings["train_images"] > len(normal):
        raise UserError(f"--train_images {settings['train_images']} is more than the {len(normal)} normal "
                        f"training images of the classes other than {abnormal}; lower it")
    keep = torch.randperm(len(normal), generator=generator)[:settings["train_images"]].sort().values
    parts = {"train/0.normal": normal[keep]}
    test_normal = split.test_images[split.test_labels == 0]
    test_abnormal = split.test_images[split.test_labels == 1]
    if settings["test_images"]:  # a smaller test set (for quick checks): the same share of each label
        n_normal = round(settings["test_images"] * len(test_normal) / len(split.test_labels))
        test_normal = test_normal[torch.randperm(len(test_normal), generator=generator)[:n_normal].sort().values]
        n_abnormal = settings["test_images"] - n_normal
        test_abnormal = test_abnormal[torch.randperm(len(test_abnormal), generator=generator)[:n_abnormal]
                                      .sort().values]
    parts.update({"test/0.normal": test_normal, "test/1.abnormal": test_abnormal})
    for sub, images in parts.items():
        (folder / sub).mkdir(parents=True)
        # Zero-padded names: sorted file order (how both read a folder) is the order above.
        for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            Image.fromarray(image).save(folder / sub / f"{i:05d}.png")
    counts = {sub: len(images) for sub, images in parts.items()}
    write_text(manifest_path, json.dumps({**wanted, "counts": counts}, indent=1) + "\n")  # last: marks it done
    return folder


# ---------------------------------------------------------------- the runs

def accepts_original_flag() -> bool:
    """Whether train.py has --original (the original's behaviour, defects included)."""
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True)
    return re.search(r"(^|[\s\[])--original[\s\],]", proc.stdout) is not None


def width_flags(settings: dict) -> list[str]:
    """--ngf/--ndf/--nz when given: both programs share these names and defaults (64, 64, 100)."""
    return [item for name in ("ngf", "ndf", "nz") if settings[name] is not None
            for item in (f"--{name}", str(settings[name]))]


def run_original(original_code: Path, data: Path, model: str, settings: dict, log: Path, env: dict) -> dict:
    args = ["train", "--dataroot", str(data.resolve()), "--model", model, "--niter", str(settings["niter"]),
            "--batchsize", str(settings["batchsize"]), "--isize", str(settings["isize"]),
            "--seed", str(settings["seed"]), "--extra", " ".join(width_flags(settings))]
    result = run_runner(original_code, args, log=log, env=env)
    # Every step's losses and the last histogram are the parity test's (tests/test_original_e2e.py); a
    # comparison of AUROCs keeps its result files small without them.
    kept = {k: v for k, v in result.items() if k not in ("steps", "histogram_csv")}
    return {"auroc": result["final_aucs"]["as_original"], **kept}


def run_ours(out: Path, data: Path, model: str, system: str, settings: dict, log: Path, env: dict) -> dict:
    name = f"{data.name}/{model}/{system}/seed{settings['seed']}"  # seeds can run side by side
    command = [sys.executable, str(ROOT / "train.py"), "--dataset", data.name, "--dataroot", str(data.parent.resolve()),
               "--model", model, "--niter", str(settings["niter"]), "--batchsize", str(settings["batchsize"]),
               "--isize", str(settings["isize"]), "--manualseed", str(settings["seed"]), "--device", "cpu",
               "--val_ratio", "0", *width_flags(settings), *OURS[system],
               # Our own folder: an unfinished run there (no result file) is done again.
               "--outf", str((out / "ours").resolve()), "--name", name, "--overwrite"]
    log.parent.mkdir(parents=True, exist_ok=True)
    # In a scratch folder: train.py writes ./histogram.csv, as the original did.
    with tempfile.TemporaryDirectory(prefix="compare-ours-") as work, open(log, "w") as f:
        proc = subprocess.run(command, cwd=work, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **env})
    if proc.returncode != 0:
        last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"train.py failed for {name} with exit code {proc.returncode}: {last} "
                        f"(its full output: {shown(log)})")
    results = json.loads((out / "ours" / name / "results.json").read_text())
    last = results["last"]
    return {"auroc": last["test"][results["metric"]], "epoch": last["epoch"], "test": last["test"]}


def one_result(out: Path, original_code: Path, data: Path, abnormal: str, model: str, system: str,
               settings: dict, env: dict) -> dict:
    """The result of one (class, model, system): read when already there, else run (with `env` added to
    the environment) and saved."""
    path = out / "results" / data.name / model / f"{system}.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("settings") != settings:
            changed = differences(result.get("settings"), settings)
            raise UserError(f"{shown(path)} was made with other settings ({changed}); "
                            "choose another --out or delete it")
        return result
    what = f"{abnormal} | {model} | {system}"
    print(f"[{time.strftime('%H:%M:%S')}] {what} ...", flush=True)
    start = time.time()
    log = out / "logs" / data.name / model / f"{system}.log"
    if system == "original":
        result = run_original(original_code, data, model, settings, log, env)
    else:
        result = run_ours(out, data, model, system, settings, log, env)
    result = {**result, "abnormal_class": abnormal, "model": model, "system": system, "settings": settings,
              "seconds": time.time() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1) + "\n")
    print(f"    test AUROC {result['auroc']:.4f} ({result['seconds']:.0f} s)", flush=True)
    return result


# ---------------------------------------------------------------- the table

def table(results: dict, classes: list[str], models: list[str], settings: dict, original_flag: bool) -> str:
    """Markdown: one row per (class, model), one column per system and scoring of the original."""
    def cell(value):
        return "—" if value is None else f"{value:.4f}"

    header = ["abnormal class", "model", "ours", "ours --original", *ORIGINAL_MODES.values()]
    lines = [
        "# Ours vs the original on identical Fashion-MNIST data",
        "",
        f"{settings['train_images']} normal training images (seeded sample, data seed {settings['data_seed']}), "
        f"{settings['niter']} epoch(s), batch {settings['batchsize']}, {settings['isize']}x{settings['isize']}, "
        f"widths {' '.join(width_flags(settings)) or 'default'}, seed {settings['seed']}; "
        "test AUROC of the last epoch.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for abnormal in classes:
        for model in models:
            runs = {system: results.get((abnormal, model, system)) for system in ("ours", "ours_original", "original")}
            original = runs["original"]
            row = [abnormal, model, cell(runs["ours"] and runs["ours"]["auroc"]),
                   cell(runs["ours_original"] and runs["ours_original"]["auroc"]),
                   *(cell(original and original["final_aucs"][mode]) for mode in ORIGINAL_MODES)]
            lines.append("| " + " | ".join(row) + " |")
    noise = sorted({r["noise_after_training"]["all_zero"] for r in results.values() if r["system"] == "original"})
    lines += [
        "",
        "- ours: train.py in its default mode (every fix), no validation split (`--val_ratio 0`).",
        "- ours --original: train.py `--original`, the original's behaviour reproduced."
        if original_flag else "- ours --original: not run: this train.py has no `--original` flag yet.",
        "- original: the original's own code and its own report: training-mode networks, test batches in "
        "file order (normal images first).",
        "- original, shuffled test batches: its final weights, training mode, the test images in seeded "
        "shuffled batches.",
        "- original, eval mode: its final weights with BatchNorm's running statistics (netg.eval(), netd.eval()).",
        f"- The original's noise buffer (uninitialised memory) was all zeros after training: "
        f"{', '.join(map(str, noise)) or 'n/a'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    p = OneLineParser(prog="python -m experiments.compare_original", description=__doc__.split("\n\n")[0])
    p.add_argument("--original-code", default=str(DEFAULT_ORIGINAL_CODE),
                   help="folder of the original code (default: %(default)s)")
    p.add_argument("--classes", default="T-shirt/top,Shirt", help="abnormal classes, comma-separated")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, among " + ", ".join(MODELS))
    p.add_argument("--train_images", type=int, default=12000, help="normal training images (a seeded sample)")
    p.add_argument("--test_images", type=int, default=0,
                   help="0: the whole test set; N: a seeded sample of N, normal and abnormal in proportion")
    p.add_argument("--data_seed", type=int, default=0, help="seed of the samples of images")
    p.add_argument("--niter", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="training seed (--manualseed of both)")
    p.add_argument("--batchsize", type=int, default=64)
    p.add_argument("--isize", type=int, default=32)
    for name in ("ngf", "ndf", "nz"):
        p.add_argument(f"--{name}", type=int, default=None, help="network size for both (default: theirs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run (OMP_NUM_THREADS); 0: torch's choice")
    p.add_argument("--out", default="results/compare_original", help="folder for data, runs and table.md")
    args = p.parse_args(argv)

    original_code = check_original_code(args.original_code)
    names = class_names("fashion-mnist")
    classes = [names[resolve_class("fashion-mnist", c)] for c in args.classes.split(",") if c.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models or not classes:
        raise UserError(f"--models must name some of {', '.join(MODELS)} and --classes some class "
                        f"(got models {args.models!r}, classes {args.classes!r})")
    for name in ("train_images", "niter", "batchsize", "isize"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be positive (got {getattr(args, name)})")
    if args.test_images < 0 or not 0 <= args.threads <= 4 * len(os.sched_getaffinity(0)):  # (0: all; torch's)
        raise UserError(f"--test_images must be 0 or more and --threads 0 to {4 * len(os.sched_getaffinity(0))} "
                        f"(4 per core here; got {args.test_images}, {args.threads})")
    if args.isize % 16:  # the original asserts it, after the data are written and its run has started
        raise UserError(f"--isize {args.isize}: the original's networks take a multiple of 16 (16, 32, 64...)")
    settings = {name: getattr(args, name) for name in ("train_images", "test_images", "data_seed", "niter", "seed",
                                                       "batchsize", "isize", "ngf", "ndf", "nz")}
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --out {shown(out)} ({err.strerror}); choose another folder") from None

    # Thread count changes no result worth comparing, so it is not among the settings.
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    # "ours --original": run only once train.py accepts --original; the table says when it did not.
    original_flag = accepts_original_flag()
    systems = ["original", "ours", *(["ours_original"] if original_flag else [])]
    results = {}
    for abnormal in classes:
        data = prepare_data(out / "data", abnormal, settings)
        for model in models:
            for system in systems:
                results[(abnormal, model, system)] = one_result(out, original_code, data, abnormal, model, system,
                                                                settings, env)
    text = table(results, classes, models, settings, original_flag)
    write_text(out / "table.md", text)
    print(text, end="")
    print(f"written: {shown(out / 'table.md')}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
