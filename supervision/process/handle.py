"""The parent side of a process actor: :class:`ProcessActorRef`, an :class:`ActorHandle`.

Start method: **forkserver**. The parent is multi-threaded (Pykka actors, reader threads), and
``fork`` of a multi-threaded process can copy a lock held by another thread into the child, where
it stays locked forever. ``spawn`` is safe too but re-imports everything for every child (~0.3 s);
the forkserver is a single-threaded process started once, with this package (Pykka, structlog)
preloaded, that forks each child in a few milliseconds. The forkserver exits when the parent
dies, and every child asks the kernel to SIGKILL it when the forkserver dies (PR_SET_PDEATHSIG),
so no actor outlives its user, even one that was SIGKILLed. The forkserver, not the parent,
reaps the children: the parent never holds zombies.

Death detection without polling: one reader thread per actor blocks in ``poll(2)`` on the
actor's pipe and on the process sentinel. Replies are matched to futures by a correlation id.
When the pipe reaches EOF (the child exited, whatever the cause), the thread reaps the process,
works out the real exit reason, fails every pending future with ``ActorDeadError`` and fires the
monitors, within milliseconds of the death.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing import forkserver
from typing import Any, ClassVar, Literal, Protocol

import pykka
from pykka import ActorDeadError, CallableProxy, ThreadingFuture, Timeout, messages

from supervision.process import runner
from supervision.process.errors import DeadlineExceeded
from supervision.process.main_guard import check_main_guard
from supervision.reasons import KILLED, NORMAL, ExitedWithCode, KilledBySignal, Reason
from supervision.refs import MonitorSet, WatchedHandle, fail

_PRELOAD = ["supervision.process.runner"]
_REAP_SECONDS = 5.0
_ctx_lock = threading.Lock()
_ctx: Any = None


def context() -> Any:
    """The forkserver multiprocessing context every process actor is started from."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _ctx = ctx
        return _ctx


def ensure_forkserver(preload: list[str] | tuple[str, ...] = ()) -> None:
    """Start the forkserver now (it starts lazily with the first actor otherwise).

    ``preload`` adds modules the forkserver imports once, in order, so children start with them
    loaded (e.g. the modules defining your actors). Only effective before the forkserver first
    starts. A library configured by environment variables when it loads (BLAS threads, for
    numpy) is then configured in the forkserver, not by a child's ``env``: preload first a
    module of yours that sets ``os.environ``, then the library.
    Raises :class:`MainModuleNotGuarded` when called from a script's unguarded top-level code.
    """
    check_main_guard()
    with _ctx_lock:
        _PRELOAD.extend(m for m in preload if m not in _PRELOAD)
    context()
    forkserver.ensure_running()


