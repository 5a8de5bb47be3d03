"""uvicorn, as the service runs it: exit 0 after an orderly SIGTERM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class ServiceServer(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, so the process
    would end "killed by signal"; the service has by then stopped its jobs in order and written
    their checkpoints, which is a clean exit: 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
