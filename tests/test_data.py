"""Loading datasets and the anomaly-detection splits (lib/data/datasets.py)."""
import shutil

import pytest
import torch

from lib.data import datasets as data
from lib.data.datasets import batches, class_names, load_split, resolve_class
from lib.errors import UserError
from lib.images import to_float
from tests.conftest import ABNORMAL_LEVEL, NORMAL_LEVEL, make_cifar, make_folder_dataset, make_idx


def quiet(lines):
    """A `log` that records lines instead of printing them."""
    return lines.append


def load(dataset, root, lines=None, **kwargs):
    kwargs = {"isize": 32, "nc": 3, **kwargs}
    return load_split(dataset, root, log=quiet([] if lines is None else lines), **kwargs)


def label(images):
    """The class make_cifar and make_idx store in each image's first pixel."""
    return images[:, 0, 0, 0]


def rows(images):
    return {bytes(image.numpy().tobytes()) for image in images}


@pytest.fixture
def cifar(tmp_path):
    make_cifar(tmp_path, n_per_class_train=50, n_per_class_test=10)
    return tmp_path


# ---------------------------------------------------------------- CIFAR-10

def test_cifar_leave_one_out_split_counts_match_the_original(cifar):
    lines = []
    split = load("cifar10", cifar, lines, abnormal_class="airplane")
    # The original's 45000 / 9000 + 6000 at 1/100 scale, then 10% of each part held out.
    assert split.counts() == ("train 405 normal | val 45 normal + 6 abnormal"
                              " | test 90 normal + 54 abnormal")
    assert len(lines) == 1 and split.counts() in lines[0]


def test_cifar_pickles_are_read_as_uint8_images_with_their_labels(cifar):
    split = load("cifar10", cifar, abnormal_class=0, val_ratio=0)
    assert split.train.dtype == torch.uint8 and split.train.shape == (450, 3, 32, 32)
    assert split.test_labels.dtype == torch.int64
    assert (label(split.train) != 0).all()
    assert (label(split.test_images)[split.test_labels == 1] == 0).all()
    assert (label(split.test_images)[split.test_labels == 0] != 0).all()
    assert split.classes[0] == "airplane" and len(split.classes) == 10


def test_cifar_one_class_trains_on_that_class_and_tests_on_all_others(cifar):
    split = load("cifar10", cifar, normal_class="cat")
    assert split.counts() == ("train 45 normal | val 5 normal + 9 abnormal"
                              " | test 10 normal + 81 abnormal")
    assert (label(split.train) == 3).all()
    assert (label(split.test_images[split.test_labels == 1]) != 3).all()


def test_validation_images_are_disjoint_from_test_and_train_and_reproducible_for_a_seed(cifar):
    split = load("cifar10", cifar, abnormal_class="bird")
    assert not rows(split.val_images) & rows(split.test_images)
    assert not rows(split.val_images) & rows(split.train)
    again = load("cifar10", cifar, abnormal_class="bird")
    other = load("cifar10", cifar, abnormal_class="bird", seed=1)
    assert torch.equal(split.val_images, again.val_images)
    assert torch.equal(split.test_images, again.test_images)
    assert not torch.equal(split.val_images, other.val_images)


def test_array_datasets_are_resized_and_converted_to_nc_with_one_notice(cifar):
    lines = []
    split = load("cifar10", cifar, lines, isize=16, nc=1, abnormal_class=0, val_ratio=0)
    assert split.train.shape == (450, 1, 16, 16) and split.train.dtype == torch.uint8
    assert sum("notice" in line for line in lines) == 1


def test_missing_cifar_without_network_says_where_to_put_the_archive(tmp_path, offline):
    with pytest.raises(UserError, match="cifar-10-python.tar.gz") as err:
        load("cifar10", tmp_path, abnormal_class=0)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- MNIST, Fashion-MNIST, digits

@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("subdir", ["MNIST/raw", ""], ids=["torchvision-layout", "in-dataroot"])
def test_mnist_idx_files_are_read_gzipped_or_not_in_both_layouts(tmp_path, subdir, gz):
    make_idx(tmp_path, subdir, n_train=20, n_test=10, gz=gz)
    split = load("mnist", tmp_path, isize=28, nc=1, abnormal_class="3", val_ratio=0)
    # Class 3 is training images 3 and 13 plus test image 3.
    assert split.counts() == ("train 18 normal | val 0 normal + 0 abnormal"
                              " | test 9 normal + 3 abnormal")
    assert split.train.shape == (18, 1, 28, 28)
    assert (label(split.test_images[split.test_labels == 1]) == 3).all()


def test_grey_array_datasets_become_rgb_at_isize(tmp_path):
    make_idx(tmp_path, "MNIST/raw", n_train=20, n_test=10)
    lines = []
    split = load("mnist", tmp_path, lines, isize=32, nc=3, normal_class=1, val_ratio=0)
    assert split.train.shape == (2, 3, 32, 32)
    assert torch.equal(split.train[:, 0], split.train[:, 2])
    assert sum("notice" in line for line in lines) == 1


