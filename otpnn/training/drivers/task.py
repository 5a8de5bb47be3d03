"""What a protocol's message asks of a worker: the worker side of the driver interface.

A driver's message to a worker is a :class:`WorkerTask`: it carries its own behaviour
(:meth:`WorkerTask.perform`), so the Worker needs no branch per protocol and a new protocol
brings its messages along in its own module. The Worker offers a task only what every
protocol needs (:class:`WorkerSide`): the dataset, the epoch's order, attachments to the
coordinator's segments, and fault acting.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np

from supervision.shm import ArrayDescriptor


class WorkerSide(Protocol):
    index: int
    own_process: bool  # a process actor: faults act on the process itself
    sizes: tuple[int, ...]
    activation: str

    @property
    def killed(self) -> threading.Event:
        """Set once the worker is stopped or killed: it must write nothing more."""
        ...

    @property
    def images(self) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s sample order (checked to be that epoch's)."""
        ...

    def attach(self, role: str, descriptor: ArrayDescriptor) -> np.ndarray:
        """The coordinator's segment for ``role``, re-attached when it changed."""
        ...

    def inject(self, action: str) -> None:
        """Act out a fault (see :mod:`otpnn.faults`)."""
        ...


class WorkerTask(ABC):
    """A message a worker performs; the reply is what :meth:`perform` returns."""

    __slots__ = ()

    @abstractmethod
    def perform(self, worker: WorkerSide) -> object: ...
