"""The HTTP JSON API over a :class:`JobManager` (FastAPI; OpenAPI at /openapi.json, /docs).

Every error is JSON ``{"error": "..."}`` (plus ``detail`` for field-level validation) with a 4xx
status naming what is wrong; a request never reaches the trainer unvalidated, never names a
file, and never makes the server unpickle anything (bodies are JSON, weights are safetensors).
Handlers are plain ``def``: FastAPI runs them in its thread pool, so a handler waiting on the
manager's lock or an actor never blocks the event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from otpnn.config import ConfigError
from otpnn.faults import FaultSpecError
from otpnn.service.auth import BearerAuth
from otpnn.service.dashboard import PageHeaders, mount_dashboard
from otpnn.service.jobs import MAX_QUEUED, Conflict, JobManager, QueueFull, Unavailable
from otpnn.service.limits import MAX_BODY, BodyLimit
from otpnn.service.live import LiveFeed
from otpnn.service.metrics import CONTENT_TYPE, registry_for, render
from otpnn.service.schema import FaultRequest, JobRequest
from otpnn.service.store import UnknownJob

JobStatus = dict[str, Any]


def create_app(
    state_dir: str | os.PathLike,
    *,
    max_jobs: int = 1,
    token: str | None = None,
    max_body: int = MAX_BODY,
    shutdown_timeout: float = 20.0,
    max_queued: int = MAX_QUEUED,
    data_roots: Sequence[str | os.PathLike] = (),
    verbose: bool = False,
) -> FastAPI:
    """The service app; its lifespan starts the JobManager (locking the state dir, resuming
    unfinished jobs) and shuts it down (checkpointing running jobs) within
    ``shutdown_timeout`` seconds. The other arguments are the JobManager's."""
    manager = JobManager(
        state_dir, max_jobs, max_queued=max_queued, data_roots=data_roots, verbose=verbose
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            manager.shutdown(shutdown_timeout)

    app = FastAPI(
        title="otpnn",
        summary="Training jobs on an OTP-style supervision tree of actors.",
        version="1",
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.live = LiveFeed(manager)  # the server closes it when it starts shutting down
    _errors(app)
    _routes(app, manager)
    mount_dashboard(app, app.state.live)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(PageHeaders)
    if token is not None:
        app.add_middleware(BearerAuth, token=token)  # outermost: nothing runs unauthenticated
    return app


def _routes(app: FastAPI, manager: JobManager) -> None:
    store = manager.store
    metrics = registry_for(manager)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness; open without a token."""
        return {"status": "ok", "jobs": manager.counts()}

    @app.get("/metrics", tags=["service"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus text format: jobs by state, steps, samples/s, restarts, faults."""
        return Response(render(metrics), media_type=CONTENT_TYPE)

    @app.get("/tree", tags=["service"])
    def tree() -> dict[str, Any]:
        """The live supervision tree: supervisors, children, kind, pid, restarts."""
        return manager.tree()

    @app.post("/jobs", status_code=201, tags=["jobs"])
    def submit(request: JobRequest) -> JobStatus:
        """Queue a training job; it starts when fewer than --max-jobs are running (429 when
        --max-queued jobs already wait)."""
        return manager.submit(request)

    @app.get("/jobs", tags=["jobs"])
    def list_jobs() -> list[JobStatus]:
        return manager.jobs()

    @app.get("/jobs/{job_id}", tags=["jobs"])
    def status(job_id: str) -> JobStatus:
        """State (queued|running|succeeded|failed|cancelled), epoch, step, metrics, restarts."""
        return manager.status(job_id)

    @app.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel(job_id: str) -> JobStatus:
        """Cancel a queued job at once, a running one at its next step boundary."""
        return manager.cancel(job_id)

    @app.post("/jobs/{job_id}/faults", tags=["jobs"])
    def inject(job_id: str, fault: FaultRequest) -> JobStatus:
        """Inject a fault (the grammar of ``otpnn train --fault``) into a running job; at most
        32 per job (409 after that)."""
        return manager.inject(job_id, fault.spec)

    @app.get("/jobs/{job_id}/report", tags=["jobs"])
    def report(job_id: str) -> FileResponse:
        """The JSON report of a finished job, as ``otpnn train --report`` writes it."""
        return _file(manager, store.report_path(job_id), job_id, "application/json")

    @app.get("/jobs/{job_id}/model", tags=["jobs"])
    def model(job_id: str) -> FileResponse:
        """The trained weights (safetensors) of a succeeded job."""
        return _file(manager, store.model_path(job_id), job_id, "application/octet-stream")


def _file(manager: JobManager, path: os.PathLike, job_id: str, media_type: str) -> FileResponse:
    state = manager.status(job_id)["state"]
    if not os.path.isfile(path):
        raise Conflict(f"job {job_id} is {state}: it has no {os.path.basename(path)}")
    return FileResponse(path, media_type=media_type, filename=f"{job_id}-{os.path.basename(path)}")


def _errors(app: FastAPI) -> None:
    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(UnknownJob)
    async def unknown_job(_r: Request, e: UnknownJob) -> JSONResponse:
        return error(404, f"no job with id {e.args[0]!r}")

    @app.exception_handler(Conflict)
    async def conflict(_r: Request, e: Conflict) -> JSONResponse:
        return error(409, str(e))

    @app.exception_handler(QueueFull)
    async def queue_full(_r: Request, e: QueueFull) -> JSONResponse:
        return error(429, str(e))

    @app.exception_handler(Unavailable)
    async def unavailable(_r: Request, e: Unavailable) -> JSONResponse:
        return error(503, str(e))

    @app.exception_handler(ConfigError)
    @app.exception_handler(FaultSpecError)
    @app.exception_handler(ValueError)
    async def invalid(_r: Request, e: ValueError) -> JSONResponse:
        return error(422, str(e))

    @app.exception_handler(RequestValidationError)
    async def validation(_r: Request, e: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]), "problem": err["msg"]}
            for err in e.errors()
        ]
        if any(err["type"] == "json_invalid" for err in e.errors()):
            return error(400, "the body is not valid JSON", detail=problems)
        summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems)
        return error(422, f"invalid request: {summary}", detail=problems)
