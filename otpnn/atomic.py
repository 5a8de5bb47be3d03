"""Atomic file writes: a crash or Ctrl-C leaves the old file or the new one, never half of one.

The file gets the mode an ordinary ``open(path, "w")`` would give it (0666 less the umask), not
the temp file's private 0600: a checkpoint or a model is meant to be read by others too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Read once, at import (setting the umask to read it is not thread-safe later, when actors run).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync it, rename over `path`, fsync the dir."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
