"""OTP supervisors: :class:`Supervisor` (static children) and the actor that runs both kinds.

A supervisor is itself a thread :class:`~supervision.actor.Actor`. It observes its children only
through :meth:`ActorHandle.monitor` (a ``Down`` told into its own inbox) and stops them only
through ``stop(timeout, reason=shutdown)`` then ``kill()``, so any kind of actor can be a child
and the supervisor never asks which kind it is. Restarts happen in the supervisor's thread, one
message at a time, as in OTP.

Rules (OTP's ``supervisor`` module):

- children start in order; a child whose start raises is a start error, and a supervisor that
  cannot start all its children stops those it started (in reverse) and fails to start;
- stop (and group restarts) terminate children in reverse start order: ``stop(shutdown)`` and
  wait up to the spec's ``shutdown`` seconds, then ``kill()``; ``brutal_kill`` kills at once;
  ``infinity`` waits as long as the child takes (default for supervisor children);
- ``permanent`` children always restart, ``transient`` ones only after an abnormal exit,
  ``temporary`` ones never (and their spec is removed once they exit);
- one_for_one restarts the child; one_for_all terminates all others then restarts all;
  rest_for_one terminates those started after it then restarts it and them. A group restart
  restarts every non-temporary child of the group, running or not, and counts once;
- more than ``max_restarts`` restarts within ``max_seconds``: the supervisor terminates all its
  children and exits with reason ``shutdown`` (escalation: its parent decides).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal

import structlog
from pykka import ActorDeadError

from supervision.actor import Actor, ThreadActorRef
from supervision.childspec import ChildSpec, Restart, Shutdown
from supervision.intensity import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_MAX_SECONDS,
    Backoff,
    Clock,
    RestartIntensity,
)
from supervision.reasons import SHUTDOWN, Reason, describe, is_normal_exit
from supervision.refs import ActorHandle, Down, Monitor
from supervision.registry import Registry, default_registry

log = structlog.get_logger("supervision")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
CALL_TIMEOUT = 60.0
"""Default timeout of the supervisor API calls (they may wait for children to start/stop)."""
KILL_JOIN_TIMEOUT = 5.0
"""How long to wait for a killed child's exit to be reported (a process must be reaped)."""

_sup_ids = itertools.count(1)


class SupervisorError(Exception):
    """A supervisor API call was refused (OTP's ``{error, Reason}``)."""


class StartChildError(SupervisorError):
    """A child's ``start`` raised (OTP: ``{error, {Reason, Child}}``)."""

    def __init__(self, supervisor: str, child_id: Hashable, reason: BaseException) -> None:
        super().__init__(
            f"supervisor {supervisor}: child {child_id!r} failed to start: {describe(reason)}"
        )
        self.child_id = child_id
        self.reason = reason


class ChildNotFoundError(SupervisorError, KeyError):
    """No child with that id (``{error, not_found}``)."""

    def __str__(self) -> str:
        return str(self.args[0])


class ChildRunningError(SupervisorError):
    """The child is running or restarting (``{error, running | restarting}``)."""


class ChildAlreadyPresentError(SupervisorError):
    """A spec with that id exists (``already_present``, or ``already_started`` if running)."""


class MaxChildrenError(SupervisorError):
    """A DynamicSupervisor already has ``max_children`` children (``{error, max_children}``)."""


@dataclass(frozen=True)
class ChildInfo:
    """One row of ``which_children``. ``ref`` is None when the child is not running;
    ``status`` is ``running``, ``restarting`` (waiting for a backoff or a retry) or
    ``undefined`` (not running, as OTP's ``undefined`` pid). A child of ``type="supervisor"``
    has a ref with its own ``which_children``. ``last_reason`` is why its latest incarnation
    exited (``describe``d), None while the first one lives: what observer shows per process."""

    id: Hashable
    ref: ActorHandle | None
    type: str
    kind: str | None
    pid: int | None
    restarts: int
    restart: Restart
    name: str | None
    status: Literal["running", "restarting", "undefined"]
    last_reason: str | None = None


@dataclass(frozen=True)
class GaveUp:
    """Why a supervisor exited on its own: restart intensity exceeded by ``child_id``."""

    supervisor: str
    child_id: Hashable
    reason: str
    last_reasons: dict[Hashable, str]


