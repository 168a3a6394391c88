"""Classical anomaly-detection baselines on exactly the split train.py uses.

    python baselines.py --dataset fashion-mnist --nc 1 --abnormal_class bag [--out results/baselines.csv]

- PCA: reconstruction error of each test image from the principal components
  of the normal training images (enough to explain --pca_variance of the variance).
- kNN: mean Euclidean distance of each test image to its --k nearest normal
  training images, on raw pixels.

Both see the same images as the GAN (same resizing, channels, protocol,
validation hold-out) and are scored with the same metric functions, so a table
can show whether the GAN adds anything.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from lib.checkpoint import write_text
from lib.data import class_names, load_split, resolve_class
from lib.errors import UserError, run_cli
from lib.metrics import all_metrics


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


def run(opt) -> list[dict]:
    classes = class_names(opt.dataset)
    wanted = opt.classes or classes
    rows = []
    for name in wanted:
        cls = classes[resolve_class(opt.dataset, name)]
        protocol = {"normal_class": cls} if opt.protocol == "one-class" else {"abnormal_class": cls}
        split = load_split(opt.dataset, opt.dataroot, opt.isize, opt.nc, val_ratio=opt.val_ratio,
                           log=lambda line: None, **protocol)
        train, test = flatten(split.train), flatten(split.test_images)
        labels = split.test_labels.numpy()
        for method, scorer in (("pca", lambda: pca_scores(train, test, opt.pca_variance)),
                               ("knn", lambda: knn_scores(train, test, opt.k))):
            start = time.time()
            metrics = all_metrics(labels, scorer().numpy())
            rows.append({"dataset": opt.dataset, "protocol": opt.protocol, "class": cls, "method": method,
                         **metrics, "seconds": round(time.time() - start, 2)})
            print(f"{cls:>12} {method}: auroc {metrics['auroc']:.4f}", flush=True)
    return rows


def main(argv):
    p = argparse.ArgumentParser(prog="baselines.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--dataroot", default="./data")
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--nc", type=int, default=1)
    p.add_argument("--val_ratio", type=float, default=0.1, help="as train.py, so the test set is the same")
    p.add_argument("--protocol", choices=("leave-one-out", "one-class"), default="leave-one-out")
    p.add_argument("--classes", nargs="*", help="classes to run (default: all)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--pca_variance", type=float, default=0.9)
    p.add_argument("--out", default=None, help="CSV file to write")
    p.add_argument("--verbose", action="store_true")
    opt = p.parse_args(argv)
    if not class_names(opt.dataset):
        raise UserError(f"--dataset {opt.dataset}: baselines need a dataset with classes (cifar10, mnist, "
                        "fashion-mnist, digits)")
    torch.set_grad_enabled(False)
    rows = run(opt)
    if opt.out:
        keys = list(rows[0])
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]
        write_text(Path(opt.out), "\n".join(lines) + "\n")
        print(f"wrote {opt.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
