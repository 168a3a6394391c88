"""What a checkpoint's zip archive may declare, measured from its headers before anything is inflated.

A torch checkpoint is a zip archive whose index (data.pkl) is unpickled in Python. A small file can
claim gigabytes of contents, inflate a thousandfold, or hold an index of millions of pickle
operations: each is refused here, in one line, before torch reads a byte of it (lib/training/checkpoint.py).
"""
import os
import pickletools
import struct
import zipfile
import zlib

from ..errors import UserError
from ..resources import available_bytes, gib

# Bounds on what a checkpoint's zip archive may declare, checked before anything is inflated.
# The default networks at --isize 128 with Adam's two moments take 0.66 GB (at --isize 512: 3 GB).
MAX_BYTES = 8 << 30
# data.pkl, the index (options, history, where each tensor is) is unpickled in Python at ~20 µs an
# operation: its operations are counted before. --isize 128 with 1000 epochs of history: 0.7 MB, 105,000.
MAX_PICKLE_BYTES = 4 << 20
MAX_PICKLE_OPS = 250_000
MAX_MEMBERS = 100_000  # one member per tensor: hundreds in practice
MAX_DIRECTORY_BYTES = 64 << 20
# torch.save stores members uncompressed; deflating weights saves ~10 %. A member that inflates
# more than MAX_RATIO-fold (and to more than RATIO_FLOOR bytes) is a zip bomb, not a checkpoint.
MAX_RATIO = 10
RATIO_FLOOR = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"


def _zip_directory(f, size: int) -> tuple[int, int]:
    """(entries, bytes) of a zip's central directory, from its end records alone."""
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise ValueError("no zip end-of-archive record")
    entries, directory = struct.unpack_from("<HI", tail, at + 10)
    if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":  # zip64: the sizes are in another record
        (offset,) = struct.unpack_from("<Q", tail, at - 12)
        f.seek(min(offset, size))
        record = f.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise ValueError("broken zip64 end-of-archive record")
        entries, directory = struct.unpack_from("<QQ", record, 32)
    return entries, directory


def check(f, file) -> None:
    """Refuse, from its headers alone, an archive that would inflate beyond any real checkpoint.

    `f` is the open file; nothing is decompressed or allocated in proportion to what it declares.
    """
    size = os.fstat(f.fileno()).st_size
    head = f.read(4)
    if head != ZIP_MAGIC:
        if head[:1] == b"\x80":  # a pickle: torch's pre-1.6 format, or pickle.dump
            raise UserError(f"refusing to load '{file}': it is a plain pickle or a legacy torch file, which can "
                            "hold code, not a checkpoint of this tool; only load checkpoints written by train.py")
        raise UserError(f"cannot read checkpoint '{file}': it is not a torch checkpoint (no zip archive); "
                        "give a .pt file written by train.py")
    refuse = f"refusing to load '{file}':"
    try:
        entries, directory = _zip_directory(f, size)
        if entries > MAX_MEMBERS or directory > min(MAX_DIRECTORY_BYTES, size):
            raise UserError(f"{refuse} its archive lists {entries} entries in {directory} bytes; a checkpoint "
                            f"has a few hundred (at most {MAX_MEMBERS}): it is damaged or not a checkpoint")
        f.seek(0)
        archive = zipfile.ZipFile(f)
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, struct.error, OSError, EOFError) as err:
        raise UserError(f"cannot read checkpoint '{file}': its zip archive is damaged ({err}); "
                        "it was cut short or edited") from None
    total = 0
    for member in members:
        total += member.file_size
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or member.flag_bits & 1:
            raise UserError(f"cannot read checkpoint '{file}': '{member.filename}' is encrypted or compressed in a "
                            "way torch cannot read; it was not written by this tool")
        if member.file_size > RATIO_FLOOR and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise UserError(f"{refuse} '{member.filename}' inflates {member.compress_size} bytes to "
                            f"{member.file_size} ({member.file_size // max(member.compress_size, 1)}-fold); "
                            "checkpoints are stored uncompressed, so it is a zip bomb, not a checkpoint")
        if member.filename.endswith("data.pkl") and member.file_size > MAX_PICKLE_BYTES:
            raise UserError(f"{refuse} its index '{member.filename}' declares {member.file_size} bytes; "
                            f"this tool writes at most {MAX_PICKLE_BYTES >> 20} MiB there")
    if total > MAX_BYTES:
        raise UserError(f"{refuse} it declares {gib(total)} of contents, more than the {gib(MAX_BYTES)} "
                        "a checkpoint of this tool can hold")
    free = available_bytes("cpu")
    if free is not None and total > free:
        raise UserError(f"cannot load '{file}': it needs {gib(total)} of memory and only {gib(free)} is free; "
                        "free memory or load it on a larger machine")
    if sum(m.compress_size for m in members) > size:
        raise UserError(f"cannot read checkpoint '{file}': its archive lists more bytes than the file holds; "
                        "it was cut short or edited")
    for member in members:
        if member.filename.endswith("data.pkl"):
            try:
                data = archive.read(member)
            except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, RuntimeError) as err:
                raise UserError(f"cannot read checkpoint '{file}': its zip archive is damaged ({err}); "
                                "it was cut short or edited") from None
            count_pickle_ops(data, f"{refuse} its index '{member.filename}'")


def count_pickle_ops(data: bytes, refuse: str) -> None:
    try:
        for count, _ in enumerate(pickletools.genops(data)):
            if count >= MAX_PICKLE_OPS:
                raise UserError(f"{refuse} holds over {MAX_PICKLE_OPS} pickle operations; this tool writes "
                                "far fewer (a checkpoint's options, history and tensor index)")
    except (ValueError, EOFError, struct.error) as err:  # pickletools' errors for a malformed pickle
        raise UserError(f"{refuse} is not a well-formed pickle ({err}); the file was edited or damaged") from None
