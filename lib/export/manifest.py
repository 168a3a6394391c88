"""An export folder's manifest.json and score.npz: what was exported, from which checkpoint, and checks.

The manifest names the model, the score and its fitted statistics' file, the image size and channels
and the pixel normalisation, the stored thresholds, the run's options, the library versions that
wrote it and the sha256 of the checkpoint and of every file beside it. Reading trusts none of it:
each file must have its recorded hash, the options pass the command line's checks, the statistics
are those the score function makes (lib/scoring/functions.py).
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..scoring.functions import SCORES, Scoring, stats_problem
from ..scoring.located import DISTANCES
from ..training import checkpoint
from . import RUNTIMES
from .graph import LOCATED

FORMAT = "skip-wganomaly-export/1"
MANIFEST, STATS = "manifest.json", "score.npz"
MAX_MANIFEST = 1 << 20  # a manifest is a few kB; a larger file is not one of ours


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stats_arrays(scoring: Scoring) -> dict[str, np.ndarray]:
    """The score's statistics as arrays for score.npz (numbers as 0-d arrays, tensors as they are)."""
    return {key: (value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
            for key, value in scoring.stats.items()}


def read_stats(path: Path, score: str, where: str) -> Scoring:
    """The fitted score from score.npz, checked as a checkpoint's statistics are."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError) as err:
        raise damaged(where, f"its {STATS} cannot be read ({err})") from None
    stats = {}
    for key, array in loaded.items():
        if array.ndim:
            stats[key] = torch.from_numpy(np.ascontiguousarray(array))
        elif np.issubdtype(array.dtype, np.integer):
            stats[key] = int(array)
        else:
            stats[key] = float(array)
    problem = stats_problem(score, stats)
    if problem:
        raise damaged(where, problem)
    return Scoring(score, stats)


def damaged(where, problem: str) -> UserError:
    return UserError(f"the export '{where}' is damaged: {problem}; export the run again (python export.py)")


def read(folder: Path) -> dict:
    """The manifest of the export in `folder`, its files checked against it; UserError for anything else."""
    path = folder / MANIFEST
    try:
        # A link, a named pipe or a device (/dev/zero) would be followed, block or never end.
        if path.is_symlink() or not path.is_file():
            raise damaged(folder, f"its {MANIFEST} is not a plain file")
        if path.stat().st_size > MAX_MANIFEST:
            raise damaged(folder, f"its {MANIFEST} is larger than {MAX_MANIFEST} bytes")
        manifest = json.loads(path.read_bytes())
    except OSError as err:
        raise UserError(f"cannot read '{path}' ({err.strerror}): check its permissions") from None
    except (ValueError, RecursionError) as err:  # RecursionError: arrays nested thousands deep
        reason = err if isinstance(err, ValueError) else "nested too deep"
        raise damaged(folder, f"its {MANIFEST} is not JSON ({reason})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"'{path}' is not the manifest of a skip-wganomaly export ({FORMAT} expected): give a "
                        "folder that export.py wrote, or a run folder")
    check_fields(manifest, folder)
    for name, digest in manifest["files"].items():
        file = folder / name
        if not file.is_file() or file.is_symlink():
            raise damaged(folder, f"'{name}', which its manifest lists, is missing or not a plain file")
        if sha256(file) != digest:
            raise damaged(folder, f"'{name}' does not match the sha256 its manifest records (truncated, edited or "
                                  "replaced since the export)")
    return manifest


def check_fields(manifest: dict, folder: Path) -> None:
    """UserError naming the first field of `manifest` that export.py would not have written."""
    def need(key, ok, what, where=manifest, prefix=""):
        if key not in where or not ok(where[key]):
            raise damaged(folder, f"its manifest's '{prefix}{key}' is missing or not {what}")
        return where[key]

    def name_ok(v):
        return isinstance(v, str) and v and Path(v).name == v and v not in (".", "..", MANIFEST)

    need("runtime", lambda v: v in RUNTIMES.values(), f"one of {', '.join(RUNTIMES.values())}")
    files = need("files", lambda v: isinstance(v, dict) and all(name_ok(k) and isinstance(d, str)
                                                                for k, d in v.items()), "file names with their sha256")
    graphs = need("graphs", lambda v: isinstance(v, dict) and "measure" in v and set(v) <= {"measure", "located"}
                  and all(name_ok(g) and g in files for g in v.values()), "the graph files it lists")
    need("outputs", lambda v: isinstance(v, list) and v[:1] == ["fake"] and all(isinstance(o, str) for o in v),
         "the measure graph's outputs")
    shaped = [*manifest["outputs"], *([LOCATED] if manifest.get("located") else [])]
    need("shapes", lambda v: isinstance(v, dict) and all(isinstance(v.get(o), list) and all(
         isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v[o]) for o in shaped),
         "each output's shape")
    need("located", lambda v: v is None or v == DISTANCES.get(manifest.get("score")) and "located" in graphs,
         "the embedding its score's maps split")
    need("stats", lambda v: v == STATS and v in files, f"'{STATS}', listed in its files")
    options = need("options", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict")
    need("model", lambda v: v == options.get("model"), "the model its options name")
    need("score", lambda v: isinstance(v, str), "a score's name")
    image = need("image", lambda v: isinstance(v, dict), "a dict")
    need("isize", lambda v: v == options.get("isize"), "its options' --isize", image, "image.")
    need("nc", lambda v: v == options.get("nc"), "its options' --nc", image, "image.")
    need("mean_std", lambda v: isinstance(v, list) and len(v) == 2 and all(_finite(x) for x in v) and v[1] > 0,
         "a mean and a positive std", image, "image.")
    threshold = need("threshold", lambda v: isinstance(v, dict), "a dict")
    if threshold:
        need("value", _finite, "a finite number", threshold, "threshold.")
    need("epoch", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count of epochs")
    try:
        checkpoint.check_options(options, folder / MANIFEST)
    except UserError as err:
        raise damaged(folder, f"its options fail this version's checks ({err})") from None
    score = manifest["score"]
    if score in SCORES and not set(SCORES[score].needs) <= set(manifest["outputs"]):
        raise damaged(folder, f"its graph does not measure what the score '{score}' needs")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write(folder: Path, manifest: dict) -> dict:
    """manifest.json, with the sha256 of every other file now in `folder` (written last: it seals them); returns it."""
    files = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, **manifest, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
