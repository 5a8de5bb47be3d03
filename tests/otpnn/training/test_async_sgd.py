"""Async SGD without actors: the version ring, and the serial reference's contract (staleness 1
is sync SGD bit for bit; each staleness is its own algorithm; the config's rules for it)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from training_support import config, dataset, reference_sha

from otpnn.async_sgd import VersionRing
from otpnn.config import ConfigError, TrainConfig
from otpnn.data import load_dataset
from otpnn.interchange import limit_dataset
from otpnn.reference import train_reference

LR = {"lr": 0.1}  # every async reference here trains at this rate


def _sha(**overrides: object) -> str:
    return reference_sha(**LR, **overrides)


def test_the_ring_keeps_the_last_versions_and_the_initial_one_before_update_1() -> None:
    ring = VersionRing(np.zeros((4, 2)), staleness=3)
    ring.fill(0, np.array([1.0, 1.0]), None)
    assert ring.version(-2).tolist() == ring.version(0).tolist() == [1.0, 1.0]
    assert ring.earlier(0).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # versions -2, -1: the initial
    for v in range(1, 6):
        ring.version(v)[...] = v * 10
    # After update 5, versions 3 and 4 are the ones updates 6 and 7 read (with 5 itself).
    assert ring.earlier(5).tolist() == [[30.0, 30.0], [40.0, 40.0]]
    other = VersionRing(np.zeros((4, 2)), staleness=3)
    other.fill(5, ring.version(5), ring.earlier(5))
    assert [other.version(v).tolist() for v in (3, 4, 5)] == [[30, 30], [40, 40], [50, 50]]
    with pytest.raises(ValueError, match="needs 2 earlier versions"):
        other.fill(5, ring.version(5), None)


def test_staleness_1_is_sync_sgd_bit_for_bit() -> None:
    assert _sha(algorithm="async", staleness=1) == _sha()


def test_the_result_depends_on_the_staleness() -> None:
    shas = {_sha(), *(_sha(algorithm="async", staleness=s) for s in (2, 3, 4))}
    assert len(shas) == 4


def test_async_sgd_learns() -> None:
    cfg = config(**LR, algorithm="async", staleness=2)
    assert train_reference(cfg, dataset()).history[-1]["test_accuracy"] > 0.9


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"algorithm": "async", "staleness": 0}, "invalid staleness=0: expected an integer >= 1"),
        ({"algorithm": "async", "staleness": 1.5}, "invalid staleness=1.5"),
        ({"staleness": 3}, "invalid staleness=3: expected 2 (it applies to algorithm 'async'"),
        ({"algorithm": "local-sgd", "staleness": 1}, "applies to algorithm 'async' only"),
        ({"algorithm": "async", "sync_every": 4}, "applies to algorithm 'local-sgd' only"),
    ],
)
def test_config_names_a_bad_staleness(fields, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**fields)


def test_staleness_4_at_its_defaults_learns_mnist_where_syncs_momentum_diverges(mnist_dir) -> None:
    """The first 12,800 MNIST images, 3 epochs (600 updates), serial reference: at async's
    defaults staleness 4 learns; with sync's momentum and no warm-up it diverges."""
    cfg = TrainConfig(data_dir=str(mnist_dir), epochs=3, algorithm="async", staleness=4)
    subset = limit_dataset(load_dataset(cfg, download=False), 12_800, 1000)
    assert train_reference(cfg, subset).history[-1]["test_accuracy"] > 0.85
    old = dataclasses.replace(cfg, momentum=0.5, lr_warmup_steps=0)
    assert train_reference(old, subset).history[-1]["test_accuracy"] < 0.5
