"""The run folder: who may write into it, and how, so that no user's run is ever lost.

A run folder (`<outf>/<name>`) belongs to one run. A new run refuses a folder that
already holds one (unless told `overwrite`), a lock held for the run's life keeps a
second process out, and nothing written here follows a symbolic link planted in
the folder: the files are ours, wherever a link points. Run folders never nest: no run,
evaluation, prediction or search folder is made inside another run's folder or around one
(`enclosing_run`, `runs_inside`), so no command writes or deletes another run's files.
"""
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

# What a training run writes at the top of its folder; any of these means "a run is here".
RUN_FILES = ("opt.txt", "loss_log.txt", "metrics.csv", "results.json", "histogram.csv")
# Folders a run (and evaluations or predictions of it) writes; --overwrite removes them too.
RUN_FOLDERS = ("train", "test", "predict")
LOCK = ".lock"


def checkpoint_files(folder: Path) -> list[Path]:
    weights = Path(folder) / "train" / "weights"
    return sorted(weights.glob("*.pt")) if weights.is_dir() and not weights.is_symlink() else []


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds (part of) a run: its record files or checkpoints."""
    folder = Path(folder)
    return any((folder / name).exists() or (folder / name).is_symlink() for name in RUN_FILES) \
        or bool(checkpoint_files(folder))


def _refuse_links(folder: Path, names) -> None:
    """A symbolic link where the run writes would send its writes elsewhere: refuse it."""
    for name in names:
        path = folder / name
        if path.is_symlink():
            raise UserError(f"'{path}' is a symbolic link; a run writes its files in place and "
                            "never through links: remove the link (or choose another --outf/--name)")


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is a training run's own folder: the weights folder a run makes when it claims
    its folder, or a training log. An evaluation (`<run>/test/`), predictions and a working
    directory's ./histogram.csv copy are not runs."""
    folder = Path(folder)
    try:
        return (folder / "train" / "weights").is_dir() or (folder / "loss_log.txt").is_file()
    except OSError:  # a path too long to exist (ENAMETOOLONG) holds no run; making it is refused later
        return False


def _shown(path: Path) -> Path:
    """`path` as the user would write it: relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return Path(relative) if not relative.startswith("..") else path


def enclosing_run(path) -> Path | None:
    """The nearest run folder above `path` (not `path` itself), through links too; None if there is none."""
    path = Path(path)
    for candidate in (Path(os.path.abspath(path)), path.resolve()):
        for parent in candidate.parents:
            if is_run_folder(parent):
                return _shown(parent)
    return None


def refuse_inside_run(out, flag: str = "--out") -> None:
    """What a tool writes never goes inside a run folder (through links too), as train.py, predict.py and
    export.py refuse: the run's files are its record, and a dataset there would be read as its own."""
    run = enclosing_run(out)
    if run is not None:
        raise UserError(f"{flag} '{_shown(Path(out))}' would be inside the run folder '{run}', whose files it could "
                        f"replace: choose {flag} outside every run folder")


def runs_inside(path) -> Iterator[Path]:
    """The run folders below `path` (not `path` itself), outermost first; links are not followed."""
    if not Path(path).is_dir():
        return
    for root, dirs, _ in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
        runs = [d for d in dirs if is_run_folder(Path(root, d))]
        dirs[:] = [d for d in dirs if d not in runs]  # a run's own folders are its business
        yield from (Path(root, d) for d in runs)


def check_new_run_place(folder: Path, overwrite: bool) -> None:
    """A new run's folder lies neither inside another run's folder nor around one (whose files
    its --phase test would overwrite, or its --overwrite delete). Checked before it is created."""
    run = enclosing_run(folder)
    if run is not None:
        raise UserError(f"'{run}' is a run folder and '{folder}' would be inside it: choose another --name/--outf "
                        "(a run folder holds one run)")
    inner = next(runs_inside(folder), None)
    if inner is not None and overwrite and holds_run(folder):
        raise UserError(f"'{inner}' is another run inside '{folder}', and --overwrite would delete it: move it "
                        f"out of '{folder}' first, or choose another --name/--outf")
    if inner is not None:
        raise UserError(f"'{folder}' holds the run folder '{inner}' and would be around it: choose another "
                        "--name/--outf (a run folder holds one run)")


