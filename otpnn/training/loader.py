"""The Loader: holds the dataset once, in shared memory, and the order of every epoch.

It copies the job's (already validated) training arrays into shared segments it owns, so that
thread and process workers alike read pixels without copies, and it writes each epoch's
permutation, drawn from the seed, into the permutation segment when the coordinator opens that
epoch. A restarted Loader makes new segments; its old ones are unlinked when it exits, however
it exits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otpnn.faults import FaultTarget
from otpnn.schedule import epoch_permutation
from otpnn.training import segments as job_segments
from supervision import Actor
from supervision.shm import ArrayDescriptor, SharedArray


@dataclass(frozen=True, slots=True)
class DataSegments:
    """The Loader's shared arrays: uint8 images (N, 784), labels (N,), and the permutation.

    ``perm`` holds ``N + 1`` int64: element 0 is the epoch it was drawn for, the rest the order.
    """

    images: ArrayDescriptor
    labels: ArrayDescriptor
    perm: ArrayDescriptor


class Loader(FaultTarget, Actor):
    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
        super().__init__()
        self._source = (images, labels)
        self._seed = seed
        self._segments: list[SharedArray] = []

    def on_start(self) -> None:
        images, labels = self._source
        self._images = self._share(images)
        self._labels = self._share(labels)
        self._perm = job_segments.create((len(labels) + 1,), np.int64)
        self._segments.append(self._perm)
        self._perm.array[0] = 0  # no epoch opened yet

    def segments(self) -> DataSegments:
        """Descriptors of the shared arrays, for workers to attach to."""
        return DataSegments(
            self._images.descriptor(), self._labels.descriptor(), self._perm.descriptor()
        )

    def open_epoch(self, epoch: int, fault: str | None = None) -> int:
        """Write epoch ``epoch``'s permutation (numbered from 1); returns the sample count.

        Called only between steps, when no shard is in flight, so no worker reads a half-written
        order; the epoch number in element 0 lets a worker check it reads the right one.
        """
        if fault is not None:
            self.inject(fault)
        perm = self._perm.array
        n = len(perm) - 1
        perm[1:] = epoch_permutation(n, self._seed, epoch)
        perm[0] = epoch
        return n

    def on_stop(self) -> None:
        self._release()

    def on_failure(self, *_exc_info: object) -> None:
        self._release()

    def _share(self, array: np.ndarray) -> SharedArray:
        shared = job_segments.create(array.shape, array.dtype)
        self._segments.append(shared)
        shared.array[...] = array
        return shared

    def _release(self) -> None:
        for shared in self._segments:
            shared.close()
            shared.unlink()
        self._segments.clear()
