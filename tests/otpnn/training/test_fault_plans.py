"""The fault grammar: every part parsed, every bad part named."""

from __future__ import annotations

import pytest

from otpnn.faults import Chaos, Fault, FaultSpecError, parse_fault


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("crash:worker=1@step=10", Fault("crash", "worker", "step", 10, 1)),
        ("kill:worker=0@step=25", Fault("kill", "worker", "step", 25, 0)),
        ("hang:worker=any@shard=7", Fault("hang", "worker", "shard", 7, None)),
        ("exit:worker=2@epoch=2", Fault("exit", "worker", "epoch", 2, 2)),
        ("slow=0.25:worker=any@step=3", Fault("slow", "worker", "step", 3, None, 0.25)),
        ("crash:coordinator@step=40", Fault("crash", "coordinator", "step", 40)),
        ("crash:loader@epoch=2", Fault("crash", "loader", "epoch", 2)),
        ("crash:pool@step=5", Fault("crash", "pool", "step", 5)),
    ],
)
def test_parses(spec: str, expected: Fault) -> None:
    fault = parse_fault(spec)
    assert fault == expected
    assert parse_fault(str(fault)) == fault  # str() writes the grammar back


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("crash", "KIND:TARGET@WHEN"),
        ("explode:worker=1@step=1", "unknown KIND 'explode'"),
        ("slow:worker=1@step=1", "slow needs seconds"),
        ("slow=-1:worker=1@step=1", "seconds must be in"),
        ("crash:gpu@step=1", "unknown TARGET 'gpu'"),
        ("crash:worker=x@step=1", "expected worker=I or worker=any"),
        ("crash:loader=1@step=1", "loader takes no '='"),
        ("crash:worker=1@minute=1", "unknown WHEN 'minute=1'"),
        ("crash:worker=1@step=0", "N must be an integer >= 1"),
        ("crash:worker=1@step=ten", "N must be an integer >= 1"),
        ("crash:loader@shard=3", "shard=N applies to workers only"),
    ],
)
def test_bad_specs_name_the_bad_part_and_show_the_grammar(spec: str, names: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        parse_fault(spec)
    assert names in str(e.value)
    assert "KIND    crash | kill | hang | exit | slow=SECONDS" in str(e.value)


def test_chaos_is_repeatable_and_redraws_per_attempt() -> None:
    chaos = Chaos(0.5, seed=3)
    draws = [chaos.strikes(step, shard, 0) for step in range(1, 40) for shard in range(4)]
    assert draws == [chaos.strikes(step, shard, 0) for step in range(1, 40) for shard in range(4)]
    assert 40 < sum(draws) < 120  # about half of 156
    # A struck shard is not doomed: later attempts draw again.
    struck = [(s, k) for s in range(1, 40) for k in range(4) if chaos.strikes(s, k, 0)]
    assert any(not chaos.strikes(s, k, 1) for s, k in struck)
    assert not Chaos(0.0).strikes(1, 0, 0)
    assert all(Chaos(1.0).strikes(s, 0, a) for s in range(1, 20) for a in range(3))
