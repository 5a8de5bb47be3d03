"""MLP maths: forward, softmax cross-entropy, backward, for one micro-shard at a time.

`shard_gradient` is the reference's inner loop, and `layers_gradient` (the same, on layer views
made once) the workers' hot path. Their result depends only on their inputs: every intermediate
lives in a private, freshly laid-out Workspace buffer of fixed shape, each GEMM sees the same
operand shapes wherever it runs, and reductions run along fixed axes. With single-threaded BLAS
the same shard therefore gives the same bits in any thread or process. Gradients are SUMS over
the shard's samples, so shard gradients add up to the batch's.

Why every shard runs its own forward pass, even where one worker holds several: OpenBLAS gives a
row of a product different bits depending on how many rows the product has. Its Haswell kernel
(AMD EPYC too) works in blocks of 12 rows in float32 and computes the last partial block with edge
kernels; its SkylakeX kernel switches to small-matrix kernels below about 10^6 multiply-adds
(e.g. 512x10 for up to 195 rows). One product over two 128-row shards would then not give each
shard's rows the bits of its own product, and the result would depend on the worker count.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from otpnn.model.params import Layers, Sizes, layer_views


class Workspace:
    """Scratch buffers for `rows` samples: inputs, activations and back-propagated deltas."""

    def __init__(self, sizes: Sizes, rows: int, dtype: np.dtype) -> None:
        self.x = np.empty((rows, sizes[0]), dtype)
        self.acts = [np.empty((rows, o), dtype) for o in sizes[1:]]
        self.deltas = [np.empty((rows, o), dtype) for o in sizes[1:-1]]
        # Index of each row's first logit in the flattened (rows, classes) logits: + labels gives
        # the labels' logits (a 1-D gather, cheaper than a 2-D fancy index on a small shard).
        self.row_starts = np.arange(rows) * sizes[-1]


_local = threading.local()


def _workspace(sizes: Sizes, rows: int, dtype: np.dtype) -> Workspace:
    """Per-thread cache: a worker reuses the same buffers for every shard of the same size."""
    cache = _local.__dict__.setdefault("workspaces", {})
    key = (tuple(sizes), rows, np.dtype(dtype))
    if key not in cache:
        if len(cache) > 8:
            cache.clear()
        cache[key] = Workspace(sizes, rows, dtype)
    return cache[key]


def _forward(
    views: Sequence[tuple[np.ndarray, np.ndarray]], activation: str, ws: Workspace
) -> np.ndarray:
    """Fill ws.acts layer by layer; returns the last layer's logits (unnormalised)."""
    a = ws.x
    for k, (w, b) in enumerate(views):
        z = ws.acts[k]
        np.matmul(a, w, out=z)
        z += b
        if k < len(views) - 1:
            if activation == "relu":
                np.maximum(z, 0, out=z)
            else:
                with np.errstate(over="ignore"):  # exp(-z) -> inf gives sigmoid 0, as it should
                    np.negative(z, out=z)
                    np.exp(z, out=z)
                z += 1
                np.reciprocal(z, out=z)
        a = z
    return a


def _softmax_xent(
    logits: np.ndarray, y: np.ndarray, label_index: np.ndarray
) -> tuple[float, int, np.ndarray]:
    """Turn logits into probabilities in place; return (loss sum, correct, probabilities).

    Loss per sample is logsumexp(z) - z_y, computed after subtracting the row max (no overflow).
    ``label_index``: the flat index of each row's label logit (Workspace.row_starts + y).
    """
    correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
    logits -= logits.max(axis=1, keepdims=True)
    z_y = logits.reshape(-1)[label_index]
    np.exp(logits, out=logits)
    total = logits.sum(axis=1)
    loss = float(np.sum(np.log(total) - z_y, dtype=np.float64))
    logits /= total[:, None]
    return loss, correct, logits


def _scale_inputs(x_u8: np.ndarray, ws: Workspace) -> None:
    """uint8 pixels -> x/255 (a correctly rounded division: the same bits everywhere)."""
    np.divide(x_u8, ws.x.dtype.type(255), out=ws.x)


