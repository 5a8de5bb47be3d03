"""Local SGD without actors: the rounds and their deal, the average, and the serial reference's
contract (its own algorithm per worker count; one worker, or warm-up to the end, is sync SGD)."""

from __future__ import annotations

import numpy as np
import pytest
from training_support import config, dataset, reference_sha

from otpnn.config import ConfigError, TrainConfig
from otpnn.local_sgd import RoundSchedule, average_into
from otpnn.reference import train_reference


def _rounds(schedule: RoundSchedule, first: int, last: int) -> list[tuple[int, ...]]:
    return [tuple(tuple(share) for share in r.shares) for r in schedule.rounds(first, last)]


def test_rounds_deal_contiguous_shares_and_end_at_the_epoch() -> None:
    # 12 steps an epoch, 2 workers, H=2: rounds of 4 batches, rank r takes 2r+1, 2r+2.
    s = RoundSchedule(steps_per_epoch=12, workers=2, sync_every=2, warmup_steps=0)
    assert _rounds(s, 1, 12) == [((1, 2), (3, 4)), ((5, 6), (7, 8)), ((9, 10), (11, 12))]
    # 10 steps an epoch, 3 workers, H=3: a round of 9, then the epoch's last batch alone.
    s = RoundSchedule(steps_per_epoch=10, workers=3, sync_every=3, warmup_steps=0)
    assert _rounds(s, 1, 20) == [
        ((1, 2, 3), (4, 5, 6), (7, 8, 9)), ((10,),),
        ((11, 12, 13), (14, 15, 16), (17, 18, 19)), ((20,),),
    ]  # fmt: skip
    # A short last round spreads its batches over the ranks: 5 batches, 3 ranks.
    s = RoundSchedule(steps_per_epoch=11, workers=3, sync_every=2, warmup_steps=0)
    assert _rounds(s, 7, 11) == [((7,), (8, 9), (10, 11))]


def test_warmup_steps_are_rounds_of_one_and_rounds_restart_after_them() -> None:
    s = RoundSchedule(steps_per_epoch=12, workers=2, sync_every=2, warmup_steps=3)
    assert _rounds(s, 1, 12) == [((1,),), ((2,),), ((3,),), ((4, 5), (6, 7)),
                                 ((8, 9), (10, 11)), ((12,),)]  # fmt: skip
    assert [s.last_of_round(t) for t in range(1, 13)] == [1, 2, 3, 7, 7, 7, 7, 11, 11, 11, 11, 12]
    # Warm-up past an epoch: the next epoch's rounds start after it.
    s = RoundSchedule(steps_per_epoch=4, workers=2, sync_every=1, warmup_steps=5)
    assert _rounds(s, 5, 8) == [((5,),), ((6,), (7,)), ((8,),)]


def test_the_average_is_a_left_fold_in_rank_order_then_a_division() -> None:
    rng = np.random.default_rng(0)
    replicas = rng.standard_normal((3, 1000)).astype(np.float32)
    out = np.empty(1000, np.float32)
    expected = ((replicas[0] + replicas[1]) + replicas[2]) / np.float32(3)
    assert average_into(replicas, out).tobytes() == expected.tobytes()
    assert average_into(replicas[:1], out).tobytes() == replicas[0].tobytes()


def test_one_worker_or_warmup_to_the_end_is_sync_sgd() -> None:
    sync = reference_sha()
    assert reference_sha(algorithm="local-sgd", workers=1, sync_every=5) == sync
    assert reference_sha(algorithm="local-sgd", workers=3, sync_every=4, warmup_steps=24) == sync


def test_the_result_depends_on_the_worker_count_and_on_h() -> None:
    two = reference_sha(algorithm="local-sgd", workers=2, sync_every=4)
    assert (
        len({reference_sha(), two, reference_sha(algorithm="local-sgd", workers=3, sync_every=4)})
        == 3
    )
    assert two != reference_sha(algorithm="local-sgd", workers=2, sync_every=2)
    assert two != reference_sha(algorithm="local-sgd", workers=2, sync_every=4, warmup_steps=5)


def test_local_sgd_learns() -> None:
    cfg = config(algorithm="local-sgd", workers=2, sync_every=4)
    history = train_reference(cfg, dataset()).history
    assert history[-1]["test_accuracy"] > 0.9


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"algorithm": "hogwild"}, "invalid algorithm='hogwild'"),
        ({"algorithm": "local-sgd", "sync_every": 0}, "invalid sync_every=0"),
        ({"algorithm": "local-sgd", "warmup_steps": -1}, "invalid warmup_steps=-1"),
        ({"sync_every": 4}, "applies to algorithm 'local-sgd' only"),
        ({"warmup_steps": 4}, "applies to algorithm 'local-sgd' only"),
    ],
)
def test_config_names_a_bad_algorithm_field(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)
