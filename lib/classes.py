"""The built-in datasets and their class names: what options need, without importing torch.

Kept apart from `lib.data.datasets` so that checking a command line takes a fraction of a second.
"""
import operator

from .errors import UserError

DATASETS = ("cifar10", "mnist", "fashion-mnist", "digits")  # any other name = folder dataset

_DIGITS = [str(i) for i in range(10)]
_CLASSES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
    "mnist": _DIGITS,
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "digits": _DIGITS,
}


def _key(text) -> str:
    """Comparison key for names: "T-shirt/top" == "tshirttop", "ankle_boot" == "Ankle boot"."""
    return "".join(ch for ch in str(text).lower() if ch not in " -_/")


def builtin_dataset(dataset: str) -> str | None:
    """The built-in dataset meant by `dataset` ("CIFAR-10" -> "cifar10"); None for a folder."""
    return next((name for name in DATASETS if _key(name) == _key(dataset)), None)


INSPECTION = "mvtec"  # inspection data with masks, in the MVTec AD layout (lib/data/mvtec.py)


def inspection_dataset(dataset: str) -> bool:
    """Whether `dataset` names inspection data in the MVTec AD layout ("MVTec-AD" too)."""
    return _key(dataset) in (INSPECTION, INSPECTION + "ad")


def class_names(dataset: str) -> list[str]:
    """The dataset's class names; [] for a folder dataset."""
    builtin = builtin_dataset(dataset)
    return list(_CLASSES[builtin]) if builtin else []


def resolve_class(dataset: str, value) -> int:
    """Class index from a name (case, spaces, '-', '_', '/' ignored) or an index (3 or "3")."""
    names = class_names(dataset)
    if not names:
        raise UserError(f"dataset {dataset!r} is a folder dataset without classes; its labels come "
                        f"from test/0.normal and test/1.abnormal, so drop the class option")
    text = str(value).strip()
    try:  # anything that reads as an integer is an index ("-1" too: not the name "1")
        index = int(text) if isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        index = next((i for i, name in enumerate(names) if _key(name) == _key(text)), None)
    if index is not None and 0 <= index < len(names) and not isinstance(value, bool):
        return index
    listing = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    raise UserError(f"unknown class {value!r} for {dataset}; use a name or index among: {listing}")