class FolderLock:
    """An exclusive claim on a folder for the life of one process's work (a context manager).

    The lock is an `flock` on `<folder>/.lock`: the operating system releases it when the
    process ends in any way (even `kill -9`), so a stale lock cannot block a later run.
    Whoever removes the lock file on release (`KEEPS_LOCK_FILE = False`) leaves no trace; a
    process that locked the file just removed finds so and locks the new one.
    """
    BUSY_FIX = "wait for it to end"
    UNWRITABLE_FIX = "choose a writable folder"
    KEEPS_LOCK_FILE = True

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    def acquire(self, purpose: str) -> "FolderLock":
        """Create the folder if needed and lock it; one line if it cannot be written or is busy."""
        for _ in range(5):  # each round: a lock file that a releasing holder has just removed
            fd = self._open_lock_file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if err.errno in (errno.EAGAIN, errno.EACCES):
                    raise UserError(f"'{self.path}' is in use by {holder}: {self.BUSY_FIX}") from None
                raise UserError(f"cannot lock '{self.path}' ({err.strerror})") from None
            if _is_file_at(fd, self.path / LOCK):
                break
            os.close(fd)
        else:
            raise UserError(f"cannot lock '{self.path}': its lock file keeps being replaced; try again")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose}, process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def _open_lock_file(self) -> int:
        """`<folder>/.lock` open for writing (made, with the folder, if missing), never through a link."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            _refuse_links(self.path, [LOCK])
            return os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except UserError:
            raise
        except OSError as err:
            raise UserError(f"cannot write the output folder '{self.path}' ({err.strerror}): "
                            f"{self.UNWRITABLE_FIX}") from None

    def held(self) -> bool:
        """Whether the lock file in the folder is still the one this claim holds: not so once the folder
        was deleted or moved (and perhaps made again by someone else) since it was claimed."""
        return self._fd is not None and _is_file_at(self._fd, self.path / LOCK)

    def release(self) -> None:
        if self._fd is not None:
            if not self.KEEPS_LOCK_FILE and self.held():  # removed while still locked: nobody else holds it
                (self.path / LOCK).unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the one at `path` (not removed or replaced since it was opened)."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def is_control(folder: Path) -> bool:
    """The folder holds an untrained control (--niter 0), which --resume refuses: nothing to continue."""
    try:
        return json.loads((folder / "results.json").read_text()).get("untrained_control") is True
    except (OSError, ValueError, AttributeError):
        return False


class RunFolder(FolderLock):
    """An exclusive claim on a run folder for the life of one run, and what a run may find there."""
    BUSY_FIX = "wait for that run to end, or choose another --name/--outf"
    UNWRITABLE_FIX = "choose a writable --outf"

    # --- what each kind of run may find in the folder -----------------------------
    def check_new(self, overwrite: bool) -> None:
        """A new run: the folder must not hold one, unless `overwrite` (then the old one goes)."""
        _refuse_links(self.path, [*RUN_FILES, *RUN_FOLDERS])
        if not holds_run(self.path):
            return
        if not overwrite:
            last = self.path / "train" / "weights" / "last.pt"
            resume = f"--resume {self.path} to continue it, " if last.is_file() and not is_control(self.path) else ""
            # Stopped before its first checkpoint (killed in epoch 1): there is nothing to continue.
            what = "a run" if last.is_file() else "a run stopped before its first epoch ended (no checkpoint)"
            raise UserError(f"'{self.path}' already holds {what}: pass {resume}--overwrite to delete it and start "
                            "over, or choose another --name/--outf")
        self.remove_run()

    def check_resume(self) -> None:
        _refuse_links(self.path, [*RUN_FILES, *RUN_FOLDERS])
        for sub in ("train", "train/weights", "train/images"):
            _refuse_links(self.path, [sub])

    def remove_run(self) -> None:
        """Delete what a run wrote here (and nothing else the user put in the folder)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()  # a link or a stray file where the run needs its folder


def probe_writable(folder: Path) -> None:
    """Raise OSError unless a file can be created in `folder`; nothing is left behind."""
    try:  # an unnamed file: nothing another process could swap for a link
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write_test.")
        os.unlink(name)
    os.close(fd)


def run_folder_of(checkpoint_path) -> Path:
    """The run folder of `<run>/train/weights/<name>.pt`; the file's own folder otherwise."""
    path = Path(checkpoint_path)
    return path.parent.parent.parent if in_run(path) else path.parent


def in_run(checkpoint_path) -> bool:
    """Whether the checkpoint lies where a run keeps it, `<run>/train/weights/<name>.pt`."""
    path = Path(checkpoint_path)
    return path.parent.name == "weights" and path.parent.parent.name == "train"


def _evaluates(record: Path, checkpoint: Path) -> bool:
    """Whether `record` is a --phase test results.json of a checkpoint named as `checkpoint` is: its own earlier
    evaluation, whichever way the path was spelt then (absolute, relative to another folder, through `..`)."""
    try:
        weights = json.loads(record.read_text(encoding="utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(weights, str) and Path(weights).name == checkpoint.name


def evaluation_dir(checkpoint_path) -> Path:
    """Where --phase test's evaluation of a checkpoint writes: `<run>/test/`, never the training record, and
    never into another run that was put there. A checkpoint taken out of its run (~/Downloads/model.pt)
    has `model-test/` beside it instead, and a folder there that is no evaluation of it is refused: the
    folder is the user's, and `test/` is a likely name for their own files."""
    path = Path(checkpoint_path)
    if not in_run(path):
        test = path.parent / f"{path.stem}-test"
        run = enclosing_run(test)  # a copy put into another run (its root, its predict/): no folder made there
        if run is not None:
            raise UserError(f"'{path}' lies inside the run folder '{run}' but is none of its checkpoints, and its "
                            f"evaluation would go into that run: move it out of '{run}' first")
        _refuse_links(path.parent, [test.name])
        if test.exists() and not test.is_dir():
            raise UserError(f"'{test}', where the evaluation of '{path}' goes, is a file: move it away "
                            "(or the checkpoint into a folder of its own)")
        if test.exists() and any(test.iterdir()) and not _evaluates(test / "results.json", path):
            raise UserError(f"'{test}', where the evaluation of '{path}' goes, holds other files: move them away "
                            "(or the checkpoint into a folder of its own)")
        return test
    run = run_folder_of(path)
    _refuse_links(Path(run), ["test"])
    test = Path(run) / "test"
    other = test if is_run_folder(test) else next(runs_inside(test), None)
    if other is not None:
        raise UserError(f"'{other}' is another run inside '{run}', and --phase test writes its evaluation into "
                        f"'{test}': move that run out of '{run}' first")
    return test
