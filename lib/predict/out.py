"""predict.py's output folder: predictions.csv and maps/, whole or not at all.

Earlier predictions are replaced only when asked, and whole: the strips are written to a hidden
folder that becomes maps/ once all are done. One predict.py at a time writes into --out, and
never inside, over or around another run's folder.
"""
import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UserError
from ..files import WriteFailed, atomic_write, disk_error
from ..runs.folder import FolderLock, enclosing_run, is_run_folder, runs_inside

PREDICTIONS, MAPS = "predictions.csv", "maps"  # what predict.py writes into --out
PIXEL_METRICS = "pixel_metrics.json"  # and with --masks (lib/predict/masks.py)


def check_out(out: Path, images: Path, overwrite: bool, run: Path) -> None:
    """Refuse an --out that is not a folder, holds earlier predictions (unless `overwrite`), holds
    the images, has links where predict.py writes, or lies inside, over or around a run folder
    (inside one only as `run`'s own predict/ folder, `run` being the weights' run folder)."""
    if out.is_symlink() and not out.exists():
        raise UserError(f"--out '{out}' is a symbolic link to nothing: remove it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder: choose a folder (it is created if missing)")
    if images.is_dir() and images.resolve().is_relative_to(out.resolve()):
        raise UserError(f"the images in '{images}' are inside --out '{out}': outputs would mix with them; "
                        "choose another --out")
    for name, kind in ((PREDICTIONS, Path.is_file), (MAPS, Path.is_dir), (PIXEL_METRICS, Path.is_file)):
        target = out / name
        if target.is_symlink():
            raise UserError(f"'{target}' is a symbolic link; predict.py never writes through or replaces a link: "
                            "remove it or choose another --out")
        if target.exists() and not kind(target):
            raise UserError(f"'{target}' is not the {'folder' if name == MAPS else 'file'} predict.py "
                            "writes there: move it away or choose another --out")
    check_out_apart_from_runs(out, run)
    if not overwrite:
        refuse_earlier_predictions(out)


def check_out_apart_from_runs(out: Path, run: Path) -> None:
    """--out is no run's folder, holds none, and lies in none but as `run`'s own predict/ folder."""
    enclosing = enclosing_run(out)
    own = is_run_folder(run) and out.resolve() == (Path(run) / "predict").resolve()
    if enclosing is not None and not own:
        raise UserError(f"'{enclosing}' is a run folder and --out '{out}' would be inside it: choose an --out "
                        "outside it (inside a run, predict.py writes only to that run's own predict/, the default)")
    if is_run_folder(out):
        raise UserError(f"--out '{out}' is a run folder: choose another --out (predictions never go over a run)")
    inner = next(runs_inside(out), None)
    if inner is not None:
        raise UserError(f"--out '{out}' holds the run folder '{inner}': choose an --out that holds no run")


def earlier_predictions(out: Path) -> list[str]:
    """What predict.py wrote into `out` before (its files' names), if anything."""
    return [name for name in (PREDICTIONS, MAPS, PIXEL_METRICS) if (out / name).exists()]


def refuse_earlier_predictions(out: Path) -> None:
    earlier = earlier_predictions(out)
    if earlier:
        raise UserError(f"--out '{out}' already holds earlier predictions ({' and '.join(earlier)}): pass "
                        "--overwrite to replace them, or choose another --out")


class OutFolder(FolderLock):
    """predict.py's claim on --out while it scores and writes: a second one is refused, not mixed in.
    The lock file goes with the claim, so --out ends as predictions.csv and maps/ alone."""
    BUSY_FIX = "wait for it to end, or choose another --out"
    UNWRITABLE_FIX = "choose another --out"
    KEEPS_LOCK_FILE = False


def open_out(out: Path, overwrite: bool, strips: bool) -> tuple[list[Path], Path | None, OutFolder]:
    """Create `out` if needed and lock it; (the folders this created, deepest first, a hidden folder
    in `out` for the strips, the held lock: `close_out` gives it back).

    Under the lock, earlier predictions are looked for again: another predict.py may have written
    them since `check_out`. Creating the hidden folder (or a probe file) proves `out` writable
    before any scoring.
    """
    created = missing_folders(out)
    try:
        claim = OutFolder(out).acquire("predict.py")
    except UserError:
        remove_if_empty(created)
        raise
    try:
        if not overwrite:
            refuse_earlier_predictions(out)
        if strips:
            return created, Path(tempfile.mkdtemp(dir=out, prefix=".maps-")), claim
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
        return created, None, claim
    except OSError as err:
        close_out(out, created, claim)
        raise UserError(f"cannot write the output folder '{out}' ({err.strerror}): choose another --out") from None
    except BaseException:
        close_out(out, created, claim)
        raise


def missing_folders(out: Path) -> list[Path]:
    """`out` and those of its parents that do not exist, deepest first: what locking `out` creates."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def close_out(out: Path, created: list[Path], claim: OutFolder) -> None:
    """Give back `out`'s lock; the folders this run created (`out` and its parents) go too if left empty."""
    claim.release()
    remove_if_empty(created)


def remove_if_empty(folders: list[Path]) -> None:
    """Leave no trace of output folders that received nothing: each goes if empty, deepest first."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # holds the outputs, or something another process put there
            pass


def publish(out: Path, staging: Path | None, rows: list[dict]) -> None:
    """Replace out's predictions.csv and maps/ with these: the strips' folder is renamed into place."""
    maps, old = out / MAPS, None
    try:
        if maps.is_dir():  # earlier strips (--overwrite): moved aside, removed once the new ones are in place
            old = Path(tempfile.mkdtemp(dir=out, prefix=".maps-old-"))
            os.rename(maps, old / MAPS)
        if staging is not None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; maps/ is an ordinary folder
            os.rename(staging, maps)
        text = predictions_csv(rows)

        def write(tmp):
            # A file name of bytes that are not UTF-8 is written back as those same bytes.
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write(text)
        atomic_write(out / PREDICTIONS, write)
        # Earlier pixel metrics (--overwrite) describe earlier predictions: these write their own, if --masks.
        (out / PIXEL_METRICS).unlink(missing_ok=True)
    except OSError as err:
        earlier = f"the earlier ones, if any, are {old / MAPS if old else 'unchanged'}"
        error = disk_error(err)
        if error is not None:  # a full disk: name the file and the space left, as every write does
            path = err.path if isinstance(err, WriteFailed) else out
            raise WriteFailed(path, error, f"then run the command again; {earlier}") from None
        raise UserError(f"cannot write the outputs into '{out}' ({err.strerror}); {earlier}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def predictions_csv(rows: list[dict]) -> str:
    """predictions.csv, columns in the rows' order: scores written with every digit, so they compare exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # With "\n" line ends, csv quotes no field for a "\r" in it (a name may hold one), and readers would
    # split its row there: such a row is written with every field quoted.
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    columns = list(rows[0]) if rows else ["path", "score", "decision", "map"]
    writer.writerow(columns)
    for r in rows:
        values = [repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns]
        (quoted if any("\r" in str(v) for v in values) else writer).writerow(values)
    return out.getvalue()
