"""uvicorn, as the service runs it: exit 0 after an orderly SIGTERM; open live feeds end first."""

from __future__ import annotations

import contextlib
import socket
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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn waits (up to its graceful timeout) for responses in progress to end; a
        dashboard's live feed never ends by itself, so it is told to, first."""
        live = getattr(getattr(self.config.app, "state", None), "live", None)
        if live is not None:
            live.close()
        await super().shutdown(sockets)
