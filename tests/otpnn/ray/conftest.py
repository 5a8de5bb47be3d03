"""Ray trainer tests: one local Ray (2 CPUs) for the session. Each test module skips itself,
saying why, where Ray is not installed; Ray is imported only once a test needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def ray_cluster() -> Iterator[None]:
    from ray_session import local_ray

    with local_ray():
        yield
