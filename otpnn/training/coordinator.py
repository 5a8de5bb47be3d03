"""The Coordinator: owns the parameters, runs synchronous SGD over micro-shards, survives loss.

Step t (numbered from 1): the batch is cut into micro-shards (their number fixed by the config,
never by the worker count); live workers get contiguous runs of shards in one message each; the
coordinator sums the shard gradients strictly in shard order and applies the update. Every shard
in flight is tracked by the worker incarnation that holds it: when that worker dies (its future
fails), hangs (its deadline passes; it is killed) or crashes, the shards go to whichever workers
are alive, a restarted one included. Shard results are idempotent (a redone shard overwrites its
own gradient row with the same bits), so recovery never changes the result.

One step is one message to itself, so other messages (stop, for one) are served between steps,
and a step is atomic with respect to snapshots and stops.
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
from otpnn.model import SGD, evaluate, init_params, num_params, reduce_in_order
from otpnn.schedule import shard_bounds, steps_per_epoch
from otpnn.training.messages import ComputeShards, Shard, ShardResult
from otpnn.training.state import Event, JobState, Snapshot
from supervision import Actor, Crash
from supervision.reasons import describe
from supervision.refs import ActorHandle
from supervision.shm import SharedArray

log = structlog.get_logger("otpnn.coordinator")


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


class _Step:
    """Self-message: run the next step."""


class NoWorkers(RuntimeError):
    """No worker came back within the step deadline."""


class _Interrupted(Exception):
    """The coordinator was asked to stop, or killed, while waiting inside a step."""


class Coordinator(FaultTarget, Actor):
    def __init__(self, ctx: CoordinatorContext) -> None:
        super().__init__()
        self._ctx = ctx
        self._log = log.bind(job=ctx.job)
        cfg = ctx.config
        self._sizes = cfg.layer_sizes
        self._steps_per_epoch = steps_per_epoch(ctx.n_train, cfg.batch_size)
        self._total_steps = self._steps_per_epoch * cfg.epochs
        self._segments: list[SharedArray] = []
        self._lost: set[str] = set()  # worker incarnations (actor_urn) that failed a dispatch

    # -- lifecycle ----------------------------------------------------------------------------
    def on_start(self) -> None:
        cfg, state = self._ctx.config, self._ctx.state
        dtype = np.dtype(cfg.dtype)
        n_params = num_params(self._sizes)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        self._params = self._own(SharedArray.create((n_params,), dtype))
        self._grads = self._own(SharedArray.create((max_shards, n_params), dtype))
        self._acc = np.empty(n_params, dtype)
        self._opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
        snap = state.latest_snapshot()
        if snap is None:
            snap = Snapshot(0, init_params(cfg), {}, [])
        self._params.array[...] = snap.params
        self._opt.load_state(snap.optimizer)
        self._step = snap.step
        self._history = snap.history
        self._loss_sum, self._correct = snap.epoch_loss_sum, snap.epoch_correct
        self._samples, self._seconds = snap.epoch_samples, snap.epoch_seconds
        self._shard_counter = self._count_shards_before(self._step)
        self._snapshot_step = self._step
        self._open_in_loader = 0  # the epoch whose permutation the loader holds, as far as we know
        state.touch()
        self._log.info("coordinator_started", step=self._step, total_steps=self._total_steps)
        self.actor_ref.tell(_Step())

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
        if isinstance(message, _Step):
            # Interrupted, a step is abandoned before its update: the stop that interrupted it
            # is next in the inbox and finds the state at a step boundary.
            with contextlib.suppress(_Interrupted):
                self._run_step()
            return None
        return super().on_receive(message)

    # -- one step -----------------------------------------------------------------------------
    def _run_step(self) -> None:
        cfg, state = self._ctx.config, self._ctx.state
        t = self._step + 1
        epoch, k = divmod(self._step, self._steps_per_epoch)
        epoch += 1
        self._fire_own_faults(t, epoch, first_of_epoch=k == 0)
        started = time.perf_counter()
        if k == 0 or self._open_in_loader != epoch:  # a (re)started coordinator may start mid-epoch
            self._open_epoch(epoch, t)
        if k == 0:
            self._loss_sum, self._correct, self._samples, self._seconds = 0.0, 0, 0, 0.0
        lo0 = k * cfg.batch_size
        batch_len = min(cfg.batch_size, self._ctx.n_train - lo0)
        shards = tuple(
            Shard(i, lo0 + a, lo0 + b)
            for i, (a, b) in enumerate(shard_bounds(batch_len, cfg.effective_shard_size))
        )
        results = self._compute(t, epoch, shards)
        grads = self._grads.array
        reduce_in_order([grads[s.index] for s in shards], self._acc)
        self._opt.step(self._params.array, self._acc, batch_len)

        step_loss, step_correct = 0.0, 0
        for s in shards:  # in shard order, as the reference adds them
            step_loss += results[s.index][0]
            step_correct += results[s.index][1]
        self._loss_sum += step_loss
        self._correct += step_correct
        self._samples += batch_len
        self._shard_counter += len(shards)
        self._step = t
        self._seconds += time.perf_counter() - started
        row = self._end_epoch(epoch) if k == self._steps_per_epoch - 1 else None
        state.advance(t, epoch, self._total_steps, row)
        if row is not None or (cfg.checkpoint_every and t % cfg.checkpoint_every == 0):
            self._snapshot(epoch_end=row is not None)
        if t == self._total_steps:
            self._finish()
        else:
            self.actor_ref.tell(_Step())

    def _compute(
        self, step: int, epoch: int, shards: tuple[Shard, ...]
    ) -> dict[int, tuple[float, int]]:
        """Get every shard computed once, whatever happens to the workers on the way."""
        results: dict[int, tuple[float, int]] = {}
        pending = shards
        failed_at: float | None = None
        attempt = 0
        while pending:
            workers = self._await_workers()
            in_flight = []
            for (index, worker), run in _split(pending, workers):
                fault = self._worker_fault(step, epoch, index, run, attempt, first=not in_flight)
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
            if lost and failed_at is None:
                failed_at = time.monotonic()
            pending = tuple(lost)
            attempt += 1
        if failed_at is not None:
            self._recovered(step, time.monotonic() - failed_at)
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
            self._params.array,
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
        snap = Snapshot(
            self._step,
            self._params.array.copy(),
            {k: v.copy() for k, v in self._opt.state_arrays().items()},
            list(self._history),
            self._loss_sum,
            self._correct,
            self._samples,
            self._seconds,
        )
        self._snapshot_step = self._step
        self._ctx.state.save_snapshot(snap)
        self._ctx.on_snapshot(snap, epoch_end)

    def _finish(self) -> None:
        params = self._params.array.copy()
        self._ctx.state.finish({"params": params, "history": list(self._history)})
        self.actor_ref.stop(block=False)

    def _release(self) -> None:
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

    def _worker_fault(
        self, step: int, epoch: int, index: int, run: tuple[Shard, ...], attempt: int, first: bool
    ) -> str | None:
        """The fault (if any) this worker acts out for this run of shards."""
        state = self._ctx.state
        last_shard = self._shard_counter + run[-1].index + 1
        candidates = (
            state.due_faults("worker", "step", step)
            + state.due_faults("worker", "epoch", epoch)
            + state.due_faults("worker", "shard", last_shard)
        )
        for fid, fault in candidates:
            if fault.worker is None and not first:
                continue
            if fault.worker is not None and fault.worker != index:
                continue
            state.mark_fired(fid)
            self._injected(fault, step, f"worker-{index}")
            return fault.action
        chaos = state.chaos
        if chaos is not None and any(chaos.strikes(step, s.index, attempt) for s in run):
            self._injected(None, step, f"worker-{index}", reason="chaos")
            return "crash"
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

    def _recovered(self, step: int, seconds: float) -> None:
        self._ctx.state.record(
            Event("recovered", "coordinator", step, "lost shards redone", recovery_seconds=seconds)
        )


def _split(
    shards: tuple[Shard, ...], workers: Sequence[tuple[int, ActorHandle]]
) -> list[tuple[tuple[int, ActorHandle], tuple[Shard, ...]]]:
    """Contiguous runs of shards, as even as possible, one per worker (idle ones get none)."""
    n = min(len(workers), len(shards))
    bounds = [round(i * len(shards) / n) for i in range(n + 1)]
    return [(workers[i], shards[bounds[i] : bounds[i + 1]]) for i in range(n)]
