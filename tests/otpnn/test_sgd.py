import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otpnn.model import SGD, Hyper, fused, reduce_and_update, reduce_in_order, sgd_update


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


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9000),  # the compiled pass works in blocks of 4096
    first=st.integers(0, 50),
    shards=st.integers(1, 5),
    chunk=st.integers(1, 4096),
    dtype=st.sampled_from([np.float32, np.float64]),
    lr=st.sampled_from([0.1, 0.2, 1e-3]),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    weight_decay=st.sampled_from([0.0, 1e-3]),
    batch=st.sampled_from([7, 64, 1000]),
    form=st.sampled_from(["rows", "rows in place", "rows, velocity in place", "vectors"]),
    seed=st.integers(0, 2**16),
)
def test_reduce_and_update_gives_the_whole_vectors_bits(
    n, first, shards, chunk, dtype, lr, momentum, weight_decay, batch, form, seed
):
    """reduce_and_update == reduce_in_order + sgd_update, bit for bit, on each of its paths:
    rows of an array (the compiled pass, on a slice of columns as a rank updates its slice; into
    other vectors, back into the inputs as a replica's step does, or the parameters into another
    version and the velocity in place) and a sequence of vectors
    (numpy in cache-sized chunks); the velocity untouched without momentum.
    Magnitudes spread over many binades, subnormals included, so that any reordering,
    contraction into a fused multiply-add or cast of a scalar at another precision shows."""
    rng = np.random.default_rng(seed)
    scale = np.exp2(rng.integers(-140, 40, (shards, first + n + 3))).astype(dtype)
    rows = (rng.standard_normal((shards, first + n + 3)) * scale).astype(dtype)
    grads = rows[:, first : first + n]
    params, velocity = (rng.standard_normal((2, n)) * 10.0 ** rng.integers(-3, 3)).astype(dtype)
    hyper = Hyper(lr, momentum, weight_decay)

    acc, g = np.empty(n, dtype), np.empty(n, dtype)
    want_p, want_v = np.empty(n, dtype), np.full(n, 7, dtype)
    reduce_in_order(np.ascontiguousarray(grads), acc)
    sgd_update(hyper, params, velocity, acc, batch, params_out=want_p, velocity_out=want_v,
               scratch=g)  # fmt: skip

    got_p, got_v = np.empty(n, dtype), np.full(n, 7, dtype)
    path = {"grads": list(grads)} if form == "vectors" else {"grads": rows, "first": first}
    if form == "rows in place":
        got_p[:], got_v[:] = params, velocity if momentum else 7
        params, velocity = got_p, got_v
    elif form == "rows, velocity in place":  # the async reference's versions and momentum
        got_v[:] = velocity if momentum else 7
        velocity = got_v
    reduce_and_update(
        hyper, path["grads"], params, velocity, batch, params_out=got_p, velocity_out=got_v,
        first=path.get("first", 0), chunk=chunk,
    )  # fmt: skip
    assert got_p.tobytes() == want_p.tobytes()
    assert got_v.tobytes() == want_v.tobytes()  # all 7s still without momentum


@pytest.mark.parametrize(
    "overlap",
    [
        "params_out is velocity",
        "params_out is a shifted params",
        "velocity_out is the grads",
        "velocity is params, in place",
    ],
)
def test_the_pass_refuses_outputs_that_overlap_other_inputs(overlap):
    """The pass reads and writes element by element: an output that overlaps anything but its
    own input would be corrupted silently, so it is refused (in place is its own input)."""
    grads, buf = np.ones((2, 10), np.float32), np.ones(30, np.float32)
    p, v, p_out, v_out = buf[0:10], buf[10:20], np.ones(10, np.float32), buf[20:30]
    if overlap == "params_out is velocity":
        p_out = v
    elif overlap == "params_out is a shifted params":
        p_out = buf[1:11]
    elif overlap == "velocity_out is the grads":
        v_out = grads[1]
    else:
        v = v_out = p_out = p
    with pytest.raises(ValueError, match="overlap"):
        fused.reduce_update(grads, 0, p, v, p_out, v_out, 2, 0.1, 0.5, 0.0)


def test_rows_of_an_array_take_the_compiled_pass(monkeypatch):
    """The test above proves the compiled pass only if rows of an array reach it."""
    calls = []
    monkeypatch.setattr(fused, "reduce_update", lambda *args: calls.append(args))
    grads, p = np.ones((2, 10), np.float32), np.ones(5, np.float32)
    common = {"params_out": p.copy(), "velocity_out": None}
    reduce_and_update(Hyper(0.1), grads, p, None, 2, first=5, **common)
    assert len(calls) == 1
    assert calls[0][1] == 5  # the rank's first column
    reduce_and_update(Hyper(0.1), list(grads[:, 5:]), p, None, 2, **common)
    assert len(calls) == 1  # vectors: numpy


def test_the_pass_compiles_without_a_writable_cache(monkeypatch):
    """Where numba has nowhere to cache (a read-only install, no home), the kernel is compiled
    in the process instead of failing the import."""
    njit = fused.numba.njit

    def no_cache_dir(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return njit(**options)

    monkeypatch.setattr(fused.numba, "njit", no_cache_dir)

    def double(x):
        x[:] = x * 2

    x = np.arange(3.0)
    fused.compiled(double)(x)
    assert x.tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("rows", "first", "out_len"), [(0, 0, 5), (2, 6, 5), (2, -1, 5), (2, 0, 4)]
)
def test_the_pass_refuses_columns_or_vectors_it_would_read_past(rows, first, out_len):
    """The compiled pass does not check its indices: a call that would read past the gradient
    rows or write past an output is refused before it starts."""
    grads, p = np.ones((rows, 10), np.float32), np.ones(5, np.float32)
    with pytest.raises(ValueError, match=r"columns|differ in length"):
        fused.reduce_update(grads, first, p, None, np.ones(out_len, np.float32), None, 2,
                            0.1, 0.0, 0.0)  # fmt: skip


def test_the_pass_compiles_in_the_process_when_its_cache_cannot_be_read(monkeypatch):
    """A damaged cache file makes numba's first call fail before the kernel runs: the call is
    redone with the kernel compiled in the process, and every later call goes there at once."""
    njit, loads = fused.numba.njit, []

    def damaged_cache(**options):
        if not options.get("cache"):
            return njit(**options)

        def load(*args):
            loads.append(args)
            raise ValueError("invalid literal for int() with base 10: 'arbage'")

        return lambda kernel: load

    monkeypatch.setattr(fused.numba, "njit", damaged_cache)

    def double(x):
        x[:] = x * 2

    kernel, x = fused.compiled(double), np.arange(3.0)
    kernel(x)
    kernel(x)
    assert x.tolist() == [0.0, 4.0, 8.0]
    assert len(loads) == 1  # the damaged cache was tried once
