"""The in-order reduction and the SGD update in one compiled pass: the bits of the numpy calls.

Why: the update of a step is bound by memory traffic, and numpy streams every vector it touches
once per call: adding the shard gradients, dividing, the momentum and the step are six calls, and
a call that reads two vectors and writes a third costs much more than one that works in place.
This pass reads each gradient row, the parameters and the velocity once and writes the
new parameters and velocity once, a cache-sized block at a time.

Why the same bits: every element goes through the very IEEE operations of
:func:`~otpnn.model.reduce_in_order` + :func:`~otpnn.model.sgd_update`, in their order and at the
arrays' precision: ``((g0 + g1) + ...) / batch``, ``+ wd * p``, ``v * momentum + g``, ``* lr``,
``p - ...``, each rounded. numba without ``fastmath`` neither reassociates nor contracts a
multiply and an add into one fused operation, and the scalars are cast to the arrays' dtype as
numpy casts them. The tests hold this kernel to the numpy calls bit for bit.

Two kernels share the block's loops: one writes into other vectors (the trainer's double buffers),
one back into its inputs (a replica's step in place). numba compiles each once per dtype on its
first call (cached on disk next to this module); the workers' forkserver compiles or loads them
once for every worker it forks.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

BLOCK = 4096  # elements per block: the blocks of every vector the pass touches stay in cache

Scalars = tuple[float, float, float, float, bool, bool]
"""(batch length, lr, momentum, weight decay, use momentum, use weight decay), the four numbers
already of the arrays' dtype."""


def compiled(kernel: Callable[..., None]) -> Callable[..., None]:
    """``kernel`` compiled by numba on its first call and cached on disk; compiled in the
    process instead where numba finds no writable cache directory (a read-only install, a user
    without a home) or cannot read what it cached (a damaged file), rather than failing."""
    uncached = numba.njit(nogil=True, boundscheck=False)(kernel)  # compiled if ever called
    try:
        cached = numba.njit(nogil=True, boundscheck=False, cache=True)(kernel)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return uncached

    def call(*args: object) -> None:
        nonlocal cached
        try:
            cached(*args)
        except Exception:
            if cached is uncached:
                raise
            # A cache numba cannot load fails before the kernel writes anything (the dispatch
            # loads it), so the call is whole to redo; a real error comes back uncached too.
            cached = uncached
            uncached(*args)

    return call


@numba.njit(inline="always")
def _block(
    grads: np.ndarray,
    rows: int,
    lo: int,
    p: np.ndarray,
    v: np.ndarray,
    p_out: np.ndarray,
    v_out: np.ndarray,
    acc: np.ndarray,
    scalars: Scalars,
) -> None:
    """One block: gradient columns ``lo .. lo + len(p)`` of ``grads[:rows]`` reduced in row
    order into ``acc``, then the update of (p, v) into (p_out, v_out).

    Each loop touches at most two vectors besides the one it writes, so that LLVM vectorizes it
    (a loop over more distinct arrays exceeds the overlap checks it will make and runs scalar);
    the block's ``acc`` stays in the L1 cache between them."""
    batch, lr, momentum, weight_decay, use_momentum, use_weight_decay = scalars
    m = len(p)
    g0 = grads[0, lo : lo + m]
    for j in range(m):
        acc[j] = g0[j]
    for r in range(1, rows):
        gr = grads[r, lo : lo + m]
        for j in range(m):
            acc[j] = acc[j] + gr[j]
    for j in range(m):
        acc[j] = acc[j] / batch
    if use_weight_decay:
        for j in range(m):
            acc[j] = acc[j] + weight_decay * p[j]
    if use_momentum:
        for j in range(m):
            acc[j] = v[j] * momentum + acc[j]
        for j in range(m):
            v_out[j] = acc[j]
    for j in range(m):
        p_out[j] = p[j] - acc[j] * lr


