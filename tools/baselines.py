"""Classical anomaly-detection baselines on exactly the split train.py uses.

    python -m tools.baselines --dataset fashion-mnist --nc 1 --classes bag [--out results/baselines.csv]
    python -m tools.baselines --dataset mvtec --dataroot ROOT --nc 3 --category weave grain

- PCA: reconstruction error of each test image from the principal components
  of the normal training images (enough to explain --pca_variance of the variance).
- kNN: mean Euclidean distance of each test image to its --k nearest normal
  training images, on raw pixels.
- On inspection data (--dataset mvtec) also the per-pixel Gaussian of the normal training images:
  each pixel's squared z-score is its map (smoothed as the runs' maps, σ chosen on the validation
  masks), the map's maximum the image's score; pixel AUROC and PRO beside image AUROC.

Both see the same images as the GAN (same resizing, channels, protocol,
validation hold-out) and are scored with the same metric functions, so a table
can show whether the GAN adds anything.
"""
import csv
import sys
import time
from pathlib import Path

import torch

from lib.classes import INSPECTION, builtin_dataset, inspection_dataset
from lib.data.datasets import class_names, load_split, resolve_class
from lib.data.mvtec import categories, category_root
from lib.errors import OneLineParser, UserError, run_cli
from lib.files import write_text
from lib.options import C_INT_MAX, check_image_shape
from lib.resources import check_fits
from lib.runs.collect import check_writable, shown
from lib.runs.folder import refuse_inside_run
from lib.scoring.metrics import all_metrics

# The first line of every table this tool writes: an --out that starts so is its own, replaced unasked.
HEADER_START, HEADER_END = "dataset,protocol,class,method,", ",seconds"
# Images of each built-in dataset (train + test), to refuse a size that cannot fit before loading it.
IMAGES = {"cifar10": 60_000, "mnist": 70_000, "fashion-mnist": 70_000, "digits": 1_797}


def flatten(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) → float (N, C·H·W) in [-1, 1], the GAN's input scale."""
    return images.flatten(1).float() / 127.5 - 1


def pca_scores(train: torch.Tensor, test: torch.Tensor, variance: float) -> torch.Tensor:
    """Squared reconstruction error from the top components explaining `variance`."""
    mean = train.mean(0)
    _, s, v = torch.linalg.svd(train - mean, full_matrices=False)
    explained = torch.cumsum(s**2, 0) / (s**2).sum()
    k = int(torch.searchsorted(explained, torch.tensor(variance)).item()) + 1
    basis = v[:k].T
    centred = test - mean
    return (centred - centred @ basis @ basis.T).pow(2).mean(1)


def knn_scores(train: torch.Tensor, test: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Mean distance to the k nearest training images, in chunks to bound memory."""
    out = []
    for start in range(0, len(test), chunk):
        d = torch.cdist(test[start:start + chunk], train)
        out.append(d.topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out)


def gaussian_baseline(split) -> dict[str, float]:
    """Test image AUROC, pixel AUROC and PRO of the per-pixel Gaussian of the normal training images, its
    maps smoothed by the σ the validation masks choose (lib/scoring/localise.py), as the runs' maps are."""
    from lib.scoring.localise import choose_sigma, located_metrics, smoothed
    from lib.scoring.metrics import roc_auc

    train = split.train.double()
    mean, std = train.mean(0), train.std(0).clamp_min(1.0)  # (at least one grey level: flat pixels)

    def maps(images):
        return (((images.double() - mean) / std) ** 2).mean(1).numpy()
    sigma, _ = choose_sigma(split.val_masks.numpy(), maps(split.val_images))
    test = smoothed(maps(split.test_images), sigma)
    return {"auroc": roc_auc(split.test_labels.numpy(), test.reshape(len(test), -1).max(1)),
            **located_metrics(split.test_masks.numpy(), test)}


def run(opt, targets: list[str]) -> list[dict]:
    """Both baselines on each target class; with --out, the file is rewritten after each class."""
    rows = []
    inspection = inspection_dataset(opt.dataset)
    for cls in targets:
        protocol = ({"category": cls} if inspection else
                    {"normal_class": cls} if opt.protocol == "one-class" else {"abnormal_class": cls})
        split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, val_ratio=opt.val_ratio,
                           log=lambda line: None, **protocol)
        if opt.k > len(split.train):
            raise UserError(f"--k {opt.k} is more than the {len(split.train)} normal training images of "
                            f"{opt.dataset} with class {cls} {'normal' if 'normal_class' in protocol else 'left out'}"
                            f": use at most {len(split.train)}")
        train, test = flatten(split.train), flatten(split.test_images)
        labels = split.test_labels.numpy()
        methods = [("pca", lambda: all_metrics(labels, pca_scores(train, test, opt.pca_variance).numpy())),
                   ("knn", lambda: all_metrics(labels, knn_scores(train, test, opt.k).numpy()))]
        if inspection:  # where the defects are: a per-pixel model, the maps' metrics (the others have none)
            methods.append(("gaussian", lambda: gaussian_baseline(split)))
        for method, scorer in methods:
            start = time.time()
            metrics = scorer()
            if inspection:
                metrics = {k: metrics.get(k, float("nan")) for k in ("auroc", "pixel_auroc", "pro")}
            rows.append({"dataset": opt.dataset, "protocol": "inspection" if inspection else opt.protocol,
                         "class": cls, "method": method, **metrics, "seconds": round(time.time() - start, 2)})
            print(f"{cls:>12} {method}: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items()
                                                     if k in ("auroc", "pixel_auroc", "pro") and v == v), flush=True)
        if opt.out:  # after every class, so a failure later loses none of the finished ones
            keys = list(rows[0])
            lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
            write_text(Path(opt.out), "\n".join(lines) + "\n")
    return rows