def test_a_truncated_idx_file_raises_user_error_naming_it(tmp_path):
    folder = make_idx(tmp_path, "MNIST/raw", n_train=20, n_test=10, gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match=str(path)):
        load("mnist", tmp_path, nc=1, abnormal_class=0)


def test_missing_mnist_without_network_says_where_to_put_the_files(tmp_path, offline):
    with pytest.raises(UserError, match="MNIST/raw"):
        load("mnist", tmp_path, nc=1, abnormal_class=0)


@pytest.mark.dataset
@pytest.mark.skipif(not data.SYSTEM_FASHION_MNIST.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_read_from_the_debian_package(tmp_path):
    lines = []
    split = load("fashion-mnist", tmp_path, lines, isize=28, nc=1, abnormal_class="Ankle boot",
                 val_ratio=0)
    assert split.counts() == ("train 54000 normal | val 0 normal + 0 abnormal"
                              " | test 9000 normal + 7000 abnormal")
    assert split.train.shape == (54000, 1, 28, 28)
    assert str(data.SYSTEM_FASHION_MNIST) in lines[0]


def test_digits_are_scaled_to_uint8_with_a_fixed_stratified_split(tmp_path):
    split = load("digits", tmp_path, isize=8, nc=1, normal_class=0, val_ratio=0)
    other_seed = load("digits", tmp_path, isize=8, nc=1, normal_class=0, val_ratio=0, seed=7)
    zeros_in_test = int((split.test_labels == 0).sum())
    # A third of the 1797 images, and a third of the 178 zeros.
    assert len(split.test_images) == 599 and zeros_in_test in (59, 60)
    assert len(split.train) + zeros_in_test == 178
    assert split.train.max() == 255 and split.train.shape[1:] == (1, 8, 8)
    assert torch.equal(split.test_images, other_seed.test_images)


# ---------------------------------------------------------------- folder datasets

@pytest.mark.parametrize("nc, workers", [(1, 0), (3, 2)])
def test_folder_dataset_converts_mixed_images_to_nc_channels_and_isize(tmp_path, nc, workers):
    make_folder_dataset(tmp_path)
    lines = []
    split = load("custom", tmp_path, lines, isize=16, nc=nc, val_ratio=0, workers=workers)
    assert split.counts() == ("train 7 normal | val 0 normal + 0 abnormal"
                              " | test 4 normal + 3 abnormal")
    assert split.train.shape == (7, nc, 16, 16) and split.train.dtype == torch.uint8
    assert split.classes == []
    assert abs(split.train.float().mean() - NORMAL_LEVEL) < 20
    assert abs(split.test_images[split.test_labels == 1].float().mean() - ABNORMAL_LEVEL) < 20
    assert sum("notice: converted" in line for line in lines) == 1


def test_folder_dataset_holds_out_validation_from_train_and_abnormal(tmp_path):
    make_folder_dataset(tmp_path, n_train=10, n_test_normal=4, n_test_abnormal=10)
    split = load("custom", tmp_path, isize=8, val_ratio=0.2)
    assert split.counts() == ("train 8 normal | val 2 normal + 2 abnormal"
                              " | test 4 normal + 8 abnormal")


def test_dataroot_may_be_the_folder_dataset_itself(tmp_path):
    root = make_folder_dataset(tmp_path)
    assert len(load("any-name", root, isize=8, val_ratio=0).train) == 7


def test_missing_dataroot_raises_user_error_naming_it(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nope")):
        load("custom", tmp_path / "nope")


def test_unknown_dataset_raises_user_error_naming_the_layout(tmp_path):
    with pytest.raises(UserError, match="test/1.abnormal") as err:
        load("cifar-100", tmp_path)
    assert str(tmp_path / "cifar-100") in str(err.value)


def test_missing_abnormal_folder_raises_user_error_naming_it(tmp_path):
    root = make_folder_dataset(tmp_path)
    shutil.rmtree(root / "test" / "1.abnormal")
    with pytest.raises(UserError, match=str(root / "test" / "1.abnormal")):
        load("custom", tmp_path)


def test_folder_without_images_raises_user_error_naming_it(tmp_path):
    root = make_folder_dataset(tmp_path)
    for path in (root / "test" / "0.normal").rglob("img_*"):
        path.unlink()
    with pytest.raises(UserError, match=f"{root / 'test' / '0.normal'} holds no readable images"):
        load("custom", tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_training_image_raises_user_error_naming_its_path(tmp_path, damage):
    root = make_folder_dataset(tmp_path)
    path = root / "train" / "0.normal" / "img_2.png"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"not a png at all")
    with pytest.raises(UserError, match=str(path)):
        load("custom", tmp_path)


# ---------------------------------------------------------------- classes and arguments

@pytest.mark.parametrize("dataset, value, index", [
    ("fashion-mnist", "T-shirt/top", 0), ("fashion-mnist", "tshirttop", 0),
    ("fashion-mnist", "ankle_boot", 9), ("fashion-mnist", "ANKLE BOOT", 9),
    ("cifar10", "Airplane", 0), ("cifar10", "3", 3), ("cifar10", 3, 3),
    ("mnist", "7", 7), ("CIFAR-10", "truck", 9)])
def test_class_is_resolved_by_name_index_or_case(dataset, value, index):
    assert resolve_class(dataset, value) == index


@pytest.mark.parametrize("value", ["car", 10, "-1"])
def test_unknown_class_raises_user_error_listing_the_valid_names(value):
    with pytest.raises(UserError, match="automobile.*truck"):
        resolve_class("cifar10", value)


def test_folder_datasets_have_no_class_names():
    assert class_names("my-parts") == []
    with pytest.raises(UserError, match="folder dataset"):
        resolve_class("my-parts", "bolt")


@pytest.mark.parametrize("classes", [{}, {"abnormal_class": 0, "normal_class": 1}])
def test_array_datasets_need_exactly_one_of_abnormal_or_normal_class(tmp_path, classes):
    with pytest.raises(UserError, match="exactly one"):
        load("cifar10", tmp_path, **classes)


@pytest.mark.parametrize("bad", [{"val_ratio": 1.0}, {"nc": 2}, {"isize": 0}])
def test_bad_arguments_raise_user_error(tmp_path, bad):
    with pytest.raises(UserError):
        load("cifar10", tmp_path, abnormal_class=0, **bad)


# ---------------------------------------------------------------- batches and normalisation

def test_batches_cover_every_index_and_drop_last_drops_the_short_one():
    every = batches(10, 4, shuffle=False, drop_last=False, generator=None)
    assert [len(b) for b in every] == [4, 4, 2]
    kept = batches(10, 4, shuffle=False, drop_last=True, generator=None)
    assert torch.equal(torch.cat(kept), torch.arange(8))


def test_shuffled_batches_are_reproduced_from_a_saved_generator_state():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    first = batches(10, 3, shuffle=True, drop_last=False, generator=generator)
    generator.set_state(state)
    again = batches(10, 3, shuffle=True, drop_last=False, generator=generator)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(first), torch.arange(10))


def test_to_float_maps_uint8_to_minus_one_to_one():
    out = to_float(torch.tensor([0, 255, 51], dtype=torch.uint8), "cpu")
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([0, 255, 51]) / 255 * 2 - 1)
    assert out.min() == -1 and out.max() == 1


