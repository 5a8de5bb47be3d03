"""What the dashboard watches: a job's curves and event timeline, and the live feed (SSE).

Server-sent events rather than a websocket: the data flows one way (server to browser), SSE is
plain HTTP (the same auth, middleware and proxies as every other endpoint) and a client
reconnects on its own after a drop (``retry:``). The browser reads the stream with ``fetch()``
because ``EventSource`` cannot send an ``Authorization`` header, and a token must never go in a
URL.

Rules:

- **Bounded rate.** A stream looks at the service at most once per ``interval`` (0.5 s) and
  sends only what changed since its last look: a job's status when it differs, the tree when it
  differs, a job's new events only. With nothing changing it sends a comment every
  ``keepalive`` seconds, so a dead connection is noticed.
- **A closed tab costs nothing.** Nothing runs between streams: each stream's loop is its own
  and ends when its client disconnects (Starlette cancels it on ``http.disconnect``), so with
  no tab open the feed does no work at all. ``streams`` counts the open ones.
- **Shutdown is not held up.** ``close()`` (called as the server begins to shut down) ends
  every stream at its next look, so open tabs do not delay an orderly stop.
- **Reads only.** The feed reads the JobManager's public state, a running job's trainer
  (progress, events, latest snapshot) and finished jobs' reports; it never changes a job.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pykka

if TYPE_CHECKING:
    from otpnn.service.jobs import JobManager

INTERVAL = 0.5  # seconds between two looks of one stream: at most 2 updates a second
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps the connection checked
RETRY_MS = 2000  # how long a client waits before it reconnects (the SSE ``retry:`` field)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
REPORT_CACHE = 16  # finished jobs' reports kept parsed (they never change once written)


def sse(event: str, data: Any) -> str:
    """One SSE frame; ``json.dumps`` never emits a newline, so ``data`` is one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class _Cursor:
    """What one stream has already sent (so it sends only what changed)."""

    job_id: str | None
    sent: dict[str, str] = field(default_factory=dict)
    events: int = 0


class LiveFeed:
    def __init__(
        self, manager: JobManager, *, interval: float = INTERVAL, keepalive: float = KEEPALIVE
    ) -> None:
        self.manager = manager
        self.interval = interval
        self.keepalive = keepalive
        self.streams = 0  # open streams; touched on the event loop's thread only
        self.closed = False
        self._reports: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._reports_lock = threading.Lock()  # streams look from worker threads

    def close(self) -> None:
        """End every stream at its next look (the server is shutting down)."""
        self.closed = True

    # -- what a job shows ---------------------------------------------------------------------
    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's event timeline: live while it runs, from its report once it has one."""
        trainer = self.manager.trainer(job_id)
        if trainer is not None:
            return [e.to_dict() for e in trainer.state.events()]
        return list(self._report(job_id).get("events", []))

    def curves(self, job_id: str) -> dict[str, Any]:
        """``epochs``: the finished epochs' rows (as the report's); ``running``: the epoch in
        progress at the latest snapshot (mean train loss and accuracy so far, step), or None."""
        trainer = self.manager.trainer(job_id)
        if trainer is None:
            report = self._report(job_id)
            return {"epochs": list(report.get("epochs", [])), "running": None}
        snap = trainer.state.latest_snapshot()
        if snap is None:
            return {"epochs": [], "running": None}
        running = None
        tally = snap.tally  # the epoch in progress, so far
        if tally.samples:
            running = {
                "step": snap.step,
                "epoch": len(snap.history) + 1,
                "train_loss": tally.loss_sum / tally.samples,
                "train_accuracy": tally.correct / tally.samples,
            }
        return {"epochs": list(snap.history), "running": running}

    def _report(self, job_id: str) -> dict[str, Any]:
        """A finished job's report (parsed once), or {} when it has none (yet)."""
        with self._reports_lock:
            if job_id in self._reports:
                return self._reports[job_id]
        state = self.manager.status(job_id)["state"]  # UnknownJob for an unknown id
        path = self.manager.store.report_path(job_id)
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if state in FINISHED:
            with self._reports_lock:
                self._reports[job_id] = report
                while len(self._reports) > REPORT_CACHE:
                    self._reports.popitem(last=False)
        return report

    # -- the stream ---------------------------------------------------------------------------
    async def stream(self, job_id: str | None) -> AsyncIterator[str]:
        """SSE frames: ``hello`` first (a client resets what it shows), then per look the
        changes: ``status`` (one job, as GET /jobs/{id}), and with a job to watch ``tree`` (as
        GET /tree), ``curves`` and ``events`` (the new ones only)."""
        self.streams += 1
        try:
            cursor = _Cursor(job_id)
            yield f"retry: {RETRY_MS}\n" + sse("hello", {"job": job_id, "interval": self.interval})
            quiet_since = time.monotonic()
            while not self.closed:
                frames = await anyio.to_thread.run_sync(self.look, cursor)
                if frames:
                    yield "".join(frames)
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= self.keepalive:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await anyio.sleep(self.interval)
        finally:
            self.streams -= 1

    def look(self, cursor: _Cursor) -> list[str]:
        """One look at the service: the frames for what changed since ``cursor``'s last."""
        frames: list[str] = []
        for status in self.manager.jobs():
            self._changed(frames, cursor, f"status:{status['id']}", "status", status)
        if cursor.job_id is None:
            return frames
        # A supervisor busy restarting, or the service stopping: the tree comes next look.
        with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
            self._changed(frames, cursor, "tree", "tree", self.manager.tree())
        self._changed(frames, cursor, "curves", "curves", self.curves(cursor.job_id))
        events = self.events(cursor.job_id)
        if len(events) > cursor.events:
            frames.append(sse("events", events[cursor.events :]))
            cursor.events = len(events)
        return frames

    @staticmethod
    def _changed(frames: list[str], cursor: _Cursor, key: str, event: str, data: Any) -> None:
        text = json.dumps(data, sort_keys=True)
        if cursor.sent.get(key) != text:
            cursor.sent[key] = text
            frames.append(sse(event, data))
