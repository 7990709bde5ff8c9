"""Checksummed files written atomically: the storage of checkpoints and finished blocks.

A file is a header line, the SHA-256 of the payload and its length, then the payload (a
`torch.save` of a dict of tensors, numbers, strings, lists and dicts):

    score-compose checkpoint 1\\n
    <64 hex digits> <length>\\n
    <payload>

Writing goes to a temporary file in the same directory, which is flushed and fsync'ed, then
renamed over the destination (`os.replace` is atomic on POSIX), and the directory is fsync'ed
so that the rename itself survives a crash. A reader therefore sees the old file or the new
one, never a mixture; a file damaged later (a truncated copy, a bad disk) fails the checksum.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

MAGIC = b"score-compose checkpoint 1\n"


class DamagedFile(ValueError):
    """A checkpoint or block file that is truncated, corrupted or not ours."""


def write_atomic(path: Union[str, Path], data: bytes) -> None:
    """Write `data` to `path` so that a crash at any moment leaves the old file or the new."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:                     # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: Union[str, Path], payload: Dict[str, Any]) -> None:
    """`payload` (tensors moved to the CPU by the caller) as a checksummed file, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = f"{hashlib.sha256(body).hexdigest()} {len(body)}\n".encode()
    write_atomic(path, MAGIC + header + body)


def load(path: Union[str, Path]) -> Dict[str, Any]:
    """The payload of a file written by `save`; `DamagedFile` if it fails any check."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise DamagedFile(f"{path}: not a score-compose checkpoint (bad header)")
    end = data.find(b"\n", len(MAGIC))
    try:
        digest, length = data[len(MAGIC):end].decode().split(" ")
        length = int(length)
    except (UnicodeDecodeError, ValueError):
        raise DamagedFile(f"{path}: damaged header") from None
    body = data[end + 1:]
    if len(body) != length:
        raise DamagedFile(f"{path}: truncated ({len(body)} of {length} bytes)")
    if hashlib.sha256(body).hexdigest() != digest:
        raise DamagedFile(f"{path}: checksum mismatch (the file is corrupted)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:          # a payload that passed the checksum but is not ours
        raise DamagedFile(f"{path}: unreadable payload ({type(error).__name__}: {error})") from None
