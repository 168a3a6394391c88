"""Shared fixtures: one trained run for the whole session, tiny datasets in the real on-disk formats,
and an offline torchvision."""
import gzip
import pickle
import shutil
import struct
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.models import MODELS
from tests.helpers import ONE_EPOCH, RUN, train_cli

MODELS.add("tests.toy_model")  # a third model, only for the tests: every generic test runs on it too


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The run folder of `train.py ONE_EPOCH --outf out`, trained once per session: read it, never change it.

    Tests compare runs with it byte for byte: a test that changes torch's thread count must restore it."""
    cwd = tmp_path_factory.mktemp("trained_run")
    train_cli([*ONE_EPOCH, "--outf", "out"], cwd)
    return cwd / "out" / RUN


@pytest.fixture
def trained_run_copy(trained_run, tmp_path) -> Path:
    """A copy of `trained_run` at tmp_path/out/skipganomaly/digits/3, to change, delete, lock or resume.

    Its .lock file is copied as a finished run leaves it: the lock itself (an flock) is never copied,
    and --resume continues in the copy's own folder.
    """
    copy = tmp_path / "out" / RUN
    shutil.copytree(trained_run, copy)
    return copy


def make_cifar(root, n_per_class_train, n_per_class_test, seed=0):
    """Write CIFAR-10's python pickles under `root`/cifar-10-batches-py; return that folder.

    Images are random noise except pixel (channel 0, row 0, column 0), which holds the label,
    so a test can check labels after loading at 32x32.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n_per_class, name):
        labels = np.tile(np.arange(10), n_per_class)  # classes interleaved, as in the real files
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels
        return {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}

    train = batch(n_per_class_train, "training batches")
    for i, rows in enumerate(np.array_split(np.arange(len(train[b"labels"])), 5), start=1):
        part = {b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": [train[b"labels"][r] for r in rows], b"data": train[b"data"][rows],
                b"filenames": [train[b"filenames"][r] for r in rows]}
        _dump(folder / f"data_batch_{i}", part)
    _dump(folder / "test_batch", batch(n_per_class_test, "testing batch 1 of 1"))
    _dump(folder / "batches.meta", {b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                    b"label_names": [n.encode() for n in (
                                        "airplane automobile bird cat deer dog frog horse ship "
                                        "truck").split()]})
    return folder


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python 2 pickles


def make_idx(root, subdir, n_train, n_test, gz=True, seed=0):
    """Write MNIST-style IDX files (28x28, labels cycling 0..9) in `root`/`subdir`; return it.

    Pixel (0, 0) of each image holds its label; the rest is noise.
    """
    folder = Path(root) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


def _write_idx(path, array, gz):
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)


# (PIL mode, width, height, extension): grey, colour, RGBA, palette, 16-bit grey, odd sizes.
FOLDER_VARIANTS = [("L", 20, 13, ".png"), ("RGB", 32, 32, ".png"), ("RGBA", 40, 24, ".png"),
                   ("P", 17, 17, ".png"), ("RGB", 9, 50, ".jpg"), ("I;16", 24, 24, ".png"),
                   ("L", 64, 64, ".bmp")]
NORMAL_LEVEL, ABNORMAL_LEVEL = 200, 40  # mean brightness, so tests can tell the parts apart


def make_folder_dataset(root, name="custom", n_train=7, n_test_normal=4, n_test_abnormal=3):
    """Write a train/0.normal, test/0.normal, test/1.abnormal image folder dataset; return it.

    Images cycle through FOLDER_VARIANTS; one image per part sits in a nested subfolder. A text
    file, a macOS "._" file and a hidden checkpoint copy are added too: loading must skip them.
    """
    dataset = Path(root) / name
    index = 0
    for sub, n, level in (("train/0.normal", n_train, NORMAL_LEVEL),
                          ("test/0.normal", n_test_normal, NORMAL_LEVEL),
                          ("test/1.abnormal", n_test_abnormal, ABNORMAL_LEVEL)):
        folder = dataset / sub
        (folder / "nested").mkdir(parents=True)
        (folder / ".ipynb_checkpoints").mkdir()
        (folder / "notes.txt").write_text("not an image")
        (folder / "._img_0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
        _image("RGB", 8, 8, 0, 0).save(folder / ".ipynb_checkpoints" / "img_0.png")
        for i in range(n):
            mode, w, h, ext = FOLDER_VARIANTS[index % len(FOLDER_VARIANTS)]
            index += 1
            target = folder / ("nested" if i == 0 else "") / f"img_{i}{ext}"
            _image(mode, w, h, level, index).save(target)
    return dataset


def _image(mode, w, h, level, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(level, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    if mode == "I;16":
        return Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    rgb = Image.fromarray(pixels)
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


@pytest.fixture
def offline(monkeypatch):
    """A torchvision whose dataset downloads fail as they do without network."""
    def refuse(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n"
                           f"{urllib.error.URLError('no network')}")
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=refuse, MNIST=refuse, FashionMNIST=refuse)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
