"""The lockstep protocol's rules, with ranks run directly in threads (no actors, no processes).

The claims under test: ranks together compute what the serial reference computes; an aborted
run leaves the state of its completed steps intact, and a new run with another number of ranks
continues it bit-identically; a rank never counts progress cells left by an earlier run; a
killed worker's thread writes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from training_support import config, dataset

from otpnn.lr_schedule import LrSchedule
from otpnn.model import SGD, init_params, num_params
from otpnn.reference import StepBuffers, reference_step
from otpnn.schedule import (
    Batches,
    batch_indices,
    epoch_permutation,
    shard_bounds,
    steps_per_epoch,
)
from otpnn.training.drivers import lockstep_rank as lockstep
from otpnn.training.drivers.lockstep_rank import Rank, RankArrays, RankSide, RunSteps

CFG = config(epochs=1, momentum=0.9)
STEPS = steps_per_epoch(len(dataset().train_labels), CFG.batch_size)  # 12


class Arrays:
    """The coordinator's side: the arrays a run works in, made as the coordinator makes them."""

    def __init__(self, max_ranks: int = 4) -> None:
        n = num_params(CFG.layer_sizes)
        shards = len(shard_bounds(CFG.batch_size, CFG.effective_shard_size))
        self.params = np.zeros((2, n), np.float32)
        self.params[0] = init_params(CFG)
        self.velocity = np.zeros((2, n), np.float32)
        self.grads = np.zeros((shards, n), np.float32)
        self.stats = np.zeros((STEPS, shards, 2))
        self.control = np.zeros(lockstep.control_shape(max_ranks), np.int64)
        self.view = RankArrays(self.params, self.velocity, self.grads, self.stats, self.control)

    def run(
        self,
        run: int,
        ranks: int,
        first: int,
        last: int,
        act_out: Callable[[int, str], None] | None = None,
        faults: dict[int, tuple[tuple[int, str], ...]] | None = None,
        killed: threading.Event | None = None,
        only: tuple[int, ...] | None = None,
    ) -> list[int | None]:
        """Run ``ranks`` ranks (or ``only`` some of them) in threads; their replies by rank."""
        self.control[0, lockstep.RUN] = run
        batches = Batches(len(dataset().train_labels), CFG.batch_size, CFG.effective_shard_size,
                          STEPS)  # fmt: skip
        replies: list[int | None] = [None] * ranks
        lr_schedule = LrSchedule.of(CFG, STEPS)

        def one(rank: int) -> None:
            msg = RunSteps(run, rank, ranks, first, last, 1, None, batches, lr_schedule,  # type: ignore[arg-type]
                           (faults or {}).get(rank, ()))  # fmt: skip
            rank_act = (lambda action: act_out(rank, action)) if act_out else (lambda _: None)
            data = dataset()
            side = RankSide(
                data.train_images, data.train_labels,
                epoch_permutation(len(data.train_labels), CFG.seed, 1), CFG.layer_sizes,
                CFG.activation, rank_act, killed or threading.Event(), "test",
            )  # fmt: skip
            replies[rank] = Rank(msg, side, self.view).run()

        threads = [
            threading.Thread(target=one, args=(r,), name=f"rank-{r}")
            for r in (only or range(ranks))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a rank did not return"
        return replies


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def reference_after(steps: int) -> tuple[bytes, bytes]:
    """(params, velocity) bytes of the serial reference after ``steps`` steps."""
    data = dataset()
    params, opt = init_params(CFG), SGD(CFG.lr, CFG.momentum, CFG.weight_decay)
    buffers = StepBuffers(CFG, params.size)
    perm = epoch_permutation(len(data.train_labels), CFG.seed, 1)
    for step in range(steps):
        batch = batch_indices(perm, step, CFG.batch_size)
        reference_step(CFG, params, opt, data.train_images, data.train_labels, batch, buffers)
    assert opt.velocity is not None
    return params.tobytes(), opt.velocity.tobytes()


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ranks_compute_what_the_serial_reference_computes(ranks) -> None:
    arrays = Arrays()
    assert arrays.run(1, ranks, 1, STEPS) == [STEPS] * ranks
    assert lockstep.completed_steps(arrays.control, 1, ranks, 0) == STEPS
    params, velocity = reference_after(STEPS)
    assert arrays.params[STEPS % 2].tobytes() == params
    assert arrays.velocity[STEPS % 2].tobytes() == velocity


def test_an_aborted_run_keeps_its_completed_steps_and_another_rank_count_continues_it() -> None:
    arrays = Arrays()

    def abort_at_step_5(rank: int, action: str) -> None:
        assert (rank, action) == (1, "abort")
        arrays.control[0, lockstep.ABORT] = 1  # as the coordinator does when a worker dies

    replies = arrays.run(1, 2, 1, STEPS, abort_at_step_5, faults={1: ((5, "abort"),)})
    assert replies == [None, None]
    done = lockstep.completed_steps(arrays.control, 1, 2, 0)
    assert done == 4
    assert lockstep.fault_reached(arrays.control, 1, 1) == 5
    params, velocity = reference_after(4)
    assert arrays.params[done % 2].tobytes() == params
    assert arrays.velocity[done % 2].tobytes() == velocity

    assert arrays.run(2, 3, done + 1, STEPS) == [STEPS] * 3  # three ranks take over
    params, velocity = reference_after(STEPS)
    assert arrays.params[STEPS % 2].tobytes() == params
    assert arrays.velocity[STEPS % 2].tobytes() == velocity


def test_progress_left_by_an_earlier_run_never_counts() -> None:
    arrays = Arrays()
    arrays.control[1:3, lockstep.PROGRESS] = lockstep.tag(1, 2 * STEPS)  # run 1 got far
    timer = threading.Timer(0.3, lambda: arrays.control.__setitem__((0, lockstep.ABORT), 2))
    timer.start()
    try:
        replies = arrays.run(2, 2, 3, STEPS, only=(0,))  # rank 1 of run 2 never shows up
    finally:
        timer.cancel()
    assert replies == [None, None]  # rank 0 waited for rank 1 until the abort
    assert lockstep.completed_steps(arrays.control, 2, 2, 2) == 2
    assert not arrays.params[1].any()  # no update was made without rank 1


def test_a_killed_workers_rank_writes_nothing() -> None:
    arrays = Arrays()
    killed = threading.Event()
    killed.set()
    before = arrays.params.copy()
    assert arrays.run(1, 1, 1, STEPS, killed=killed) == [None]
    assert arrays.params.tobytes() == before.tobytes()
    assert not arrays.grads.any()
    assert lockstep.completed_steps(arrays.control, 1, 1, 0) == 0


def test_a_rank_of_a_run_that_is_no_longer_current_stops() -> None:
    arrays = Arrays()

    def next_run_started(_rank: int, _action: str) -> None:
        arrays.control[0, lockstep.RUN] = 2  # the coordinator moved on (e.g. after a kill)

    replies = arrays.run(1, 1, 1, STEPS, next_run_started, faults={0: ((3, "x"),)})
    assert replies == [None]
    assert lockstep.completed_steps(arrays.control, 1, 1, 0) == 2


def test_tags_order_runs_before_phases() -> None:
    assert lockstep.tag(2, 0) > lockstep.tag(1, 2**31)
    assert lockstep.split(10, 3, 0) == (0, 3)
    assert [lockstep.split(10, 3, i) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_a_rank_dying_half_way_through_its_update_loses_nothing_but_that_step(monkeypatch):
    """What double buffering is for: a worker killed while it writes its slice of step t's
    parameters leaves step t-1's state intact, and a new run redoes step t from it."""
    arrays = Arrays()
    real_update = lockstep.reduce_and_update

    def dies_half_way(hyper, grads, params, velocity, *args, params_out, velocity_out, **scratch):
        real_update(hyper, grads, params, velocity, *args, params_out=params_out,
                    velocity_out=velocity_out, **scratch)  # fmt: skip
        if threading.current_thread().name == "rank-1" and dying.is_set():
            params_out[: len(params_out) // 2] = np.nan  # a torn write, then death
            velocity_out[:] = np.nan
            arrays.control[0, lockstep.ABORT] = 1  # the coordinator sees the death, aborts
            raise lockstep.RunAborted

    dying = threading.Event()

    def arm(_rank: int, _action: str) -> None:
        dying.set()

    monkeypatch.setattr(lockstep, "reduce_and_update", dies_half_way)
    assert arrays.run(1, 2, 1, STEPS, arm, faults={1: ((5, "die in the update"),)}) == [None, None]
    done = lockstep.completed_steps(arrays.control, 1, 2, 0)
    assert done == 4
    assert np.isnan(arrays.params[5 % 2]).any()  # step 5's row is torn ...
    params, velocity = reference_after(4)
    assert arrays.params[done % 2].tobytes() == params  # ... step 4's is whole
    assert arrays.velocity[done % 2].tobytes() == velocity

    monkeypatch.setattr(lockstep, "reduce_and_update", real_update)
    assert arrays.run(2, 1, done + 1, STEPS) == [STEPS]
    assert arrays.params[STEPS % 2].tobytes() == reference_after(STEPS)[0]