def check(opt) -> list[str]:
    """The target classes (categories of inspection data), in order; UserError for values with no meaningful
    result."""
    if inspection_dataset(opt.dataset):
        return check_inspection(opt)
    if opt.category:
        raise UserError(f"--category is read only with --dataset {INSPECTION}: drop it, or give --dataset {INSPECTION}")
    classes = class_names(opt.dataset)
    if not classes:
        raise UserError(f"--dataset {shown(opt.dataset)}: baselines need a dataset with classes (cifar10, mnist, "
                        "fashion-mnist, digits)")
    check_common(opt)
    images = IMAGES[builtin_dataset(opt.dataset)]
    check_fits(images * opt.nc * opt.isize ** 2 * 5,  # uint8 images, then float32 rows
               f"--isize {opt.isize} ({images} images of {opt.nc}x{opt.isize}x{opt.isize})", "use a smaller --isize")
    targets = [classes[resolve_class(opt.dataset, name)] for name in (opt.classes or classes)]
    return list(dict.fromkeys(targets))


def check_inspection(opt) -> list[str]:
    """--dataset mvtec: the categories named (each must be one under --dataroot)."""
    if opt.classes:
        raise UserError("--classes names classes; inspection data has categories: give --category NAME ...")
    if not opt.category:
        found = ", ".join(categories(Path(opt.dataroot))) or "none"
        raise UserError(f"--dataset {INSPECTION} needs --category NAME ... (under {opt.dataroot}: {found})")
    for name in opt.category:
        category_root(Path(opt.dataroot), name)
    check_common(opt)
    return list(dict.fromkeys(opt.category))


def check_common(opt) -> None:
    check_image_shape(opt.isize, opt.nc)
    if not 1 <= opt.k <= C_INT_MAX:
        raise UserError(f"--k {opt.k}: use a whole number of neighbours from 1 to the training images")
    if not 0 < opt.pca_variance <= 1:
        raise UserError(f"--pca_variance {opt.pca_variance}: use a share of the variance in (0, 1], e.g. 0.9")
    if not 0 <= opt.val_ratio < 1:
        raise UserError(f"--val_ratio {opt.val_ratio}: use a share in [0, 1), as train.py (default 0.1)")
    if opt.out is not None and not opt.out.strip():
        raise UserError("--out is empty: give the CSV file to write, or leave --out out")
    if opt.out:
        check_out(opt)


def check_out(opt) -> None:
    """--out may replace an earlier table of this tool, nothing else unasked, and never a run's file (its
    metrics.csv is the run's record of every epoch), through links too: as tools.collect_results."""
    out = Path(opt.out)
    refuse_inside_run(out)
    if (out.exists() or out.is_symlink()) and not out.is_dir() and not opt.overwrite and not earlier_table(out):
        raise UserError(f"--out {shown(out)} already exists and is not a table of tools.baselines: give another "
                        "--out, or add --overwrite to replace it")
    check_writable(out, "--out")


def check_kept_rows(opt, targets: list[str]) -> None:
    """An earlier table of this tool at --out is replaced only by one that has all its rows again: a table of
    other classes (or another dataset or protocol) is the user's earlier result, kept unless --overwrite."""
    out = Path(opt.out)
    if opt.overwrite or not earlier_table(out):
        return
    with open(out, newline="", encoding="utf-8", errors="replace") as f:
        held = {(r.get("dataset"), r.get("protocol"), r.get("class")) for r in csv.DictReader(f)}
    protocol = "inspection" if inspection_dataset(opt.dataset) else opt.protocol
    dropped = sorted(held - {(opt.dataset, protocol, target) for target in targets}, key=str)
    if dropped:
        shown_rows = ", ".join(" ".join(map(str, row)) for row in dropped[:3]) + (" ..." if len(dropped) > 3 else "")
        raise UserError(f"--out {shown(out)} holds rows this table would drop ({shown_rows}): give another --out, "
                        "name those classes too, or add --overwrite")


def earlier_table(path: Path) -> bool:
    """Whether `path` is a regular file whose first line is this tool's header (a pipe is never opened)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            first = f.read(4096).split(b"\n", 1)[0].decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith(HEADER_START) and first.endswith(HEADER_END)


def main(argv):
    p = OneLineParser(prog="python -m tools.baselines", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--dataroot", default="./data")
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--nc", type=int, default=1)
    p.add_argument("--val_ratio", type=float, default=0.1, help="as train.py, so the test set is the same")
    p.add_argument("--protocol", choices=("leave-one-out", "one-class"), default="leave-one-out")
    p.add_argument("--classes", nargs="*", help="classes to run (default: all)")
    p.add_argument("--category", nargs="+", help="with --dataset mvtec: the categories to run")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--pca_variance", type=float, default=0.9)
    p.add_argument("--out", default=None, metavar="FILE.csv",
                   help="CSV file to write (rewritten after each class); an existing one only if it is an earlier "
                        "table of this tool, or with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="let --out replace an existing file that is not a "
                                                            "table of this tool (never a run folder's)")
    p.add_argument("--verbose", action="store_true")
    opt = p.parse_args(argv)
    targets = check(opt)
    if opt.out:
        check_kept_rows(opt, targets)
    torch.set_grad_enabled(False)
    run(opt, targets)
    if opt.out:
        print(f"wrote {shown(opt.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
