"""structlog set-up for the command line: human console lines or JSON lines, on stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, TextIO, cast

import numpy as np
import structlog
from structlog.typing import EventDict, Processor
from tqdm import tqdm


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


class AboveTheBar:
    """stderr for log lines while a tqdm progress bar may be drawn there: each complete line is
    printed above the bar (tqdm clears and redraws it) instead of into the middle of it."""

    def __init__(self) -> None:
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                tqdm.write(line, file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


_ONE_LINE_AT_A_TIME = threading.Lock()
"""Held for each line written by structlog or by the standard library's handler: their own locks
are two different locks, and without one shared lock a uvicorn access line could land between a
structlog line and its newline (two JSON objects on one line)."""


class _Tolerant:
    """A log stream written one whole line per call, under :data:`_ONE_LINE_AT_A_TIME`, whose
    failures drop the line instead of raising it into whoever logged: with stderr a closed pipe
    (``otpnn train 2>&1 | head``) a log call in an actor's exit path would otherwise kill that
    path."""

    def __init__(self, stream: TextIO | AboveTheBar) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            with _ONE_LINE_AT_A_TIME:
                return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def _without_traceback(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """One line per failure: the exception's traceback goes (its reason is on the line)."""
    event.pop("exc_info", None)
    return event


def configure_logging(
    fmt: str = "console",
    *,
    quiet: bool = False,
    stream: TextIO | AboveTheBar | None = None,
    tracebacks: bool = True,
) -> None:
    """``fmt`` is ``console`` or ``json``; ``quiet`` keeps warnings and errors only; lines go to
    ``stream`` (default stderr; :class:`AboveTheBar` under a progress bar); without
    ``tracebacks`` a crash is its one line (event and reason)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _plain_numbers,
            structlog.processors.format_exc_info if tracebacks else _without_traceback,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.WARNING if quiet else logging.INFO
        ),
        # WriteLogger writes line and newline in one call (PrintLogger's print() makes two).
        # _Tolerant is a text stream in all structlog uses (write, flush), not a TextIO.
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, _Tolerant(stream or sys.stderr))),
        cache_logger_on_first_use=False,
    )


def _plain_numbers(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """numpy scalars as plain numbers (``0.19``, not ``np.float64(0.19)``) in every format."""
    for key, value in event.items():
        if isinstance(value, np.generic):
            event[key] = value.item()
    return event


_routed = False  # set by route_stdlib_logging: adopt_library_logger acts only then


def route_stdlib_logging(
    fmt: str, level: int = logging.INFO, *, stream: TextIO | AboveTheBar | None = None
) -> None:
    """Render the standard library's records (a library's, e.g. uvicorn's server and access
    lines, Ray's warnings) like structlog's own, so that a JSON log is JSON on every line;
    ``stream`` as in :func:`configure_logging`."""
    # StreamHandler writes record and newline in one call, here under structlog's line lock.
    handler = logging.StreamHandler(cast(TextIO, _Tolerant(stream or sys.stderr)))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _access_fields,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)],
            pass_foreign_args=True,  # for _access_fields
        )
    )
    handler.setLevel(level)  # a library's logger may pass on records below the root's level
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    global _routed
    _routed = True
    for name in _OWN_HANDLER_LIBRARIES:
        if name in sys.modules:
            adopt_library_logger(name)


_OWN_HANDLER_LIBRARIES = ("ray",)
"""Libraries whose import gives their logger a stderr handler of its own and stops its records
from reaching the root handler (Ray's, so that a ``basicConfig`` does not print them twice)."""


def adopt_library_logger(name: str) -> None:
    """Once :func:`route_stdlib_logging` has routed the standard library's records: the records
    of library ``name``, whose import gave its logger a handler of its own, go that way too, in
    the log's format (a Ray warning is one more JSON line in a JSON log). Call it after the
    library's import; it does nothing where the records are not routed (an application that
    embeds the trainer keeps its own logging set-up)."""
    if not _routed:
        return
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = True


def _access_fields(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """uvicorn's access line as fields (client, method, path, http, status), not one string."""
    args = event.pop("positional_args", ())
    if event.get("logger") == "uvicorn.access" and len(args) == 5:
        client, method, path, http, status = args
        event.update(
            event="http_request", client=client, method=method, path=path, http=http, status=status
        )
    return event
