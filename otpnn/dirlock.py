"""One writer per directory: an OS file lock held for as long as a job (or a service) writes.

Two copies of a job on one checkpoint directory would overwrite each other's checkpoints (a run
with another seed would leave the first one's resume refused). The lock is ``flock`` on a file
in the directory: the kernel releases it when its holder exits, however (``kill -9`` included),
so a crashed holder never leaves a stale lock; the file itself stays, holding the last holder's
pid for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from otpnn.errors import UsageError

LOCK_FILE = ".otpnn.lock"


class DirectoryBusy(UsageError):
    """Another process (or job) holds the directory; the message names its pid."""


class DirLock:
    def __init__(self, directory: str | os.PathLike[str], holder: str, name: str = LOCK_FILE):
        self.path = Path(directory) / name
        self._holder = holder  # what holds it, for the message: "otpnn train", "otpnn serve"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the directory; DirectoryBusy if another holds it. Idempotent."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec by default
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DirectoryBusy(
                f"{self.path.parent} is in use by another {self._holder} (pid {pid})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