@dataclass(frozen=True)
class ProcessOptions:
    """How a process actor's process is set up. Set per class as ``process_options``.

    - ``env``: environment variables set in the child before the actor's class is unpickled
      (its module imported), e.g. ``{"OPENBLAS_NUM_THREADS": "1"}``.
    - ``initializer``: a picklable callable run in the child after ``env`` (e.g. threadpoolctl).
    - ``start_timeout``: seconds to wait for the child to construct the actor.
    - ``ask_deadline_is_failure``: an ask whose ``timeout`` runs out (``ask(timeout=...)`` or
      ``future.get(timeout=...)``) means the actor is hung: it is killed with reason
      :class:`DeadlineExceeded`, and its supervisor restarts it per strategy.
    - ``batch_scheduling``: run the child under Linux's ``SCHED_BATCH`` policy (no privilege
      needed; ignored elsewhere). A CPU-bound child woken by a message then never preempts the
      sender on its core, so a parent that fans work out to several such children gets all its
      messages out before any of them takes its CPU.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    initializer: Callable[[], None] | None = None
    start_timeout: float = 30.0
    ask_deadline_is_failure: bool = False
    batch_scheduling: bool = False


class ProcessActorRef(WatchedHandle):
    """A ref to an actor running in its own process; Pykka's ``ActorRef`` interface plus the
    supervision half of :class:`~supervision.refs.ActorHandle`."""

    kind: ClassVar[Literal["process"]] = "process"

    def __init__(
        self, actor_class: type, args: tuple[Any, ...], kwargs: dict[str, Any], opts: ProcessOptions
    ) -> None:
        self.actor_class = actor_class
        self.actor_urn = uuid.uuid4().urn
        self._opts = opts
        payload = pickle.dumps((actor_class, args, kwargs), pickle.HIGHEST_PROTOCOL)
        self._lock = threading.Lock()  # guards _pending/_dead and kill-vs-reap
        self._send_lock = threading.Lock()  # one writer at a time on the pipe
        self._pending: dict[int, ThreadingFuture[Any]] = {}
        self._ids = itertools.count(1)
        self._dead = False
        self._reaped = False
        self._monitors = MonitorSet()
        self._stop_reason: Reason | None = None
        self._kill_reason: Reason | None = None
        self._crash_reason: BaseException | None = None
        self._conn, child_conn = multiprocessing.Pipe()
        self._process = context().Process(
            target=runner.run,
            args=(
                child_conn,
                payload,
                self.actor_urn,
                dict(opts.env),
                opts.initializer,
                opts.batch_scheduling,
            ),
            name=f"{actor_class.__name__}-process-actor",
            daemon=True,  # multiprocessing terminates it at interpreter exit if still running
        )
        try:
            self._process.start()
        finally:
            child_conn.close()  # the child's end must live only in the child, for EOF to work
        self._pid: int = self._process.pid
        self._attrs = self._await_ready()
        self._watcher = threading.Thread(
            target=self._read_loop, name=f"process-actor-reader-{self._pid}", daemon=True
        )
        self._watcher.start()

    def __repr__(self) -> str:
        return f"<ProcessActorRef for {self}>"

    def __str__(self) -> str:
        return f"{self.actor_class.__name__} ({self.actor_urn}, pid {self._pid})"

    # -- ActorHandle: supervision half ---------------------------------------------------

    @property
    def pid(self) -> int:
        return self._pid

    def stop(
        self, block: bool = True, timeout: float | None = None, *, reason: Reason = NORMAL
    ) -> bool:
        """Ask the actor to stop after the messages already sent; ``on_stop`` runs in the
        child. Returns False if it has not exited within ``timeout`` (then :meth:`kill` it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        if not self._dead:
            # Dead: join returns at once. Stuck: join times out and the caller kills.
            with contextlib.suppress(ActorDeadError, Timeout):
                self._send_stop(deadline)
        if not block:
            return self._monitors.exited
        return self.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def kill(self, reason: Reason = KILLED) -> None:
        """SIGKILL the process; monitors see ``reason`` (``killed`` unless told otherwise).
        Returns at once: the reader thread reaps it and reports (see :meth:`join`)."""
        with self._lock:
            if self._reaped:  # its pid may belong to another process by now
                return
            if self._kill_reason is None:
                self._kill_reason = reason
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    # -- ActorRef: messaging half --------------------------------------------------------

    def tell(self, message: Any) -> None:
        if self._dead:
            raise ActorDeadError(f"{self} not found")
        self._send(pickle.dumps((runner.TELL, 0, message), pickle.HIGHEST_PROTOCOL))

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._request(runner.ASK, message)
        return future.get(timeout=timeout) if block else future

    def proxy(self) -> ProcessActorProxy:
        if self._dead:
            raise ActorDeadError(f"{self} not found")
        return ProcessActorProxy(self, ())

    def _request(self, op: int, message: Any) -> ThreadingFuture[Any]:
        on_timeout = self._deadline_missed if self._opts.ask_deadline_is_failure else None
        future = _ProcessFuture(on_timeout)
        corr = next(self._ids)
        try:
            data = pickle.dumps((op, corr, message), pickle.HIGHEST_PROTOCOL)
        except Exception:
            future.set_exception()
            return future
        with self._lock:
            if self._dead:
                fail(future, ActorDeadError(f"{self} not found"))
                return future
            self._pending[corr] = future
        try:
            self._send(data)
        except ActorDeadError as exc:
            if self._pending.pop(corr, None) is not None:
                fail(future, exc)
        return future

    def _deadline_missed(self, timeout: float | None) -> None:
        self.kill(DeadlineExceeded(timeout if timeout is not None else 0.0))

    def _send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._conn.send_bytes(data)
        except OSError as exc:  # EPIPE/ECONNRESET, or closed by the reader: the actor is gone
            raise ActorDeadError(f"{self} not found") from exc

    def _send_stop(self, deadline: float | None) -> None:
        """Send STOP without blocking past ``deadline``: a hung child's full pipe must not keep
        its supervisor from getting to the kill."""
        data = pickle.dumps((runner.STOP, next(self._ids), None), pickle.HIGHEST_PROTOCOL)
        left = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._send_lock.acquire(timeout=left):
            raise Timeout("pipe busy")
        try:
            poller = select.poll()
            poller.register(self._conn.fileno(), select.POLLOUT)
            ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not poller.poll(ms):  # Linux reports POLLOUT with >= 3/4 of the buffer free
                raise Timeout("pipe full")
            self._conn.send_bytes(data)
        except OSError as exc:
            raise ActorDeadError(f"{self} not found") from exc
        finally:
            self._send_lock.release()

    # -- the child's life, seen from here ------------------------------------------------

    def _await_ready(self) -> dict[tuple[str, ...], Any]:
        """Wait for the child to construct the actor; raise its exception if that failed."""
        try:
            if not self._conn.poll(self._opts.start_timeout):
                raise TimeoutError(f"{self} did not start within {self._opts.start_timeout} s")
            _, _, ok, value = pickle.loads(self._conn.recv_bytes())
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, EOFError):
                raise ActorDeadError(f"{self} died while starting") from exc
            raise
        if not ok:
            self._abandon()
            raise value
        return value

    def _abandon(self) -> None:
        """Kill, reap and release a child that never became an actor."""
        self._dead = True
        self._process.kill()
        self._process.join()
        self._process.close()
        self._conn.close()

    def _read_loop(self) -> None:
        """Deliver replies until the child's pipe ends, then report the exit."""
        fd = self._conn.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._process.sentinel, select.POLLIN)
        recv, loads, pending = self._conn.recv_bytes, pickle.loads, self._pending
        try:
            while any(ready == fd for ready, _ in poller.poll()):
                kind, corr, ok, value = loads(recv())
                if kind == runner.EXIT:
                    self._crash_reason = value
                    continue
                future = pending.pop(corr, None)
                if future is None:
                    continue  # the STOP reply: join() reports it
                if ok:
                    future.set(value)
                else:
                    fail(future, value)
        except (EOFError, OSError):
            pass
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, {}
        self._process.join(_REAP_SECONDS)
        if self._process.exitcode is None:  # closed its pipe but did not exit: make sure
            with self._lock:
                self._process.kill()
            self._process.join()
        with self._lock:
            code = self._process.exitcode
            self._process.close()
            self._reaped = True
        with self._send_lock:
            self._conn.close()
        reason = self._reason_for(code)
        self._report_exit(pending.values(), reason)

    def _reason_for(self, code: int) -> Reason:
        if self._crash_reason is not None:
            return self._crash_reason
        if self._kill_reason is not None:
            return self._kill_reason
        if code == 0:
            return self._stop_reason if self._stop_reason is not None else NORMAL
        if code < 0:
            return KilledBySignal(-code)
        return ExitedWithCode(code)


