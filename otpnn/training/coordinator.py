"""The Coordinator: a job's lifecycle of steps (advancing, stop points, commits, snapshots).

Step t (numbered from 1): the batch is cut into micro-shards (their number fixed by the config,
never by the worker count); the shard gradients are summed strictly in shard order and the
update applied. How a stretch of steps is computed is the protocol driver's business
(:mod:`otpnn.training.drivers`: lockstep runs or stepwise dispatch); the coordinator decides
where a stretch ends and counts what it finished:

- a stretch runs from the next step to the next stop point: the epoch's end, a checkpoint, or
  a planned fault of the coordinator, the pool or the loader (acted out before its step),
  moved on to the driver's next boundary (local SGD's state is whole at averages only);
- a committed step is counted once into the epoch's tally; at the epoch's end the test set (and
  the validation split's held-out rows) is evaluated, the epoch's row recorded and, with
  ``keep_best``, the best epoch's parameters kept (:mod:`otpnn.validation`); at epoch ends
  and checkpoints a snapshot is kept in :class:`JobState` (and persisted by the job), from
  which a restarted coordinator resumes;
- work a failure lost is redone (by the driver), and the step that redid it is reported as the
  recovery.

One stretch is one message to itself, so other messages (stop, for one) are served in between;
a stop that arrives inside a stretch makes the driver leave it, keeping the finished steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pykka
import structlog

from otpnn.config import TrainConfig
from otpnn.faults import Fault, FaultTarget, InjectedCrash
from otpnn.lr_schedule import LrSchedule
from otpnn.model import evaluate, init_params
from otpnn.schedule import Batches, steps_per_epoch
from otpnn.training.drivers import driver_class
from otpnn.training.drivers.base import Interrupted, Workers
from otpnn.training.fault_planner import FaultPlanner, Planned
from otpnn.training.state import EpochTally, Event, JobState, Snapshot
from otpnn.validation import Holdout, keep_if_best, validate
from supervision import Actor, Crash
from supervision.refs import ActorHandle

log = structlog.get_logger("otpnn.coordinator")


@dataclass(frozen=True)
class CoordinatorContext:
    """Everything a (re)started coordinator needs, owned by the job."""

    job: str  # the job's name, on every log line (a service runs several jobs)
    config: TrainConfig
    protocol: str  # a driver's name (see otpnn.training.drivers)
    state: JobState
    n_train: int
    test_images: np.ndarray
    test_labels: np.ndarray
    workers: Callable[[], Workers]  # live workers, by index
    loader: Callable[[], ActorHandle]
    pool: Callable[[], ActorHandle]
    step_timeout: float
    on_snapshot: Callable[[Snapshot, bool], None]  # (snapshot, epoch_end): persist it
    holdout: Holdout | None = None  # the validation split's rows, evaluated every epoch


class _Advance:
    """Self-message: run the next steps."""


class NoWorkers(RuntimeError):
    """No worker came back within the step deadline."""


class Coordinator(FaultTarget, Actor):
    def __init__(self, ctx: CoordinatorContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._log = log.bind(job=ctx.job)
        cfg = ctx.config
        # What drivers read (see drivers.base.Host).
        self.config, self.state, self.step_timeout = cfg, ctx.state, ctx.step_timeout
        per_epoch = steps_per_epoch(ctx.n_train, cfg.batch_size)
        self.lr_schedule = LrSchedule.of(cfg, per_epoch)
        self.batches = Batches(ctx.n_train, cfg.batch_size, cfg.effective_shard_size, per_epoch)
        self.total_steps = per_epoch * cfg.epochs
        self.planner = FaultPlanner(ctx.state.faults, ctx.state.chaos, self.batches)
        self._driver = driver_class(ctx.protocol)(self)
        self._lost: set[str] = set()  # worker incarnations (actor_urn) that failed a dispatch
        self._failed_at: tuple[int, float] | None = None  # (step, when) of an unrecovered loss
        self._diverged: str | None = None  # why the job fails: a loss or parameter not finite

    # -- lifecycle ----------------------------------------------------------------------------
    def on_start(self) -> None:
        snap = self.state.latest_snapshot()
        if snap is None:
            snap = Snapshot(0, init_params(self.config), {}, [])
        self._step = snap.step
        self._history = snap.history
        self._tally = snap.tally
        self._best = snap.best
        self._driver.restore_earlier(snap.earlier)
        self._driver.start(self._step, snap.params, snap.optimizer.get("velocity"))
        self._snapshot_step = self._step
        self._open_in_loader = 0  # the epoch whose permutation the loader holds, as far as we know
        self.state.touch()
        self._log.info(
            "coordinator_started",
            step=self._step,
            total_steps=self.total_steps,
            protocol=self._driver.name,
        )
        self.actor_ref.tell(_Advance())

    def on_stop(self) -> None:
        # A stop arrives between steps: the state is consistent, so keep it (SIGTERM, cancel);
        # not a diverged one, which would replace the last finite checkpoint.
        if self._snapshot_step < self._step < self.total_steps and self._diverged is None:
            self._snapshot(epoch_end=False)
        self._driver.close()

    def on_failure(self, *_exc_info: object) -> None:
        self._driver.close()

    def _on_killed(self) -> None:  # killed while in a step: no on_stop, but nothing may leak
        self._driver.close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Advance):
            # Interrupted, the steps every worker finished are kept and the rest abandoned: the
            # stop that interrupted them is next in the inbox and finds a step boundary.
            with contextlib.suppress(Interrupted):
                self._advance()
            if self._diverged is not None:
                self.state.fail(self._diverged)
            return None
        return super().on_receive(message)

    @property
    def params(self) -> np.ndarray:
        """The parameters after the steps done so far."""
        return self._driver.state(self._step)[0]

    # -- steps --------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Run the steps from the next one up to the next stop point, or fewer: a failure or a
        newly planned fault ends a stretch early, and the next message goes on."""
        cfg, state = self.config, self.state
        if self._step >= self.total_steps:  # resumed from a finished run: nothing to train
            self._finish()
            return
        t = self._step + 1
        epoch, k = divmod(self._step, self.batches.steps_per_epoch)
        epoch += 1
        self._fire_own_faults(t, epoch, first_of_epoch=k == 0)
        started = time.perf_counter()
        if k == 0 or self._open_in_loader != epoch:  # a (re)started coordinator may start mid-epoch
            self._open_epoch(epoch, t)
        if k == 0:
            self._tally = EpochTally()
        try:
            self._driver.run(t, self._stop_point(t, epoch), epoch)
        finally:
            self._tally.seconds += time.perf_counter() - started
        if self._diverged is not None:  # no epoch end, no snapshot: the job fails with it
            return
        done = self._step
        row = self._end_epoch(epoch) if done == epoch * self.batches.steps_per_epoch else None
        state.advance(done, epoch, self.total_steps, row)
        every = cfg.checkpoint_every  # a multiple reached (or passed, to a driver's boundary)
        if row is not None or (every and (t - 1) // every < done // every):
            self._snapshot(epoch_end=row is not None)
        if done >= self.total_steps:
            self._finish()
        else:
            self.actor_ref.tell(_Advance())

    def _stop_point(self, t: int, epoch: int) -> int:
        last = epoch * self.batches.steps_per_epoch
        every = self.config.checkpoint_every
        if every:
            last = min(last, -(-t // every) * every)
        return self._driver.boundary(self.planner.stop_point(t, last, self.total_steps))

    def commit(self, step: int, losses: Iterable[float], corrects: Iterable[float]) -> None:
        """Step ``step`` is done (the driver's state after it is whole): count it."""
        samples = self.batches.rows(step)
        loss, correct = self._tally.add_step(losses, corrects, samples)
        if not math.isfinite(loss):
            self._diverge(f"the loss of step {step} (epoch {self._epoch_of(step)}) is {loss}")
        self._step = step
        self._note_recovery(step)
        self.state.step_metrics(step, loss / samples, correct / samples)

    def _epoch_of(self, step: int) -> int:
        return (step - 1) // self.batches.steps_per_epoch + 1

    def _diverge(self, what: str) -> None:
        """The training diverged (``what`` shows it): the job fails with that, and no state
        after it is kept (the last finite checkpoint stays)."""
        if self._diverged is None:
            cfg = self.config
            self._diverged = (
                f"training diverged: {what}; a lower --lr (now {cfg.lr}) or --momentum (now "
                f"{cfg.momentum}) may train"
            )

    def _finite(self, params: np.ndarray) -> bool:
        """Whether the parameters after the last step are finite (else the job diverges)."""
        if np.isfinite(params).all():
            return True
        self._diverge(f"the parameters after step {self._step} (epoch "
                      f"{self._epoch_of(self._step)}) hold inf or nan")  # fmt: skip
        return False

    def show_progress(self, step: int, epoch: int) -> None:
        self.state.advance(step, epoch, self.total_steps, None)
        self._note_recovery(step)

    def _note_recovery(self, done: int) -> None:
        """Steps up to ``done`` are finished: if that redid the work a failure lost, say so."""
        if self._failed_at is not None and done >= self._failed_at[0]:
            step, failed = self._failed_at
            self.state.record(
                Event("recovered", "coordinator", step, "lost shards redone",
                      recovery_seconds=time.monotonic() - failed)
            )  # fmt: skip
            self._failed_at = None

    def lost_step(self, step: int) -> None:
        """Step ``step`` lost work to a failure: it is redone, chaos draws again for it."""
        self.planner.redo(step)
        if self._failed_at is None:
            self._failed_at = (step, time.monotonic())

    # -- workers, the loader ------------------------------------------------------------------
    def await_workers(self) -> Workers:
        """Live workers, not counting incarnations that already failed us (a dead process
        may look alive until its death is detected; its restarted self is a new incarnation).
        Waiting for a restart is bounded by the step deadline."""
        deadline = time.monotonic() + self.step_timeout
        while True:
            workers = [(i, w) for i, w in self._ctx.workers() if w.actor_urn not in self._lost]
            if workers:
                return workers
            if time.monotonic() > deadline:
                raise NoWorkers(f"no live worker within {self.step_timeout:g} s")
            self._check_interrupted()
            time.sleep(0.005)

    def loader(self) -> ActorHandle:
        return self._ctx.loader()

    def failure(self, step: int, index: int, worker: ActorHandle, kind: str, reason: str) -> None:
        self._lost.add(worker.actor_urn)
        actor = f"worker-{index}"
        self.state.record(Event(f"worker_{kind}", actor, step, reason, pid=worker.pid))
        self._log.warning(
            "worker_lost", actor=actor, step=step, kind=kind, reason=reason, pid=worker.pid
        )

    def interrupted(self) -> bool:
        """A stop was requested, the coordinator killed, or the training diverged."""
        stopping = self.actor_ref.stop_requested.is_set() or self.actor_stopped.is_set()
        return stopping or self._diverged is not None

    def _check_interrupted(self) -> None:
        if self.interrupted():
            raise Interrupted

    def _await_restart(self) -> None:
        """An actor before us in the tree died: rest_for_one is about to stop and restart us.
        Wait for that stop (bounded) instead of crashing on our own, which would count twice."""
        deadline = time.monotonic() + self.step_timeout
        while time.monotonic() < deadline:
            self._check_interrupted()
            time.sleep(0.005)
        raise RuntimeError("an actor before the coordinator died and no restart came")

    # -- epochs, snapshots, the end ------------------------------------------------------------
    def _open_epoch(self, epoch: int, step: int) -> None:
        fault = None
        for f in self.planner.loader_epoch_faults(epoch):
            self._injected(f, step, "loader")
            fault = f.action
        loader = self.loader()
        try:
            loader.proxy().open_epoch(epoch, fault).get(timeout=self.step_timeout)
        except Exception as e:
            if fault is None:
                raise
            if isinstance(e, pykka.Timeout):
                loader.kill()
            self._await_restart()  # the loader failed as planned: rest_for_one restarts us too
        self._open_in_loader = epoch
        self._driver.open_epoch(epoch)

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        test_loss, test_acc = evaluate(
            self.params, cfg.layer_sizes, cfg.activation, self._ctx.test_images,
            self._ctx.test_labels,
        )  # fmt: skip
        row = self._tally.row(epoch, test_loss, test_acc)
        row.update(validate(cfg, self.params, self._ctx.holdout))
        self._best = keep_if_best(cfg, self._best, row, self.params)
        self._history.append(row)
        self._log.info("epoch_done", **row)
        return row

    def _snapshot(self, *, epoch_end: bool) -> None:
        if self.actor_stopped.is_set():  # killed while in a step: the job has moved on
            return
        params, velocity = self._driver.state(self._step)
        if not self._finite(params):
            return
        # What the serial SGD would checkpoint: the momentum buffer once a step made it.
        optimizer = {"velocity": velocity.copy()} if self.config.momentum and self._step else {}
        snap = Snapshot(
            self._step, params.copy(), optimizer, list(self._history),
            dataclasses.replace(self._tally), self._best,
            self._driver.earlier(self._step),
        )  # fmt: skip
        self._snapshot_step = self._step
        self.state.save_snapshot(snap)
        self._ctx.on_snapshot(snap, epoch_end)

    def _finish(self) -> None:
        params = self.params.copy()
        if not self._finite(params):
            return  # on_receive fails the job with the reason
        self.state.finish({"params": params, "history": list(self._history), "best": self._best})
        self.actor_ref.stop(block=False)

    # -- faults and events --------------------------------------------------------------------
    def _fire_own_faults(self, step: int, epoch: int, *, first_of_epoch: bool) -> None:
        """Faults planned for the coordinator, the pool or the loader at this step (a loader's
        ``epoch=N`` fault travels with the epoch's permutation request instead)."""
        for fault in self.planner.own_faults(step, epoch, first_of_epoch=first_of_epoch):
            self._injected(fault, step, fault.target)
            if fault.target == "coordinator":
                self.inject(fault.action)
            else:
                self._break(fault)

    def _break(self, fault: Fault) -> None:
        """Inject a fault into the loader or the pool. Unless it was only a delay, rest_for_one
        is about to restart us too: wait for that rather than fail on our own."""
        handle = self._ctx.loader() if fault.target == "loader" else self._ctx.pool()
        try:
            if fault.target == "loader":
                handle.proxy().inject(fault.action).get(timeout=self.step_timeout)
            elif fault.kind == "kill":
                handle.kill()
            else:
                handle.tell(Crash(InjectedCrash(f"injected {fault}")))
        except pykka.Timeout:
            handle.kill()  # hung: what a deadline does to any actor here
        except Exception:
            self._log.info("fault_took_effect", actor=fault.target, fault=str(fault))
        if fault.kind != "slow":
            self._await_restart()

    def fault_fired(self, planned: Planned, step: int, index: int) -> None:
        self._injected(planned.fault, step, f"worker-{index}", reason="chaos")

    def _injected(self, fault: Fault | None, step: int, actor: str, reason: str = "") -> None:
        kind = fault.kind if fault else "crash"
        spec = str(fault) if fault else reason
        self.state.record(Event("fault_injected", actor, step, f"{kind}: {spec}"))
        self._log.warning("fault_injected", actor=actor, step=step, fault=spec)
