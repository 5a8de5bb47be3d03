"""IDX file reader (the MNIST container format), gzipped or raw, validated before numpy sees it.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
dimension as a big-endian uint32, then the data. Every check names the file and what was expected,
so a truncated download or a wrong file reads as one sentence, not a numpy traceback.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from otpnn.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


def read_bytes(path: Path) -> bytes:
    """File contents as stored (compressed or not)."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def decompress(path: Path, raw: bytes) -> bytes:
    """Gunzip if gzipped (detected by content, not by name)."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupted or truncated gzip data ({e})") from None


def parse_idx(path: Path, data: bytes, ndim: int) -> np.ndarray:
    """Validate an IDX header against `ndim` unsigned-byte dimensions and the file length."""
    expected_magic = UBYTE << 8 | ndim
    if len(data) < 4:
        raise DataError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        what = "truncated" if len(data) < expected_len else "has trailing data"
        raise DataError(
            f"{path}: {what}: {len(data)} bytes, expected {expected_len} for dimensions "
            f"{'x'.join(map(str, dims))}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read and validate one IDX file of unsigned bytes with `ndim` dimensions (read-only array)."""
    path = Path(path)
    return parse_idx(path, decompress(path, read_bytes(path)), ndim)
