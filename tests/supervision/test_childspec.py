"""Child specs are validated when made, with errors naming the field and the allowed values."""

from __future__ import annotations

import pytest
from sup_support import Worker

from supervision import Backoff, ChildSpec, Supervisor
from supervision.intensity import RestartIntensity


def test_defaults_follow_otp() -> None:
    worker = ChildSpec.actor("w", Worker)
    assert (worker.restart, worker.shutdown, worker.type, worker.kind) == (
        "permanent",
        5.0,
        "worker",
        "thread",
    )
    sup = Supervisor.child_spec("s", [])
    assert (sup.type, sup.shutdown) == ("supervisor", "infinity")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"restart": "sometimes"}, ValueError, r"restart must be one of .*'permanent'"),
        ({"shutdown": -1}, ValueError, r"shutdown must be .*brutal_kill"),
        ({"shutdown": "soon"}, ValueError, r"shutdown must be"),
        ({"shutdown": float("inf")}, ValueError, r"shutdown must be"),
        ({"shutdown": True}, ValueError, r"shutdown must be"),
        ({"type": "manager"}, ValueError, r"type must be one of .*'worker', 'supervisor'"),
        ({"start": "not callable"}, TypeError, r"start must be a zero-argument callable"),
        ({"id": None}, ValueError, r"id must not be None"),
        ({"id": ["unhashable"]}, TypeError, r"id must be hashable"),
        ({"name": 3}, TypeError, r"name must be a str"),
    ],
)
def test_invalid_specs_are_refused(kwargs: dict, error: type, match: str) -> None:
    fields = {"id": "c", "start": lambda: None, **kwargs}
    with pytest.raises(error, match=match):
        ChildSpec(**fields)


def test_supervisor_options_are_validated() -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        Supervisor.start_link([], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor.start_link([], max_restarts=-1)
    with pytest.raises(ValueError, match="duplicate child id 'a'"):
        Supervisor.start_link([ChildSpec.actor("a", Worker), ChildSpec.actor("a", Worker)])
    with pytest.raises(ValueError, match="min_seconds <= max_seconds"):
        Backoff(min_seconds=2, max_seconds=1)


def test_intensity_window_counts_like_otp() -> None:
    now = [0.0]
    intensity = RestartIntensity(3, 5, clock=lambda: now[0])
    assert all(intensity.add() for _ in range(3))
    assert not intensity.add()  # the 4th within 5 s
    fresh = RestartIntensity(3, 5, clock=lambda: now[0])
    for _ in range(3):
        assert fresh.add()
        now[0] += 2.6  # the oldest ones leave the window
    assert fresh.add()


def test_backoff_grows_is_capped_and_jittered() -> None:
    fixed = Backoff(min_seconds=0.1, max_seconds=1.0, jitter=0.5, rng=lambda: 1.0)
    assert fixed.delay(1) == pytest.approx(0.15)
    assert fixed.delay(2) == pytest.approx(0.3)
    assert fixed.delay(10) == 1.0
    no_jitter = Backoff(min_seconds=0.1, max_seconds=1.0, jitter=0.5, rng=lambda: 0.0)
    assert no_jitter.delay(3) == pytest.approx(0.4)
