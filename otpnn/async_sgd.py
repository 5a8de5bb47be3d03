"""Asynchronous SGD with a fixed staleness: the algorithm and its arithmetic, shared by the async
driver (:mod:`otpnn.training.drivers.async_stepwise`) and its serial reference
(:mod:`otpnn.reference_async`), so both do the same arithmetic in the same order.

For staleness ``S`` (an integer >= 1), updates numbered from 1 across epochs (one per batch, as
many as sync SGD):

- the gradient of update ``t`` is taken on the parameters after update ``t - S`` (the initial
  parameters for ``t <= S``): the batch's micro-shard gradients, each computed on its own, added
  in shard order (``reduce_in_order``), exactly as a synchronous step computes them;
- updates are applied strictly in order, each to the parameters after update ``t - 1`` (with the
  momentum buffer after it): ``p_t = SGD(p_{t-1}, v_{t-1}, grad(p_{t-S}))``.

``S = 1`` is therefore sync SGD, bit for bit; a larger ``S`` lets the gradients of ``S`` updates
be computed at once (updates ``t .. t+S-1`` need only versions up to ``t - 1``). The result
depends on ``S``, the seed and the config only: not on the worker count or kind, nor on which
worker computed which shard, nor on when anything arrived.

The state after update ``u`` is the parameters after updates ``u-S+1 .. u`` (``S`` versions;
those before update 1 are the initial parameters) and the momentum buffer after ``u``: that is
what a checkpoint holds (``earlier``: the ``S - 1`` versions before ``u``, oldest first), so a
resume continues with the same bits at any update.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from otpnn.model import Hyper, reduce_and_update


class VersionRing:
    """The parameters after the last ``S + 1`` updates, in the rows of an ``(S + 1, P)`` array:
    version ``v`` (the parameters after update ``v``) in row ``v mod (S + 1)``; a version
    before 0 is version 0.

    Why one row more than the ``S`` versions the state needs: update ``t`` is written while
    the gradients of updates ``t+1 .. t+S-1`` may still be read from versions ``t-S+1 .. t-1``,
    and update ``t``'s own gradient came from version ``t - S``: the row written is version
    ``t - S - 1``'s, which nothing reads any more.
    """

    def __init__(self, rows: np.ndarray, staleness: int) -> None:
        if rows.shape[0] != staleness + 1:
            raise ValueError(f"a ring for staleness {staleness} has {staleness + 1} rows")
        self.rows = rows
        self.staleness = staleness

    def slot(self, version: int) -> int:
        """The row that holds ``version``."""
        return max(version, 0) % len(self.rows)

    def version(self, version: int) -> np.ndarray:
        """A view of the parameters after update ``version``."""
        return self.rows[self.slot(version)]

    def fill(self, step: int, latest: np.ndarray, earlier: np.ndarray | None) -> None:
        """Set the state after update ``step``: ``latest`` and the ``S - 1`` versions before
        it (``earlier``, oldest first; None is allowed only where they are all the initial
        parameters, i.e. at step 0, or with S = 1)."""
        s = self.staleness
        if earlier is None:
            if step and s > 1:
                raise ValueError(f"the state after update {step} needs {s - 1} earlier versions")
            earlier = np.broadcast_to(latest, (s - 1, latest.size))
        for k, row in enumerate(earlier):
            self.version(step - (s - 1) + k)[...] = row
        self.version(step)[...] = latest

    def earlier(self, step: int) -> np.ndarray | None:
        """A copy of the ``S - 1`` versions before ``step`` (oldest first); None for S = 1."""
        s = self.staleness
        if s == 1:
            return None
        return np.stack([self.version(v) for v in range(step - s + 1, step)])


def apply_update(
    hyper: Hyper,
    ring: VersionRing,
    velocity: np.ndarray,
    grads: Sequence[np.ndarray] | np.ndarray,
    step: int,
    rows: int,
    *,
    velocity_out: np.ndarray | None = None,
) -> None:
    """Update ``step``: the shard gradients ``grads`` of its ``rows`` samples added in shard
    order, applied to version ``step - 1`` and the momentum buffer ``velocity`` into version
    ``step``'s row and ``velocity_out`` (by default ``velocity`` itself, updated in place), by
    ``reduce_and_update``: the bits of the whole-vector calls."""
    reduce_and_update(
        hyper, grads, ring.version(step - 1), velocity, rows, params_out=ring.version(step),
        velocity_out=velocity if velocity_out is None else velocity_out,
    )  # fmt: skip
