"""One entry point to start an actor of any kind: :func:`spawn`.

Kinds are looked up by name in a small registry, so that a new kind of actor (processes, Ray)
plugs in without anything that starts actors (supervisors, child specs) knowing about it. The
``thread`` kind is built in; ``process`` registers itself when :mod:`supervision.process` is
first imported, which :func:`spawn` does lazily.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

from supervision.refs import ActorHandle

KindFactory = Callable[[type, tuple[Any, ...], dict[str, Any]], ActorHandle]

_kinds: dict[str, KindFactory] = {}
_lock = threading.Lock()
_LAZY_MODULES = {"process": "supervision.process", "ray": "supervision.ray"}


def register_kind(name: str, factory: KindFactory) -> None:
    """Make ``spawn(cls, ..., kind=name)`` call ``factory(cls, args, kwargs)``."""
    with _lock:
        _kinds[name] = factory


def _factory(kind: str) -> KindFactory:
    with _lock:
        factory = _kinds.get(kind)
    if factory is None and kind in _LAZY_MODULES:
        module = importlib.import_module(_LAZY_MODULES[kind])
        with _lock:
            factory = _kinds.get(kind)
        if factory is None and callable(getattr(module, "start", None)):
            # The module offers start(cls, *args, **kwargs) but did not register itself.
            start = module.start
            factory = lambda cls, args, kwargs: start(cls, *args, **kwargs)  # noqa: E731
            register_kind(kind, factory)
    if factory is None:
        known = sorted({*_kinds, *_LAZY_MODULES})
        raise ValueError(f"unknown actor kind {kind!r}; known kinds: {known}")
    return factory


def spawn(actor_class: type, *args: Any, kind: str = "thread", **kwargs: Any) -> ActorHandle:
    """Start ``actor_class(*args, **kwargs)`` as an actor of ``kind``; return its handle.

    Raises whatever the actor's construction (or, for threads, ``on_start``) raised.
    """
    return _factory(kind)(actor_class, args, kwargs)


def _spawn_thread(actor_class: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActorHandle:
    from supervision.actor import Actor

    if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
        raise TypeError(f"kind='thread' needs a subclass of supervision.Actor, got {actor_class!r}")
    return actor_class.start(*args, **kwargs)


register_kind("thread", _spawn_thread)
