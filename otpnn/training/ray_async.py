"""Async SGD on Ray: the async driver's transport through Ray's object store.

- each parameter version is put once, when its update is applied (a resumed or restarted
  driver puts the S versions it starts from); an update's message names the ref of the version
  S updates old, so a redone message reuses it;
- a Ray worker computes the shards with the stepwise protocol's Ray message
  (:class:`~otpnn.training.ray_backend.RayComputeShards`: the same ``shard_gradient`` call as
  every other worker) and returns the gradients in its reply;
- the transport copies each gradient into its shard's row of the update's slot, so the
  reduction, the update and therefore the checksum are those of thread and process workers.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import ObjectRef

from otpnn.async_sgd import VersionRing
from otpnn.training.drivers.async_stepwise import AsyncArrays
from otpnn.training.drivers.base import Host
from otpnn.training.drivers.stepwise import Shard, ShardResult
from otpnn.training.ray_backend import EpochOrder, RayComputeShards, ShardGradient


class RayUpdates:
    """The async driver's transport for Ray workers (see the module)."""

    def __init__(self, host: Host, arrays: AsyncArrays) -> None:
        self._host, self._arrays = host, arrays
        self._ring = VersionRing(arrays.ring.array, arrays.staleness)
        self._refs: dict[int, ObjectRef] = {}  # by version: the last S
        self._order: EpochOrder | None = None

    def open_epoch(self, epoch: int) -> None:
        loader = self._host.loader()
        self._order = loader.proxy().order().get(timeout=self._host.step_timeout)

    def publish(self, version: int) -> None:
        self._refs[version] = ray.put(self._ring.version(version))
        self._refs.pop(version - self._arrays.staleness, None)  # no update reads it any more

    def message(
        self, update: int, epoch: int, shards: tuple[Shard, ...], fault: str | None
    ) -> RayComputeShards:
        assert self._order is not None, "an epoch is opened before its first update"
        params = self._refs[max(0, update - self._arrays.staleness)]
        return RayComputeShards(update, epoch, params, self._order, shards, fault)

    def accept(self, update: int, reply: Any) -> tuple[ShardResult, ...]:
        slot = self._arrays.grads.array[update % self._arrays.staleness]
        results: tuple[ShardGradient, ...] = tuple(reply)
        for r in results:
            slot[r.index] = r.grad
        return results
