"""numpy arrays in POSIX shared memory: zero-copy bulk data between process actors.

The owner creates a segment and sends its small :class:`ArrayDescriptor` (name, shape, dtype)
in messages; other processes attach by descriptor and get a numpy view of the same memory.
Only the owner unlinks. Arrays never travel through a pipe.

Why attach does not use ``multiprocessing.shared_memory.SharedMemory``: on Python < 3.13 it
registers every attached segment with the resource tracker, which then unlinks it (and warns
about a "leak") when the attaching process exits, under the owner's feet. Attaching here maps
the segment directly and leaves the tracker to the owner. The owner's segment stays registered,
so if the owner itself is SIGKILLed, the tracker unlinks the segment when it exits.
"""

from __future__ import annotations

import _posixshmem
import mmap
import os
import secrets
from multiprocessing import resource_tracker, shared_memory
from types import TracebackType
from typing import Any, NamedTuple, Self

import numpy as np

# Segments are named ``<prefix><pid>_<random>``: the creator's pid lets a leak check tell one
# process's segments from another's; the prefix (one per application) tells whose they are.
DEFAULT_PREFIX = "shared_"


class ArrayDescriptor(NamedTuple):
    """What a message carries instead of an array: enough to attach to it."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class SharedArray:
    """A numpy array backed by a shared-memory segment; create or attach, then use ``.array``.

    Use as a context manager: on exit it closes, and unlinks if this is the owner. Drop every
    view of ``.array`` before closing (numpy views keep the mapping exported).
    """

    def __init__(
        self, descriptor: ArrayDescriptor, buf: Any, owner: shared_memory.SharedMemory | None
    ):
        self._descriptor = descriptor
        self._buf = buf
        self._owner = owner
        self._tracker_pid: int | None = None
        self._array: np.ndarray | None = np.ndarray(
            descriptor.shape, dtype=np.dtype(descriptor.dtype), buffer=buf
        )

    @classmethod
    def create(
        cls, shape: tuple[int, ...] | int, dtype: Any = np.float32, *, prefix: str = DEFAULT_PREFIX
    ) -> SharedArray:
        """Create a zero-filled segment owned by this process (which must :meth:`unlink` it),
        named ``<prefix><pid>_<random>``."""
        shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        dt = np.dtype(dtype)
        size = max(1, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        name = f"{prefix}{os.getpid()}_{secrets.token_hex(6)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        shared = cls(ArrayDescriptor(shm.name, shape, dt.str), shm.buf, shm)
        shared._tracker_pid = _tracker()[0]  # the tracker that knows the segment
        return shared

    @classmethod
    def attach(cls, descriptor: ArrayDescriptor) -> SharedArray:
        """Map an existing segment (created by another process) without owning it."""
        descriptor = ArrayDescriptor(*descriptor)
        fd = _posixshmem.shm_open("/" + descriptor.name, os.O_RDWR, mode=0o600)
        try:
            mapping = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return cls(descriptor, mapping, None)

    @property
    def name(self) -> str:
        return self._descriptor.name

    @property
    def is_owner(self) -> bool:
        return self._owner is not None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            raise ValueError(f"shared array {self.name} is closed")
        return self._array

    def descriptor(self) -> ArrayDescriptor:
        return self._descriptor

    def close(self) -> None:
        """Unmap this process's view; the segment lives on until the owner unlinks it."""
        if self._array is None:
            return
        self._array = None  # the last reference to our view, so the mapping can close
        (self._owner or self._buf).close()

    def unlink(self) -> None:
        """Remove the segment's name (owner only); processes that mapped it keep their view.

        If the resource tracker that registered the segment died meanwhile (``kill -9``), the
        name is removed without telling a tracker: a relaunched one never knew it and would
        print a KeyError traceback for each segment it is asked to forget."""
        if self._owner is None:
            raise PermissionError(f"only the owner of {self.name} may unlink it")
        pid, alive = _tracker()
        if pid == self._tracker_pid and alive:
            self._owner.unlink()  # unlinks, and the tracker forgets the name
        else:
            _posixshmem.shm_unlink("/" + self.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if self._owner is not None:
            self.unlink()

    def __repr__(self) -> str:
        role = "owner" if self.is_owner else "attached"
        d = self._descriptor
        return f"<SharedArray {d.name} {d.shape} {d.dtype} {role}>"


def _tracker() -> tuple[int | None, bool]:
    """(pid, alive) of this process's resource tracker (None: started by a parent process).
    Private attributes of CPython's tracker, which its type stubs do not list."""
    tracker: Any = resource_tracker._resource_tracker
    return tracker._pid, tracker._fd is not None and tracker._check_alive()