def shard_gradient(
    params_flat: np.ndarray,
    sizes: Sizes,
    activation: str,
    x_u8_rows: np.ndarray,
    y: np.ndarray,
    grad_out: np.ndarray,
    *,
    workspace: Workspace | None = None,
) -> tuple[float, int]:
    """Write the SUM over the shard's samples of d(loss)/d(params) into `grad_out` (flat, same
    layout as params); return (sum of per-sample losses, number of correct predictions).

    Losses and accuracy are those of the parameters before any update of this step.
    """
    views, grads = layer_views(params_flat, sizes), layer_views(grad_out, sizes)
    return layers_gradient(views, grads, activation, x_u8_rows, y, workspace=workspace)


def layers_gradient(
    views: Layers,
    grads: Layers,
    activation: str,
    x_u8_rows: np.ndarray,
    y: np.ndarray,
    *,
    workspace: Workspace | None = None,
) -> tuple[float, int]:
    """`shard_gradient` on (W, b) views of the parameters and of the gradient made beforehand
    (`layer_views`): a worker makes them once per run, not twice per shard."""
    sizes = (views[0][0].shape[0], *(b.shape[0] for _, b in views))
    ws = workspace or _workspace(sizes, len(y), views[0][0].dtype)
    _scale_inputs(x_u8_rows, ws)
    label_index = ws.row_starts + y
    # A diverging run says so once (the trainer reports a non-finite loss), not per operation.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss, correct, delta = _softmax_xent(_forward(views, activation, ws), y, label_index)
        _backward(views, grads, activation, ws, delta, label_index)
    return loss, correct


def _backward(
    views: Layers,
    grads: Layers,
    activation: str,
    ws: Workspace,
    delta: np.ndarray,
    label_index: np.ndarray,
) -> None:
    """The gradient sums into ``grads``, from the softmax output ``delta`` of the forward pass."""
    delta.reshape(-1)[label_index] -= 1  # d(loss)/d(logits) = softmax - onehot
    for k in range(len(views) - 1, -1, -1):
        a_prev = ws.x if k == 0 else ws.acts[k - 1]
        gw, gb = grads[k]
        np.matmul(a_prev.T, delta, out=gw)
        np.add.reduce(delta, axis=0, out=gb)
        if k:
            back = ws.deltas[k - 1]
            np.matmul(delta, views[k][0].T, out=back)
            a = ws.acts[k - 1]
            if activation == "relu":
                back *= a > 0
            else:
                back *= a * (1 - a)
            delta = back


def reduce_in_order(shard_grads: Sequence[np.ndarray] | np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = g0 + g1 + ... added strictly left to right in shard order.

    Floating-point addition is not associative: one fixed order, used by the reference and by every
    trainer, is what makes the result independent of which worker computed which shard.
    """
    if len(shard_grads) == 1:
        np.copyto(out, shard_grads[0])
    else:
        np.add(shard_grads[0], shard_grads[1], out=out)  # (g0 + g1), with no copy of g0 first
    for g in shard_grads[2:]:
        np.add(out, g, out=out)
    return out


def evaluate(
    params: np.ndarray,
    sizes: Sizes,
    activation: str,
    images_u8: np.ndarray,
    labels: np.ndarray,
    chunk: int = 1000,
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) over a dataset, in chunks to bound memory."""
    views = layer_views(params, sizes)
    loss, correct = 0.0, 0
    for start in range(0, len(labels), chunk):
        x, y = images_u8[start : start + chunk], labels[start : start + chunk]
        ws = _workspace(sizes, len(y), params.dtype)
        _scale_inputs(x, ws)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logits = _forward(views, activation, ws)
            chunk_loss, chunk_correct, _ = _softmax_xent(logits, y, ws.row_starts + y)
        loss += chunk_loss
        correct += chunk_correct
    n = max(len(labels), 1)
    return loss / n, correct / n


def predict_logits(
    params: np.ndarray, sizes: Sizes, activation: str, images_u8: np.ndarray, chunk: int = 1000
) -> np.ndarray:
    """Logits (N, classes) by the very forward pass of :func:`evaluate`, so their argmax is the
    class evaluate counts (a saved model predicts what its test accuracy says)."""
    views = layer_views(params, sizes)
    out = np.empty((len(images_u8), sizes[-1]), params.dtype)
    for start in range(0, len(images_u8), chunk):
        x = images_u8[start : start + chunk]
        ws = _workspace(sizes, len(x), params.dtype)
        _scale_inputs(x, ws)
        out[start : start + len(x)] = _forward(views, activation, ws)
    return out
