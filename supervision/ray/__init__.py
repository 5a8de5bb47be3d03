"""Ray-backed actors: a Pykka actor whose behaviour runs as a Ray actor, on any cluster node.

Start one with :func:`start` (``start(MyActor, *args)``) or, under a supervisor, with
``kind="ray"`` in its child spec, once Ray is connected (:func:`connect`). See
:mod:`supervision.ray.handle` for how a Ray actor maps onto the ActorHandle protocol.
"""

try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("actor kind 'ray' needs Ray: pip install 'ray>=2.9,<3'") from exc

from supervision.ray.cluster import RayConnection, connect
from supervision.ray.handle import RayActorRef, RayOptions, start
from supervision.spawn import register_kind

__all__ = ["RayActorRef", "RayConnection", "RayOptions", "connect", "start"]

register_kind("ray", lambda actor_class, args, kwargs: start(actor_class, *args, **kwargs))
