"""The file ``vae compress`` writes: the coded stack with everything needed to decode it, and to refuse to.

    bytes 0–4     b"VAEBB", the magic
    byte 5        the format version (``FORMAT``)
    bytes 6–9     the header's length n, uint32 little-endian
    n bytes       the header: UTF-8 JSON, zlib-compressed (the model's fingerprint, the images' shape, count and
                  names, the coder's settings, the batches and each one's 16-bit checksum, a SHA-256 of all the
                  values, the versions of constriction and torch)
    4·m bytes     the coded stack: m uint32 words, little-endian
    32 bytes      SHA-256 of everything before it

A file that is cut short, damaged, of a later format or not ours at all is a one-line ``DataError``; a file is written
whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vae.core.errors import DataError

MAGIC = b"VAEBB"
FORMAT = 1
DIGEST = 32
PREFIX = len(MAGIC) + 1 + 4


@dataclass(frozen=True)
class Container:
    """A compressed file's header (plain JSON data) and its coded stack (uint32 words)."""

    header: dict[str, Any]
    words: np.ndarray

    def to_bytes(self) -> bytes:
        header = zlib.compress(json.dumps(self.header, sort_keys=True).encode(), level=9)
        body = MAGIC + bytes([FORMAT]) + struct.pack("<I", len(header)) + header
        body += np.ascontiguousarray(self.words, dtype="<u4").tobytes()
        return body + hashlib.sha256(body).digest()

    @property
    def stack_bits(self) -> int:
        """The coded stack's size in bits (the file less its header, framing and checksum)."""
        return 32 * len(self.words)

    def write(self, path: Path) -> int:
        """Write the file whole or not at all; its size in bytes."""
        data = self.to_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return len(data)

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Container:
        if not data.startswith(MAGIC):
            raise DataError(f"{source} is not a file written by vae compress (no VAEBB header)")
        if len(data) < PREFIX + DIGEST:
            raise DataError(f"{source} is cut short ({len(data)} bytes): compress the images again")
        if data[len(MAGIC)] > FORMAT:
            raise DataError(
                f"{source} is in format {data[len(MAGIC)]}, written by a later version of vae; this one reads format "
                f"{FORMAT}: upgrade vae"
            )
        body, digest = data[:-DIGEST], data[-DIGEST:]
        if hashlib.sha256(body).digest() != digest:
            raise DataError(f"{source} is damaged or cut short (its SHA-256 does not match its contents)")
        (length,) = struct.unpack("<I", data[len(MAGIC) + 1 : PREFIX])
        stack = body[PREFIX + length :]
        if PREFIX + length > len(body) or len(stack) % 4:
            raise DataError(f"{source} is damaged: its header's length does not fit the file")
        try:
            header = json.loads(zlib.decompress(body[PREFIX : PREFIX + length]).decode())
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{source} is damaged: its header is not JSON ({error})") from error
        return cls(header=header, words=np.frombuffer(stack, dtype="<u4").astype(np.uint32))

    @classmethod
    def read(cls, path: Path) -> Container:
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise DataError(f"{path} not found: give a file written by vae compress") from error
        except OSError as error:
            raise DataError(f"cannot read {path} ({error.strerror})") from error
        return cls.from_bytes(data, str(path))
