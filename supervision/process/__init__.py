"""Process-backed actors: a Pykka actor whose behaviour runs in its own OS process.

Start one with :func:`start` (``start(MyActor, *args, **kwargs)``) or, under a supervisor, with
``kind="process"`` in its child spec. See :mod:`supervision.process.handle` for the design.
"""

from supervision.process.errors import DeadlineExceeded, RemoteError
from supervision.process.handle import (
    ProcessActorProxy,
    ProcessActorRef,
    ProcessOptions,
    ensure_forkserver,
    start,
)
from supervision.process.main_guard import MainModuleNotGuarded
from supervision.spawn import register_kind

__all__ = [
    "DeadlineExceeded",
    "MainModuleNotGuarded",
    "ProcessActorProxy",
    "ProcessActorRef",
    "ProcessOptions",
    "RemoteError",
    "ensure_forkserver",
    "start",
]

register_kind("process", lambda actor_class, args, kwargs: start(actor_class, *args, **kwargs))
