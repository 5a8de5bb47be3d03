"""Parameters as ONE flat contiguous vector with per-layer views.

A flat vector is what shared memory, checkpoints, the reduction and the optimizer want: one buffer,
one add, one update, one checksum. Layer l owns W_l (in, out) followed by b_l (out,) in that order.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import numpy as np

Sizes = Sequence[int]


def num_params(sizes: Sizes) -> int:
    return sum(i * o + o for i, o in itertools.pairwise(sizes))


def layer_views(flat: np.ndarray, sizes: Sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) views into `flat` (writes through); W is (in, out) so a layer is x @ W + b."""
    if flat.ndim != 1 or flat.size != num_params(sizes):
        raise ValueError(f"flat vector of {flat.size} values does not fit layer sizes {sizes}")
    views, off = [], 0
    for i, o in itertools.pairwise(sizes):
        w = flat[off : off + i * o].reshape(i, o)
        off += i * o
        views.append((w, flat[off : off + o]))
        off += o
    return views


def init_params(
    cfg_or_sizes: object,
    seed: int | None = None,
    dtype: str | np.dtype | None = None,
    *,
    activation: str | None = None,
) -> np.ndarray:
    """Deterministic init from the seed: He normal (relu) or Glorot uniform (sigmoid), zero biases.

    Accepts a TrainConfig (sizes, activation, dtype and seed taken from it unless given) or a
    sequence of layer sizes. Drawn in float64 then cast, so float32 and float64 runs start alike.
    """
    if isinstance(cfg_or_sizes, Sequence):
        sizes = tuple(cfg_or_sizes)
        activation = activation or "relu"
        dtype = dtype or "float32"
    else:
        sizes = cfg_or_sizes.layer_sizes
        activation = activation or cfg_or_sizes.activation
        dtype = dtype or cfg_or_sizes.dtype
        seed = cfg_or_sizes.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    flat = np.zeros(num_params(sizes), dtype=dtype)
    for w, _ in layer_views(flat, sizes):
        fan_in, fan_out = w.shape
        if activation == "relu":
            w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w[...] = rng.uniform(-limit, limit, w.shape)
    return flat


def params_sha256(params: np.ndarray) -> str:
    """SHA-256 over the raw bytes: equal hashes mean bit-identical parameters."""
    return hashlib.sha256(np.ascontiguousarray(params).data).hexdigest()
