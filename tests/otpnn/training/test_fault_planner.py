"""The fault planner's rules, without actors: due faults, stop points, per-rank plans, chaos
draws and fired marks (see otpnn.training.fault_planner)."""

from __future__ import annotations

import pytest

from otpnn.faults import Chaos, parse_fault
from otpnn.schedule import Batches, shard_bounds
from otpnn.training.fault_planner import FaultBook, FaultPlanner, Planned

# 100 samples, batch 32 -> 4 steps an epoch (the last of 4 rows), shards of 8: 4, 4, 4, 1.
BATCHES = Batches(n_train=100, batch_size=32, shard_size=8, steps_per_epoch=4)


def planner(*specs: str, chaos: Chaos | None = None) -> FaultPlanner:
    return FaultPlanner(FaultBook([parse_fault(s) for s in specs]), chaos, BATCHES)


def test_shards_before_counts_every_micro_shard_of_earlier_steps() -> None:
    counted = [0]
    for step in range(1, 13):  # three epochs
        counted.append(counted[-1] + len(BATCHES.shards(step)[1]))
    assert [BATCHES.shards_before(s) for s in range(13)] == counted
    assert BATCHES.shards(4) == (96, shard_bounds(4, 8))  # the short last batch


def test_a_due_fault_stays_due_until_marked_fired() -> None:
    book = FaultBook([parse_fault("crash:worker=1@step=3")])
    assert book.due("worker", "step", 2) == []
    assert [i for i, _ in book.due("worker", "step", 3)] == [0]
    assert [i for i, _ in book.due("worker", "step", 9)] == [0]  # missed at 3: still due later
    book.mark_fired(0)
    assert book.due("worker", "step", 9) == []
    assert book.fired == 1


def test_adding_a_fault_bumps_the_version_so_running_plans_are_redone() -> None:
    book = FaultBook()
    before = book.version
    book.add(parse_fault("crash:worker=0@step=1"))
    assert book.version == before + 1


def test_a_coordinator_pool_or_loader_step_fault_is_a_stop_point() -> None:
    p = planner("crash:coordinator@step=7", "kill:pool@step=5", "crash:worker=0@step=2")
    assert p.stop_point(1, 8, 12) == 4  # before the earliest: the pool's at 5
    assert p.stop_point(5, 8, 12) == 6  # from 5 on, the pool's is due now, not ahead
    assert p.stop_point(8, 8, 12) == 8


def test_own_faults_fire_once_and_the_loaders_epoch_fault_waits_for_its_epoch() -> None:
    p = planner("crash:coordinator@step=2", "crash:loader@epoch=2", "kill:pool@epoch=2")
    assert p.own_faults(1, 1, first_of_epoch=True) == []
    assert [str(f) for f in p.own_faults(2, 1, first_of_epoch=False)] == [
        "crash:coordinator@step=2"
    ]
    assert p.own_faults(3, 1, first_of_epoch=False) == []  # fired: not again on a redo
    assert [str(f) for f in p.own_faults(5, 2, first_of_epoch=True)] == ["kill:pool@epoch=2"]
    assert [str(f) for f in p.loader_epoch_faults(2)] == ["crash:loader@epoch=2"]
    assert p.loader_epoch_faults(2) == []


def test_a_worker_fault_goes_to_its_worker_and_any_to_the_first() -> None:
    p = planner("hang:worker=1@step=2", "crash:worker=any@step=3")
    assert p.for_worker(2, 1, 0, range(0, 2), first=True) is None
    found = p.for_worker(2, 1, 1, range(2, 4), first=False)
    assert found is not None
    assert (found.step, found.action, found.fault_id) == (2, "hang", 0)
    assert p.for_worker(3, 1, 1, range(2, 4), first=False) is not None  # worker 1's, still due
    any_first = p.for_worker(3, 1, 0, range(0, 2), first=True)
    assert any_first is not None
    assert any_first.fault_id == 1


def test_a_shard_fault_fires_on_the_run_that_reaches_that_shard_of_the_job() -> None:
    p = planner("exit:worker=any@shard=15")  # step 4 holds shards 13 (one row): 15 is step 5's 2nd
    assert p.for_worker(4, 1, 0, range(0, 1), first=True) is None
    assert p.for_worker(5, 2, 0, range(0, 1), first=True) is None  # reaches shard 14 only
    found = p.for_worker(5, 2, 0, range(0, 2), first=True)
    assert found is not None
    assert found.action == "exit"


