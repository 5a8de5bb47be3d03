"""structlog set-up for the command line: human console lines or JSON lines, on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def configure_logging(fmt: str = "console", *, quiet: bool = False) -> None:
    """``fmt`` is ``console`` or ``json``; ``quiet`` keeps warnings and errors only."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _renderer(fmt),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.WARNING if quiet else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def route_stdlib_logging(fmt: str, level: int = logging.INFO) -> None:
    """Render the standard library's records (a library's, e.g. uvicorn's server and access
    lines) like structlog's own, so that a JSON log is JSON on every line."""
    handler = logging.StreamHandler(sys.stderr)
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _access_fields(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """uvicorn's access line as fields (client, method, path, http, status), not one string."""
    args = event.pop("positional_args", ())
    if event.get("logger") == "uvicorn.access" and len(args) == 5:
        client, method, path, http, status = args
        event.update(
            event="http_request", client=client, method=method, path=path, http=http, status=status
        )
    return event
