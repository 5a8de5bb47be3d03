import hashlib
import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.model import (
    evaluate,
    init_params,
    layer_views,
    layers_gradient,
    num_params,
    params_sha256,
    reduce_in_order,
    shard_gradient,
)

SIZES = (784, 12, 8, 10)


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def test_flat_layout_and_views_write_through():
    assert num_params(SIZES) == 784 * 12 + 12 + 12 * 8 + 8 + 8 * 10 + 10
    flat = np.zeros(num_params(SIZES), dtype=np.float32)
    views = layer_views(flat, SIZES)
    assert [(w.shape, b.shape) for w, b in views] == [
        ((784, 12), (12,)),
        ((12, 8), (8,)),
        ((8, 10), (10,)),
    ]
    views[1][1][:] = 7
    assert flat[784 * 12 + 12 + 96 :][:8].tolist() == [7] * 8
    with pytest.raises(ValueError, match="does not fit"):
        layer_views(flat[:-1], SIZES)


def test_init_is_deterministic_and_scaled_per_activation():
    a = init_params(SIZES, 1)
    assert a.dtype == np.float32
    assert np.array_equal(a, init_params(SIZES, 1))
    assert not np.array_equal(a, init_params(SIZES, 2))
    w0, b0 = layer_views(a, SIZES)[0]
    assert not b0.any()
    assert w0.std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)  # He
    g = init_params(SIZES, 1, "float64", activation="sigmoid")
    w0 = layer_views(g, SIZES)[0][0]
    assert np.abs(w0).max() <= np.sqrt(6 / (784 + 12))  # Glorot uniform bound
    cfg = TrainConfig(hidden=(12, 8), dtype="float64", seed=1)
    assert np.array_equal(init_params(cfg), init_params(SIZES, 1, "float64"))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_gradient_matches_central_finite_differences(activation):
    """float64, every layer's weights and biases: analytic == (L(p+e) - L(p-e)) / 2e."""
    params = init_params(SIZES, 3, "float64", activation=activation)
    params += np.random.default_rng(1).normal(0, 0.05, params.shape)  # non-zero biases
    x, y = _batch(6)
    grad, scratch = np.empty_like(params), np.empty_like(params)
    shard_gradient(params, SIZES, activation, x, y, grad)
    rng = np.random.default_rng(2)
    offsets = np.cumsum([0] + [a for i, o in itertools.pairwise(SIZES) for a in (i * o, o)])
    for lo, hi in itertools.pairwise(offsets):  # each W and each b separately
        for i in rng.choice(np.arange(lo, hi), size=min(8, hi - lo), replace=False):
            eps = 1e-6
            params[i] += eps
            up, _ = shard_gradient(params, SIZES, activation, x, y, scratch)
            params[i] -= 2 * eps
            down, _ = shard_gradient(params, SIZES, activation, x, y, scratch)
            params[i] += eps
            numeric = (up - down) / (2 * eps)
            assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (lo, i)


def test_loss_and_correct_match_a_plain_formula():
    params = init_params(SIZES, 0, "float64")
    x, y = _batch(32)
    loss, correct = shard_gradient(params, SIZES, "relu", x, y, np.empty_like(params))
    a = x / 255.0
    for w, b in layer_views(params, SIZES)[:-1]:
        a = np.maximum(a @ w + b, 0)
    w, b = layer_views(params, SIZES)[-1]
    z = a @ w + b
    logp = (
        z
        - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        - z.max(1, keepdims=True)
    )
    assert loss == pytest.approx(-logp[np.arange(32), y].sum(), rel=1e-12)
    assert correct == int((z.argmax(1) == y).sum())
    mean_loss, acc = evaluate(params, SIZES, "relu", x, y, chunk=5)
    assert mean_loss == pytest.approx(loss / 32, rel=1e-12)
    assert acc == correct / 32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_of_shard_gradients_equals_batch_gradient(dtype):
    params = init_params(SIZES, 0, dtype)
    x, y = _batch(40)
    whole = np.empty_like(params)
    loss, correct = shard_gradient(params, SIZES, "relu", x, y, whole)
    shards = [np.empty_like(params) for _ in range(3)]
    parts = [
        shard_gradient(params, SIZES, "relu", x[a:b], y[a:b], g)
        for (a, b), g in zip([(0, 16), (16, 32), (32, 40)], shards, strict=False)
    ]
    total = reduce_in_order(shards, np.empty_like(params))
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(total, whole, rtol=tol, atol=tol)
    assert sum(p[0] for p in parts) == pytest.approx(loss, rel=tol)
    assert sum(p[1] for p in parts) == correct


