"""The JobManager: a queue of training jobs, at most ``max_jobs`` running, under one tree.

::

    otpnn-service (one_for_one)
    └── jobs (DynamicSupervisor)
        ├── job-<id> JobSupervisor (temporary)   Loader, WorkerPool, Coordinator
        └── ...

A running job holds a slot and one thread, its waiter, which drives the job's lifecycle
(:mod:`otpnn.service.lifecycle`: build, run under ``jobs``, keep the result), records how it
ended in one log line (the traceback too under ``verbose``), frees the slot and starts the next
queued job, whatever failed on the way. A job's failure stays inside its JobSupervisor
(temporary: never restarted), so it never disturbs the other jobs or the service.

Persistence: every state change rewrites ``job.json`` atomically; each job checkpoints into its
own directory. On start the state dir is locked (one service per dir), every record is validated
(a damaged one is set aside as ``job.json.damaged`` and its job listed as failed with the reason),
and jobs found ``queued`` or ``running`` are queued again; they resume from their checkpoint when
there is one (so also after a SIGKILL of the service), ending bit-identical to an uninterrupted
run. After shutdown nothing is written (:meth:`Store.close`).

Bounds: at most ``max_queued`` jobs wait (more is :class:`QueueFull`), and at most
:data:`MAX_INJECTED_FAULTS` faults are injected into one job (more is a :class:`Conflict`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from otpnn.config import TrainConfig
from otpnn.data import DataError, find_mnist
from otpnn.faults import parse_fault
from otpnn.service import lifecycle, records
from otpnn.service.lifecycle import Outcome
from otpnn.service.records import FINISHED, RUN_OPTIONS, STATES
from otpnn.service.schema import JobRequest, check_data_dir
from otpnn.service.store import DamagedRecord, Store, StoreClosed, UnknownJob
from otpnn.training import JobOptions, TrainingJob, resolve
from otpnn.training.options import default_workers
from supervision import DynamicSupervisor, Supervisor

log = structlog.get_logger("otpnn.service")

__all__ = ["FINISHED", "STATES", "Conflict", "JobManager", "QueueFull", "Unavailable"]

# Often enough that a killed service loses little; a checkpoint of the default net is ~1 MB.
DEFAULT_CHECKPOINT_EVERY = 10
MAX_QUEUED = 100
# As many as a request may plan (JobRequest.faults): a job's plan and record stay small.
MAX_INJECTED_FAULTS = 32


class Conflict(RuntimeError):
    """The request does not fit the job's state (e.g. a fault for a job that is not running)."""


class QueueFull(RuntimeError):
    """``max_queued`` jobs are already waiting."""


class Unavailable(RuntimeError):
    """The service cannot take the request now (it is stopping, or cannot write its state)."""


