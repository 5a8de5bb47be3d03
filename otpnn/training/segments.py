"""The shared-memory segments of training jobs, named ``otpnn_<pid>_<random>`` in /dev/shm.

One prefix for everything a job shares (the Loader's dataset, the drivers' parameters,
gradients and control cells), so that an operator (and the tests' leak checks) can tell them
from other programs' segments; the creator's pid in the name says whose they are.
"""

from __future__ import annotations

from typing import Any

from supervision.shm import SharedArray

PREFIX = "otpnn_"


def create(shape: tuple[int, ...] | int, dtype: Any) -> SharedArray:
    """A zero-filled segment owned by this process (which must unlink it)."""
    return SharedArray.create(shape, dtype, prefix=PREFIX)
