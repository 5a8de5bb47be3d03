"""The Worker: performs what the protocol drivers send it, over shared memory.

One class for thread and process workers (Ray's is in :mod:`otpnn.training.ray_backend`): it
attaches to the Loader's dataset and permutation, and to the coordinator's segments as messages
name them. A message is a :class:`~otpnn.training.drivers.task.WorkerTask` that carries its
protocol's work (computing shards, or being a rank of a lockstep run), so the Worker knows no
protocol. It keeps no training state, so a restarted worker is as good as the one it replaces;
what it holds are attachments, re-made when names change.
"""

from __future__ import annotations

import threading

import numpy as np
from setproctitle import setproctitle
from threadpoolctl import threadpool_limits

from otpnn.faults import FaultTarget
from otpnn.training.blas import ONE_BLAS_THREAD
from otpnn.training.drivers.task import WorkerTask
from otpnn.training.loader import DataSegments
from supervision import Actor
from supervision.process import ProcessOptions
from supervision.shm import ArrayDescriptor, SharedArray


class StalePermutation(RuntimeError):
    """The shared permutation is not the one for the epoch asked for (a protocol bug)."""


class Worker(FaultTarget, Actor):
    # In a process worker BLAS must be single-threaded from the moment numpy loads (see
    # otpnn.training.blas; the env matters where the forkserver did not preload the trainer,
    # see otpnn.training.forkserver_preload). Batch scheduling: the coordinator wakes the
    # workers one pipe write at a time, and a woken worker that took the coordinator's core
    # delayed the messages to the others.
    process_options = ProcessOptions(env=ONE_BLAS_THREAD, batch_scheduling=True)

    def __init__(
        self,
        index: int,
        data: DataSegments,
        sizes: tuple[int, ...],
        activation: str,
        backend: str,
        job: str = "job",
    ) -> None:
        super().__init__()
        self.index = index
        self._job = job
        self.own_process = backend == "process"
        self.sizes = sizes
        self.activation = activation
        self._data = data
        self._images: SharedArray | None = None
        self._labels: SharedArray | None = None
        self._perm: SharedArray | None = None
        self._coordinator_segments: dict[str, SharedArray] = {}

    @property
    def killed(self) -> threading.Event:
        return self.actor_stopped

    @property
    def images(self) -> np.ndarray:
        assert self._images is not None, "attached in on_start"
        return self._images.array

    @property
    def labels(self) -> np.ndarray:
        assert self._labels is not None, "attached in on_start"
        return self._labels.array

    def on_start(self) -> None:
        # One BLAS thread per worker: N workers use N cores, and results do not depend on how
        # many threads BLAS would otherwise pick.
        threadpool_limits(limits=1)
        if self.own_process:  # `ps` and `htop` then say which worker of which job this is
            setproctitle(f"otpnn worker-{self.index} job={self._job}")
        self._images = SharedArray.attach(self._data.images)
        self._labels = SharedArray.attach(self._data.labels)
        self._perm = SharedArray.attach(self._data.perm)

    def on_receive(self, message: object) -> object:
        if isinstance(message, WorkerTask):
            return message.perform(self)
        return super().on_receive(message)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's sample order, checked to be the one the Loader wrote for ``epoch``."""
        assert self._perm is not None, "attached in on_start"
        perm = self._perm.array
        if perm[0] != epoch:
            raise StalePermutation(f"permutation is for epoch {perm[0]}, not {epoch}")
        return perm[1:]

    def on_stop(self) -> None:
        self._detach_all()

    def on_failure(self, *_exc_info: object) -> None:
        self._detach_all()

    def _on_killed(self) -> None:  # a killed thread worker leaves without on_stop
        self._detach_all()

    def attach(self, role: str, descriptor: ArrayDescriptor) -> np.ndarray:
        """The coordinator's segment for ``role``, re-attached when its name changed (a
        restarted coordinator makes new segments and unlinks the old ones)."""
        shared = self._coordinator_segments.get(role)
        if shared is None or shared.name != descriptor.name:
            if shared is not None:
                shared.close()
            shared = self._coordinator_segments[role] = SharedArray.attach(descriptor)
        return shared.array

    def _detach_all(self) -> None:
        for shared in (
            self._images,
            self._labels,
            self._perm,
            *self._coordinator_segments.values(),
        ):
            if shared is not None:
                shared.close()
        self._coordinator_segments.clear()