def test_a_run_plans_each_fault_for_one_rank_and_marks_it_fired_when_reached() -> None:
    p = planner("crash:worker=any@step=2", "kill:worker=3@step=3")
    plans = p.plan_run(1, 4, 1, indices=[0, 3])
    assert [(x.step, x.action) for x in plans[0]] == [(2, "crash")]  # any: rank 0, only once
    assert [(x.step, x.action) for x in plans[1]] == [(3, "kill")]
    assert p.reached(plans, [0, 3], [1, 1]) == []  # neither rank got to its step
    fired = p.reached(plans, [0, 3], [4, 3])
    assert [(f.planned.step, f.index) for f in fired] == [(2, 0), (3, 3)]  # by step, then worker
    assert p.book.fired == 2
    assert p.reached(plans, [0, 3], [4, 4]) == []  # each is reported once
    assert p.plan_run(1, 4, 1, indices=[0, 3]) == [[], []]  # and never planned again


def test_chaos_draws_per_shard_and_draws_again_for_a_redone_step() -> None:
    chaos = Chaos(0.2, seed=3)
    p = planner(chaos=chaos)
    shards = range(0, 2)
    struck = [s for s in range(1, 40) if p.for_worker(s, 1, 0, shards, first=True) is not None]
    expected = [s for s in range(1, 40) if any(chaos.strikes(s, k, 0) for k in shards)]
    assert struck == expected
    assert 0 < len(struck) < 39
    step = struck[0]
    draws = []
    for _ in range(1, 11):
        p.redo(step)
        draws.append(p.for_worker(step, 1, 0, shards, first=True) is not None)
    assert draws == [any(chaos.strikes(step, k, a) for k in shards) for a in range(1, 11)]
    assert False in draws  # at rate < 1 a redone step gets through


def test_a_chaos_strike_is_a_crash_of_no_planned_fault() -> None:
    found = planner(chaos=Chaos(1.0)).for_worker(1, 1, 0, range(0, 1), first=True)
    assert found == Planned(1, "crash", None, None)


def test_a_planned_fault_comes_before_chaos() -> None:
    found = planner("slow=0.5:worker=0@step=1", chaos=Chaos(1.0)).for_worker(
        1, 1, 0, range(0, 1), first=True
    )
    assert found is not None
    assert found.action == "slow=0.5"


@pytest.mark.parametrize("taken", [{0}, set()])
def test_a_fault_taken_by_an_earlier_rank_is_not_planned_twice(taken: set[int]) -> None:
    p = planner("crash:worker=any@step=1")
    found = p.for_worker(1, 1, 0, range(0, 1), first=True, taken=taken)
    assert (found is None) == (0 in taken)


@pytest.mark.parametrize("specs", [(), ("crash:coordinator@step=2",), ("crash:loader@epoch=1",)])
def test_without_worker_faults_or_chaos_a_run_is_planned_without_a_look_at_each_step(
    specs: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortcut plans what the look at every step plans (turns taken in rank order, no
    faults), and does not look."""
    looked = planner(*specs)
    monkeypatch.setattr(looked, "_workers_untouched", lambda: False)
    want = (
        looked.plan_run(1, 8, 1, [0, 3]),
        looked.plan_turns(1, 8, 1, [0, 3]),
        looked.for_share(range(1, 5), 1, 0, first=True, taken=set()),
    )
    p = planner(*specs)

    def look(*args: object, **kwargs: object) -> None:
        raise AssertionError("looked at a step")

    monkeypatch.setattr(p, "for_worker", look)
    got = (
        p.plan_run(1, 8, 1, [0, 3]),
        p.plan_turns(1, 8, 1, [0, 3]),
        p.for_share(range(1, 5), 1, 0, first=True, taken=set()),
    )
    assert got == want
    assert got[1] == ([0, 1, 0, 1, 0, 1, 0, 1], [[], []])


def test_a_worker_fault_or_chaos_makes_the_planner_look_at_each_step() -> None:
    p = planner("crash:worker=0@step=2")
    assert not p._workers_untouched()
    p.book.mark_fired(0)
    assert p._workers_untouched()  # fired: nothing left to act out
    p.book.add(parse_fault("kill:worker=any@step=3"))
    assert not p._workers_untouched()  # added while the job runs
    assert not planner(chaos=Chaos(0.01))._workers_untouched()