def test_reduce_is_strictly_left_to_right():
    big, tiny = np.float32(1e8), np.float32(4.0)
    g = [np.array([big]), np.array([tiny]), np.array([-big]), np.array([tiny])]
    out = np.empty(1, np.float32)
    # ((1e8 + 4) - 1e8) + 4 in float32 = 0 + 4 (the first 4 is absorbed), unlike a tree's 8
    assert reduce_in_order(g, out)[0] == ((big + tiny) - big) + tiny == 4.0
    assert reduce_in_order([np.array([tiny]), np.array([tiny])], out)[0] == 8.0


def _misaligned_copy(a: np.ndarray, byte_offset: int) -> np.ndarray:
    raw = np.zeros(a.nbytes + 64, np.uint8)
    out = raw[byte_offset : byte_offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_layers_gradient_on_views_made_once_gives_shard_gradients_bits(activation):
    """Workers make the layer views once per run; every shard must still give the bits (and the
    loss and correct count) that the reference's shard_gradient gives, whatever came before."""
    params = init_params(SIZES, 3, activation=activation)
    views, out = layer_views(params, SIZES), np.full_like(params, np.nan)
    grads = layer_views(out, SIZES)
    for rows, seed in ((5, 1), (16, 2), (5, 3)):
        x, y = _batch(rows, seed)
        expected = np.empty_like(params)
        result = shard_gradient(params, SIZES, activation, x, y, expected)
        assert layers_gradient(views, grads, activation, x, y) == result
        assert params_sha256(out) == params_sha256(expected)


def test_shard_gradient_is_bit_identical_across_buffers_and_threads():
    """The bit-identity guarantee rests on this: same inputs, same bits, whatever the memory
    alignment of the buffers and whichever thread computes it."""
    params = init_params((784, 128, 64, 10), 0)
    x, y = _batch(16)
    ref = np.empty_like(params)
    ref_out = shard_gradient(params, (784, 128, 64, 10), "relu", x, y, ref)
    for offset in (4, 8, 36):
        p2, x2 = _misaligned_copy(params, offset), _misaligned_copy(x, offset + 1)
        g2 = _misaligned_copy(np.zeros_like(params), offset + 8)
        assert shard_gradient(p2, (784, 128, 64, 10), "relu", x2, y, g2) == ref_out
        assert params_sha256(g2) == params_sha256(ref)
    results = {}

    def work(k):
        g = np.empty_like(params)
        shard_gradient(params, (784, 128, 64, 10), "relu", x, y, g)
        results[k] = params_sha256(g)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results.values()) == {params_sha256(ref)}


def test_params_sha256_is_over_raw_bytes():
    a = np.arange(4, dtype=np.float32)
    assert params_sha256(a) == params_sha256(a.copy())
    assert params_sha256(a) != params_sha256(a.astype(np.float64))
    assert params_sha256(a) == hashlib.sha256(a.tobytes()).hexdigest()


CHILD = """
import sys
import numpy as np
from otpnn.model import init_params, params_sha256, shard_gradient
sizes = (784, 128, 64, 10)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (16, 784), dtype=np.uint8)
y = rng.integers(0, 10, 16, dtype=np.uint8)
params = init_params(sizes, 0)
grad = np.empty_like(params)
loss, correct = shard_gradient(params, sizes, "relu", x, y, grad)
print(params_sha256(grad), loss.hex(), correct)
"""


def test_shard_gradient_is_bit_identical_in_another_process():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    x, y = _batch(16)
    params = init_params((784, 128, 64, 10), 0)
    grad = np.empty_like(params)
    with threadpool_limits(1):
        loss, correct = shard_gradient(params, (784, 128, 64, 10), "relu", x, y, grad)
    assert child == [params_sha256(grad), loss.hex(), str(correct)]
