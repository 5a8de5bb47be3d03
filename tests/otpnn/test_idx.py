import gzip
from pathlib import Path

import numpy as np
import pytest

from otpnn.data import DataError
from otpnn.data.idx import read_idx


def _idx(dims, magic_type=0x08, payload=None) -> bytes:
    header = bytes([0, 0, magic_type, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    n = int(np.prod(dims))
    return header + (payload if payload is not None else bytes(i % 256 for i in range(n)))


@pytest.mark.parametrize("gz", [False, True])
def test_reads_raw_and_gzipped(tmp_path: Path, gz: bool):
    path = tmp_path / "x.idx"
    data = _idx((3, 2, 2))
    path.write_bytes(gzip.compress(data) if gz else data)
    arr = read_idx(path, 3)
    assert arr.shape == (3, 2, 2)
    assert arr.dtype == np.uint8
    assert arr.ravel().tolist() == list(range(12))


@pytest.mark.parametrize(
    ("content", "ndim", "message"),
    [
        (_idx((3, 2, 2))[:-1], 3, "truncated: 27 bytes, expected 28 for dimensions 3x2x2"),
        (_idx((3, 2, 2)) + b"\0", 3, "has trailing data: 29 bytes, expected 28"),
        (_idx((3,)), 3, "bad IDX magic number 0x00000801, expected 0x00000803"),
        (_idx((3, 2, 2), magic_type=0x0D), 3, "bad IDX magic number 0x00000d03"),
        (b"\x00\x00", 1, "too short for an IDX header"),
        (_idx((3, 2, 2))[:10], 3, "truncated IDX header (10 of 16 bytes)"),
        (b"<html>not found</html>", 1, "bad IDX magic number 0x3c68746d"),
        (gzip.compress(_idx((3, 2, 2)))[:-9], 3, "corrupted or truncated gzip data"),
        (b"\x1f\x8b" + b"\x00" * 30, 3, "corrupted or truncated gzip data"),
    ],
)
def test_bad_files_fail_with_one_clear_error_naming_the_file(tmp_path, content, ndim, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_idx(path, ndim)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope", 1)
