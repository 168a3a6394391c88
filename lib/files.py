"""Result files written atomically: a crash leaves the old file or the new one, never a torn one.

A disk that refuses a write (full, over a quota or a file-size limit, failing) raises WriteFailed:
one line naming the file and the space left there, and the file as it was.
No torch here: scripts that only check their command line or write tables import it cheaply.
"""
import contextlib
import csv
import errno
import io
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

# The longest file name (in bytes) Linux file systems take; a longer one fails with ENAMETOOLONG.
NAME_MAX = 255
# mkstemp's random part (8 characters) and ".tmp": what a temporary file's name adds to its prefix.
TMP_TAIL = 8 + len(".tmp")
# A disk that cannot take the data, and what frees it.
DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space or raise your disk quota",
               errno.EFBIG: "raise the file-size limit (ulimit -f)", errno.EIO: "check the disk"}


class WriteFailed(UserError, OSError):
    """A write the disk refused: names the file and the space free beside it, and what to do.

    It is also the OSError it stands for (errno, strerror, filename), so code that handles a
    failed write as an OSError goes on doing so.
    """

    def __init__(self, path, error: OSError, then: str = "then run the command again"):
        OSError.__init__(self, error.errno, error.strerror, str(path))
        self.path, self.error, self.then = Path(path), error, then
        self.message = (f"cannot write '{path}' ({error.strerror}; {free_space(path)} free there): "
                        f"{DISK_ERRORS.get(error.errno, 'free some space')}, {then}")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # across processes (Ray, multiprocessing) as it was made
        return WriteFailed, (self.path, self.error, self.then)

    def followed_by(self, then: str) -> "WriteFailed":
        """The same failure, telling the user `then` (e.g. the command that continues the run)."""
        return WriteFailed(self.path, self.error, then)


def disk_error(err: BaseException) -> OSError | None:
    """The disk error behind `err` (itself, or what it wraps: torch.save raises RuntimeError), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            return err
        err = err.__cause__ or err.__context__
    return None


def free_space(path) -> str:
    """The space free to this user on the file system of `path` (or of its nearest existing folder)."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "unknown space"
    return size_text(usage.free)


def size_text(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"


@contextlib.contextmanager
def writing(path, then: str = "then run the command again"):
    """Turn a disk error raised inside (even wrapped in another exception) into WriteFailed naming `path`."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as err:
        error = disk_error(err)
        if error is None:
            raise
        raise WriteFailed(path, error, then) from err


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)`, flush the file to disk, then rename it onto `path`.

    The temporary file is created exclusively (never through a planted link) and the rename
    replaces a link at `path` rather than writing through it. If the disk refuses the write,
    the temporary file is removed, `path` is left as it was, and WriteFailed says so.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():  # os.replace would fail with a traceback's error
        raise UserError(f"'{path}' is a folder where a file of that name is written: move or rename the folder, "
                        "then run the command again")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # The prefix is shortened so that any name the target may have gives a temporary name that fits.
        prefix = f".{fit_name(path.name, NAME_MAX - TMP_TAIL - 2)}."
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            # On disk before the name points at it: a crash then leaves the old file or the whole new one.
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # mkstemp creates 0600 files; give the result the permissions a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def fit_name(name: str, limit: int) -> str:
    """`name` cut, whole characters at a time, to at most `limit` bytes in the file system's encoding."""
    name = name[:limit]  # every character takes a byte at least
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def write_text(path, text: str) -> None:
    """Write UTF-8 text atomically; characters UTF-8 cannot hold are written as escapes."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
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
