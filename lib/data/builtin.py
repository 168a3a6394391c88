"""The built-in datasets' files: found where train.py looks (--dataroot, Debian's Fashion-MNIST), downloaded
with torchvision where they are missing, and read as they are stored (uint8 images, int64 labels);
lib/data/datasets.py splits and resizes them.
"""
import contextlib
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from ..classes import builtin_dataset
from ..errors import UserError

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_SUBDIR = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist


def test_arrays(dataset: str, dataroot) -> tuple[torch.Tensor, torch.Tensor]:
    """A built-in dataset's test images (uint8 N x C x H x W, as stored) and labels, read as load_split reads
    them (downloaded where missing): what tools/sample_images.py writes out for predict.py to score."""
    _, _, x_test, y_test, _ = read_arrays(builtin_dataset(dataset), Path(dataroot))
    return x_test, y_test


def check_available(dataset: str, dataroot) -> None:
    """A built-in dataset's files read once (downloaded where they are missing and the network allows):
    a UserError saying where to put them when they cannot be. What a search checks before its trials
    start, each of which would otherwise try to download them on its own."""
    read_arrays(builtin_dataset(dataset), Path(dataroot))


def read_arrays(dataset, root):
    """(x_train, y_train, x_test, y_test, source) of a built-in dataset as stored: uint8, int64."""
    if dataset == "cifar10":
        return _read_cifar(root)
    if dataset == "digits":
        return _read_digits()
    dirs = [root / _IDX_SUBDIR[dataset], root]
    if dataset == "fashion-mnist":
        dirs.append(SYSTEM_FASHION_MNIST)
    paths = _find_idx(dirs)
    if paths is None:
        _download(dataset, root)
        paths = _find_idx(dirs[:1])
    if paths is None:
        raise UserError(f"{dataset} download left no IDX files in {dirs[0]}; put "
                        f"{', '.join(n + '.gz' for n in _IDX_NAMES)} there")
    images_train, labels_train, images_test, labels_test = (_read_idx(p) for p in paths)
    for images, labels, path in ((images_train, labels_train, paths[0]),
                                 (images_test, labels_test, paths[2])):
        if images.ndim != 3 or len(images) != len(labels):
            raise UserError(f"{path} does not match its labels file; re-download {dataset}")
    x_train, x_test = (torch.from_numpy(x[:, None]) for x in (images_train, images_test))
    y_train, y_test = (torch.from_numpy(y.astype(np.int64)) for y in (labels_train, labels_test))
    return x_train, y_train, x_test, y_test, paths[0].parent


def _find_idx(dirs):
    """The four IDX paths from the first folder holding all of them (plain preferred over .gz)."""
    for folder in dirs:
        found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None)
                 for n in _IDX_NAMES]
        if all(found):
            return found
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), gzipped or not, as a numpy array."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err}); re-download it") from err
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an IDX file of unsigned bytes; re-download it")
    header = 4 + 4 * data[3]
    dims = struct.unpack(f">{data[3]}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise UserError(f"{path} is truncated or corrupt; re-download it")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_cifar(root):
    """CIFAR-10 from torchvision's on-disk pickles, read directly (no md5 check)."""
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        _download("cifar10", root)
    parts = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _unpickle(folder / "test_batch")

    def arrays(batch_list):
        x = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batch_list])
        y = np.concatenate([np.asarray(b[b"labels"], np.int64) for b in batch_list])
        return torch.from_numpy(x.reshape(-1, 3, 32, 32)), torch.from_numpy(y)
    return (*arrays(parts), *arrays([test]), folder)


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")  # the files are Python 2 pickles
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err}); extract cifar-10-python.tar.gz "
                        f"into {path.parent.parent} again") from err


def _read_digits():
    """scikit-learn's bundled 8x8 digits with a fixed stratified 2/3 train, 1/3 test split."""
    from sklearn.datasets import load_digits  # imported here: slow, and only this dataset needs it
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None])
    y = torch.from_numpy(digits.target.astype(np.int64))
    # A fixed random_state, independent of --seed, so every run is tested on the same images.
    train, test = train_test_split(np.arange(len(y)), test_size=1 / 3, stratify=y.numpy(),
                                   random_state=0)
    train, test = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))
    return x[train], y[train], x[test], y[test], "sklearn.datasets.load_digits"


def _download(dataset, root):
    """Fetch a dataset with torchvision, or explain where to put the files when that fails."""
    where = {"cifar10": f"{root}/cifar-10-batches-py (extract cifar-10-python.tar.gz from "
                        f"https://www.cs.toronto.edu/~kriz/cifar.html into {root})",
             "mnist": f"{root}/MNIST/raw (the four {_IDX_NAMES[0]}.gz-style IDX files)",
             "fashion-mnist": f"{root}/FashionMNIST/raw (the four {_IDX_NAMES[0]}.gz-style IDX "
                              f"files) or install Debian's dataset-fashion-mnist"}[dataset]
    # The folders torchvision makes for the files: those it made go again if the download fails.
    made = [root / part for part in {"cifar10": (), "mnist": ("MNIST/raw", "MNIST"),
                                     "fashion-mnist": ("FashionMNIST/raw", "FashionMNIST")}[dataset]]
    made = [folder for folder in (*made, root, *root.parents) if not folder.exists()]
    try:
        import torchvision
        cls = {"cifar10": torchvision.datasets.CIFAR10, "mnist": torchvision.datasets.MNIST,
               "fashion-mnist": torchvision.datasets.FashionMNIST}[dataset]
        cls(str(root), train=True, download=True)  # fetches the training and test files alike
    except Exception as err:  # offline, proxy, disk full, bad archive: all mean "put it there"
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        # torchvision's "Error downloading X:" has its cause on the last line ("<urlopen error ...>").
        message = f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
        raise UserError(f"{dataset} not found and could not be downloaded ({message}); "
                        f"put it in {where}") from err
