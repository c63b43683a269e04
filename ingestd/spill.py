"""An append-only, checksummed, fsynced spill file of ILP batches.

When QuestDB cannot take a batch, its exact ILP bytes are appended here (frame: 4-byte
length, 4-byte CRC-32, payload) and fsynced before the batch is forgotten in memory, so a
crash after that point loses nothing. Replay reads frames in order and stops at the first
torn or corrupt frame (a crash mid-append), which is logged; dedup keys make re-sending
an already-committed batch harmless. Bounded: appends beyond `max_bytes` raise.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from ktape.log import get_logger

log = get_logger(__name__)
_HEADER = struct.Struct(">II")


class SpillFull(RuntimeError):
    """The spill file reached its bound; the caller must apply backpressure."""


class SpillFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, payload: bytes) -> None:
        if self.size + len(payload) + _HEADER.size > self.max_bytes:
            raise SpillFull(f"spill file {self.path} would exceed {self.max_bytes} bytes")
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, frame)
            os.fsync(fd)
        finally:
            os.close(fd)

    def batches(self) -> Iterator[bytes]:
        """Every intact batch in append order."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            offset = 0
            while True:
                header = f.read(_HEADER.size)
                if not header:
                    return
                if len(header) < _HEADER.size:
                    log.error("spill.torn_frame", path=str(self.path), offset=offset)
                    return
                length, crc = _HEADER.unpack(header)
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    log.error("spill.corrupt_frame", path=str(self.path), offset=offset)
                    return
                offset += _HEADER.size + length
                yield payload

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
