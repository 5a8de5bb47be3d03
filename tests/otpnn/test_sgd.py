import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpnn.model import SGD, Hyper, reduce_and_update, reduce_in_order, sgd_update


def test_plain_sgd_uses_the_mean_gradient():
    p = np.array([1.0, 2.0], np.float32)
    SGD(lr=0.5).step(p, np.array([4.0, -8.0], np.float32), batch_len=4)
    assert p.tolist() == [1.0 - 0.5 * 1.0, 2.0 + 0.5 * 2.0]
    assert p.dtype == np.float32


def test_momentum_and_weight_decay_follow_the_documented_recurrence():
    lr, mu, wd = 0.1, 0.9, 0.01
    opt = SGD(lr, mu, wd)
    p = np.array([1.0, -1.0])
    expected, v = p.copy(), np.zeros(2)
    for grad_sum in ([2.0, 2.0], [0.0, 4.0], [-2.0, 1.0]):
        g = np.array(grad_sum) / 2 + wd * expected
        v = mu * v + g
        expected = expected - lr * v
        opt.step(p, np.array(grad_sum), batch_len=2)
        np.testing.assert_allclose(p, expected, rtol=1e-15)
    np.testing.assert_allclose(opt.state_arrays()["velocity"], v, rtol=1e-15)


def test_state_round_trip_resumes_identically():
    grads = [np.array([1.0, 3.0]), np.array([-2.0, 0.5]), np.array([0.25, 0.25])]
    a, pa = SGD(0.1, 0.9), np.array([0.0, 1.0])
    for g in grads:
        a.step(pa, g, 1)
    b, pb = SGD(0.1, 0.9), np.array([0.0, 1.0])
    b.step(pb, grads[0], 1)
    c = SGD(0.1, 0.9)
    c.load_state({k: v.copy() for k, v in b.state_arrays().items()})
    for g in grads[1:]:
        c.step(pb, g, 1)
    assert pa.tobytes() == pb.tobytes()
    assert SGD(0.1).state_arrays() == {}
    with pytest.raises(ValueError, match="unknown optimizer state"):
        c.load_state({"m": np.zeros(2)})


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.5, 0.0), (0.9, 0.01)])
def test_updating_slices_into_other_buffers_gives_the_same_bits(momentum, weight_decay):
    """What lets workers update their own slices of double-buffered parameters: the update is
    element-wise, so slices written into other buffers equal the whole vector updated in place."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(1001).astype(np.float32)
    grads = [rng.standard_normal(1001).astype(np.float32) for _ in range(3)]
    whole, opt = p0.copy(), SGD(0.1, momentum, weight_decay)
    for g in grads:
        opt.step(whole, g, 7)

    hyper = Hyper(0.1, momentum, weight_decay)
    params, velocity = np.stack([p0, p0]), np.zeros((2, 1001), np.float32)
    cuts = [0, 3, 500, 1001]  # uneven slices, misaligned for SIMD
    for t, g in enumerate(grads, start=1):
        src, dst = (t - 1) % 2, t % 2
        for a, b in itertools.pairwise(cuts):
            sgd_update(
                hyper, params[src, a:b], velocity[src, a:b], g[a:b], 7,
                params_out=params[dst, a:b], velocity_out=velocity[dst, a:b],
                scratch=np.empty(b - a, np.float32),
            )  # fmt: skip
    assert params[len(grads) % 2].tobytes() == whole.tobytes()
    if momentum:
        assert velocity[len(grads) % 2].tobytes() == opt.velocity.tobytes()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3000),
    shards=st.integers(1, 5),
    chunk=st.integers(1, 4096),
    momentum=st.sampled_from([0.0, 0.5]),
    weight_decay=st.sampled_from([0.0, 1e-3]),
    seed=st.integers(0, 2**16),
)
def test_chunked_reduce_and_update_gives_the_whole_vectors_bits(
    n, shards, chunk, momentum, weight_decay, seed
):
    """reduce_and_update (the workers' cache-sized chunks) == reduce_in_order + sgd_update."""
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((shards, n)).astype(np.float32) * 100
    params, velocity = rng.standard_normal((2, n)).astype(np.float32)
    hyper = Hyper(0.1, momentum, weight_decay)

    acc, g = np.empty(n, np.float32), np.empty(n, np.float32)
    want_p, want_v = np.empty(n, np.float32), np.empty(n, np.float32)
    reduce_in_order(grads, acc)
    sgd_update(hyper, params, velocity, acc, 7, params_out=want_p, velocity_out=want_v, scratch=g)

    got_p, got_v = np.empty(n, np.float32), np.empty(n, np.float32)
    reduce_and_update(
        hyper, grads, params, velocity, 7, params_out=got_p, velocity_out=got_v,
        acc=np.empty(chunk, np.float32), scratch=np.empty(chunk, np.float32),
    )  # fmt: skip
    assert got_p.tobytes() == want_p.tobytes()
    if momentum:
        assert got_v.tobytes() == want_v.tobytes()
