"""The Coordinator: owns the parameters, runs synchronous SGD over micro-shards, survives loss.

Step t (numbered from 1): the batch is cut into micro-shards (their number fixed by the config,
never by the worker count); the shard gradients are summed strictly in shard order and the
update applied. Parameters and momentum are double-buffered by step parity in shared memory:
the state after s steps is row ``s % 2``. Two protocols compute the steps:

- lockstep (thread and process workers, see :mod:`otpnn.training.lockstep`): one message per
  worker starts a run of steps, up to an epoch; the workers compute, reduce and update between
  them behind a barrier in shared memory, and the coordinator only watches: for a dead worker
  (its reply fails), a hung one (no progress within the step deadline: it is killed), a stop, or
  a fault planned while the run goes on. Then it aborts the run, keeps the steps every worker
  finished and starts the next run from there with whichever workers are alive.
- stepwise (Ray workers, which share no memory; and machines the lockstep barrier does not
  support): one message per live worker per step carrying a contiguous run of shards; the
  coordinator reduces and updates. Shards in flight are tracked by the worker incarnation that
  holds them and redone elsewhere when it fails.

Either way a redone shard gives the same bits, so recovery never changes the result. One run
(or step) is one message to itself, so other messages (stop, for one) are served in between.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pykka
import structlog

from otpnn.config import TrainConfig
from otpnn.faults import Fault, FaultTarget, InjectedCrash
from otpnn.model import Hyper, evaluate, init_params, num_params, reduce_in_order, sgd_update
from otpnn.schedule import shard_bounds, steps_per_epoch
from otpnn.training import lockstep
from otpnn.training.lockstep import Batches, LockstepSegments, RunSteps, split
from otpnn.training.messages import ComputeShards, Shard, ShardResult
from otpnn.training.state import Event, JobState, Snapshot
from supervision import Actor, Crash
from supervision.reasons import describe
from supervision.refs import ActorHandle
from supervision.shm import SharedArray

log = structlog.get_logger("otpnn.coordinator")

POLL = 0.02  # seconds between looks at a lockstep run's workers, progress and stop requests
STOP_GRACE = 0.5  # how long a stopping coordinator waits for its workers to leave a run


@dataclass(frozen=True)
class CoordinatorContext:
    """Everything a (re)started coordinator needs, owned by the job."""

    job: str  # the job's name, on every log line (a service runs several jobs)
    config: TrainConfig
    state: JobState
    n_train: int
    test_images: np.ndarray
    test_labels: np.ndarray
    workers: Callable[[], Sequence[tuple[int, ActorHandle]]]  # live workers, by index
    loader: Callable[[], ActorHandle]
    pool: Callable[[], ActorHandle]
    step_timeout: float
    on_snapshot: Callable[[Snapshot, bool], None]  # (snapshot, epoch_end): persist it
    lockstep: bool = True  # the protocol: lockstep runs, or stepwise dispatch


class _Advance:
    """Self-message: run the next steps."""


class NoWorkers(RuntimeError):
    """No worker came back within the step deadline."""


class _Interrupted(Exception):
    """The coordinator was asked to stop, or killed, while waiting inside a step."""


@dataclass
class _Planned:
    """A fault a lockstep rank acts out at the start of ``step`` (``fault`` None: chaos)."""

    step: int
    action: str
    fault_id: int | None
    fault: Fault | None
    fired: bool = False


class Coordinator(FaultTarget, Actor):
    def __init__(self, ctx: CoordinatorContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._log = log.bind(job=ctx.job)
        cfg = ctx.config
        self._sizes = cfg.layer_sizes
        self._hyper = Hyper(cfg.lr, cfg.momentum, cfg.weight_decay)
        self._steps_per_epoch = steps_per_epoch(ctx.n_train, cfg.batch_size)
        self._total_steps = self._steps_per_epoch * cfg.epochs
        self._batches = Batches(
            ctx.n_train, cfg.batch_size, cfg.effective_shard_size, self._steps_per_epoch
        )
        self._segments: list[SharedArray] = []
        self._lost: set[str] = set()  # worker incarnations (actor_urn) that failed a dispatch
        self._attempts: dict[int, int] = {}  # step -> times it failed (chaos draws again)
        self._failed_at: tuple[int, float] | None = None  # (step, when) of an unrecovered loss
        self._run_id = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def on_start(self) -> None:
        cfg, state = self._ctx.config, self._ctx.state
        dtype = np.dtype(cfg.dtype)
        n_params = num_params(self._sizes)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        self._control = self._own(  # first: _release needs it once anything is owned
            SharedArray.create(lockstep.control_shape(cfg.workers or 1), np.int64)
        )
        self._params = self._own(SharedArray.create((2, n_params), dtype))
        self._velocity = self._own(SharedArray.create((2, n_params), dtype))
        self._grads = self._own(SharedArray.create((max_shards, n_params), dtype))
        self._stats = self._own(
            SharedArray.create((self._steps_per_epoch, max_shards, 2), np.float64)
        )
        self._acc = np.empty(n_params, dtype)
        self._scratch = np.empty(n_params, dtype)
        snap = state.latest_snapshot()
        if snap is None:
            snap = Snapshot(0, init_params(cfg), {}, [])
        self._step = snap.step
        self._params.array[self._step % 2] = snap.params
        self._velocity.array[self._step % 2] = snap.optimizer.get("velocity", 0)
        self._history = snap.history
        self._loss_sum, self._correct = snap.epoch_loss_sum, snap.epoch_correct
        self._samples, self._seconds = snap.epoch_samples, snap.epoch_seconds
        self._shard_counter = self._count_shards_before(self._step)
        self._snapshot_step = self._step
        self._open_in_loader = 0  # the epoch whose permutation the loader holds, as far as we know
        state.touch()
        self._log.info(
            "coordinator_started",
            step=self._step,
            total_steps=self._total_steps,
            protocol="lockstep" if self._ctx.lockstep else "stepwise",
        )
        self.actor_ref.tell(_Advance())

    def on_stop(self) -> None:
        # A stop arrives between steps: the state is consistent, so keep it (SIGTERM, cancel).
        if self._snapshot_step < self._step < self._total_steps:
            self._snapshot(epoch_end=False)
        self._release()

    def on_failure(self, *_exc_info: object) -> None:
        self._release()

    def _on_killed(self) -> None:  # killed while in a step: no on_stop, but nothing may leak
        self._release()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Advance):
            # Interrupted, the steps every worker finished are kept and the rest abandoned: the
            # stop that interrupted them is next in the inbox and finds a step boundary.
            with contextlib.suppress(_Interrupted):
                self._advance()
            return None
        return super().on_receive(message)

    @property
    def params(self) -> np.ndarray:
        """The parameters after the steps done so far."""
        return self._params.array[self._step % 2]

    # -- steps --------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Run the steps from the next one up to the next stop point (the epoch's end, a
        checkpoint, a planned fault of the coordinator, the pool or the loader), or fewer: a
        failure or a newly planned fault ends a run early, and the next message goes on."""
        cfg, state = self._ctx.config, self._ctx.state
        if self._step >= self._total_steps:  # resumed from a finished run: nothing to train
            self._finish()
            return
        t = self._step + 1
        epoch, k = divmod(self._step, self._steps_per_epoch)
        epoch += 1
        self._fire_own_faults(t, epoch, first_of_epoch=k == 0)
        started = time.perf_counter()
        if k == 0 or self._open_in_loader != epoch:  # a (re)started coordinator may start mid-epoch
            self._open_epoch(epoch, t)
        if k == 0:
            self._loss_sum, self._correct, self._samples, self._seconds = 0.0, 0, 0, 0.0
        last = self._stop_point(t, epoch)
        plan = state.plan_version
        try:
            if self._ctx.lockstep:
                self._run_lockstep(t, last, epoch)
            else:
                for step in range(t, last + 1):
                    self._run_stepwise(step, epoch)
                    if state.plan_version != plan:  # a fault was planned: stop point anew
                        break
        finally:
            self._seconds += time.perf_counter() - started
        done = self._step
        row = self._end_epoch(epoch) if done == epoch * self._steps_per_epoch else None
        state.advance(done, epoch, self._total_steps, row)
        if row is not None or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
            self._snapshot(epoch_end=row is not None)
        if done >= self._total_steps:
            self._finish()
        else:
            self.actor_ref.tell(_Advance())

    def _stop_point(self, t: int, epoch: int) -> int:
        last = epoch * self._steps_per_epoch
        every = self._ctx.config.checkpoint_every
        if every:
            last = min(last, -(-t // every) * every)
        state = self._ctx.state
        for target in ("coordinator", "pool", "loader"):
            for _, fault in state.due_faults(target, "step", self._total_steps):
                if fault.at > t:
                    last = min(last, fault.at - 1)
        return last

    def _commit(self, step: int, losses: Sequence[float], corrects: Sequence[float]) -> None:
        """Step ``step`` is done (its update is in row ``step % 2``): count it."""
        step_loss, step_correct = 0.0, 0
        for loss, correct in zip(losses, corrects, strict=True):  # in shard order
            step_loss += loss
            step_correct += int(correct)
        self._loss_sum += step_loss
        self._correct += step_correct
        self._samples += sum(b - a for a, b in self._batches.shards(step)[1])
        self._shard_counter += len(losses)
        self._step = step
        self._note_recovery(step)

    def _note_recovery(self, done: int) -> None:
        """Steps up to ``done`` are finished: if that redid the work a failure lost, say so."""
        if self._failed_at is not None and done >= self._failed_at[0]:
            step, failed = self._failed_at
            self._ctx.state.record(
                Event("recovered", "coordinator", step, "lost shards redone",
                      recovery_seconds=time.monotonic() - failed)
            )  # fmt: skip
            self._failed_at = None

    def _lost_step(self, step: int) -> None:
        """Step ``step`` lost work to a failure: it is redone, chaos draws again for it."""
        self._attempts[step] = self._attempts.get(step, 0) + 1
        if self._failed_at is None:
            self._failed_at = (step, time.monotonic())

    # -- lockstep -----------------------------------------------------------------------------
    def _run_lockstep(self, start: int, last: int, epoch: int) -> None:
        """One lockstep run of steps start..last; an aborted one keeps the steps every worker
        finished (the next run starts from there with the workers alive then)."""
        control = self._control.array
        workers = list(self._await_workers())
        self._run_id += 1
        run = self._run_id
        control[0, lockstep.RUN] = run
        plans = self._plan_run(start, last, epoch, workers)
        in_flight = []
        for rank, (index, worker) in enumerate(workers):
            msg = RunSteps(
                run, rank, len(workers), start, last, epoch, self._descriptors(),
                self._batches, self._hyper, tuple((p.step, p.action) for p in plans[rank]),
            )  # fmt: skip
            try:
                in_flight.append((index, worker, worker.ask(msg, block=False)))
            except pykka.ActorDeadError:
                in_flight.append((index, worker, None))
        failures, interrupted = self._watch(run, start, epoch, workers, in_flight, plans)
        done = lockstep.completed_steps(control, run, len(workers), start - 1)
        self._fired(run, workers, plans)
        for index, worker, kind, reason in failures:
            self._failure(done + 1, index, worker, kind, reason)
        stats = self._stats.array
        for step in range(start, done + 1):
            k, n = (step - 1) % self._steps_per_epoch, len(self._batches.shards(step)[1])
            self._commit(step, stats[k, :n, 0], stats[k, :n, 1])
        if failures:
            self._lost_step(done + 1)
        if interrupted:
            raise _Interrupted

    def _watch(
        self,
        run: int,
        start: int,
        epoch: int,
        workers: Sequence[tuple[int, ActorHandle]],
        in_flight: list[tuple[int, ActorHandle, Any]],
        plans: list[list[_Planned]],
    ) -> tuple[list[tuple[int, ActorHandle, str, str]], bool]:
        """Wait for a run's replies. A failed reply, a stop request or a newly planned fault
        aborts the run; a run without progress for the step deadline has its laggards killed.
        Returns the failures (index, worker, kind, reason) and whether a stop interrupted."""
        state, control = self._ctx.state, self._control.array
        ranks = len(in_flight)
        progress = control[1 : 1 + ranks, lockstep.PROGRESS]
        pending = dict(enumerate(in_flight))
        failures: list[tuple[int, ActorHandle, str, str]] = []
        interrupted = False
        abort_deadline: float | None = None
        plan = state.plan_version
        seen, moved_at, shown = progress.sum(), time.monotonic(), start - 1

        def abort(grace: float) -> None:
            nonlocal abort_deadline
            if abort_deadline is None:
                control[0, lockstep.ABORT] = run
                abort_deadline = time.monotonic() + grace

        while pending:
            first = next(iter(pending))  # block on one reply for a while, look at the others
            for rank, (index, worker, future) in list(pending.items()):
                try:
                    if future is None:
                        raise pykka.ActorDeadError("worker died before the message was sent")
                    future.get(timeout=POLL if rank == first else 0)
                except pykka.Timeout:
                    continue
                except Exception as e:  # the worker crashed, exited, was killed
                    failures.append((index, worker, "crash", describe(e)))
                    abort(self._ctx.step_timeout)
                del pending[rank]
            if not pending:
                break
            now = time.monotonic()
            if (moved := progress.sum()) != seen:  # steps done, then faults reached: in order
                seen, moved_at = moved, now
                live = lockstep.completed_steps(control, run, ranks, start - 1)
                if live > shown:
                    shown = live
                    state.advance(live, epoch, self._total_steps, None)
                    self._note_recovery(live)
            self._fired(run, workers, plans)
            if abort_deadline is not None:
                if now > abort_deadline:
                    if not interrupted:
                        for index, worker, _ in pending.values():
                            failures.append((index, worker, "hang", "did not leave an aborted run"))
                            worker.kill()
                    break
            elif now - moved_at > self._ctx.step_timeout:
                behind = min(int(progress[r]) for r in pending)
                for rank in [r for r in pending if int(progress[r]) == behind]:
                    index, worker, _ = pending.pop(rank)
                    failures.append((index, worker, "hang", "no progress within the step deadline"))
                    worker.kill()
                abort(self._ctx.step_timeout)
            if self.actor_ref.stop_requested.is_set() or self.actor_stopped.is_set():
                interrupted = True
                abort(STOP_GRACE)
            elif state.plan_version != plan:
                abort(self._ctx.step_timeout)  # replan with the new fault
        return failures, interrupted

    def _plan_run(
        self, first: int, last: int, epoch: int, workers: Sequence[tuple[int, ActorHandle]]
    ) -> list[list[_Planned]]:
        """The faults each rank acts out in a run, by step (marked fired once acted out)."""
        plans: list[list[_Planned]] = [[] for _ in workers]
        taken: set[int] = set()
        counter = self._shard_counter
        for step in range(first, last + 1):
            n = len(self._batches.shards(step)[1])
            for rank, (index, _) in enumerate(workers):
                a, b = split(n, len(workers), rank)
                found = self._fault_for(step, epoch, index, counter, range(a, b), rank == 0, taken)
                if found is not None:
                    taken.update({found.fault_id} - {None})
                    plans[rank].append(found)
            counter += n
        return plans

    def _fired(
        self, run: int, workers: Sequence[tuple[int, ActorHandle]], plans: list[list[_Planned]]
    ) -> None:
        """Mark and log the planned faults the ranks got to, as they get there (the others are
        planned again in the next run)."""
        control, state = self._control.array, self._ctx.state
        fired = []
        for rank, (index, _) in enumerate(workers):
            reached = lockstep.fault_reached(control, run, rank)
            fired += [(p.step, index, p) for p in plans[rank] if p.step <= reached and not p.fired]
        for step, index, p in sorted(fired, key=lambda f: (f[0], f[1])):
            p.fired = True
            if p.fault_id is not None:
                state.mark_fired(p.fault_id)
            self._injected(p.fault, step, f"worker-{index}", reason="chaos")

    def _descriptors(self) -> LockstepSegments:
        return LockstepSegments(
            self._params.descriptor(),
            self._velocity.descriptor(),
            self._grads.descriptor(),
            self._stats.descriptor(),
            self._control.descriptor(),
        )

    # -- stepwise -----------------------------------------------------------------------------
    def _run_stepwise(self, t: int, epoch: int) -> None:
        offset, bounds = self._batches.shards(t)
        shards = tuple(Shard(i, offset + a, offset + b) for i, (a, b) in enumerate(bounds))
        results = self._compute(t, epoch, shards)
        grads = self._grads.array
        reduce_in_order([grads[s.index] for s in shards], self._acc)
        src, dst = (t - 1) % 2, t % 2
        sgd_update(
            self._hyper,
            self._params.array[src],
            self._velocity.array[src],
            self._acc,
            bounds[-1][1],
            params_out=self._params.array[dst],
            velocity_out=self._velocity.array[dst],
            scratch=self._scratch,
        )
        losses, corrects = zip(*(results[s.index] for s in shards), strict=True)
        self._commit(t, losses, corrects)
        self._ctx.state.advance(t, epoch, self._total_steps, None)

    def _compute(
        self, step: int, epoch: int, shards: tuple[Shard, ...]
    ) -> dict[int, tuple[float, int]]:
        """Get every shard computed once, whatever happens to the workers on the way."""
        results: dict[int, tuple[float, int]] = {}
        pending = shards
        while pending:
            workers = self._await_workers()
            in_flight = []
            for (index, worker), run in _split(pending, workers):
                fault = self._stepwise_fault(step, epoch, index, run, first=not in_flight)
                msg = self._shards_message(step, epoch, run, fault)
                try:
                    in_flight.append((index, worker, run, worker.ask(msg, block=False)))
                except pykka.ActorDeadError:
                    in_flight.append((index, worker, run, None))
            lost: list[Shard] = []
            deadline = time.monotonic() + self._ctx.step_timeout
            for index, worker, run, future in in_flight:
                try:
                    if future is None:
                        raise pykka.ActorDeadError("worker died before the message was sent")
                    for r in self._accept(self._get(future, deadline)):
                        results[r.index] = (r.loss_sum, r.correct)
                except pykka.Timeout:
                    self._failure(step, index, worker, "hang", "no reply within the step deadline")
                    worker.kill()
                    lost.extend(run)
                except Exception as e:  # the worker crashed, exited, was killed: redo its run
                    self._failure(step, index, worker, "crash", describe(e))
                    lost.extend(run)
            if lost:
                self._lost_step(step)
            pending = tuple(lost)
        return results

    def _shards_message(
        self, step: int, epoch: int, run: tuple[Shard, ...], fault: str | None
    ) -> Any:
        """What a worker is sent for ``run`` (the transport's hook: shared-memory descriptors
        here; object-store refs for Ray workers, see :mod:`otpnn.training.ray_backend`)."""
        params, grads = self._params.descriptor(), self._grads.descriptor()
        return ComputeShards(step, epoch, params, grads, run, fault)

    def _accept(self, reply: tuple[ShardResult, ...]) -> tuple[ShardResult, ...]:
        """A worker's reply, once its gradients are in their rows of ``self._grads`` (here the
        worker wrote them there itself)."""
        return reply

    def _stepwise_fault(
        self, step: int, epoch: int, index: int, run: tuple[Shard, ...], first: bool
    ) -> str | None:
        """The fault (if any) this worker acts out for this run of shards (fired on dispatch)."""
        shards = range(run[0].index, run[-1].index + 1)
        found = self._fault_for(step, epoch, index, self._shard_counter, shards, first, set())
        if found is None:
            return None
        if found.fault_id is not None:
            self._ctx.state.mark_fired(found.fault_id)
        self._injected(found.fault, step, f"worker-{index}", reason="chaos")
        return found.action

    def _await_workers(self) -> Sequence[tuple[int, ActorHandle]]:
        """Live workers, not counting incarnations that already failed us (a dead process
        may look alive until its death is detected; its restarted self is a new incarnation).
        Waiting for a restart is bounded by the step deadline."""
        deadline = time.monotonic() + self._ctx.step_timeout
        while True:
            workers = [(i, w) for i, w in self._ctx.workers() if w.actor_urn not in self._lost]
            if workers:
                return workers
            if time.monotonic() > deadline:
                raise NoWorkers(f"no live worker within {self._ctx.step_timeout:g} s")
            self._check_interrupted()
            time.sleep(0.005)

    def _await_restart(self) -> None:
        """An actor before us in the tree died: rest_for_one is about to stop and restart us.
        Wait for that stop (bounded) instead of crashing on our own, which would count twice."""
        deadline = time.monotonic() + self._ctx.step_timeout
        while time.monotonic() < deadline:
            self._check_interrupted()
            time.sleep(0.005)
        raise RuntimeError("an actor before the coordinator died and no restart came")

    def _get(self, future: pykka.Future[Any], deadline: float) -> Any:
        """A reply, waited for in slices so that a stop or kill is noticed within 50 ms."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.get(timeout=max(0.0, min(remaining, 0.05)))
            except pykka.Timeout:
                if remaining <= 0.05:
                    raise
                self._check_interrupted()

    def _check_interrupted(self) -> None:
        if self.actor_ref.stop_requested.is_set() or self.actor_stopped.is_set():
            raise _Interrupted

    # -- epochs, snapshots, the end ------------------------------------------------------------
    def _open_epoch(self, epoch: int, step: int) -> None:
        fault = None
        for fid, f in self._ctx.state.due_faults("loader", "epoch", epoch):
            self._ctx.state.mark_fired(fid)
            self._injected(f, step, "loader")
            fault = f.action
        loader = self._ctx.loader()
        try:
            loader.proxy().open_epoch(epoch, fault).get(timeout=self._ctx.step_timeout)
        except Exception as e:
            if fault is None:
                raise
            if isinstance(e, pykka.Timeout):
                loader.kill()
            self._await_restart()  # the loader failed as planned: rest_for_one restarts us too
        self._open_in_loader = epoch

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self._ctx.config
        test_loss, test_acc = evaluate(
            self.params,
            self._sizes,
            cfg.activation,
            self._ctx.test_images,
            self._ctx.test_labels,
        )
        row = {
            "epoch": epoch,
            "seconds": self._seconds,
            "samples_per_second": self._samples / self._seconds if self._seconds else 0.0,
            "train_loss": self._loss_sum / self._samples,
            "train_accuracy": self._correct / self._samples,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
        }
        self._history.append(row)
        self._log.info("epoch_done", **row)
        return row

    def _snapshot(self, *, epoch_end: bool) -> None:
        if self.actor_stopped.is_set():  # killed while in a step: the job has moved on
            return
        snap = Snapshot(
            self._step,
            self.params.copy(),
            self._optimizer_state(),
            list(self._history),
            self._loss_sum,
            self._correct,
            self._samples,
            self._seconds,
        )
        self._snapshot_step = self._step
        self._ctx.state.save_snapshot(snap)
        self._ctx.on_snapshot(snap, epoch_end)

    def _optimizer_state(self) -> dict[str, np.ndarray]:
        """What the serial SGD would checkpoint: the momentum buffer once a step made it."""
        if not (self._hyper.momentum and self._step):
            return {}
        return {"velocity": self._velocity.array[self._step % 2].copy()}

    def _finish(self) -> None:
        params = self.params.copy()
        self._ctx.state.finish({"params": params, "history": list(self._history)})
        self.actor_ref.stop(block=False)

    def _release(self) -> None:
        if self._segments:  # a run may be going on without us: its workers must leave it
            self._control.array[0, lockstep.ABORT] = self._run_id
        for shared in self._segments:
            shared.close()
            shared.unlink()
        self._segments.clear()

    def _own(self, shared: SharedArray) -> SharedArray:
        self._segments.append(shared)
        return shared

    def _count_shards_before(self, step: int) -> int:
        """Micro-shards dispatched in steps 1..step (for ``shard=N`` faults)."""
        cfg = self._ctx.config
        full = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        last_len = self._ctx.n_train - (self._steps_per_epoch - 1) * cfg.batch_size
        last = len(shard_bounds(last_len, cfg.effective_shard_size))
        epochs, k = divmod(step, self._steps_per_epoch)
        return epochs * ((self._steps_per_epoch - 1) * full + last) + k * full

    # -- faults and events --------------------------------------------------------------------
    def _fire_own_faults(self, step: int, epoch: int, *, first_of_epoch: bool) -> None:
        """Faults planned for the coordinator, the pool or the loader at this step (a loader's
        ``epoch=N`` fault travels with the epoch's permutation request instead)."""
        state = self._ctx.state
        due = []
        for target in ("coordinator", "pool", "loader"):
            due += state.due_faults(target, "step", step)
            if first_of_epoch and target != "loader":
                due += state.due_faults(target, "epoch", epoch)
        for fid, fault in due:
            state.mark_fired(fid)
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
                handle.proxy().inject(fault.action).get(timeout=self._ctx.step_timeout)
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

    def _fault_for(
        self,
        step: int,
        epoch: int,
        index: int,
        shards_before: int,
        shards: range,
        first: bool,
        taken: set[int],
    ) -> _Planned | None:
        """The fault worker ``index`` acts out at ``step`` computing ``shards`` of it (indices
        in the batch; ``shards_before`` in earlier steps), if any: a planned one not ``taken``
        (``worker=any`` goes to the ``first`` worker), else a chaos strike."""
        state = self._ctx.state
        candidates = state.due_faults("worker", "step", step) + state.due_faults(
            "worker", "epoch", epoch
        )
        if shards:
            candidates += state.due_faults("worker", "shard", shards_before + shards[-1] + 1)
        for fid, fault in candidates:
            if fid in taken or (fault.worker is None and not first):
                continue
            if fault.worker is not None and fault.worker != index:
                continue
            return _Planned(step, fault.action, fid, fault)
        chaos, attempt = state.chaos, self._attempts.get(step, 0)
        if chaos is not None and any(chaos.strikes(step, s, attempt) for s in shards):
            return _Planned(step, "crash", None, None)
        return None

    def _injected(self, fault: Fault | None, step: int, actor: str, reason: str = "") -> None:
        kind = fault.kind if fault else "crash"
        spec = str(fault) if fault else reason
        self._ctx.state.record(Event("fault_injected", actor, step, f"{kind}: {spec}"))
        self._log.warning("fault_injected", actor=actor, step=step, fault=spec)

    def _failure(self, step: int, index: int, worker: ActorHandle, kind: str, reason: str) -> None:
        self._lost.add(worker.actor_urn)
        actor = f"worker-{index}"
        self._ctx.state.record(Event(f"worker_{kind}", actor, step, reason, pid=worker.pid))
        self._log.warning(
            "worker_lost", actor=actor, step=step, kind=kind, reason=reason, pid=worker.pid
        )


def _split(
    shards: tuple[Shard, ...], workers: Sequence[tuple[int, ActorHandle]]
) -> list[tuple[tuple[int, ActorHandle], tuple[Shard, ...]]]:
    """Contiguous runs of shards, as even as possible, one per worker (idle ones get none)."""
    n = min(len(workers), len(shards))
    return [(workers[i], shards[slice(*split(len(shards), n, i))]) for i in range(n)]
