"""A name -> current actor registry (Elixir's ``Registry`` with unique keys, or ``register/2``).

A supervisor registers a child that has a ``name`` in its spec every time it starts it, so
``whereis(name)`` finds the current incarnation after restarts. An entry disappears when its
actor exits (the registry monitors it), so between a crash and the restart ``whereis`` returns
None rather than a dead ref.
"""

from __future__ import annotations

import threading

from supervision.refs import ActorHandle, Down, Monitor


class AlreadyRegisteredError(ValueError):
    """The name belongs to another live actor."""

    def __init__(self, name: str, holder: ActorHandle) -> None:
        super().__init__(f"name {name!r} is already registered to {holder}")
        self.name = name
        self.holder = holder


class Registry:
    """Thread-safe unique names for live actors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[ActorHandle, Monitor]] = {}

    def register(self, name: str, handle: ActorHandle) -> None:
        """Bind ``name`` to ``handle`` until it exits. Raises :class:`AlreadyRegisteredError` if
        another live actor holds the name."""
        with self._lock:
            current = self._entries.get(name)
            if current is not None and current[0] is not handle and current[0].is_alive():
                raise AlreadyRegisteredError(name, current[0])
        monitor = handle.monitor(lambda down: self._on_down(name, down))
        with self._lock:
            if handle.is_alive():
                self._entries[name] = (handle, monitor)

    def unregister(self, name: str) -> None:
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is not None:
            entry[0].demonitor(entry[1])

    def whereis(self, name: str) -> ActorHandle | None:
        """The live actor registered as ``name``, or None."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or not entry[0].is_alive():
            return None
        return entry[0]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def _on_down(self, name: str, down: Down) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry[1] == down.monitor:
                del self._entries[name]


default_registry = Registry()
"""The registry supervisors use unless given another one."""