class _ProcessFuture(ThreadingFuture[Any]):
    """A Pykka future that can report a missed deadline to its actor (see ProcessOptions)."""

    def __init__(self, on_timeout: Callable[[float | None], None] | None) -> None:
        super().__init__()
        self._on_timeout = on_timeout

    def get(self, *, timeout: float | None = None) -> Any:
        try:
            return super().get(timeout=timeout)
        except Timeout:
            if self._on_timeout is not None:
                self._on_timeout(timeout)
            raise


class _StartTimeout(Protocol):
    @property
    def start_timeout(self) -> float: ...


class ProxiedRef(Protocol):
    """What :class:`ProcessActorProxy` needs of the ref it proxies (a process actor's, or a
    Ray actor's: the same introspection, asked of the actor's own process)."""

    _attrs: dict[tuple[str, ...], Any]

    @property
    def _opts(self) -> _StartTimeout: ...

    def _request(self, op: int, message: Any) -> ThreadingFuture[Any]: ...

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any: ...


class ProcessActorProxy:
    """Pykka's ``ActorProxy`` for a process actor: method calls and attribute access become
    ``ProxyCall``/``ProxyGetAttr``/``ProxySetAttr`` asks, handled in the child by Pykka itself.

    Pykka's own proxy introspects the live actor object, which lives in another process here;
    the child runs the same introspection and sends the result (again if an unknown attribute
    is asked for, as Pykka does).
    """

    def __init__(self, ref: ProxiedRef, attr_path: tuple[str, ...]) -> None:
        object.__setattr__(self, "actor_ref", ref)
        object.__setattr__(self, "_attr_path", attr_path)

    def __repr__(self) -> str:
        return f"<ProcessActorProxy for {self.actor_ref}, attr_path={self._attr_path!r}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProcessActorProxy)
            and self.actor_ref is other.actor_ref
            and self._attr_path == other._attr_path
        )

    def __hash__(self) -> int:
        return hash((id(self.actor_ref), self._attr_path))

    def __dir__(self) -> list[str]:
        n = len(self._attr_path)
        names = {p[n] for p in self.actor_ref._attrs if len(p) > n and p[:n] == self._attr_path}
        return sorted(names | {"actor_ref"})

    def __getattr__(self, name: str) -> Any:
        ref = self.actor_ref
        path = (*self._attr_path, name)
        if path not in ref._attrs:
            ref._attrs = ref._request(runner.INTROSPECT, None).get(timeout=ref._opts.start_timeout)
        info = ref._attrs.get(path)
        if info is None:
            raise AttributeError(f"{self} has no attribute {name!r}")
        if info.callable:
            return CallableProxy(actor_ref=ref, attr_path=path)
        if info.traversable:
            return ProcessActorProxy(ref, path)
        return ref.ask(messages.ProxyGetAttr(attr_path=path), block=False)

    def __setattr__(self, name: str, value: Any) -> None:
        path = (*self._attr_path, name)
        self.actor_ref.ask(messages.ProxySetAttr(attr_path=path, value=value))


def start(actor_class: type[pykka.Actor], *args: Any, **kwargs: Any) -> ProcessActorRef:
    """Start ``actor_class(*args, **kwargs)`` in its own process; return once it is constructed.

    Options come from the class attribute ``process_options`` (a :class:`ProcessOptions`).
    Raises the constructor's exception if it fails, and :class:`MainModuleNotGuarded` when
    called from a script's top-level code outside ``if __name__ == "__main__":``.
    """
    check_main_guard()
    opts = getattr(actor_class, "process_options", None) or ProcessOptions()
    return ProcessActorRef(actor_class, args, kwargs, opts)
