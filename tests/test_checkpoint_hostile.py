"""Hostile checkpoints: each is refused by every command that loads one (train.py --resume,
train.py --load_weights, predict.py --weights) with one line naming the file and the problem,
quickly, without allocating what the file claims, and without changing anything the user has."""
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from lib import options
from lib.errors import UserError
from lib.training import checkpoint, checkpoint_fit
from lib.training.schedules import make_schedulers
from tests.helpers import ROOT, RUN, TINY, one_line_error, process

GIB = 1 << 30


def snapshot(folder: Path) -> dict:
    """Every file's bytes and every folder below `folder`: equal snapshots, nothing changed."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


def tampered_run(trained_run: Path, tmp_path: Path, tamper) -> Path:
    """A copy of the session's finished run (conftest.py) whose best.pt and last.pt have been through
    `tamper(ckpt) -> ckpt or None`."""
    run = tmp_path / "out" / RUN
    shutil.copytree(trained_run, run)
    for name in ("best.pt", "last.pt"):
        path = run / "train" / "weights" / name
        ckpt = torch.load(path, weights_only=True)
        ckpt = tamper(ckpt) or ckpt
        if isinstance(ckpt, bytes):
            path.write_bytes(ckpt)
        else:
            torch.save(ckpt, path)
    return run


# --- zip archives built by hand, so a member can claim any size -----------------------------------
def zeros_deflated(size_mib: int) -> bytes:
    """A raw deflate stream of `size_mib` MiB of zeros, in about a kilobyte per MiB, without inflating it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * size_mib + b"\x03\x00"  # after a full flush every MiB compresses alike; then an end block


def zip_bytes(members) -> bytes:
    """A zip of (name, data, method, declared size, crc[, declared compressed size]) members.

    Sizes of 4 GiB and more go into zip64 extra fields, as zip writers put them.
    """
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc, *claimed in members:
        name, packed = name.encode(), claimed[0] if claimed else len(data)
        big = size >= 0xFFFFFFFF or packed >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, packed) if big else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (packed, size)
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, method, 0, 0x21, crc, *sizes, len(name), len(extra))
        out += name + extra + data
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, method, 0, 0x21, crc, *sizes,
                               len(name), len(extra), 0, 0, 0, 0, offset) + name + extra
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def bomb_in(real: Path, size_mib: int) -> bytes:
    """`real` (a torch.save file) recompressed with deflate, its first tensor storage swapped for a zip bomb."""
    with zipfile.ZipFile(real) as z:
        infos = z.infolist()
        first_storage = next(i for i in infos if "/data/" in i.filename)
        members = []
        for info in infos:
            if info is first_storage:
                members.append((info.filename, zeros_deflated(size_mib), 8, size_mib << 20, 0))
            else:
                data = z.read(info)
                packer = zlib.compressobj(9, zlib.DEFLATED, -15)
                members.append((info.filename, packer.compress(data) + packer.flush(), 8, len(data),
                                zlib.crc32(data)))
    return zip_bytes(members)


def declared_only(size: int) -> bytes:
    """A zip of a few bytes whose member claims `size` bytes, stored uncompressed as torch.save stores."""
    pickle = b"\x80\x02}q\x00."
    return zip_bytes([("archive/data.pkl", pickle, 0, len(pickle), zlib.crc32(pickle)),
                      ("archive/data/0", b"", 0, size, 0, size)])


# --- tampered contents: every command refuses each, naming it -----------------------------------
def set_in(*path_and_value):
    *path, value = path_and_value

    def tamper(ckpt):
        target = ckpt
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return tamper


def drop(key):
    def tamper(ckpt):
        del ckpt[key]
    return tamper


def first_weight(ckpt) -> str:
    return next(iter(ckpt["state"]["generator"]))


def nan_weight(ckpt):
    ckpt["state"]["generator"][first_weight(ckpt)].fill_(float("nan"))


