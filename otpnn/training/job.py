"""A training job: the supervision tree of the paper's system, and its owner's handle on it.

::

    JobSupervisor (rest_for_one)
    ├── Loader        dataset once in shared memory; the permutation of each epoch
    ├── WorkerPool    (one_for_one) worker-0 .. worker-N-1, thread, process or Ray actors
    └── Coordinator   the lifecycle of steps and snapshots; its protocol driver computes them

rest_for_one is the dependency order: workers attach to the Loader's segments, the Coordinator
talks to the workers; a Loader restart therefore restarts everything after it, a worker restart
nothing but itself (the Coordinator redoes its shards), a Coordinator restart only itself (it
resumes from the latest snapshot, kept in :class:`JobState`, outside the tree).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from otpnn.config import TrainConfig
from otpnn.data import Dataset
from otpnn.dirlock import DirLock
from otpnn.errors import JobStopped, TrainingFailed, UsageError
from otpnn.faults import Fault
from otpnn.logs import adopt_library_logger
from otpnn.schedule import steps_per_epoch
from otpnn.training import blas
from otpnn.training.coordinator import Coordinator, CoordinatorContext
from otpnn.training.loader import Loader
from otpnn.training.memory import check_memory
from otpnn.training.options import JobOptions, check_fault_targets, resolve
from otpnn.training.report import final_summary
from otpnn.training.resume_point import (
    CHECKPOINT_FILE,
    ResumeError,
    read_resume_point,
    write_snapshot,
)
from otpnn.training.state import Event, JobState, Progress, Snapshot
from otpnn.training.worker import Worker
from otpnn.validation import split_dataset
from supervision import Actor, ChildSpec, Registry, Supervisor, spawn
from supervision.process import ensure_forkserver
from supervision.reasons import Reason, describe
from supervision.refs import ActorHandle

__all__ = [
    "CHECKPOINT_FILE",
    "FORKSERVER_PRELOAD",
    "ClusterUnreachable",
    "JobOptions",
    "JobStopped",
    "ResumeError",
    "TrainingFailed",
    "TrainingJob",
    "final_summary",
]

log = structlog.get_logger("otpnn.job")

# A worker holds no state and a shard takes milliseconds: one that has not stopped within a
# second is in work nobody will use (a stuck or slowed shard), so stopping a job does not wait
# OTP's default 5 s for it before the kill.
WORKER_SHUTDOWN = 1.0

# Modules the process actors' forkserver imports once, so that worker processes start warm.
FORKSERVER_PRELOAD = ("otpnn.training.forkserver_preload",)


class ClusterUnreachable(UsageError):
    """``--ray-address`` names no Ray cluster this process can join (the message says why)."""


class TrainingJob:
    """One training job: its tree, its state, and the one lifecycle for whoever runs it.

    ``run()`` is the whole job; ``with job:`` around ``start()`` and ``wait()`` is the same
    with room for ``inject()`` on the way. Either way the tree is stopped however it ends (the
    coordinator snapshots first), and the errors are the app's: a UsageError from construction
    or start, TrainingFailed if the tree gave up, JobStopped after ``request_stop()``."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        options: JobOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        name: str = "job",
    ) -> None:
        self.name = name
        self._log = log.bind(job=name)  # every line says which job (a service runs several)
        self.config = config
        # What it trains on: without the validation split's held-out rows (ConfigError if the
        # split leaves none); those are evaluated every epoch.
        self.dataset, self.holdout = split_dataset(dataset, config)
        self.options = options or JobOptions()
        plan = resolve(config, self.options)  # OptionsError before anything starts
        self.workers = plan.workers
        self.protocol = plan.protocol
        check_memory(config)  # JobTooLarge before anything is allocated
        self.state = JobState(list(self.options.faults), self.options.chaos, on_progress)
        self.registry = Registry()
        self.root: ActorHandle | None = None
        self.started_at = 0.0
        self._stop_requested = threading.Event()
        self._ray: Any = None  # backend "ray": the RayConnection this job made, if any
        self._holds_blas = False  # between start() and stop(): BLAS here uses one thread
        # stop() closes the job to writes: a coordinator thread that outlived its kill (Python
        # cannot stop a thread) must not write a checkpoint after the job's owner moved on.
        self._persist_lock = threading.Lock()
        self._closed = False
        self._checkpointed_step: int | None = None  # the step of the checkpoint on disk
        self.already_complete = False  # resumed from a checkpoint of the finished run
        self.checkpoint_path = (
            Path(self.options.checkpoint_dir) / CHECKPOINT_FILE
            if self.options.checkpoint_dir
            else None
        )
        # One job writes a checkpoint directory at a time (held from start() to stop()).
        self._dir_lock = (
            DirLock(self.options.checkpoint_dir, "otpnn training job")
            if self.options.checkpoint_dir
            else None
        )
        if self.options.resume:
            self._load_resume_point()

    # -- the tree -----------------------------------------------------------------------------
    def start(self, under: Any = None) -> None:
        """Build and start the tree: as a root of its own, or as a temporary child of ``under``
        (a supervisor or DynamicSupervisor ref, e.g. the service's job supervisor).

        Until stop(), BLAS in this process uses one thread (see otpnn.training.blas: idle
        OpenBLAS threads would spin on the workers' cores)."""
        self.started_at = time.perf_counter()
        if self._dir_lock is not None:
            self._dir_lock.path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_lock.acquire()  # DirectoryBusy: another job writes there
        if not self._holds_blas:
            blas.hold_one_thread()
            self._holds_blas = True
        if self.config.backend == "ray":
            self._connect_ray()
        elif self.config.backend == "process":
            # Effective if no process actor was started before in this process (then workers
            # still work, importing numpy and the trainer themselves at each start).
            ensure_forkserver(FORKSERVER_PRELOAD)
        if under is None:
            self.root = self._start_tree()
        else:
            spec = ChildSpec(
                f"job-{self.name}", start=self._start_tree, restart="temporary", type="supervisor"
            )
            self.root = under.start_child(spec)
        self._log.info(
            "job_started",
            workers=self.workers,
            backend=self.config.backend,
            dataset=self.dataset.name,
            pids=dict(self.state.pids),
        )

    def _connect_ray(self) -> None:
        """Start a local Ray (or join ``ray_address``) unless this process already is connected;
        its start-up is timed apart from training (the epoch rows exclude it)."""
        from supervision.ray import connect

        adopt_library_logger("ray")  # imported now: its warnings in the log's format
        try:
            self._ray = connect(self.options.ray_address, num_cpus=max(self.workers, 2))
        except ConnectionError as exc:
            raise ClusterUnreachable(str(exc)) from exc
        self._log.info(
            "ray_connected",
            address=self.options.ray_address or "local",
            startup_seconds=round(self._ray.startup_seconds, 3),
        )

    def _data_actors(self) -> tuple[type[Actor], type[Actor]]:
        """Loader and Worker for the backend: Ray's move arrays through the object store (the
        stepwise driver's Ray transport talks to them), the others through shared memory."""
        if self.config.backend == "ray":
            from otpnn.training import ray_backend

            return ray_backend.RayLoader, ray_backend.RayWorker
        return Loader, Worker

    def _start_tree(self) -> ActorHandle:
        pool = [
            ChildSpec(
                f"worker-{i}",
                start=partial(self._start_worker, i),
                kind=self.config.backend,
                shutdown=WORKER_SHUTDOWN,
            )
            for i in range(self.workers)
        ]
        children = [
            ChildSpec("loader", start=self._start_loader),
            ChildSpec(
                "pool",
                start=lambda: self._started(
                    "pool",
                    Supervisor.start_link(
                        pool, strategy="one_for_one", name=f"{self.name}/pool", **self._intensity
                    ),
                ),
                type="supervisor",
                shutdown="infinity",
            ),
            ChildSpec("coordinator", start=self._start_coordinator, restart="transient"),
        ]
        return Supervisor.start_link(
            children, strategy="rest_for_one", name=self.name, **self._intensity
        )

    @property
    def _intensity(self) -> dict[str, Any]:
        return {"max_restarts": self.options.max_restarts, "max_seconds": self.options.max_seconds}

    def _started(self, name: str, handle: ActorHandle) -> ActorHandle:
        self.registry.register(name, handle)
        self.state.started(name, handle.pid)
        if handle.pid is not None:
            self._log.info("actor_started", actor=name, pid=handle.pid, kind=handle.kind)
        return handle

    def _start_loader(self) -> ActorHandle:
        ds = self.dataset
        loader = self._data_actors()[0]
        return self._started(
            "loader", spawn(loader, ds.train_images, ds.train_labels, self.config.seed)
        )

    def _start_worker(self, index: int) -> ActorHandle:
        segments = self._loader().proxy().segments().get(timeout=self.options.step_timeout)
        cfg = self.config
        worker = self._data_actors()[1]
        handle = spawn(
            worker, index, segments, cfg.layer_sizes, cfg.activation, cfg.backend, self.name,
            kind=cfg.backend,
        )  # fmt: skip
        return self._started(f"worker-{index}", handle)

    def _start_coordinator(self) -> ActorHandle:
        ctx = CoordinatorContext(
            job=self.name,
            config=self.config,
            protocol=self.protocol,
            state=self.state,
            n_train=len(self.dataset.train_labels),
            test_images=self.dataset.test_images,
            test_labels=self.dataset.test_labels,
            workers=self._live_workers,
            loader=self._loader,
            pool=partial(self._whereis, "pool"),
            step_timeout=self.options.step_timeout,
            on_snapshot=self._persist,
            holdout=self.holdout,
        )
        return self._started("coordinator", spawn(Coordinator, ctx))

    def _loader(self) -> ActorHandle:
        return self._whereis("loader")

    def _whereis(self, name: str) -> ActorHandle:
        handle = self.registry.whereis(name)
        if handle is None:
            raise RuntimeError(f"the {name} is not running")
        return handle

    def _live_workers(self) -> list[tuple[int, ActorHandle]]:
        found = ((i, self.registry.whereis(f"worker-{i}")) for i in range(self.workers))
        return [(i, h) for i, h in found if h is not None and h.is_alive()]

    # -- running ------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job succeeds (returns its result) or the tree gives up (raises)."""
        assert self.root is not None, "start() first"
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.done.wait(0.05):
            if self._stop_requested.is_set():
                raise JobStopped(f"stop requested at step {self.progress.step}")
            if not self.root.is_alive():
                self.root.join(5)
                raise TrainingFailed(self._failure_message(self.root.exit_reason))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"training did not finish within {timeout} s")
            self._watchdog()
        if self.state.failure is not None:
            raise TrainingFailed(f"training failed: {self.state.failure}")
        assert self.state.result is not None
        return self.state.result

    def _watchdog(self) -> None:
        """A coordinator that has not finished a step for twice the step deadline is hung (its
        own waits are bounded by one deadline): kill it, and its supervisor restarts it."""
        stalled = time.monotonic() - self.state.last_progress
        if stalled < 2 * self.options.step_timeout:
            return
        coordinator = self.registry.whereis("coordinator")
        if coordinator is not None:
            self.state.record(
                Event("coordinator_hang", "coordinator", self.progress.step,
                      f"no step finished for {stalled:.1f} s: killed")
            )  # fmt: skip
            self._log.warning("coordinator_hung", stalled_seconds=round(stalled, 1))
            coordinator.kill()
        self.state.touch()

    def request_stop(self) -> None:
        """Make wait() return (raising JobStopped); safe from a signal handler or any thread."""
        self._stop_requested.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the tree in order (coordinator first: it snapshots; then workers, loader)."""
        if self.root is not None and self.root.is_alive():
            self.root.stop(timeout=timeout)
            if self.root.is_alive():
                self.root.kill()
        if self._ray is not None:  # after the tree: its Ray actors are gone by now
            self._ray.close()
            self._ray = None
        with self._persist_lock:  # waits for a write in progress; none starts after this
            self._closed = True
        if self._dir_lock is not None:
            self._dir_lock.release()
        if self._holds_blas:
            blas.release_one_thread()
            self._holds_blas = False

    def run(self, under: Any = None) -> dict[str, Any]:
        """start, wait, stop: the whole job, always leaving nothing running (also when start
        fails half-way: stop undoes what start did). Returns the result; raises
        TrainingFailed, JobStopped (after request_stop), or a UsageError from start."""
        with self:
            self.start(under)
            return self.wait()

    def __enter__(self) -> Self:
        """``with job:`` stops whatever the block started, however it leaves."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def inject(self, fault: Fault) -> None:
        """Add a fault to the plan of a running job (from any thread)."""
        check_fault_targets([fault], self.workers)
        self.state.add_fault(fault)

    @property
    def progress(self) -> Progress:
        return self.state.progress

    # -- checkpoints --------------------------------------------------------------------------
    def _persist(self, snap: Snapshot, epoch_end: bool) -> None:
        """Write the checkpoint; one that cannot be written (a full disk) ends the job, the
        previous checkpoint intact (writes are atomic), instead of crashing the coordinator
        into restarts that would fail alike."""
        with self._persist_lock:
            if self.checkpoint_path is None or self._closed:
                return
            try:
                write_snapshot(self.checkpoint_path, self.config, snap, epoch_end=epoch_end)
            except OSError as e:
                kept = (
                    f"the previous one (step {self._checkpointed_step}) is intact"
                    if self._checkpointed_step is not None
                    else "none was written before"
                )
                self.state.fail(
                    f"cannot write the checkpoint {self.checkpoint_path} "
                    f"({e.strerror or e}); {kept}"
                )
                return
            self._checkpointed_step = snap.step
            self._log.info("checkpoint_written", path=str(self.checkpoint_path), step=snap.step)

    def _load_resume_point(self) -> None:
        assert self.checkpoint_path is not None, "resolve() requires a checkpoint dir to resume"
        n_train = len(self.dataset.train_labels)
        snap = read_resume_point(self.checkpoint_path, self.config, n_train)
        self.state.save_snapshot(snap)
        self._checkpointed_step = snap.step
        per_epoch = steps_per_epoch(n_train, self.config.batch_size)
        total = per_epoch * self.config.epochs
        self.already_complete = snap.step == total
        self.state.advance(
            snap.step,
            -(-snap.step // per_epoch),
            total,
            snap.history[-1] if snap.history else None,
        )
        self._log.info("resuming", path=str(self.checkpoint_path), step=snap.step)

    def _failure_message(self, reason: Reason | None) -> str:
        failures = [
            e for e in self.state.events() if e.kind.startswith("worker_") or "fault" in e.kind
        ][-5:]
        why = describe(reason) if reason is not None else "no reason"
        lines = [f"training failed: the supervision tree gave up ({why})"]
        lines += [f"  step {e.step}: {e.actor} {e.kind}: {e.reason}" for e in failures]
        snap = self.state.latest_snapshot()
        if self.checkpoint_path is None:
            lines.append("no checkpoint on disk (use --checkpoint-dir to keep one)")
        elif self.checkpoint_path.exists():
            lines.append(
                f"last checkpoint: {self.checkpoint_path} (step {snap.step if snap else '?'})"
            )
        else:
            lines.append(
                f"no checkpoint in {self.checkpoint_path.parent} yet: the job failed before its "
                "first one (written at epoch ends, or every N steps with --checkpoint-every N)"
            )
        return "\n".join(lines)
