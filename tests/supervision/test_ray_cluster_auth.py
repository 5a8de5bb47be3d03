"""Joining a Ray cluster that wants a token this process lacks fails at once with Ray's reason,
instead of after ~20 s of ``ray.init``'s retries (measured: 21.8 s before, 1.0 s after, with a
real `ray start --head` of Ray 2.60 and no token; not started here: `ray stop` is machine-wide)."""

from __future__ import annotations

import socket

import pytest

ray = pytest.importorskip("ray")
from ray import _raylet  # noqa: E402
from ray.exceptions import AuthenticationError  # noqa: E402

from supervision.ray import cluster  # noqa: E402


def test_a_token_refusal_is_one_error_before_ray_init(monkeypatch) -> None:
    asked = []

    def refusing_client(address: str) -> None:
        asked.append(address)
        raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")

    def no_init(**_kw: object) -> None:
        raise AssertionError("ray.init must not be reached (it retries for ~20 s)")

    monkeypatch.setattr(_raylet, "GcsClient", refusing_client)
    monkeypatch.setattr(cluster.ray, "init", no_init)
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    with socket.create_server(("127.0.0.1", 0)) as head:  # something listens: reachable
        address = f"127.0.0.1:{head.getsockname()[1]}"
        with pytest.raises(ConnectionError, match="InvalidAuthToken") as err:
            cluster.connect(address)
    assert asked == [address]
    assert f"could not join the Ray cluster at {address}" in str(err.value)
