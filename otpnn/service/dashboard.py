"""The dashboard: ``GET /`` is a page that watches the service live, served by the service.

The page is static package data (``static/``: HTML, CSS, plain JavaScript modules drawing SVG),
with no build step and nothing fetched from elsewhere. It holds no data: everything it shows
comes through the same API a script uses (``/jobs``, ``/tree``, ``/live``, ...), with the token,
when the service has one, in an ``Authorization`` header. So the page and its files are served
without a token (``auth.OPEN_PATHS``, ``auth.OPEN_PREFIXES``), and never contain one.

Guarantees:

- The page's responses carry a Content-Security-Policy that allows scripts, styles and
  connections from the service's own origin only: no inline script or style, no third party,
  no framing. (Only the page's: FastAPI's ``/docs`` loads its own assets from a CDN.)
- The JSON endpoints it adds are part of the API (OpenAPI, README): ``GET /live`` (SSE) and a
  job's ``/events`` and ``/curves``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otpnn.service.live import LiveFeed

STATIC = Path(__file__).with_name("static")
PAGE_PREFIX = "/ui/"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def mount_dashboard(app: FastAPI, feed: LiveFeed) -> None:
    """Add the page, its files, the live feed and the endpoints it reads to ``app``."""
    manager = feed.manager

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/live", tags=["service"], response_class=StreamingResponse)
    async def live(
        job: str | None = Query(None, description="A job to watch: adds tree, curves, events."),
    ) -> StreamingResponse:
        """Server-sent events: what changed, at most every 0.5 s. ``hello``; ``status`` (a
        job's, as GET /jobs/{id}); with ``job``: ``tree`` (as GET /tree), ``curves`` (as GET
        /jobs/{id}/curves) and ``events`` (the job's new events)."""
        if job is not None:
            manager.status(job)  # 404 for an unknown job, before the stream starts
        return StreamingResponse(
            feed.stream(job),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.get("/jobs/{job_id}/events", tags=["jobs"])
    def events(job_id: str) -> list[dict[str, Any]]:
        """The job's event timeline (the report's ``events``), also while it runs."""
        return feed.events(job_id)

    @app.get("/jobs/{job_id}/curves", tags=["jobs"])
    def curves(job_id: str) -> dict[str, Any]:
        """``epochs`` (the report's rows so far) and ``running`` (the epoch in progress at the
        latest checkpoint: mean train loss and accuracy so far, step), also while it runs."""
        manager.status(job_id)
        return feed.curves(job_id)

    app.mount(PAGE_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="ui")


class PageHeaders:
    """ASGI middleware: the page's security headers on ``/`` and ``/ui/*`` responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(PAGE_PREFIX)):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