@compiled
def _pass(
    grads: np.ndarray,
    rows: int,
    first: int,
    params: np.ndarray,
    velocity: np.ndarray,
    params_out: np.ndarray,
    velocity_out: np.ndarray,
    scalars: Scalars,
) -> None:
    """grads[:rows, first:first + len(params)] reduced in row order, then the update into
    other vectors; without momentum the velocities are left alone, as ``sgd_update`` leaves
    them."""
    acc = np.empty(BLOCK, params.dtype)
    for a in range(0, len(params), BLOCK):
        b = min(a + BLOCK, len(params))
        _block(
            grads, rows, first + a, params[a:b], velocity[a:b], params_out[a:b],
            velocity_out[a:b], acc, scalars,
        )  # fmt: skip


@compiled
def _pass_in_place(
    grads: np.ndarray,
    rows: int,
    first: int,
    params: np.ndarray,
    velocity: np.ndarray,
    scalars: Scalars,
) -> None:
    """:func:`_pass` writing back into ``params`` and ``velocity``. A kernel of its own: given
    the same vector as input and output, :func:`_pass` sees them overlap and runs scalar."""
    acc = np.empty(BLOCK, params.dtype)
    for a in range(0, len(params), BLOCK):
        b = min(a + BLOCK, len(params))
        p, v = params[a:b], velocity[a:b]
        _block(grads, rows, first + a, p, v, p, v, acc, scalars)


def reduce_update(
    grads: np.ndarray,
    first: int,
    params: np.ndarray,
    velocity: np.ndarray | None,
    params_out: np.ndarray,
    velocity_out: np.ndarray | None,
    batch_len: int,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """The pass above (see :func:`otpnn.model.reduce_and_update`, which calls it).

    ``grads``: a C-contiguous (shards, N) array whose columns ``first .. first + len(params)``
    are the gradients of ``params``; every vector a C-contiguous 1-D array of one dtype. An
    output is either its input itself (the same array object: the update in place) or shares
    no memory with any input.
    """
    dtype, n = params.dtype.type, len(params)
    if momentum and (velocity is None or velocity_out is None):
        raise ValueError("SGD with momentum needs velocity buffers")
    # The pass does not check its indices (boundscheck=False): a wrong call must stop here.
    if not len(grads) or first < 0 or first + n > grads.shape[1]:
        raise ValueError(f"no gradient rows with columns {first}..{first + n} in {grads.shape}")
    if any(len(v) != n for v in (params_out, velocity, velocity_out) if v is not None):
        raise ValueError("the parameter, velocity and output vectors differ in length")
    v = params if velocity is None else velocity  # unread without momentum
    v_out = params_out if velocity_out is None else velocity_out  # unwritten without momentum
    # Cast to the arrays' dtype here, as numpy casts a Python scalar against a float32 array.
    scalars: Scalars = (
        dtype(batch_len), dtype(lr), dtype(momentum), dtype(weight_decay), bool(momentum),
        bool(weight_decay),
    )  # fmt: skip
    # The pass reads and writes element by element: an output may be its own input (the same
    # array object: in place) and must share no memory with any other, or it would be
    # corrupted silently; so must the two inputs it updates.
    if momentum and np.may_share_memory(params, v):
        raise ValueError("the parameter and velocity vectors overlap")
    for out, own in ((params_out, params), (v_out, v)):
        others = (x for x in (params, v, grads) if not (x is own and out is own))
        if any(np.may_share_memory(out, x) for x in others):
            raise ValueError("an output vector overlaps an input other than its own (in place)")
    if params_out is params and (not momentum or v_out is v):
        _pass_in_place(grads, len(grads), first, params, v, scalars)
    else:
        _pass(grads, len(grads), first, params, v, params_out, v_out, scalars)


def warm_up() -> None:
    """Compile (or load from the cache) the kernels for float32 and float64 now, not on the first
    step (the workers' forkserver calls this once for every worker it forks)."""
    for dtype in (np.float32, np.float64):
        grads, p, v = np.ones((2, 1), dtype), np.ones(1, dtype), np.ones(1, dtype)
        reduce_update(grads, 0, p, v, p.copy(), v.copy(), 1, 0.1, 0.5, 0.1)
        reduce_update(grads, 0, p, v, p, v, 1, 0.1, 0.5, 0.1)  # in place
