"""The Worker: computes the summed gradient, loss and correct count of micro-shards.

One class for every backend: spawned as a thread actor or as a process actor, it reads the
dataset, the permutation and the parameters from shared memory and writes each shard's gradient
into that shard's row of the gradient segment; in a lockstep run it also reduces and updates its
slice of the parameters (see :mod:`otpnn.training.lockstep`). It keeps no training state, so a
restarted worker is as good as the one it replaces; what it holds are attachments, re-made when
names change.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.faults import FaultTarget
from otpnn.model import shard_gradient
from otpnn.training.blas import ONE_BLAS_THREAD
from otpnn.training.lockstep import Rank, RankArrays, RunSteps
from otpnn.training.messages import ComputeShards, DataSegments, ShardResult
from supervision import Actor
from supervision.process import ProcessOptions
from supervision.shm import ArrayDescriptor, SharedArray


class StalePermutation(RuntimeError):
    """The shared permutation is not the one for the epoch asked for (a protocol bug)."""


class Worker(FaultTarget, Actor):
    # In a process worker BLAS must be single-threaded from the moment numpy loads (see
    # otpnn.training.blas; the env matters where the forkserver did not preload the trainer,
    # see otpnn.training.forkserver_preload). Batch scheduling: the
    # coordinator wakes the workers one pipe write at a time, and a woken worker that took the
    # coordinator's core delayed the messages to the others (py-spy, MNIST, batch 256, 2 process
    # workers: the coordinator's time in the pipe write fell from 201 to 20 samples of ~1200;
    # epochs ~11 % faster).
    process_options = ProcessOptions(env=ONE_BLAS_THREAD, batch_scheduling=True)

    def __init__(
        self,
        index: int,
        data: DataSegments,
        sizes: tuple[int, ...],
        activation: str,
        backend: str,
    ) -> None:
        super().__init__()
        self.index = index
        self.own_process = backend == "process"
        self._data = data
        self._sizes = sizes
        self._activation = activation
        self._images: SharedArray | None = None
        self._labels: SharedArray | None = None
        self._perm: SharedArray | None = None
        self._coordinator_segments: dict[str, SharedArray] = {}

    def on_start(self) -> None:
        # One BLAS thread per worker: N workers use N cores, and results do not depend on how
        # many threads BLAS would otherwise pick.
        threadpool_limits(limits=1)
        self._images = SharedArray.attach(self._data.images)
        self._labels = SharedArray.attach(self._data.labels)
        self._perm = SharedArray.attach(self._data.perm)

    def on_receive(self, message: object) -> object:
        if isinstance(message, ComputeShards):
            return self.compute(message)
        if isinstance(message, RunSteps):
            return self.run_steps(message)
        return super().on_receive(message)

    def run_steps(self, msg: RunSteps) -> int | None:
        """Be one rank of a lockstep run; the last step done, or None if the run was aborted."""
        seg = msg.segments
        arrays = RankArrays(
            self._images.array,
            self._labels.array,
            self._order(msg.epoch),
            self._attach_current("params", seg.params),
            self._attach_current("velocity", seg.velocity),
            self._attach_current("grads", seg.grads),
            self._attach_current("stats", seg.stats),
            self._attach_current("control", seg.control),
        )
        threads_key = None if self.own_process else seg.control.name
        rank = Rank(
            msg, arrays, self._sizes, self._activation, self.inject, self.actor_stopped, threads_key
        )
        return rank.run()

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's sample order, checked to be the one the Loader wrote for ``epoch``."""
        perm = self._perm.array
        if perm[0] != epoch:
            raise StalePermutation(f"permutation is for epoch {perm[0]}, not {epoch}")
        return perm[1:]

    def compute(self, msg: ComputeShards) -> tuple[ShardResult, ...]:
        if msg.fault is not None:
            self.inject(msg.fault)
        order = self._order(msg.epoch)
        params = self._attach_current("params", msg.params)[(msg.step - 1) % 2]
        grads = self._attach_current("grads", msg.grads)
        images, labels = self._images.array, self._labels.array
        results = []
        for shard in msg.shards:
            rows = order[shard.lo : shard.hi]
            loss_sum, correct = shard_gradient(
                params,
                self._sizes,
                self._activation,
                images[rows],
                labels[rows],
                grads[shard.index],
            )
            results.append(ShardResult(shard.index, loss_sum, correct))
        return tuple(results)

    def on_stop(self) -> None:
        self._detach_all()

    def on_failure(self, *_exc_info: object) -> None:
        self._detach_all()

    def _on_killed(self) -> None:  # a killed thread worker leaves without on_stop
        self._detach_all()

    def _attach_current(self, role: str, descriptor: ArrayDescriptor) -> np.ndarray:
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
