"""Checkpoints and result files: atomic writes and safe loading.

Every file is written to a temporary name and renamed, so a crash leaves the
old file or the new one, never a torn one. Checkpoints load with
`weights_only=True`: a crafted file cannot run code when it is read.
"""
import csv
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import torch

from lib.errors import UserError

FORMAT = "skip-wganomaly/1"


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)`, then rename the temporary file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def rows_csv(rows: list[dict]) -> str:
    """CSV text of dict rows; the columns are every key, in first-seen order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def save(path, checkpoint: dict) -> None:
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **checkpoint}, tmp))


def find(path, which: str = "last") -> Path:
    """A checkpoint file from a file, a run folder or its weights folder."""
    path = Path(path)
    for candidate in (path, path / f"{which}.pt", path / "train" / "weights" / f"{which}.pt"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no checkpoint at '{path}': give a .pt file or a run folder containing "
                    f"train/weights/{which}.pt")


def load(path, which: str = "last") -> dict:
    """Load a checkpoint safely; UserError for anything that is not one of ours."""
    file = find(path, which)
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols; the error says enough
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "unsafe content")
        raise UserError(f"refusing to load '{file}': it holds more than plain weights ({reason[:120]}); "
                        "only load checkpoints written by this tool") from None
    except Exception as err:  # truncated or not a torch file at all
        raise UserError(f"cannot read checkpoint '{file}': {type(err).__name__}: {str(err)[:160]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"'{file}' is not a skip-wganomaly checkpoint (format {FORMAT} expected)")
    checkpoint["path"] = str(file)
    return checkpoint
