"""Child specifications, validated when they are made (OTP's ``child_spec()`` map).

``ChildSpec(id, start, restart, shutdown, type)``: ``start`` is a zero-argument callable that
returns a running actor's :class:`~supervision.refs.ActorHandle` (for ``type="supervisor"``, a
supervisor's handle). :meth:`ChildSpec.actor` builds ``start`` from an actor class and a kind.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from supervision.refs import ActorHandle

Restart = Literal["permanent", "transient", "temporary"]
Shutdown = float | Literal["brutal_kill", "infinity"]
ChildType = Literal["worker", "supervisor"]

RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
WORKER_SHUTDOWN = 5.0
"""OTP's default shutdown for workers (5000 ms); supervisors default to ``infinity``."""


@dataclass(frozen=True)
class ChildSpec:
    """How to start, restart and stop one child.

    - ``restart``: ``permanent`` (always restarted), ``transient`` (restarted only after an
      abnormal exit, i.e. not ``normal``/``shutdown``/``(shutdown, term)``), ``temporary`` (never).
    - ``shutdown``: seconds to wait for a clean stop before killing, ``"brutal_kill"`` (kill at
      once) or ``"infinity"`` (wait as long as it takes). Default: 5.0 for workers, infinity for
      supervisors, as in OTP.
    - ``name``: registered in the supervisor's :class:`~supervision.registry.Registry` so that
      ``whereis(name)`` finds the current incarnation.
    - ``kind``: recorded for ``which_children`` (set by :meth:`actor`).
    """

    id: Hashable
    start: Callable[[], ActorHandle]
    restart: Restart = "permanent"
    shutdown: Shutdown | None = None
    type: ChildType = "worker"
    name: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError:
            raise TypeError(f"ChildSpec.id must be hashable, got {self.id!r}") from None
        if self.id is None:
            raise ValueError("ChildSpec.id must not be None")
        if not callable(self.start):
            raise TypeError(
                f"ChildSpec.start must be a zero-argument callable returning an actor handle, "
                f"got {self.start!r} (child {self.id!r})"
            )
        if self.restart not in RESTARTS:
            raise ValueError(
                f"ChildSpec.restart must be one of {RESTARTS}, got {self.restart!r} "
                f"(child {self.id!r})"
            )
        if self.type not in TYPES:
            raise ValueError(
                f"ChildSpec.type must be one of {TYPES}, got {self.type!r} (child {self.id!r})"
            )
        if self.shutdown is None:
            default = WORKER_SHUTDOWN if self.type == "worker" else "infinity"
            object.__setattr__(self, "shutdown", default)
        elif not _valid_shutdown(self.shutdown):
            raise ValueError(
                "ChildSpec.shutdown must be a number of seconds >= 0, 'brutal_kill' or "
                f"'infinity', got {self.shutdown!r} (child {self.id!r})"
            )
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"ChildSpec.name must be a str or None, got {self.name!r}")

    @classmethod
    def actor(
        cls,
        id: Hashable,
        actor_class: builtins.type,
        *args: Any,
        kind: str = "thread",
        restart: Restart = "permanent",
        shutdown: Shutdown | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> ChildSpec:
        """A worker started with ``spawn(actor_class, *args, kind=kind, **kwargs)``."""
        from supervision.spawn import spawn

        return cls(
            id=id,
            start=partial(spawn, actor_class, *args, kind=kind, **kwargs),
            restart=restart,
            shutdown=shutdown,
            type="worker",
            name=name,
            kind=kind,
        )


def _valid_shutdown(value: object) -> bool:
    if value in ("brutal_kill", "infinity"):
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0
