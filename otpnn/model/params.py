"""Parameters as ONE flat contiguous vector with per-layer views.

A flat vector is what shared memory, checkpoints, the reduction and the optimizer want: one buffer,
one add, one update, one checksum. Layer l owns W_l (in, out) followed by b_l (out,) in that order.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from otpnn.config import TrainConfig

Sizes = Sequence[int]
Layers = list[tuple[np.ndarray, np.ndarray]]  # (W, b) per layer: views into a flat vector


@functools.cache
def _layout(sizes: tuple[int, ...]) -> tuple[int, tuple[tuple[int, int, int, int], ...]]:
    """(total, per layer (w_start, b_start, b_stop, out)): computed once per architecture,
    because layer_views runs twice per shard on the hot path."""
    layers, off = [], 0
    for i, o in itertools.pairwise(sizes):
        layers.append((off, off + i * o, off + i * o + o, o))
        off += i * o + o
    return off, tuple(layers)


def num_params(sizes: Sizes) -> int:
    return _layout(tuple(sizes))[0]


def layer_views(flat: np.ndarray, sizes: Sizes) -> Layers:
    """(W, b) views into `flat` (writes through); W is (in, out) so a layer is x @ W + b."""
    total, layers = _layout(tuple(sizes))
    if flat.ndim != 1 or flat.size != total:
        raise ValueError(f"flat vector of {flat.size} values does not fit layer sizes {sizes}")
    return [(flat[w:b].reshape(-1, o), flat[b:end]) for w, b, end, o in layers]


def init_params(
    cfg_or_sizes: TrainConfig | Sequence[int],
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
