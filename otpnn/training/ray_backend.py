"""The trainer on Ray: the same Loader, Worker and Coordinator, with Ray's object store as the
transport instead of shared memory (which does not span machines).

- the Loader puts the dataset once per job (``ray.put`` of images and labels) and each epoch's
  permutation once per epoch;
- the Coordinator puts the parameters once per step (a redone shard reuses the same ref);
- a worker fetches each object once per version (cached by ref: on its node, Ray maps it
  without a copy), computes its shards with the same ``shard_gradient`` call as every other
  worker, and returns the gradients in its reply, which Ray stores in the object store;
- the Coordinator copies each gradient into its shard's row of the gradient array, so the
  reduction (``reduce_in_order``), the update and therefore the checksum are the ones of the
  thread and process backends.

Only ids, versions, small numbers and ObjectRefs cross a mailbox; arrays go through the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import ObjectRef
from threadpoolctl import threadpool_limits

from otpnn.model import num_params, shard_gradient
from otpnn.schedule import epoch_permutation
from otpnn.training.coordinator import Coordinator
from otpnn.training.loader import Loader
from otpnn.training.messages import Shard, ShardResult
from otpnn.training.worker import StalePermutation, Worker
from supervision.ray import RayOptions


@dataclass(frozen=True, slots=True)
class RayData:
    """The Loader's dataset in the object store: uint8 images (N, 784) and labels (N,)."""

    images: ObjectRef
    labels: ObjectRef


@dataclass(frozen=True, slots=True)
class EpochOrder:
    """Epoch ``epoch``'s permutation of the training samples, in the object store."""

    epoch: int
    perm: ObjectRef


@dataclass(frozen=True, slots=True)
class RayComputeShards:
    """Coordinator -> Ray worker: compute ``shards`` against the parameters in ``params``
    (version ``step``) with the sample order in ``order``; reply one :class:`ShardGradient`
    per shard."""

    step: int
    epoch: int
    params: ObjectRef
    order: EpochOrder
    shards: tuple[Shard, ...]
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class ShardGradient(ShardResult):
    """A shard's result with its summed gradient (flat, the parameters' layout)."""

    grad: np.ndarray


class RayLoader(Loader):
    """The Loader with the dataset and the permutations in the object store, not in /dev/shm."""

    def on_start(self) -> None:
        images, labels = self._source
        self._data = RayData(ray.put(images), ray.put(labels))
        self._order: EpochOrder | None = None

    def segments(self) -> RayData:  # type: ignore[override]
        return self._data

    def open_epoch(self, epoch: int, fault: str | None = None) -> int:
        if fault is not None:
            self.inject(fault)
        n = len(self._source[1])
        self._order = EpochOrder(epoch, ray.put(epoch_permutation(n, self._seed, epoch)))
        return n

    def order(self) -> EpochOrder | None:
        """The permutation of the epoch last opened (None before the first)."""
        return self._order


class RayWorker(Worker):
    """A Worker in a Ray actor: one CPU each (Ray then runs its BLAS single-threaded)."""

    ray_options = RayOptions(num_cpus=1)

    def __init__(
        self, index: int, data: RayData, sizes: tuple[int, ...], activation: str, backend: str
    ) -> None:
        super().__init__(index, data, sizes, activation, backend)  # type: ignore[arg-type]
        self.own_process = True  # faults act on the Ray worker's own process (kill -9, exit)
        self._cache: dict[str, tuple[ObjectRef, Any]] = {}

    def on_start(self) -> None:
        threadpool_limits(limits=1)
        self._images, self._labels = ray.get([self._data.images, self._data.labels])

    def on_receive(self, message: object) -> object:
        if isinstance(message, RayComputeShards):
            return self.compute_from_store(message)
        return super().on_receive(message)

    def compute_from_store(self, msg: RayComputeShards) -> tuple[ShardGradient, ...]:
        if msg.fault is not None:
            self.inject(msg.fault)
        if msg.order.epoch != msg.epoch:
            raise StalePermutation(f"permutation is for epoch {msg.order.epoch}, not {msg.epoch}")
        params = self._fetch("params", msg.params)
        order = self._fetch("order", msg.order.perm)
        results = []
        for shard in msg.shards:
            rows = order[shard.lo : shard.hi]
            grad = np.empty(num_params(self._sizes), params.dtype)
            loss_sum, correct = shard_gradient(
                params, self._sizes, self._activation, self._images[rows], self._labels[rows], grad
            )
            results.append(ShardGradient(shard.index, loss_sum, correct, grad))
        return tuple(results)

    def _fetch(self, role: str, ref: ObjectRef) -> Any:
        """The object behind ``ref``, fetched once per version (one get per step, not shard)."""
        cached = self._cache.get(role)
        if cached is None or cached[0] != ref:
            cached = self._cache[role] = (ref, ray.get(ref))
        return cached[1]

    def on_stop(self) -> None:
        self._cache.clear()

    def on_failure(self, *_exc_info: object) -> None:
        self._cache.clear()


class RayCoordinator(Coordinator):
    """The Coordinator with parameters put into the object store once per step and gradients
    taken from the workers' replies."""

    _params_ref: tuple[int, ObjectRef] | None = None
    _order: EpochOrder | None = None

    def _open_epoch(self, epoch: int, step: int) -> None:
        super()._open_epoch(epoch, step)
        loader = self._ctx.loader()
        self._order = loader.proxy().order().get(timeout=self._ctx.step_timeout)

    def _shards_message(
        self, step: int, epoch: int, run: tuple[Shard, ...], fault: str | None
    ) -> RayComputeShards:
        if self._params_ref is None or self._params_ref[0] != step:
            self._params_ref = (step, ray.put(self._params.array[(step - 1) % 2]))
        assert self._order is not None, "an epoch is opened before its first step"
        return RayComputeShards(step, epoch, self._params_ref[1], self._order, run, fault)

    def _accept(self, reply: tuple[ShardGradient, ...]) -> tuple[ShardGradient, ...]:  # type: ignore[override]
        grads = self._grads.array
        for r in reply:
            grads[r.index] = r.grad
        return reply
