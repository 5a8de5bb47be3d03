"""Ray trainer tests: one local Ray (2 CPUs) for the session; skipped where Ray is missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'otpnn[ray]'")

from ray_session import local_ray


@pytest.fixture(scope="session", autouse=True)
def ray_cluster() -> Iterator[None]:
    with local_ray():
        yield
