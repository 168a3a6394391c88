"""Result files written atomically: a crash leaves the old file or the new one, never a torn one.

No torch here: scripts that only check their command line or write tables import it cheaply.
"""
import csv
import io
import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)`, then rename the temporary file onto `path`.

    The temporary file is created exclusively (never through a planted link) and the rename
    replaces a link at `path` rather than writing through it.
    """
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
