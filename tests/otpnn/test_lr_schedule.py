"""The learning-rate schedule's values, step by step, at the edges of epochs and warm-up."""

from __future__ import annotations

import itertools
import math

import pytest

from otpnn.config import TrainConfig
from otpnn.lr_schedule import LrSchedule
from otpnn.model import Hyper

PER_EPOCH = 10


def schedule(**fields: object) -> LrSchedule:
    base = {
        "lr": 0.4,
        "momentum": 0.5,
        "weight_decay": 1e-4,
        "epochs": 4,
        "lr_schedule": "constant",
    }
    if fields.get("lr_schedule") == "step":
        base["lr_step_epochs"] = 1  # (not the config's default: each epoch's edge is looked at)
    cfg = TrainConfig(**{**base, **fields})
    return LrSchedule.of(cfg, PER_EPOCH)


def test_constant_is_the_configs_hyper_itself_at_every_step() -> None:
    s = schedule()
    assert all(s.hyper(t) is s.base for t in (1, 2, 39, 40))
    assert s.base == Hyper(0.4, 0.5, 1e-4)


def test_step_decays_by_gamma_at_each_nth_epochs_first_step() -> None:
    s = schedule(lr_schedule="step", lr_step_epochs=2, lr_gamma=0.5)
    assert [s.lr(t) for t in (1, 10, 20, 21, 30, 40)] == [0.4, 0.4, 0.4, 0.2, 0.2, 0.2]
    s = schedule(lr_schedule="step", lr_gamma=0.1)  # every epoch
    assert [s.lr(t) for t in (10, 11, 21, 31)] == [0.4, 0.4 * 0.1, 0.4 * 0.1**2, 0.4 * 0.1**3]


def test_cosine_runs_from_lr_at_the_first_step_to_just_above_lr_min_at_the_last() -> None:
    s = schedule(lr_schedule="cosine", lr_min=0.04)
    total = 4 * PER_EPOCH
    assert s.lr(1) == 0.4
    assert s.lr(total // 2 + 1) == pytest.approx(0.22)  # half-way: the mean of the two
    assert 0.04 < s.lr(total) < 0.041
    rates = [s.lr(t) for t in range(1, total + 1)]
    assert all(a > b for a, b in itertools.pairwise(rates))
    expected = 0.04 + (0.4 - 0.04) * (1 + math.cos(math.pi * 7 / total)) / 2
    assert s.lr(8) == expected  # the formula, in float64, bit for bit


def test_warm_up_ramps_linearly_to_the_schedules_value_then_follows_it() -> None:
    s = schedule(lr_warmup_steps=4)
    assert [s.lr(t) for t in (1, 2, 4, 5, 40)] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert s.hyper(5) is s.base
    assert s.hyper(2) == Hyper(0.2, 0.5, 1e-4)
    cosine = schedule(lr_schedule="cosine", lr_warmup_steps=10)
    assert [cosine.lr(t) for t in (5, 10, 11)] == [0.2, 0.4, 0.4]  # cosine starts after it
    assert cosine.lr(12) < 0.4
    step = schedule(lr_schedule="step", lr_gamma=0.5, lr_warmup_steps=20)
    assert step.lr(15) == 0.4 * 0.5 * 15 / 20  # epochs decay during a long warm-up too


def test_a_warm_up_longer_than_the_run_is_a_ramp_that_never_ends() -> None:
    s = schedule(lr_schedule="cosine", lr_warmup_steps=100)
    assert s.lr(40) == 0.4 * 40 / 100


def test_steps_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        schedule().lr(0)