@dataclass
class _Run:
    """A job that holds a slot: its trainer once built, and whether a cancel was asked."""

    job: TrainingJob | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class JobManager:
    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        max_jobs: int = 1,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        max_queued: int = MAX_QUEUED,
        data_roots: Sequence[str | os.PathLike] = (),
        verbose: bool = False,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self.store = Store(state_dir)
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self.checkpoint_every = checkpoint_every
        self.data_roots = tuple(Path(r).resolve() for r in data_roots)
        self.verbose = verbose
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        self._queue: deque[str] = deque()
        self._runs: dict[str, _Run] = {}
        self._closing = False
        self._stopped = False
        self._datasets = lifecycle.Datasets()
        self.root: Any = None
        self.started_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Lock the state dir (DirectoryBusy if another service has it), start the service tree,
        load the records, queue again what was unfinished, and start what fits."""
        self.store.lock()
        self.root = Supervisor.start_link(
            [DynamicSupervisor.child_spec("jobs", name="jobs")],
            strategy="one_for_one",
            name="otpnn-service",
        )
        with self._lock:
            loaded = [self._load(job_id) for job_id in self.store.job_ids()]
            for record in sorted(loaded, key=lambda r: (r["created"], r["id"])):
                self._records[record["id"]] = record
                if record["state"] in ("queued", "running"):
                    if record["state"] == "running":
                        record["resumes"] += 1
                    record["state"] = "queued"
                    self._save(record)
                    self._queue.append(record["id"])
                    log.info("job_requeued", job=record["id"], resumes=record["resumes"])
            self._schedule()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop every running job at a step boundary (each writes its checkpoint), then the
        tree; bounded by ``timeout``. Running jobs stay ``running`` on disk: the next start
        resumes them. Then nothing more is written, and the state dir's lock is given back.
        Idempotent."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._stopped:
                return
            self._stopped = self._closing = True
            runs = list(self._runs.values())
            for run in runs:
                if run.job is not None:
                    run.job.request_stop()
        for run in runs:
            if run.thread is not None:
                run.thread.join(max(0.1, deadline - time.monotonic()))
        if self.root is not None:
            self.root.stop(timeout=max(1.0, deadline - time.monotonic()))
            if self.root.is_alive():
                self.root.kill()
        self.store.close()
        late = [run.thread.name for run in runs if run.thread and run.thread.is_alive()]
        if late:
            log.warning("jobs_not_stopped_in_time", threads=late)
        log.info("service_stopped", jobs_interrupted=len(runs))

    def _load(self, job_id: str) -> dict[str, Any]:
        """A record from disk, validated; a damaged one is set aside and its job failed."""
        try:
            return records.checked(self.store.read(job_id), job_id)
        except DamagedRecord as e:
            reason = str(e)
        record = records.replacing_damaged(job_id, reason, self.store.record_mtime(job_id))
        try:
            self.store.set_aside(job_id)
        except OSError as e:
            log.error("job_record_damaged", job=job_id, reason=reason, set_aside=e.strerror)
            return record
        log.error("job_record_damaged", job=job_id, reason=reason, set_aside="job.json.damaged")
        self._save(record)
        return record

    # -- requests -------------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> dict[str, Any]:
        """Validate a request into a queued job record; ConfigError / ValueError if invalid,
        QueueFull if ``max_queued`` jobs wait, Unavailable if it cannot be recorded."""
        body = request.model_dump()
        options = {k: body.pop(k) for k in RUN_OPTIONS}
        body["data_dir"] = check_data_dir(body["data_dir"], self.store.root, self.data_roots)
        if body["checkpoint_every"] is None:
            body["checkpoint_every"] = self.checkpoint_every
        body["workers"] = body["workers"] or default_workers()
        config = TrainConfig.from_dict(body)
        if config.dataset == "mnist":
            _check_mnist(config.data_dir)
        resolve(config, JobOptions(faults=tuple(parse_fault(s) for s in options["faults"])))
        record = records.new(self.store.new_id(), config, options)
        with self._lock:
            if self._closing:
                raise Unavailable("the service is shutting down")
            if len(self._queue) >= self.max_queued:
                raise QueueFull(
                    f"the queue is full: {len(self._queue)} jobs are waiting, the most this "
                    "service takes (--max-queued); submit again when one has started"
                )
            if not self._save(record):
                raise Unavailable("the service cannot write its state directory")
            self._records[record["id"]] = record
            self._queue.append(record["id"])
            log.info("job_submitted", job=record["id"])
            self._schedule()
            return self.status(record["id"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._record(job_id)
            if record["state"] == "queued":
                self._queue.remove(job_id)
                self._end(job_id, Outcome("cancelled"))
            elif record["state"] == "running":
                run = self._runs[job_id]
                run.cancel.set()
                if run.job is not None:
                    run.job.request_stop()
            else:
                raise Conflict(f"job {job_id} already {record['state']}")
            return self.status(job_id)

    def inject(self, job_id: str, spec: str) -> dict[str, Any]:
        """Inject a fault into a running job; FaultSpecError / ValueError if it is bad,
        Conflict if the job is not running or has had MAX_INJECTED_FAULTS already."""
        fault = parse_fault(spec)
        with self._lock:
            record = self._record(job_id)
            run = self._runs.get(job_id)
            if record["state"] != "running" or run is None or run.job is None:
                raise Conflict(f"job {job_id} is {record['state']}, not running with a live tree")
            injected = record.setdefault("injected", [])
            if len(injected) >= MAX_INJECTED_FAULTS:
                raise Conflict(
                    f"job {job_id} has had {len(injected)} faults injected, the most one job takes"
                )
            run.job.inject(fault)
            injected.append(str(fault))
            log.info("fault_requested", job=job_id, fault=str(fault))
            return self.status(job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        """The job record, with live progress while it runs."""
        with self._lock:
            record = dict(self._record(job_id))
            run = self._runs.get(job_id)
            if run is not None and run.job is not None:
                record.update(lifecycle.live(run.job))
            return record

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self.status(i) for i in self._records]

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(STATES, 0)
            for record in self._records.values():
                counts[record["state"]] += 1
            return counts

    def tree(self) -> dict[str, Any]:
        """The live supervision tree, from the service's root down to every worker."""
        return {
            "id": "otpnn-service",
            "type": "supervisor",
            "kind": "thread",
            "pid": os.getpid(),
            "status": "running" if self.root.is_alive() else "undefined",
            "children": _json_ids(self.root.tree(timeout=5)),
        }

    def trainer(self, job_id: str) -> TrainingJob | None:
        """The job's running trainer, for observers to read (progress, events, snapshots),
        or None when it is not running; UnknownJob for an unknown id."""
        with self._lock:
            self._record(job_id)
            run = self._runs.get(job_id)
            return run.job if run is not None else None

    def _record(self, job_id: str) -> dict[str, Any]:
        record = self._records.get(job_id)
        if record is None:
            raise UnknownJob(job_id)
        return record

    # -- running --------------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start queued jobs while slots are free (called with the lock held). A job whose
        record cannot be written fails at once: a job the disk does not know would not resume."""
        while not self._closing and self._queue and len(self._runs) < self.max_jobs:
            job_id = self._queue.popleft()
            record = self._records[job_id]
            record.update(state="running", started=time.time())
            if not self._save(record):
                self._end(job_id, Outcome("failed", "its record cannot be written"))
                continue
            run = _Run()
            run.thread = threading.Thread(
                target=self._run_job, args=(job_id, run), name=f"job-{job_id}", daemon=True
            )
            self._runs[job_id] = run
            run.thread.start()

    def _run_job(self, job_id: str, run: _Run) -> None:
        """The waiter: one job's whole lifecycle; whatever happens, it ends recorded and its
        slot is freed (or, stopped by the shutdown, it stays ``running`` on disk to resume)."""
        structlog.contextvars.bind_contextvars(job=job_id)
        outcome = Outcome("failed", "the job's thread ended unexpectedly")
        try:
            outcome = self._lifecycle(job_id, run)
        except Exception as e:
            outcome = lifecycle.failed(e)
        finally:
            with self._lock:
                self._runs.pop(job_id, None)
                live = lifecycle.live(run.job) if run.job is not None else None
                if outcome.state == "interrupted":
                    log.info("job_interrupted", step=live["step"] if live else 0)
                else:
                    self._end(job_id, outcome, live)

    def _lifecycle(self, job_id: str, run: _Run) -> Outcome:
        job = lifecycle.build(job_id, self._records[job_id], self.store, self._datasets)
        with self._lock:
            if self._closing:  # shutting down before it started: it resumes on the next start
                return Outcome("interrupted")
            run.job = job
            if run.cancel.is_set():
                job.request_stop()
        allow_unfired = bool(self._records[job_id]["options"].get("allow_unfired_faults"))
        return lifecycle.run(job, self._jobs_supervisor(), self.store, run.cancel, allow_unfired)

    def _jobs_supervisor(self) -> Any:
        """Looked up each time: a restarted ``jobs`` supervisor has a new handle."""
        for info in self.root.which_children(timeout=5):
            if info.id == "jobs" and info.ref is not None:
                return info.ref
        raise RuntimeError("the jobs supervisor is not running")

    def _end(self, job_id: str, outcome: Outcome, live: dict[str, Any] | None = None) -> None:
        """Record a job's end (in memory even if the disk refuses), log it in one line, and
        start what now fits. Called with the lock held, never raises."""
        record = self._records[job_id]
        record.update(live or {})
        # e.g. the checkpoint that a failure message names: where it is on the server is not
        # the client's business.
        error = outcome.error and outcome.error.replace(str(self.store.root), "<state dir>")
        record.update(state=outcome.state, finished=time.time(), error=error)
        if outcome.final is not None:
            final = outcome.final
            keys = ("params_sha256", "test_accuracy", "steps", "best")  # best: with keep_best
            record["final"] = {k: final[k] for k in keys if k in final}
        self._save(record)
        failed = outcome.state == "failed"
        (log.warning if failed else log.info)(
            "job_finished",
            job=job_id,
            state=outcome.state,
            error=error,
            **({"detail": outcome.detail} if outcome.detail else {}),
            exc_info=outcome.exc if self.verbose and outcome.exc else None,
        )
        self._schedule()

    def _save(self, record: dict[str, Any]) -> bool:
        """Write a record; False (and one log line) if the disk refuses or the store closed."""
        try:
            self.store.save(record)
        except (OSError, StoreClosed) as e:
            log.error("job_record_not_saved", job=record["id"], reason=str(e))
            return False
        return True


def _json_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = {**row, "id": str(row["id"])}
        if "children" in row:
            row["children"] = _json_ids(row["children"])
        out.append(row)
    return out


def _check_mnist(data_dir: str | None) -> None:
    """A job on MNIST without a data_dir is refused at once (ValueError: 422) when the service
    has no MNIST of its own ($OTPNN_DATA_DIR or its cache), instead of being queued to fail
    later: the service never downloads. The message names no server path (a given data_dir
    is checked by :func:`~otpnn.service.schema.check_data_dir`)."""
    if data_dir is not None:
        return
    try:
        find_mnist(None)
    except DataError:
        raise ValueError(
            "no data_dir given, and the service has no MNIST of its own: give data_dir (an "
            "absolute directory holding the four MNIST files)"
        ) from None
