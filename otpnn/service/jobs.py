"""The JobManager: a queue of training jobs, at most ``max_jobs`` running, under one tree.

::

    otpnn-service (one_for_one)
    └── jobs (DynamicSupervisor)
        ├── job-<id> JobSupervisor (temporary)   Loader, WorkerPool, Coordinator
        └── ...

A running job is a :class:`TrainingJob` started under ``jobs`` plus one thread that waits for
it, records the outcome (succeeded / failed / cancelled) with its report and weights, and starts
the next queued job. A failure stays inside its JobSupervisor (temporary: never restarted), so
it never disturbs the other jobs or the service.

Persistence: every state change rewrites ``job.json`` atomically; each job checkpoints into its
own directory. On start, jobs found ``queued`` or ``running`` are queued again and resume from
their checkpoint when there is one (so also after a SIGKILL of the service); the trainer makes
the resumed run end bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from otpnn.checkpoint import CheckpointError, save_weights
from otpnn.config import ConfigError, TrainConfig
from otpnn.data import DataError, Dataset, find_mnist, load_dataset
from otpnn.faults import Chaos, parse_fault
from otpnn.service.schema import JobRequest, check_data_dir
from otpnn.service.store import Store, UnknownJob
from otpnn.training.job import (
    CHECKPOINT_FILE,
    JobOptions,
    JobStopped,
    ResumeError,
    TrainingFailed,
    TrainingJob,
    final_summary,
)
from otpnn.training.options import default_workers, resolve
from otpnn.training.report import job_report, write_report
from otpnn.training.state import Progress
from supervision import DynamicSupervisor, Supervisor

log = structlog.get_logger("otpnn.service")

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# Often enough that a killed service loses little; a checkpoint of the default net is ~1 MB.
DEFAULT_CHECKPOINT_EVERY = 10
DATASET_CACHE = 4
# The per-run options of a request (the rest of it is the TrainConfig).
RUN_OPTIONS = ("faults", "chaos", "chaos_seed", "step_timeout", "max_restarts", "max_seconds")


NOT_STARTED: dict[str, Any] = {
    "step": 0,
    "epoch": 0,
    "total_steps": 0,
    "metrics": None,
    "restarts": 0,
    "restarts_by_actor": {},
    "faults_injected": 0,
    "pids": {},
}


class Conflict(RuntimeError):
    """The request does not fit the job's state (e.g. a fault for a job that is not running)."""


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
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
        self.store = Store(state_dir)
        self.max_jobs = max_jobs
        self.checkpoint_every = checkpoint_every
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        self._queue: deque[str] = deque()
        self._runs: dict[str, _Run] = {}
        self._closing = False
        self._datasets: OrderedDict[tuple, Dataset] = OrderedDict()
        self._dataset_lock = threading.Lock()
        self.root: Any = None
        self.started_at = time.time()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the service tree, queue again what was unfinished, and start what fits."""
        self.root = Supervisor.start_link(
            [DynamicSupervisor.child_spec("jobs", name="jobs")],
            strategy="one_for_one",
            name="otpnn-service",
        )
        with self._lock:
            for record in self.store.load_all():
                self._records[record["id"]] = record
                if record.get("state") in ("queued", "running"):
                    if record["state"] == "running":
                        record["resumes"] = record.get("resumes", 0) + 1
                    record["state"] = "queued"
                    self.store.save(record)
                    self._queue.append(record["id"])
                    log.info("job_requeued", job=record["id"], resumes=record.get("resumes", 0))
            self._schedule()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop every running job at a step boundary (each writes its checkpoint), then the
        tree; bounded by ``timeout``. Running jobs stay ``running`` on disk: the next start
        resumes them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
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
        log.info("service_stopped", jobs_interrupted=len(runs))

    # -- requests -------------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> dict[str, Any]:
        """Validate a request into a queued job record; ConfigError / ValueError if invalid."""
        body = request.model_dump()
        options = {k: body.pop(k) for k in RUN_OPTIONS}
        body["data_dir"] = check_data_dir(body["data_dir"], self.store.root)
        if body["checkpoint_every"] is None:
            body["checkpoint_every"] = self.checkpoint_every
        body["workers"] = body["workers"] or default_workers()
        config = TrainConfig.from_dict(body)
        if config.dataset == "mnist":
            _check_mnist(config.data_dir)
        resolve(config, JobOptions(faults=tuple(parse_fault(s) for s in options["faults"])))
        record: dict[str, Any] = {
            "id": self.store.new_id(),
            "state": "queued",
            "config": config.to_dict(),
            "options": options,
            "created": time.time(),
            "started": None,
            "finished": None,
            "error": None,
            "resumes": 0,
            **NOT_STARTED,
        }
        with self._lock:
            if self._closing:
                raise Conflict("the service is shutting down")
            self._records[record["id"]] = record
            self.store.save(record)
            self._queue.append(record["id"])
            log.info("job_submitted", job=record["id"])
            self._schedule()
            return self.status(record["id"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._record(job_id)
            if record["state"] == "queued":
                self._queue.remove(job_id)
                self._finish(job_id, "cancelled")
            elif record["state"] == "running":
                run = self._runs[job_id]
                run.cancel.set()
                if run.job is not None:
                    run.job.request_stop()
            else:
                raise Conflict(f"job {job_id} already {record['state']}")
            return self.status(job_id)

    def inject(self, job_id: str, spec: str) -> dict[str, Any]:
        """Inject a fault into a running job; FaultSpecError / ValueError if it is bad."""
        fault = parse_fault(spec)
        with self._lock:
            record = self._record(job_id)
            run = self._runs.get(job_id)
            if record["state"] != "running" or run is None or run.job is None:
                raise Conflict(f"job {job_id} is {record['state']}, not running with a live tree")
            run.job.inject(fault)
            record.setdefault("injected", []).append(str(fault))
            log.info("fault_requested", job=job_id, fault=str(fault))
            return self.status(job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        """The job record, with live progress while it runs."""
        with self._lock:
            record = dict(self._record(job_id))
            run = self._runs.get(job_id)
            if run is not None and run.job is not None:
                record.update(_live(run.job))
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
        """Start queued jobs while slots are free (called with the lock held)."""
        while not self._closing and self._queue and len(self._runs) < self.max_jobs:
            job_id = self._queue.popleft()
            record = self._records[job_id]
            record.update(state="running", started=time.time())
            self.store.save(record)
            run = _Run()
            run.thread = threading.Thread(
                target=self._run_job, args=(job_id, run), name=f"job-{job_id}", daemon=True
            )
            self._runs[job_id] = run
            run.thread.start()

    def _run_job(self, job_id: str, run: _Run) -> None:
        """The waiter: build, start and wait for one job; record its outcome."""
        structlog.contextvars.bind_contextvars(job=job_id)
        record = self._records[job_id]
        try:
            job = self._build(job_id, record)
        except (ConfigError, DataError, CheckpointError, ResumeError, ValueError) as e:
            self._finish(job_id, "failed", error=str(e))
            return
        with self._lock:
            if self._closing:  # shutting down before it started: stays queued on disk
                self._runs.pop(job_id, None)
                return
            run.job = job
            if run.cancel.is_set():
                job.request_stop()
        try:
            job.start(under=self._jobs_supervisor())
            result = job.wait()
        except JobStopped:
            job.stop()
            if run.cancel.is_set():
                self._finish(job_id, "cancelled", live=_live(job))
            else:
                log.info("job_interrupted", step=job.progress.step)
                with self._lock:
                    self._runs.pop(job_id, None)
            return
        except TrainingFailed as e:
            job.stop()
            write_report(self.store.report_path(job_id), job_report(job, None))
            self._finish(job_id, "failed", error=str(e), live=_live(job))
            return
        except Exception as e:  # a start failure: this job fails, the service does not
            log.exception("job_crashed")
            job.stop()
            self._finish(job_id, "failed", error=f"{type(e).__name__}: {e}", live=_live(job))
            return
        final = final_summary(job, result)
        job.stop()
        save_weights(
            self.store.model_path(job_id),
            result["params"],
            job.config.layer_sizes,
            {
                "job": job_id,
                "config": job.config.to_dict(),
                "test_accuracy": final["test_accuracy"],
            },
        )
        write_report(self.store.report_path(job_id), job_report(job, final))
        self._finish(job_id, "succeeded", live=_live(job), final=final)

    def _build(self, job_id: str, record: dict[str, Any]) -> TrainingJob:
        config = TrainConfig.from_dict(record["config"])
        opts = record["options"]
        checkpoint_dir = self.store.checkpoint_dir(job_id)
        resume = (checkpoint_dir / CHECKPOINT_FILE).is_file()
        options = JobOptions(
            # Planned faults belong to the first run: a resumed one would fire them again.
            faults=() if resume else tuple(parse_fault(s) for s in opts["faults"]),
            chaos=Chaos(opts["chaos"], opts["chaos_seed"]) if opts["chaos"] else None,
            checkpoint_dir=str(checkpoint_dir),
            resume=resume,
            step_timeout=opts["step_timeout"],
            max_restarts=opts["max_restarts"],
            max_seconds=opts["max_seconds"],
        )
        return TrainingJob(config, self._dataset(config), options, name=job_id)

    def _dataset(self, config: TrainConfig) -> Dataset:
        """Load once per (dataset, source, sizes, seed); MNIST takes about a second to read.
        Never downloads: a request must not make the service fetch from the network or write
        outside its state dir (``otpnn data fetch`` puts MNIST in place beforehand)."""
        if config.dataset == "synthetic":
            key: tuple = ("synthetic", config.seed, config.synthetic_train, config.synthetic_test)
        else:
            key = ("mnist", config.data_dir)
        with self._dataset_lock:
            if key not in self._datasets:
                self._datasets[key] = load_dataset(config, download=False)
                while len(self._datasets) > DATASET_CACHE:
                    self._datasets.popitem(last=False)
            self._datasets.move_to_end(key)
            return self._datasets[key]

    def _jobs_supervisor(self) -> Any:
        """Looked up each time: a restarted ``jobs`` supervisor has a new handle."""
        for info in self.root.which_children(timeout=5):
            if info.id == "jobs" and info.ref is not None:
                return info.ref
        raise RuntimeError("the jobs supervisor is not running")

    def _finish(
        self,
        job_id: str,
        state: str,
        *,
        error: str | None = None,
        live: dict[str, Any] | None = None,
        final: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            record = self._records[job_id]
            record.update(live or {})
            record.update(state=state, finished=time.time(), error=error)
            if final is not None:
                record["final"] = {k: final[k] for k in ("params_sha256", "test_accuracy", "steps")}
            self.store.save(record)
            self._runs.pop(job_id, None)
            log.info("job_finished", job=job_id, state=state, error=error)
            self._schedule()


def _live(job: TrainingJob) -> dict[str, Any]:
    """What a running job shows: progress, latest epoch metrics, restarts, faults, pids."""
    p: Progress = job.progress
    return {
        "step": p.step,
        "epoch": p.epoch,
        "total_steps": p.total_steps,
        "metrics": p.last_epoch,
        "restarts": job.state.restarts,
        "restarts_by_actor": job.state.restarts_by_actor(),
        "faults_injected": job.state.faults_fired,
        "pids": dict(job.state.pids),
    }


def _json_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = {**row, "id": str(row["id"])}
        if "children" in row:
            row["children"] = _json_ids(row["children"])
        out.append(row)
    return out


def _check_mnist(data_dir: str | None) -> None:
    """A job on MNIST is refused at once (ValueError: 422) when the service cannot find the
    files, instead of being queued to fail later: the service never downloads."""
    try:
        find_mnist(data_dir)
    except DataError as e:
        where = str(e).splitlines()[0]
        raise ValueError(
            "dataset 'mnist' needs its four files where the service can read them: give data_dir "
            f"(an absolute directory holding them), or put them in $OTPNN_DATA_DIR or the cache "
            f"before starting the service ({where})"
        ) from None
