"""Atomically written files (checkpoints, reports, models) get an ordinary file's mode."""

from __future__ import annotations

import os
import stat

from otpnn.atomic import write_atomic


def test_written_file_has_the_umask_mode_not_the_temp_files_0600(tmp_path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "model.safetensors"
    write_atomic(path, b"data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
