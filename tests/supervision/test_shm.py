"""Shared numpy arrays: zero-copy between process actors, always unlinked by the owner."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pykka
import pytest

from supervision.process import start
from supervision.shm import ArrayDescriptor, SharedArray

pytestmark = pytest.mark.usefixtures("no_fd_leaks")


class Worker(pykka.ThreadingActor):
    """Attaches to the parent's arrays by descriptor and writes into one of them."""

    def __init__(self) -> None:
        super().__init__()
        self.views: dict[str, SharedArray] = {}

    def attach(self, descriptor: ArrayDescriptor) -> None:
        self.views[descriptor.name] = SharedArray.attach(descriptor)

    def scale(self, src: str, dst: str, factor: float) -> float:
        out = self.views[dst].array
        np.multiply(self.views[src].array, factor, out=out)
        return float(out.sum())

    def detach(self) -> None:
        for view in self.views.values():
            view.close()
        self.views.clear()


def test_child_writes_parent_sees_without_copies() -> None:
    with SharedArray.create((4, 3)) as src, SharedArray.create((4, 3)) as dst:
        src.array[:] = np.arange(12, dtype=np.float32).reshape(4, 3)
        worker = start(Worker)
        try:
            for arr in (src, dst):
                worker.proxy().attach(arr.descriptor()).get(timeout=2)
            assert worker.proxy().scale(src.name, dst.name, 2.0).get(timeout=2) == 132.0
            np.testing.assert_array_equal(dst.array, src.array * 2)
            src.array[0, 0] = 100  # and the other way round: the child sees the new value
            worker.proxy().scale(src.name, dst.name, 1.0).get(timeout=2)
            assert dst.array[0, 0] == 100
            worker.proxy().detach().get(timeout=2)
        finally:
            worker.stop(timeout=2)


def test_segment_survives_an_attached_child_exit() -> None:
    """Only the owner decides when a segment goes away."""
    with SharedArray.create(8) as owned:
        worker = start(Worker)
        worker.proxy().attach(owned.descriptor()).get(timeout=2)
        assert worker.stop(timeout=2)
        assert Path(f"/dev/shm/{owned.name}").exists()
        again = SharedArray.attach(owned.descriptor())
        again.close()


def test_owner_unlinks_even_when_the_attached_child_was_killed() -> None:
    owned = SharedArray.create((16,), np.float64)
    worker = start(Worker)
    worker.proxy().attach(owned.descriptor()).get(timeout=2)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.join(2)
    owned.close()
    owned.unlink()
    assert not Path(f"/dev/shm/{owned.name}").exists()


def test_descriptor_is_small_and_picklable() -> None:
    with SharedArray.create((1000, 1000), "float32") as big:
        desc = big.descriptor()
        assert desc == ArrayDescriptor(big.name, (1000, 1000), "<f4")
        assert len(pickle.dumps(desc)) < 200
        view = SharedArray.attach(pickle.loads(pickle.dumps(desc)))
        assert view.array.shape == (1000, 1000)
        assert not view.is_owner
        view.close()


def test_only_the_owner_unlinks_and_close_is_idempotent() -> None:
    with SharedArray.create(4) as owned:
        view = SharedArray.attach(owned.descriptor())
        with pytest.raises(PermissionError):
            view.unlink()
        view.close()
        view.close()
        with pytest.raises(ValueError, match="closed"):
            _ = view.array
    assert not Path(f"/dev/shm/{owned.name}").exists()


def test_attach_to_a_missing_segment_fails_clearly() -> None:
    with pytest.raises(FileNotFoundError):
        SharedArray.attach(ArrayDescriptor("otpnn_does_not_exist", (1,), "<f4"))


def test_attach_leaves_the_resource_tracker_to_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 3.11, SharedMemory(name) registers an attached segment with the attaching process's
    resource tracker, which unlinks it (with a leak warning) when that process exits."""
    from multiprocessing import resource_tracker

    registered: list[str] = []
    monkeypatch.setattr(resource_tracker, "register", lambda name, rtype: registered.append(name))
    monkeypatch.setattr(resource_tracker, "unregister", lambda name, rtype: None)
    with SharedArray.create(4) as owned:
        assert registered == ["/" + owned.name]  # the owner is tracked: cleaned up if it dies
        SharedArray.attach(owned.descriptor()).close()
        assert registered == ["/" + owned.name]


def test_segments_are_named_with_the_applications_prefix_and_the_creators_pid() -> None:
    with SharedArray.create(4, np.int64, prefix="myapp_") as shared:
        assert shared.name.startswith(f"myapp_{os.getpid()}_")
        assert (Path("/dev/shm") / shared.name).exists()
    with SharedArray.create(4, np.int64) as shared:
        assert shared.name.startswith(f"shared_{os.getpid()}_")  # the library's own default
