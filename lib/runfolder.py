"""The run folder: who may write into it, and how, so that no user's run is ever lost.

A run folder (`<outf>/<name>`) belongs to one run. A new run refuses a folder that
already holds one (unless told `overwrite`), a lock held for the run's life keeps a
second process out, and nothing written here follows a symbolic link planted in
the folder: the files are ours, wherever a link points.
"""
import errno
import fcntl
import os
import shutil
import socket
import tempfile
from pathlib import Path

from lib.errors import UserError

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


class RunFolder:
    """An exclusive claim on a run folder for the life of one run (a context manager).

    The lock is an `flock` on `<folder>/.lock`: the operating system releases it when the
    process ends in any way (even `kill -9`), so a stale lock cannot block a later run.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    def acquire(self, purpose: str) -> "RunFolder":
        """Create the folder if needed and lock it; one line if it cannot be written or is busy."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            _refuse_links(self.path, [LOCK])
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except UserError:
            raise
        except OSError as err:
            raise UserError(f"cannot write the output folder '{self.path}' ({err.strerror}): "
                            "choose a writable --outf") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"'{self.path}' is in use by {holder}: wait for that run to end, or "
                                "choose another --name/--outf") from None
            raise UserError(f"cannot lock '{self.path}' ({err.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose}, process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    # --- what each kind of run may find in the folder -----------------------------
    def check_new(self, overwrite: bool) -> None:
        """A new run: the folder must not hold one, unless `overwrite` (then the old one goes)."""
        _refuse_links(self.path, [*RUN_FILES, *RUN_FOLDERS])
        if not holds_run(self.path):
            return
        if not overwrite:
            last = self.path / "train" / "weights" / "last.pt"
            resume = f"--resume {self.path} to continue it, " if last.is_file() else ""
            raise UserError(f"'{self.path}' already holds a run: pass {resume}--overwrite to delete it and start "
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


def append_line(path: Path, line: str) -> None:
    """Append one line to a log file, never through a symbolic link planted at `path`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UserError(f"'{path}' has become a symbolic link; a run never writes through links: "
                            "remove it and continue with --resume") from None
        raise
    with os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace") as f:
        f.write(line + "\n")


def run_folder_of(checkpoint_path) -> Path:
    """The run folder of `<run>/train/weights/<name>.pt`; the file's own folder otherwise."""
    path = Path(checkpoint_path)
    if path.parent.name == "weights" and path.parent.parent.name == "train":
        return path.parent.parent.parent
    return path.parent


def evaluation_dir(run: Path) -> Path:
    """Where an evaluation of `run`'s weights writes: `<run>/test/`, never the training record."""
    _refuse_links(Path(run), ["test"])
    return Path(run) / "test"
