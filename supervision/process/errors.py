"""How exceptions cross the process boundary, and the errors only process actors raise.

An exception raised in a child must reach the parent as the same type whenever pickle can carry
it, so that ``except ValueError`` works the same for thread and process actors. Its traceback
object cannot cross, so its text is attached as a note (``__notes__``, shown by the default
traceback printer) and as ``remote_traceback``. When the exception cannot be pickled (a local
class, an unpicklable attribute, a custom ``__init__`` that pickle cannot call back), the caller
gets a :class:`RemoteError` that keeps the original type name, message and traceback text.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any


class RemoteError(Exception):
    """An exception from a process actor that could not be pickled back as itself."""

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = traceback_text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.remote_traceback}"


class DeadlineExceeded(Exception):
    """Exit reason of a process actor killed because an ask's deadline ran out.

    Only used when the actor was started with ``ask_deadline_is_failure``: the actor is then
    treated as hung, killed, and its supervisor restarts it per strategy.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no reply within {timeout} s: actor treated as hung and killed")
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.timeout,))


def portable(exc: BaseException) -> BaseException:
    """Return ``exc`` (with its traceback text attached) if it survives pickling, else a
    :class:`RemoteError` describing it. Called in the child before sending an exception."""
    text = "".join(traceback.format_exception(exc))
    try:
        exc.__dict__["remote_traceback"] = text  # an attribute of our own on any exception
        exc.add_note(f"Remote traceback (from the actor's process):\n{text}")
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RemoteError(type(exc).__qualname__, str(exc), text)
    return exc
