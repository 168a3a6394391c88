"""The folder of a train_tune.py search, <outf>/tune/<name>: its name, and what may be written or
deleted there (checked before Ray starts)."""
import json
import os
import time
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write, write_text
from ..runs.folder import probe_writable

# What Tune writes at the top of a search folder: only such a folder may be deleted by --overwrite.
TUNE_FILES = ("tuner.pkl", "trainable.pkl", "experiment_state-*.json", "basic-variant-state-*.json")


def check_name(name: str) -> None:
    """A search is one folder under <outf>/tune."""
    if name in ("", ".", "..") or "/" in name or os.sep in name or not name.isprintable():
        raise UserError(f"--name {name!a}: a search's name is one folder name (no '/' or control characters), "
                        "e.g. wcon_sweep")
    if len(os.fsencode(name)) > 200:
        raise UserError(f"--name is {len(os.fsencode(name))} bytes long: a folder name takes at most 200 here")


def is_search_folder(folder: Path) -> bool:
    """Whether `folder` holds what a search of this tool writes (Tune's state or the results table)."""
    return any(next(folder.glob(pattern), None) is not None for pattern in TUNE_FILES) \
        or (folder / "results.csv").is_file() and (folder / "runs").is_dir()


def check_search_folder(folder: Path, restore: bool, overwrite: bool) -> bool:
    """Refuse what would lose or mix searches; returns whether an old search is to be deleted."""
    if restore and overwrite:
        raise UserError("--restore continues the search and --overwrite deletes it: give one of them")
    if restore:
        if not folder.is_dir():
            raise UserError(f"--restore: no search at '{folder}' (give the --name it printed, and the same --outf)")
        return False
    if not (folder.exists() or folder.is_symlink()):
        return False
    if not overwrite:
        raise UserError(f"'{folder}' exists: add --restore to continue that search, --overwrite to delete it and "
                        "start over, or choose another --name")
    if folder.is_symlink() or not folder.is_dir() or not is_search_folder(folder):
        raise UserError(f"--overwrite deletes only a search this tool wrote, and '{folder}' is not one: "
                        "move it away or choose another --name")
    return True


def check_writable(folder: Path) -> None:
    """The search folder can be created: its nearest existing parent is a writable folder."""
    parent = folder
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "a broken link" if parent.is_symlink() and not parent.exists() else "a file"
        raise UserError(f"--outf: '{parent}' is {what}, not a folder: give --outf a folder")
    try:
        probe_writable(parent)
    except OSError as err:
        raise UserError(f"cannot write in '{parent}' ({err.strerror}): choose a writable --outf") from None


def search_name(opt, explicit: set, space: dict) -> str:
    """--name, else <model>_<dataset>_<class or 'classes'>_<time> (a rerun never overwrites)."""
    if "name" in explicit:
        return opt.name
    target = ("classes" if {"abnormal_class", "normal_class"} & set(space)
              else f"normal-{opt.normal_class}" if opt.normal_class is not None else opt.abnormal_class)
    parts = [opt.model, opt.dataset, str(target or "all"), time.strftime("%Y%m%d-%H%M%S")]
    return "_".join(p.replace("/", "-").replace(" ", "_") for p in parts)


# What a search was started with, so that --restore continues that search and no other: a copy of its
# space file, and the options every trial starts from (but those that change only what is shown).
SPACE_COPY, OPTIONS_COPY = "space.json", "search_options.json"
SHOWN_ONLY = {"verbose", "display", "display_server", "display_port", "display_id", "workers"}


def record_search(folder: Path, space_file, base: dict) -> None:
    data = Path(space_file).read_bytes()
    atomic_write(folder / SPACE_COPY, lambda tmp: Path(tmp).write_bytes(data))
    write_text(folder / OPTIONS_COPY, json.dumps(base, default=str, sort_keys=True, indent=1) + "\n")


def recorded_space(folder: Path, given: set):
    """The search's own space file for a --restore that names none (else None)."""
    copy = folder / SPACE_COPY
    return str(copy) if "space" not in given and copy.is_file() else None


def check_restore(folder: Path, space: dict, saved_space: dict | None, base: dict) -> None:
    """--restore with another space or other options would continue a search as another: refused.
    (A search started before these records were kept is continued unchecked.)"""
    if saved_space is not None and saved_space != space:
        raise UserError(f"--restore continues the search in '{folder}' with the space it was started with "
                        f"({folder / SPACE_COPY}), and --space gives another: drop --space, or start a new search "
                        "with another --name")
    options = folder / OPTIONS_COPY
    if not options.is_file():
        return
    saved, now = json.loads(options.read_text()), json.loads(json.dumps(base, default=str))
    for key in sorted((saved.keys() | now.keys()) - SHOWN_ONLY):
        if saved.get(key) != now.get(key):
            raise UserError(f"--restore continues the search in '{folder}' as it was started, with --{key} "
                            f"{saved.get(key)}, and this command gives {now.get(key)}: drop --{key}, or start a new "
                            "search with another --name")