def test_mnist_gets_the_originals_normalisation_only_without_the_mnist_range_fix():
    from lib.images import MNIST_MEAN_STD, normalisation
    from lib.models import build_model
    from tests.helpers import make_opt
    assert normalisation("mnist") == normalisation("cifar10", False) == (0.5, 0.5)
    assert normalisation("mnist", mnist_range=False) == MNIST_MEAN_STD == (0.1307, 0.3081)
    pixels = torch.tensor([0, 255, 100], dtype=torch.uint8)
    assert torch.allclose(to_float(pixels, "cpu", MNIST_MEAN_STD), (pixels / 255 - 0.1307) / 0.3081)
    # The model carries its run's normalisation, so training, evaluation and predict.py agree.
    assert build_model(make_opt(dataset="mnist", nc=1, original=True), "cpu").pixel_mean_std == MNIST_MEAN_STD
    assert build_model(make_opt(dataset="mnist", nc=1), "cpu").pixel_mean_std == (0.5, 0.5)


def test_a_folder_beside_the_layout_is_refused_in_one_line_naming_it(tmp_path):
    # test/2.abnormal's images were silently left out of the data.
    dataset = make_folder_dataset(tmp_path, n_train=4, n_test_normal=2, n_test_abnormal=2)
    (dataset / "test" / "2.abnormal").mkdir()
    with pytest.raises(UserError, match=r"holds '2.abnormal', which a folder dataset does not read.*test/1\.abnormal"):
        load_split("custom", str(tmp_path), isize=8, nc=1)


def test_an_unreadable_image_whose_name_holds_a_newline_is_named_on_one_line(tmp_path):
    dataset = make_folder_dataset(tmp_path, n_train=4, n_test_normal=2, n_test_abnormal=2)
    (dataset / "train" / "0.normal" / "bro\nken.png").write_bytes(b"not a png")
    with pytest.raises(UserError) as refused:
        load_split("custom", str(tmp_path), isize=8, nc=1)
    assert "\n" not in str(refused.value) and "bro\\nken.png" in str(refused.value)


def test_a_large_scan_below_pils_refusal_is_read_without_its_warning(tmp_path):
    import warnings

    from PIL import Image

    from lib.data.folders import read_image
    path = tmp_path / "scan.png"
    Image.new("L", (10000, 9000)).save(path)  # 90 M pixels: PIL warns above ~89 M
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, recorded
        image, native = read_image(path, 1, 16)
    assert image.shape == (16, 16) and native == 1
    assert not [w for w in caught if w.category is Image.DecompressionBombWarning]


def test_an_image_over_the_pixel_bound_is_refused_from_its_header(tmp_path):
    import struct
    import zlib

    from lib.data.folders import read_image
    path = tmp_path / "bomb.png"
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    # 400 M grey pixels claimed; the pixels given are a few bytes (opening reads only the header)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    with pytest.raises(UserError, match="20000x20000 is over 178,956,970 pixels"):
        read_image(path, 1, 16)
