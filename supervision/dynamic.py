"""DynamicSupervisor: children started at run time, one_for_one, optional ``max_children``.

As Elixir's ``DynamicSupervisor``: no children at start, ``start_child(spec)`` returns the new
child's handle, children are identified by their handle (ids need not be unique), a child that
exits and is not restarted is forgotten, and ``terminate_child(handle)`` removes it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from supervision.actor import ThreadActorRef
from supervision.childspec import ChildSpec
from supervision.intensity import DEFAULT_MAX_RESTARTS, DEFAULT_MAX_SECONDS, Backoff, Clock
from supervision.refs import ActorHandle
from supervision.registry import Registry
from supervision.supervisor import (
    ChildNotFoundError,
    SupervisorActor,
    _config,
    _SupervisorRefBase,
)


class DynamicSupervisorRef(_SupervisorRefBase):
    """Handle of a :class:`DynamicSupervisor`."""

    def terminate_child(self, child: ActorHandle, *, timeout: float | None = None) -> None:
        """Stop ``child`` (per its shutdown spec) and forget it."""
        self._call("terminate_child", child, timeout=timeout)


class _DynamicSupervisorActor(SupervisorActor):
    ref_class: ClassVar[type[ThreadActorRef]] = DynamicSupervisorRef

    def _api_terminate_child(self, handle: Any) -> None:
        child = next((c for c in self._children if c.handle is handle), None)
        if child is None:
            raise ChildNotFoundError(f"supervisor {self.sup_id}: {handle} is not a child")
        super()._api_terminate_child(child.key)


class DynamicSupervisor:
    """Start dynamic supervisors."""

    @staticmethod
    def start_link(
        *,
        max_children: int | None = None,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        backoff: Backoff | None = None,
        name: str | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> DynamicSupervisorRef:
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 0
        ):
            raise ValueError(f"max_children must be an int >= 0 or None, got {max_children!r}")
        config = _config(
            "one_for_one",
            max_restarts,
            max_seconds,
            backoff,
            name,
            registry,
            clock,
            max_children=max_children,
            dynamic=True,
        )
        ref = _DynamicSupervisorActor.start([], config)
        assert isinstance(ref, DynamicSupervisorRef)  # its ref_class
        return ref

    @staticmethod
    def child_spec(
        id: Any,
        *,
        restart: Any = "permanent",
        shutdown: Any = None,
        **options: Any,
    ) -> ChildSpec:
        """A ``type="supervisor"`` child spec for a dynamic supervisor."""
        options.setdefault("name", str(id))
        return ChildSpec(
            id=id,
            start=lambda: DynamicSupervisor.start_link(**options),
            restart=restart,
            shutdown=shutdown,
            type="supervisor",
            kind="thread",
        )
