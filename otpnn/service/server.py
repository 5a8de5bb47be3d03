"""uvicorn, as the service runs it: a bound socket first, a request read deadline, exit 0 after
an orderly SIGTERM, open live feeds ended first.

uvicorn's own timeouts do not cover a client that opens a connection and sends its request
slowly or never: ``timeout_keep_alive`` runs only between a response and the next request, and
any byte received cancels it (a slowloris holds a connection for as long as it likes). So the
service's HTTP protocol (uvicorn's h11 one) adds a deadline: from the moment a connection opens
or a response completes, the whole next request, headers and body, must arrive within
``read_timeout`` seconds, or the connection is closed. Once a request is in, the deadline is off:
a slow handler or a long response is never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = structlog.get_logger("otpnn.service")

READ_TIMEOUT = 10.0  # seconds for a whole request; bodies are at most 64 KiB (limits.MAX_BODY)


class ServiceServer(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, so the process
    would end "killed by signal"; the service has by then stopped its jobs in order and written
    their checkpoints, which is a clean exit: 0."""

    def __init__(self, config: uvicorn.Config, *, read_timeout: float = READ_TIMEOUT) -> None:
        config.http = type(
            "ReadDeadlineH11", (ReadDeadlineProtocol,), {"read_timeout": read_timeout}
        )
        super().__init__(config)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for sock in sockets or ():  # uvicorn names only the addresses it bound itself
            host, port = sock.getsockname()[:2]
            log.info(
                "service_listening", url=f"http://{f'[{host}]' if ':' in host else host}:{port}"
            )

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


class ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request (see the module)."""

    read_timeout: float = READ_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_in():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._request_in():
            self._arm()  # keep-alive: the next request has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _request_in(self) -> bool:
        """The client has sent a whole request (or the connection is no longer ours to time)."""
        return self.conn.their_state not in (h11.IDLE, h11.SEND_BODY) or (
            self.transport.get_protocol() is not self  # upgraded (a websocket) or closed
        )

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and not self._request_in():
            self.transport.close()  # h11 cannot answer a request it has not read: just close


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for uvicorn to listen on; OSError if the address is taken.
    Bound before the app starts, so a service that cannot have its port never touches a job."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