@dataclass(eq=False)
class _Child:
    key: Hashable
    spec: ChildSpec
    handle: ActorHandle | None = None
    monitor: Monitor | None = None
    restarts: int = 0
    restarting: bool = False
    last_reason: Reason | None = None


@dataclass(frozen=True)
class _Call:
    op: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _Err:
    error: BaseException


@dataclass(frozen=True)
class _Retry:
    """Start the children with these keys that are not running (after a backoff/failure)."""

    keys: tuple[Hashable, ...]


@dataclass
class _Config:
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: Backoff | None
    clock: Clock
    registry: Registry
    max_children: int | None = None
    dynamic: bool = False
    name: str | None = None
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


class _SupervisorRefBase(ThreadActorRef):
    """The API half common to both supervisors: asks with a timeout, errors re-raised here
    (a handler that raised would crash the supervisor: let it crash is for bugs, not for
    refused requests)."""

    gave_up: GaveUp | None = None
    """Set when the supervisor exited because its restart intensity was exceeded."""

    @property
    def name(self) -> str:
        actor = self._actor_weakref()
        return actor.sup_id if actor is not None else self.actor_urn

    def _call(self, op: str, *args: Any, timeout: float | None) -> Any:
        result = self.ask(_Call(op, args), timeout=CALL_TIMEOUT if timeout is None else timeout)
        if isinstance(result, _Err):
            raise result.error
        return result

    def start_child(self, spec: ChildSpec, *, timeout: float | None = None) -> ActorHandle:
        """Start a child from ``spec`` and add it (last). Returns its handle."""
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs a ChildSpec, got {spec!r}")
        return self._call("start_child", spec, timeout=timeout)

    def which_children(self, *, timeout: float | None = None) -> list[ChildInfo]:
        return self._call("which_children", timeout=timeout)

    def count_children(self, *, timeout: float | None = None) -> dict[str, int]:
        """``specs``, ``active``, ``supervisors``, ``workers`` as in OTP."""
        return self._call("count_children", timeout=timeout)

    def tree(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """which_children, recursively, as plain dicts (for rendering a live tree)."""
        rows = []
        for info in self.which_children(timeout=timeout):
            row: dict[str, Any] = {
                "id": info.id,
                "type": info.type,
                "kind": info.kind,
                "pid": info.pid,
                "status": info.status,
                "restarts": info.restarts,
                "last_reason": info.last_reason,
            }
            if isinstance(info.ref, _SupervisorRefBase):
                with contextlib.suppress(ActorDeadError):
                    row["children"] = info.ref.tree(timeout=timeout)
            rows.append(row)
        return rows


class SupervisorRef(_SupervisorRefBase):
    """Handle of a :class:`Supervisor`: an ActorHandle plus OTP's supervisor API."""

    def terminate_child(self, child_id: Hashable, *, timeout: float | None = None) -> None:
        """Stop the child (its spec stays, unless temporary)."""
        self._call("terminate_child", child_id, timeout=timeout)

    def restart_child(self, child_id: Hashable, *, timeout: float | None = None) -> ActorHandle:
        """Start a terminated child again from its spec."""
        return self._call("restart_child", child_id, timeout=timeout)

    def delete_child(self, child_id: Hashable, *, timeout: float | None = None) -> None:
        """Remove a terminated child's spec."""
        self._call("delete_child", child_id, timeout=timeout)


class SupervisorActor(Actor):
    """The supervisor behaviour. Use :meth:`Supervisor.start_link` or :class:`DynamicSupervisor`
    rather than starting it directly."""

    ref_class: ClassVar[type[ThreadActorRef]] = SupervisorRef

    @property
    def _ref(self) -> _SupervisorRefBase:
        ref = self.actor_ref
        assert isinstance(ref, _SupervisorRefBase)  # ref_class
        return ref

    start_timeout: ClassVar[float] = 600.0  # children have their own start timeouts

    def __init__(self, specs: Sequence[ChildSpec], config: _Config) -> None:
        super().__init__()
        self.sup_id = config.name or f"supervisor-{next(_sup_ids)}"
        self._config = config
        self._intensity = RestartIntensity(config.max_restarts, config.max_seconds, config.clock)
        self._children: list[_Child] = []
        self._stopping = False
        self._timers: set[threading.Timer] = set()
        self._initial = list(specs)

    # -- lifecycle -----------------------------------------------------------------------

    def on_start(self) -> None:
        for spec in self._initial:
            child = _Child(spec.id, spec)
            try:
                self._start(child)
            except Exception as exc:
                self._terminate_all()
                raise StartChildError(self.sup_id, spec.id, exc) from exc
            self._children.append(child)
        self._initial = []
        log.info("supervisor_started", supervisor=self.sup_id, children=len(self._children))

    def on_stop(self) -> None:
        self._terminate_all()
        log.info("supervisor_shutdown", supervisor=self.sup_id, reason=SHUTDOWN)

    def on_failure(self, *_exc_info: Any) -> None:
        self._terminate_all()

    def _on_killed(self) -> None:
        # An exit signal through links would kill the children too: do it by hand.
        self._stopping = True
        self._cancel_timers()
        for child in reversed(self._children):
            if child.handle is not None:
                self._detach(child).kill()

    # -- messages ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Down):
            self._on_down(message)
        elif isinstance(message, _Retry):
            self._timers = {t for t in self._timers if t.is_alive()}
            if not self._stopping:
                self._start_group(list(message.keys))
        elif isinstance(message, _Call):
            if self._stopping:
                return _Err(ActorDeadError(f"supervisor {self.sup_id} is shutting down"))
            try:
                return getattr(self, f"_api_{message.op}")(*message.args)
            except SupervisorError as exc:
                return _Err(exc)
        else:
            super().on_receive(message)
        return None

    def _on_down(self, down: Down) -> None:
        child = next((c for c in self._children if c.monitor == down.monitor), None)
        if child is None or child.handle is not down.ref:
            return  # an old incarnation, or a child already terminated on purpose
        child.handle = child.monitor = None
        child.last_reason = down.reason
        self._log("child_exited", child, down.ref, reason=describe(down.reason))
        if self._stopping:
            return
        spec = child.spec
        if spec.restart == "temporary" or (
            spec.restart == "transient" and is_normal_exit(down.reason)
        ):
            if spec.restart == "temporary" or self._config.dynamic:
                self._children.remove(child)
            return
        if not self._intensity.add():
            self._give_up(child)
            return
        group = self._group(child)
        for other in reversed(group):
            if other is not child and other.handle is not None:
                self._terminate(other)
        # Temporary children terminated by a group restart are not restarted: OTP drops them.
        dropped = [c for c in group if c is not child and c.spec.restart == "temporary"]
        self._children = [c for c in self._children if c not in dropped]
        group = [c for c in group if c not in dropped]
        self._schedule([c.key for c in group])

    def _group(self, child: _Child) -> list[_Child]:
        strategy = self._config.strategy
        if strategy == "one_for_one":
            return [child]
        if strategy == "one_for_all":
            return list(self._children)
        return self._children[self._children.index(child) :]

    def _schedule(self, keys: list[Hashable]) -> None:
        backoff = self._config.backoff
        if backoff is None:
            self._start_group(keys)
            return
        for child in self._children:
            if child.key in keys:
                child.restarting = True
        delay = backoff.delay(self._intensity.recent)
        timer = threading.Timer(delay, self._tell_self, args=(_Retry(tuple(keys)),))
        timer.name = f"{self.sup_id}-backoff"
        timer.daemon = True
        self._timers.add(timer)
        log.info("child_restart_delayed", supervisor=self.sup_id, child_ids=keys, delay=delay)
        timer.start()

    def _start_group(self, keys: list[Hashable]) -> None:
        """(Re)start, in order, the children with these keys that are not running."""
        for index, key in enumerate(keys):
            child = self._find(key)
            if child is None or child.handle is not None:
                continue
            child.restarting = False
            try:
                self._start(child)
            except Exception as exc:
                child.restarting = True
                child.last_reason = exc
                self._log("child_start_failed", child, None, reason=describe(exc))
                if not self._intensity.add():
                    self._give_up(child)
                else:
                    self._schedule(keys[index:])
                return
            child.restarts += 1
            self._log("child_restarted", child, child.handle, restarts=child.restarts)

    def _give_up(self, child: _Child) -> None:
        reason = describe(child.last_reason) if child.last_reason is not None else None
        log.error(
            "restart_intensity_exceeded",
            supervisor=self.sup_id,
            child_id=child.spec.id,
            reason=reason,
            max_restarts=self._config.max_restarts,
            max_seconds=self._config.max_seconds,
        )
        self._stopping = True
        self._terminate_all()
        gave_up = GaveUp(
            supervisor=self.sup_id,
            child_id=child.spec.id,
            reason=reason or "",
            last_reasons={
                c.spec.id: describe(c.last_reason)
                for c in self._children
                if c.last_reason is not None
            },
        )
        self._ref.gave_up = gave_up
        log.error(
            "supervisor_gave_up",
            supervisor=self.sup_id,
            child_id=gave_up.child_id,
            reason=gave_up.reason,
            last_reasons={repr(k): v for k, v in gave_up.last_reasons.items()},
        )
        self.actor_ref.stop(block=False, reason=SHUTDOWN)

    # -- starting and stopping one child -------------------------------------------------

    def _start(self, child: _Child) -> ActorHandle:
        """Run the spec's start; monitor and register the new incarnation (returned). Raises
        on failure."""
        spec = child.spec
        try:
            handle: object = spec.start()  # user code: checked below
        except Exception as exc:
            self._log("child_start_failed", child, None, reason=describe(exc))
            raise
        if not isinstance(handle, ActorHandle):
            bad = TypeError(f"start of child {spec.id!r} returned {handle!r}, not an ActorHandle")
            stop = getattr(handle, "stop", None)  # whatever it is: if it stops, stop it
            with contextlib.suppress(Exception):
                if callable(stop):
                    stop(timeout=KILL_JOIN_TIMEOUT)
            raise bad
        child.handle = handle
        child.monitor = handle.monitor(self._tell_self)
        if spec.name is not None:
            try:
                self._config.registry.register(spec.name, handle)
            except Exception:
                self._terminate(child)
                raise
        self._log("child_started", child, handle)
        return handle

    def _tell_self(self, message: Any) -> None:
        with contextlib.suppress(ActorDeadError):  # a dead supervisor restarts nothing
            self.actor_ref.tell(message)

    def _detach(self, child: _Child) -> ActorHandle:
        handle = child.handle
        assert handle is not None
        if child.monitor is not None:
            handle.demonitor(child.monitor)
        child.handle = child.monitor = None
        return handle

    def _terminate(self, child: _Child) -> None:
        """Stop the child per its shutdown spec: stop(shutdown), then kill when time runs out."""
        if child.handle is None:
            child.restarting = False
            return
        handle = self._detach(child)
        shutdown = child.spec.shutdown
        assert shutdown is not None, "ChildSpec fills in the default"
        if shutdown == "brutal_kill":
            handle.kill()
        elif shutdown == "infinity":
            handle.stop(timeout=None, reason=SHUTDOWN)
        elif not handle.stop(timeout=float(shutdown), reason=SHUTDOWN):
            self._log("child_shutdown_timeout", child, handle, shutdown=shutdown)
            handle.kill()
        handle.join(KILL_JOIN_TIMEOUT)
        child.last_reason = handle.exit_reason
        self._log("child_terminated", child, handle, reason=describe(handle.exit_reason or ""))

    def _terminate_all(self) -> None:
        self._cancel_timers()
        for child in reversed(self._children):
            self._terminate(child)
        self._children = [c for c in self._children if c.spec.restart != "temporary"]

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _find(self, key: Hashable) -> _Child | None:
        return next((c for c in self._children if c.key == key), None)

    def _get(self, key: Hashable) -> _Child:
        child = self._find(key)
        if child is None:
            raise ChildNotFoundError(f"supervisor {self.sup_id}: no child {key!r}")
        return child

    def _log(self, event: str, child: _Child, handle: ActorHandle | None, **extra: Any) -> None:
        log.info(
            event,
            supervisor=self.sup_id,
            child_id=child.spec.id,
            kind=handle.kind if handle is not None else child.spec.kind,
            pid=handle.pid if handle is not None else None,
            **extra,
        )

    # -- API (run in the supervisor's thread; errors are returned, see _SupervisorRefBase) --

    def _api_start_child(self, spec: ChildSpec) -> ActorHandle:
        if self._config.dynamic:
            limit = self._config.max_children
            if limit is not None and len(self._children) >= limit:
                raise MaxChildrenError(f"supervisor {self.sup_id} has {limit} children already")
            child = _Child(next(self._config.ids), spec)
        else:
            existing = self._find(spec.id)
            if existing is not None:
                state = "already_started" if existing.handle is not None else "already_present"
                raise ChildAlreadyPresentError(
                    f"supervisor {self.sup_id}: child {spec.id!r} {state}"
                )
            child = _Child(spec.id, spec)
        try:
            handle = self._start(child)
        except Exception as exc:
            raise StartChildError(self.sup_id, spec.id, exc) from exc
        self._children.append(child)
        return handle

    def _api_terminate_child(self, key: Hashable) -> None:
        child = self._get(key)
        self._terminate(child)
        if child.spec.restart == "temporary" or self._config.dynamic:
            self._children.remove(child)

    def _api_restart_child(self, key: Hashable) -> ActorHandle:
        child = self._get(key)
        if child.handle is not None or child.restarting:
            raise ChildRunningError(f"supervisor {self.sup_id}: child {key!r} is running")
        try:
            return self._start(child)
        except Exception as exc:
            raise StartChildError(self.sup_id, key, exc) from exc

    def _api_delete_child(self, key: Hashable) -> None:
        child = self._get(key)
        if child.handle is not None or child.restarting:
            raise ChildRunningError(f"supervisor {self.sup_id}: child {key!r} is running")
        self._children.remove(child)

    def _api_which_children(self) -> list[ChildInfo]:
        return [
            ChildInfo(
                id=c.spec.id,
                ref=c.handle,
                type=c.spec.type,
                kind=c.handle.kind if c.handle is not None else c.spec.kind,
                pid=c.handle.pid if c.handle is not None else None,
                restarts=c.restarts,
                restart=c.spec.restart,
                name=c.spec.name,
                status="running"
                if c.handle is not None
                else ("restarting" if c.restarting else "undefined"),
                last_reason=describe(c.last_reason) if c.last_reason is not None else None,
            )
            for c in self._children
        ]

    def _api_count_children(self) -> dict[str, int]:
        return {
            "specs": len(self._children),
            "active": sum(c.handle is not None for c in self._children),
            "supervisors": sum(c.spec.type == "supervisor" for c in self._children),
            "workers": sum(c.spec.type == "worker" for c in self._children),
        }


class Supervisor:
    """Start supervisors (``Supervisor.start_link``) and describe them as children
    (``Supervisor.child_spec``)."""

    @staticmethod
    def start_link(
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        backoff: Backoff | None = None,
        name: str | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> SupervisorRef:
        """Start a supervisor and its children (in order); return once all are started.

        Raises :class:`StartChildError` (after stopping the children already started) if a
        child fails to start. ``name`` identifies the supervisor in logs; ``registry`` is where
        children with a ``name`` are registered (default: ``registry.default_registry``);
        ``clock`` replaces ``time.monotonic`` for the intensity window (tests).
        """
        config = _config(strategy, max_restarts, max_seconds, backoff, name, registry, clock)
        specs = _check_specs(children)
        ref = SupervisorActor.start(specs, config)
        assert isinstance(ref, SupervisorRef)  # its ref_class
        return ref

    @staticmethod
    def child_spec(
        id: Hashable,
        children: Sequence[ChildSpec],
        *,
        restart: Restart = "permanent",
        shutdown: Shutdown | None = None,
        **options: Any,
    ) -> ChildSpec:
        """A ``type="supervisor"`` child spec that starts ``Supervisor.start_link(children,
        **options)``. ``name`` in ``options`` names the supervisor (default: ``str(id)``)."""
        options.setdefault("name", str(id))
        specs = _check_specs(children)
        return ChildSpec(
            id=id,
            start=partial(Supervisor.start_link, specs, **options),
            restart=restart,
            shutdown=shutdown,
            type="supervisor",
            kind="thread",
        )


def _config(
    strategy: Strategy,
    max_restarts: int,
    max_seconds: float,
    backoff: Backoff | None,
    name: str | None,
    registry: Registry | None,
    clock: Clock | None,
    **extra: Any,
) -> _Config:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise TypeError(f"backoff must be a Backoff or None, got {backoff!r}")
    RestartIntensity(max_restarts, max_seconds)  # validates both
    return _Config(
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        backoff=backoff,
        clock=clock or time.monotonic,
        registry=registry if registry is not None else default_registry,
        name=name,
        **extra,
    )


def _check_specs(children: Sequence[ChildSpec]) -> list[ChildSpec]:
    specs = list(children)
    seen: set[Hashable] = set()
    for spec in specs:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"children must be ChildSpec instances, got {spec!r}")
        if spec.id in seen:
            raise ValueError(f"duplicate child id {spec.id!r}")
        seen.add(spec.id)
    return specs
