"""Exit reasons, as in Erlang/OTP.

An actor's exit reason is one of:

- ``NORMAL`` (``"normal"``): it stopped because it was asked to, or finished its job;
- ``SHUTDOWN`` (``"shutdown"``) or ``("shutdown", term)``: its supervisor (or owner) shut it down;
- ``KILLED`` (``"killed"``): it was killed without a chance to clean up (brutal_kill, or a
  shutdown timeout that ran out);
- an exception instance: it crashed. Process-backed actors add two exception types for deaths
  that are not Python exceptions: :class:`ExitedWithCode` and :class:`KilledBySignal`.

Values, not classes, are used for the three atoms so that a reason reads like OTP's in logs and
compares with ``==``.
"""

from __future__ import annotations

import signal
from typing import Any, TypeAlias

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILLED = "killed"

Reason: TypeAlias = str | tuple[str, Any] | BaseException


class ExitedWithCode(Exception):
    """A process-backed actor's process exited (``sys.exit``/``os._exit``) with a non-zero code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"process exited with code {code}")
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code,))


class KilledBySignal(Exception):
    """A process-backed actor's process was terminated by a signal (SIGKILL, SIGSEGV, ...)."""

    def __init__(self, signum: int) -> None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"process killed by {name}")
        self.signum = signum

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.signum,))


def shutdown(term: Any) -> tuple[str, Any]:
    """The reason ``{shutdown, Term}``: a shutdown that carries an explanation."""
    return (SHUTDOWN, term)


def is_shutdown(reason: Reason) -> bool:
    """True for ``shutdown`` and ``(shutdown, term)``."""
    return reason == SHUTDOWN or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN
    )


def is_normal_exit(reason: Reason) -> bool:
    """True for the reasons OTP treats as normal: ``normal``, ``shutdown``, ``(shutdown, term)``.

    A transient child is restarted only when this is False; monitors and links see every reason.
    """
    return reason == NORMAL or is_shutdown(reason)


def describe(reason: Reason) -> str:
    """A one-line human description of a reason, for logs and error messages."""
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return repr(reason) if isinstance(reason, tuple) else str(reason)
