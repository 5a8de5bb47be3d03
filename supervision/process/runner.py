"""The child side of a process actor: one loop that owns the actor instance.

Runs in the actor's own OS process (started by the forkserver, see :mod:`.handle`). Every message
is dispatched through Pykka's ``Actor._handle_receive``, so ``ProxyCall``/``ProxyGetAttr``/
``ProxySetAttr`` and ``on_receive`` behave exactly as in a thread actor. Lifecycle:

- ``__init__`` then ``on_start`` run here, before the first message and before the parent's
  ``start`` returns (as OTP's ``start_link`` waits for ``init``): a failure in either makes
  ``start`` raise it (``on_failure`` runs for an ``on_start`` failure);
- on a stop request: ``on_stop``, reply, exit 0;
- an exception escaping a handler (tell, ask or proxy call) crashes the actor (let it crash):
  the asker gets the exception first, then ``on_failure`` runs, the parent is sent the exception
  as the exit reason, and the process exits.

Wire format: the parent sends pickled ``(op, correlation_id, payload)``; the child answers
``(REPLY, correlation_id, ok, value)`` or, once, ``(EXIT, 0, False, exception)`` before dying.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
from collections.abc import Callable, Mapping
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any

from pykka._introspection import introspect_attrs

from supervision.process.errors import portable

TELL, ASK, STOP, INTROSPECT = 0, 1, 2, 3
REPLY, EXIT, READY = 0, 1, 2
CRASH_EXIT_CODE = 70  # EX_SOFTWARE: the parent already knows the real reason from the EXIT record

_PR_SET_PDEATHSIG = 1
_dumps = pickle.dumps
_HIGHEST = pickle.HIGHEST_PROTOCOL


def die_with_parent(expected_parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (the forkserver) dies.

    The forkserver exits when the write end of its "alive" pipe closes, which happens when the
    process that started it dies, but every forkserver child inherits a copy of that end (so
    that it could use the forkserver too): closed here, or no actor busy in a handler would
    ever die with its user. With EOF on the command pipe for idle actors, this leaves no
    orphan even when the user's process is SIGKILLed.
    """
    server: Any = forkserver._forkserver  # typeshed declares none of its private fields
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on the pipe is the only guard
        return
    if os.getppid() != expected_parent:  # parent died before prctl took effect
        os._exit(1)


class _NotAProxy:
    """Stands in for the proxy in Pykka's introspection, which skips attributes equal to it."""


def introspect(actor: Any) -> dict[tuple[str, ...], Any]:
    stand_in: Any = _NotAProxy()  # typed ActorProxy by pykka, which only compares with it
    return introspect_attrs(root=actor, proxy=stand_in)


def run(
    conn: Connection,
    payload: bytes,
    urn: str,
    env: Mapping[str, str],
    initializer: Callable[[], None] | None,
    batch_scheduling: bool,
) -> None:
    """Process entry point. ``payload`` is the pickled ``(actor_class, args, kwargs)``: it is
    unpickled only after ``env`` and ``initializer`` ran, so they can configure libraries (BLAS
    threads) before the actor's module imports them."""
    die_with_parent(os.getppid())
    if batch_scheduling and hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    # Ctrl-C goes to the whole process group: the parent decides what stops, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    if initializer is not None:
        initializer()
    try:
        actor_class, args, kwargs = pickle.loads(payload)
        actor = actor_class(*args, **kwargs)
        actor.actor_urn = urn
    except Exception as exc:
        conn.send_bytes(_dumps((READY, 0, False, portable(exc)), _HIGHEST))
        _exit(conn, CRASH_EXIT_CODE)
    try:
        actor.on_start()
    except Exception as exc:
        # on_failure first: the parent kills this process as soon as it reads the failure.
        _on_failure(actor, exc)
        conn.send_bytes(_dumps((READY, 0, False, portable(exc)), _HIGHEST))
        _exit(conn, CRASH_EXIT_CODE)
    conn.send_bytes(_dumps((READY, 0, True, introspect(actor)), _HIGHEST))
    _exit(conn, _serve(conn, actor))


def _exit(conn: Connection, code: int) -> None:
    # os._exit skips interpreter teardown: nothing left for it to do, and it cannot hang on a
    # stray non-daemon thread the actor started. Closing the pipe first is what the parent sees.
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(conn: Connection, actor: Any) -> int:
    """Run messages until a stop request (0), a crash or a lost parent (non-zero)."""
    recv, send, handle = conn.recv_bytes, conn.send_bytes, actor._handle_receive
    loads = pickle.loads
    while True:
        try:
            op, corr, message = loads(recv())
        except EOFError:  # the parent is gone: nobody is left to talk to
            return 1
        if op == STOP:
            try:
                actor.on_stop()
            except Exception as exc:
                return _crash(conn, actor, exc)
            send(_dumps((REPLY, corr, True, None), _HIGHEST))
            return 0
        if op == INTROSPECT:
            send(_dumps((REPLY, corr, True, introspect(actor)), _HIGHEST))
            continue
        try:
            result = handle(message)
        except Exception as exc:
            err = portable(exc)
            if op == ASK:
                send(_dumps((REPLY, corr, False, err), _HIGHEST))
            return _crash(conn, actor, exc, err)
        if op == ASK:
            _reply(send, corr, True, result)


def _reply(send: Callable[[bytes], None], corr: int, ok: bool, value: Any) -> None:
    try:
        data = _dumps((REPLY, corr, ok, value), _HIGHEST)
    except Exception as exc:  # an unpicklable result is the caller's error, not a crash
        err = TypeError(f"reply could not be pickled: {type(exc).__name__}: {exc}")
        data = _dumps((REPLY, corr, False, portable(err)), _HIGHEST)
    send(data)


def _crash(conn: Connection, actor: Any, exc: Exception, err: BaseException | None = None) -> int:
    """Let it crash: run ``on_failure``, hand the parent the reason (``err``, the already
    portable form of ``exc`` if there is one), exit non-zero."""
    _on_failure(actor, exc)
    with contextlib.suppress(OSError):  # the parent may be gone already
        conn.send_bytes(_dumps((EXIT, 0, False, err or portable(exc)), _HIGHEST))
    return CRASH_EXIT_CODE


def _on_failure(actor: Any, exc: Exception) -> None:
    """Run the actor's ``on_failure`` hook; a hook that raises too is noted on ``exc``."""
    try:
        actor.on_failure(type(exc), exc, exc.__traceback__)
    except Exception as hook_exc:
        exc.add_note(f"on_failure raised too: {type(hook_exc).__name__}: {hook_exc}")
