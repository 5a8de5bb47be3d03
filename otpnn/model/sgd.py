"""SGD with optional momentum and L2 weight decay, on flat vectors.

Update (PyTorch convention): g = grad_sum / batch_len + weight_decay * p;
v = momentum * v + g; p -= lr * v   (without momentum: p -= lr * g).
Every operation is element-wise, so the update of any slice of the vector gives the same bits as
the update of the whole vector: the trainer's workers each update their own slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from otpnn.model.mlp import reduce_in_order

UPDATE_CHUNK = 1 << 16
"""Elements per chunk of :func:`reduce_and_update`: the chunk's slices of the gradients,
parameters, velocity and scratch fit in a core's L2 cache together."""


@dataclass(frozen=True, slots=True)
class Hyper:
    """The optimizer's hyperparameters (what crosses a mailbox; the state stays in arrays)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


def sgd_update(
    hyper: Hyper,
    params: np.ndarray,
    velocity: np.ndarray | None,
    grad_sum: np.ndarray,
    batch_len: int,
    *,
    params_out: np.ndarray,
    velocity_out: np.ndarray | None,
    scratch: np.ndarray,
) -> None:
    """One update from (params, velocity) into (params_out, velocity_out); the outputs may be
    the inputs (in place) or other buffers (the trainer's double buffering). The velocities are
    used only with momentum (None will do without). ``scratch``: same shape, overwritten."""
    g = scratch
    np.divide(grad_sum, batch_len, out=g)
    if hyper.weight_decay:
        g += hyper.weight_decay * params
    if hyper.momentum:
        if velocity is None or velocity_out is None:
            raise ValueError("SGD with momentum needs velocity buffers")
        np.multiply(velocity, hyper.momentum, out=velocity_out)
        velocity_out += g
        np.multiply(velocity_out, hyper.lr, out=g)
    else:
        np.multiply(g, hyper.lr, out=g)
    np.subtract(params, g, out=params_out)


def reduce_and_update(
    hyper: Hyper,
    grads: Sequence[np.ndarray] | np.ndarray,
    params: np.ndarray,
    velocity: np.ndarray | None,
    batch_len: int,
    *,
    params_out: np.ndarray,
    velocity_out: np.ndarray | None,
    first: int = 0,
    chunk: int = UPDATE_CHUNK,
) -> None:
    """``reduce_in_order(grads)`` then :func:`sgd_update`, with the bits of those two calls.

    ``grads``: the shard gradients in shard order, the rows of a 2-D array whose columns
    ``first .. first + len(params)`` are the gradients of ``params`` (e.g. a rank's slice of
    the parameter vector), or a sequence of vectors ``params``' length (``first`` 0).

    It exists for speed: the update of a wide network is bound by memory traffic. A C-contiguous
    array of rows, with every vector contiguous, goes through :mod:`otpnn.model.fused` (one
    compiled pass); anything else through numpy ``chunk`` elements at a time, so that the
    chunk's slices stay in cache across the six or so calls."""
    vectors = [v for v in (params, params_out, velocity, velocity_out) if v is not None]
    if (
        isinstance(grads, np.ndarray)
        and grads.ndim == 2
        and grads.flags.c_contiguous
        and all(v.flags.c_contiguous and v.dtype == grads.dtype for v in vectors)
    ):
        from otpnn.model import fused  # numba loads here: not in every process that imports this

        fused.reduce_update(
            grads, first, params, velocity, params_out, velocity_out, batch_len, hyper.lr,
            hyper.momentum, hyper.weight_decay,
        )  # fmt: skip
        return
    acc = np.empty(max(1, min(chunk, len(params))), params.dtype)
    scratch = np.empty_like(acc)
    for lo in range(0, len(params), chunk):
        hi = min(lo + chunk, len(params))
        a, s = acc[: hi - lo], scratch[: hi - lo]
        reduce_in_order([g[first + lo : first + hi] for g in grads], a)
        sgd_update(
            hyper,
            params[lo:hi],
            None if velocity is None else velocity[lo:hi],
            a,
            batch_len,
            params_out=params_out[lo:hi],
            velocity_out=None if velocity_out is None else velocity_out[lo:hi],
            scratch=s,
        )


class SGD:
    """The optimizer with its state, updating parameters in place (the serial loops' form)."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.hyper = Hyper(lr, momentum, weight_decay)
        self.velocity: np.ndarray | None = None
        self._g: np.ndarray | None = None

    def step(self, params: np.ndarray, grad_sum: np.ndarray, batch_len: int) -> None:
        """Apply one update using the MEAN gradient grad_sum / batch_len."""
        if self._g is None or self._g.shape != params.shape or self._g.dtype != params.dtype:
            self._g = np.empty_like(params)
        if self.hyper.momentum and self.velocity is None:
            self.velocity = np.zeros_like(params)
        v = self.velocity
        sgd_update(
            self.hyper, params, v, grad_sum, batch_len, params_out=params, velocity_out=v,
            scratch=self._g,
        )  # fmt: skip

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Tensors to checkpoint (the momentum buffer once it exists)."""
        return {} if self.velocity is None else {"velocity": self.velocity}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        unknown = set(arrays) - {"velocity"}
        if unknown:
            raise ValueError(f"unknown optimizer state {sorted(unknown)}; expected 'velocity'")
        v = arrays.get("velocity")
        self.velocity = None if v is None else np.array(v, copy=True)
