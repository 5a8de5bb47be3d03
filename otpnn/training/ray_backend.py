"""The trainer on Ray: the stepwise driver with Ray's object store as its transport instead of
shared memory (which does not span machines), and the Loader and Worker actors that go with it.

- the Loader puts the dataset once per job (``ray.put`` of images and labels) and each epoch's
  permutation once per epoch;
- the stepwise driver's :class:`RayTransport` puts the parameters once per step (a redone
  shard reuses the same ref);
- a worker fetches each object once per version (cached by ref: on its node, Ray maps it
  without a copy), computes its shards with the same ``shard_gradient`` call as every other
  worker, and returns the gradients in its reply, which Ray stores in the object store;
- the transport copies each gradient into its shard's row of the driver's gradients, so the
  reduction (``reduce_in_order``), the update and therefore the checksum are the ones of the
  thread and process backends.

Only ids, versions, small numbers and ObjectRefs cross a mailbox; arrays go through the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import ObjectRef
from threadpoolctl import threadpool_limits

from otpnn.faults import FaultTarget
from otpnn.model import num_params, shard_gradient
from otpnn.schedule import epoch_permutation
from otpnn.training.drivers.base import Host
from otpnn.training.drivers.stepwise import Shard, ShardResult, StepArrays
from otpnn.training.worker import StalePermutation
from supervision import Actor
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


class RayLoader(FaultTarget, Actor):
    """The Loader's job with the dataset and the permutations in the object store."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        super().__init__()
        self._source = (images, labels)
        self._seed = seed
        self._order: EpochOrder | None = None

    def on_start(self) -> None:
        images, labels = self._source
        self._data = RayData(ray.put(images), ray.put(labels))

    def segments(self) -> RayData:
        """The dataset's refs, for workers to fetch."""
        return self._data

    def open_epoch(self, epoch: int, fault: str | None = None) -> int:
        """Put epoch ``epoch``'s permutation (numbered from 1); returns the sample count."""
        if fault is not None:
            self.inject(fault)
        n = len(self._source[1])
        self._order = EpochOrder(epoch, ray.put(epoch_permutation(n, self._seed, epoch)))
        return n

    def order(self) -> EpochOrder | None:
        """The permutation of the epoch last opened (None before the first)."""
        return self._order


class RayTask(ABC):
    """A message a Ray worker performs, bringing its behaviour along (like a
    :class:`~otpnn.training.drivers.task.WorkerTask` for the other workers): another
    protocol's messages for Ray live in that protocol's module."""

    __slots__ = ()

    @abstractmethod
    def perform_on(self, worker: RayWorker) -> object: ...


class RayWorker(FaultTarget, Actor):
    """A stepwise worker in a Ray actor: one CPU each (Ray then runs its BLAS single-threaded).
    Stateless like every worker; it caches the current objects by ref."""

    ray_options = RayOptions(num_cpus=1)

    def __init__(
        self,
        index: int,
        data: RayData,
        sizes: tuple[int, ...],
        activation: str,
        backend: str,
        job: str = "job",  # as Worker's; unused: Ray titles its worker processes itself
    ) -> None:
        super().__init__()
        self.index = index
        self.own_process = True  # faults act on the Ray worker's own process (kill -9, exit)
        self._data = data
        self._sizes = sizes
        self._activation = activation
        self._cache: dict[str, tuple[ObjectRef, Any]] = {}

    def on_start(self) -> None:
        threadpool_limits(limits=1)
        self._images, self._labels = ray.get([self._data.images, self._data.labels])

    def on_receive(self, message: object) -> object:
        if isinstance(message, RayComputeShards):
            return self.compute_from_store(message)
        if isinstance(message, RayTask):
            return message.perform_on(self)
        return super().on_receive(message)

    # What a RayTask may use: the dataset, the network's shape, objects by ref.
    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def activation(self) -> str:
        return self._activation

    def compute_from_store(self, msg: RayComputeShards) -> tuple[ShardGradient, ...]:
        if msg.fault is not None:
            self.inject(msg.fault)
        if msg.order.epoch != msg.epoch:
            raise StalePermutation(f"permutation is for epoch {msg.order.epoch}, not {msg.epoch}")
        params = self.fetch("params", msg.params)
        order = self.fetch("order", msg.order.perm)
        results = []
        for shard in msg.shards:
            rows = order[shard.lo : shard.hi]
            grad = np.empty(num_params(self._sizes), params.dtype)
            loss_sum, correct = shard_gradient(
                params, self._sizes, self._activation, self._images[rows], self._labels[rows], grad
            )
            results.append(ShardGradient(shard.index, loss_sum, correct, grad))
        return tuple(results)

    def fetch(self, role: str, ref: ObjectRef) -> Any:
        """The object behind ``ref``, fetched once per version (one get per step, not shard)."""
        cached = self._cache.get(role)
        if cached is None or cached[0] != ref:
            cached = self._cache[role] = (ref, ray.get(ref))
        return cached[1]

    def on_stop(self) -> None:
        self._cache.clear()

    def on_failure(self, *_exc_info: object) -> None:
        self._cache.clear()


class RayTransport:
    """The stepwise driver's transport for Ray workers: parameters put into the object store
    once per step, gradients taken from the workers' replies."""

    def __init__(self, host: Host, arrays: StepArrays) -> None:
        self._host = host
        self._arrays = arrays
        self._params_ref: tuple[int, ObjectRef] | None = None
        self._order: EpochOrder | None = None

    def open_epoch(self, epoch: int) -> None:
        loader = self._host.loader()
        self._order = loader.proxy().order().get(timeout=self._host.step_timeout)

    def message(
        self, step: int, epoch: int, shards: tuple[Shard, ...], fault: str | None
    ) -> RayComputeShards:
        if self._params_ref is None or self._params_ref[0] != step:
            self._params_ref = (step, ray.put(self._arrays.params.array[(step - 1) % 2]))
        assert self._order is not None, "an epoch is opened before its first step"
        return RayComputeShards(step, epoch, self._params_ref[1], self._order, shards, fault)

    def accept(self, reply: Any) -> tuple[ShardResult, ...]:
        grads = self._arrays.grads.array
        results: tuple[ShardGradient, ...] = tuple(reply)
        for r in results:
            grads[r.index] = r.grad
        return results
