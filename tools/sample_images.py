"""A few test images of a built-in dataset as PNG files, to try predict.py on.

    python -m tools.sample_images --dataset digits --out new_images [--count 10] [--classes 0 3]

Writes `<class>_<n>.png` at the dataset's own size (digits: 8x8 grey), taken evenly across its test
split, or from the classes named. These are the test images a run on that dataset was evaluated on
(never its training images), so a run's predictions on them can be checked against their names.
The set is written into a hidden folder and published whole: a full disk or a Ctrl-C leaves no half set.
"""
import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lib.classes import DATASETS, builtin_dataset, class_names, resolve_class
from lib.errors import OneLineParser, UserError, run_cli
from lib.runs.folder import refuse_inside_run

FILE_NAME_UNSAFE = re.compile(r"[^\w.-]+")  # in a class's name (T-shirt/top is written T-shirt-top)


def main(argv) -> int:
    p = OneLineParser(prog="python -m tools.sample_images", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", help=f"a built-in dataset: {', '.join(DATASETS)}")
    p.add_argument("--dataroot", help="where train.py finds it (as train.py's --dataroot; default ./data; "
                                      "digits are built in)")
    p.add_argument("--out", required=True, help="a new (or empty) folder for the images")
    p.add_argument("--count", type=int, default=10, help="images to write (default 10)")
    p.add_argument("--classes", nargs="+", help="only these classes (names or numbers, as train.py takes them)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if not builtin_dataset(args.dataset):
        raise UserError(f"--dataset {args.dataset!r} is not built in: give one of {', '.join(DATASETS)} (a folder "
                        "dataset's images are already files)")
    if builtin_dataset(args.dataset) == "digits" and args.dataroot is not None:  # applied or refused, not ignored
        raise UserError("--dataroot is not read with --dataset digits (scikit-learn's digits are built in): drop it")
    if not 1 <= args.count <= 10_000:
        raise UserError(f"--count {args.count}: give 1 to 10000 images")
    names = class_names(args.dataset)
    wanted = list(dict.fromkeys(resolve_class(args.dataset, c) for c in args.classes)) if args.classes else \
        list(range(len(names)))  # (a class named twice, or by number and name: once)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out '{out}' already holds {'files' if out.is_dir() else 'a file'}: give a new or empty "
                        "folder")
    refuse_inside_run(out)
    from lib.data.builtin import test_arrays  # torch loads only now: a refusal above is instant
    images, labels = test_arrays(args.dataset, args.dataroot or "./data")
    try:
        written = publish(out, lambda folder: write(folder, images, labels, wanted, names, args.count))
    except OSError as err:  # a full disk, no permission, a path through a file: one line naming the file
        raise UserError(f"cannot write {err.filename or out} ({err.strerror}): choose another --out") from None
    print(f"wrote {written} test image(s) of {args.dataset} to {out}: score them with "
          f"python predict.py --path {out} --weights RUN")
    return 0


def publish(out: Path, fill) -> int:
    """`fill(folder)` into a hidden staging folder, then the whole set into `out` (a new folder, renamed into
    place; an empty one, moved in file by file): a failure or a signal (run_cli makes SIGTERM an exception)
    removes what was written and the folders this made, so the same command can simply run again."""
    out = Path(os.path.realpath(out))  # an --out link: its target, which the user named
    existed = out.is_dir()
    made = [] if existed else [p for p in (out, *out.parents) if not p.exists()]
    staging, moved = None, []
    try:
        (out if existed else out.parent).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out if existed else out.parent, prefix=".sample_images-"))
        written = fill(staging)
        if existed:  # the user's folder stays (its permissions, a mount): the files move in
            for path in sorted(staging.iterdir()):
                moved.append(out / path.name)
                os.rename(path, moved[-1])
            staging.rmdir()
        else:
            umask = os.umask(0)
            os.umask(umask)
            staging.chmod(0o777 & ~umask)  # as mkdir would make it (mkdtemp's is private)
            os.rename(staging, out)
        staging = None
        return written
    finally:
        if staging is not None:  # not published: nothing of it stays
            for path in moved:
                with contextlib.suppress(OSError):
                    path.unlink()
            shutil.rmtree(staging, ignore_errors=True)
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def write(out: Path, images, labels, wanted: list[int], names: list[str], count: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for k, label in enumerate(wanted):  # the classes share the count, the first ones taking what does not divide
        of_class = np.flatnonzero(labels.numpy() == label)
        n = min(len(of_class), count // len(wanted) + (k < count % len(wanted)))
        for j, i in enumerate(of_class[np.linspace(0, len(of_class) - 1, n).round().astype(int)] if n else []):
            array = images[i].numpy()
            picture = Image.fromarray(array[0]) if array.shape[0] == 1 else Image.fromarray(array.transpose(1, 2, 0))
            picture.save(out / f"{FILE_NAME_UNSAFE.sub('-', names[label])}_{j}.png")
            written += 1
    return written


if __name__ == "__main__":
    sys.exit(run_cli(main))