TAMPERED = {
    "without its options": (drop("options"), "'options' is missing"),
    "with the epoch as a string": (set_in("epoch", "1"), "'epoch' is str '1'"),
    "with a NaN threshold": (set_in("threshold", "value", float("nan")), "'threshold.value' is float nan"),
    "with options that fail validation": (set_in("options", "isize", 7), "--isize 7 is not supported"),
    "with widths that do not match its weights": (set_in("options", "ngf", 16), "the networks its options describe"),
    "with NaN weights": (nan_weight, "holds NaN or infinite values"),
    "with a map's score of no known name": (set_in("state", "map_score", "deep"), "the score 'deep' is none of"),
    "with a data digest that is no sha256": (set_in("data_digest", "abc"), "'data_digest' is str 'abc'"),
}

COMMANDS = {
    "train.py --resume": lambda run: ("train.py", ["--resume", run, "--device", "cpu"]),
    # Network settings come from the checkpoint (given, they must match it: another refusal).
    "train.py --load_weights --phase test": lambda run: (
        "train.py", ["--dataset", "digits", "--abnormal_class", "3", "--device", "cpu",
                     "--load_weights", run, "--phase", "test"]),
    "predict.py --weights": lambda run: ("predict.py", ["--path", run / "train" / "images", "--weights", run,
                                                        "--device", "cpu"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", TAMPERED)
def test_a_checkpoint_edited_by_hand_is_refused_in_one_line_and_nothing_is_written(trained_run, tmp_path, case,
                                                                                   command):
    tamper, message = TAMPERED[case]
    run = tampered_run(trained_run, tmp_path, tamper)
    before = snapshot(tmp_path)
    script, args = COMMANDS[command](run)
    proc = process(script, args, tmp_path)
    one_line_error(proc, "is damaged", message, str(run / "train" / "weights"))
    assert snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("key", ["state", "history", "schedulers", "rng", "data_rng", "threshold"])
def test_a_checkpoint_missing_any_entry_is_refused_naming_it(trained_run, tmp_path, key):
    run = tampered_run(trained_run, tmp_path, drop(key))
    before = snapshot(tmp_path)
    proc = process("predict.py", ["--path", run / "train" / "images", "--weights", run, "--device", "cpu"], tmp_path)
    one_line_error(proc, f"'{key}' is missing", "it was edited, or not written by this version")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_loading_weights_into_a_new_run_refuses_a_damaged_checkpoint_before_creating_the_run(trained_run, tmp_path):
    run = tampered_run(trained_run, tmp_path, set_in("options", "lr", -1.0))
    proc = process("train.py", [*TINY, "--outf", "fresh", "--load_weights", run], tmp_path)
    one_line_error(proc, "its options fail this version's checks (--lr must be positive")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.slow
def test_resume_refuses_scheduler_and_optimiser_states_that_do_not_fit(trained_run, tmp_path):
    def tamper(ckpt):
        ckpt["schedulers"][0]["optimizer"] = {}  # would replace the scheduler's optimiser when loaded
    run = tampered_run(trained_run, tmp_path, tamper)
    proc = process("train.py", ["--resume", run, "--device", "cpu"], tmp_path)
    one_line_error(proc, "'schedulers.0' sets 'optimizer'")

    def tamper_adam(ckpt):
        ckpt["state"]["optimizer_g"]["state"][0]["exp_avg"] = torch.zeros(2)
    run = tampered_run(trained_run, tmp_path / "adam", tamper_adam)
    proc = process("train.py", ["--resume", run, "--device", "cpu"], tmp_path)
    one_line_error(proc, "'state.optimizer_g.state.0.exp_avg' does not fit parameter 0")


# --- archives that would inflate: refused from their headers ---------------------------------------
PEAK_RSS = """import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, proc.returncode)
"""


def peak_memory(script, args, cwd) -> tuple[int, int, str]:
    """(peak resident bytes, exit code, stderr) of `python SCRIPT ARGS` run alone in a fresh parent."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, str(ROOT / script), *map(str, args)],
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    *stderr, last = proc.stdout.strip().splitlines()
    peak, code = map(int, last.split())
    return peak, code, "\n".join(stderr)


@pytest.mark.slow
@pytest.mark.parametrize("archive", ["a real checkpoint recompressed around 3.5 GiB of deflated zeros",
                                     "a hand-made zip whose member declares 64 GiB"])
def test_a_small_file_that_would_inflate_to_gigabytes_is_refused_without_allocating(trained_run, tmp_path, archive):
    weights = tmp_path / "bomb.pt"
    if archive.startswith("a real"):
        weights.write_bytes(bomb_in(trained_run / "train/weights/best.pt", 3584))
        fragment = "is a zip bomb"
    else:
        weights.write_bytes(declared_only(64 * GIB))
        fragment = "declares 64.0 GiB"
    assert weights.stat().st_size < 4 << 20
    (tmp_path / "images").mkdir()
    shutil.copy(next((trained_run / "train/images").glob("*.png")), tmp_path / "images")
    before = snapshot(tmp_path)
    peak, code, stderr = peak_memory("predict.py", ["--path", "images", "--weights", weights, "--out", "out",
                                                    "--device", "cpu"], tmp_path)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and fragment in stderr, stderr
    assert peak < 1.5 * GIB  # importing torch takes a few hundred MB; inflating would take gigabytes
    assert snapshot(tmp_path) == before


def test_the_archive_check_refuses_a_zip_bomb_in_milliseconds(trained_run, tmp_path):
    weights = tmp_path / "bomb.pt"
    weights.write_bytes(bomb_in(trained_run / "train/weights/best.pt", 3584))
    start = time.perf_counter()
    with pytest.raises(UserError, match="inflates .* bytes to 3758096384"):
        checkpoint.load(weights)
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    ("truncated", "cannot read checkpoint"),
    ("directory of a million entries", "lists 1000000 entries"),
    ("plain pickle", "refusing to load"),
])
def test_an_archive_that_is_cut_short_or_forged_is_refused_in_one_line(trained_run, tmp_path, damage, message):
    real = (trained_run / "train/weights/best.pt").read_bytes()
    if damage == "truncated":
        data = real[:len(real) // 2]
    elif damage == "plain pickle":
        data = b"\x80\x04" + real[4:]
    else:
        data = zip64_claim(real, 1_000_000)
    run = tampered_run(trained_run, tmp_path, lambda c: data)
    before = snapshot(tmp_path)
    proc = process("predict.py", ["--path", run / "train" / "images", "--weights", run, "--device", "cpu"], tmp_path)
    one_line_error(proc, message)
    assert snapshot(tmp_path) == before


def zip64_claim(real: bytes, entries: int) -> bytes:
    """`real` with zip64 end records claiming `entries` entries (the classic record says 0xFFFF)."""
    end = real.rfind(b"PK\x05\x06")
    body = real[:end]
    zip64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, 46 * entries, 0)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(body), 1)
    classic = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + zip64 + locator + classic


def test_a_real_checkpoint_recompressed_without_inflation_still_loads(trained_run, tmp_path):
    """Deflate by itself is no crime: only ratios no checkpoint has are refused."""
    weights = tmp_path / "deflated.pt"
    with zipfile.ZipFile(trained_run / "train/weights/best.pt") as src, \
            zipfile.ZipFile(weights, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    ckpt = checkpoint.load(weights)
    assert ckpt["epoch"] == 1


def test_the_checks_accept_every_checkpoint_a_run_writes(trained_run):
    for name in ("best.pt", "last.pt"):
        ckpt = checkpoint.load(trained_run / "train/weights" / name)
        checkpoint_fit.check_states(ckpt, options.parse(["--dataset", "digits"]), make_schedulers)
