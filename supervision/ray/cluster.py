"""Connecting to Ray: start a local instance, or join a cluster, and know which one to stop.

Whoever connects disconnects: :meth:`RayConnection.close` stops a local instance started here
and leaves a cluster joined by address (only this driver disconnects); a Ray that was already
connected (a test session, an application that called ``ray.init`` itself) is left alone.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import ray

# A local instance keeps no idle worker processes: every Ray process that exists belongs to a
# live actor or to Ray's own services, so "nothing left running" is checkable (tests, the CLI).
_LOCAL_SYSTEM_CONFIG = {"num_workers_soft_limit": 0, "enable_worker_prestart": False}


@dataclass
class RayConnection:
    """A connected Ray; ``owned`` if :func:`connect` connected it (then :meth:`close` ends it)."""

    address: str | None
    owned: bool
    startup_seconds: float

    def close(self) -> None:
        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False


def connect(address: str | None = None, *, num_cpus: int | None = None) -> RayConnection:
    """Join the cluster at ``address`` (``ray://`` client or ``host:port`` of a head node), or
    start a local Ray with ``num_cpus`` CPUs; reuse Ray if this process is already connected."""
    if ray.is_initialized():
        return RayConnection(address, owned=False, startup_seconds=0.0)
    started = time.perf_counter()
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _system_config=_LOCAL_SYSTEM_CONFIG,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        _check_reachable(address)
        _check_admitted(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            # Ray says why at the end of its cause's text (e.g. a missing auth token).
            lines = [line for line in str(exc.__cause__ or "").splitlines() if line.strip()]
            why = f": {lines[-1].strip()}" if lines else ""
            raise ConnectionError(f"could not join the Ray cluster at {address}{why}") from exc
    return RayConnection(address, owned=True, startup_seconds=time.perf_counter() - started)


def _check_admitted(address: str) -> None:
    """Fail at once if the cluster refuses this process (token authentication, Ray 2.59+,
    without RAY_AUTH_MODE=token and the head's token here): one GCS client asks, and is told
    within milliseconds, where ``ray.init`` retries for ~20 s first. A Ray without these
    (internal) classes is left to ``ray.init``."""
    if "://" in address or ":" not in address:
        return
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # not in ray's stubs
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    try:
        GcsClient(address=address)
    except AuthenticationError as exc:
        raise ConnectionError(f"could not join the Ray cluster at {address}: {exc}") from exc


def _check_reachable(address: str) -> None:
    """Fail at once if nothing listens at a ``host:port`` address (Ray itself retries for a
    minute before giving up); other forms (``ray://``, ``auto``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(
            f"no Ray head node answers at {address} ({exc.strerror or exc}): start one there "
            "with `ray start --head`, or leave out --ray-address for a local Ray"
        ) from exc
