"""Restart intensity (OTP's MaxR restarts in MaxT seconds) and an optional restart backoff.

The clock is injectable so that tests can move time instead of sleeping.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

DEFAULT_MAX_RESTARTS = 3
DEFAULT_MAX_SECONDS = 5.0
"""Elixir's defaults (Erlang's are 1 restart in 5 s)."""


class RestartIntensity:
    """Counts restarts in a sliding window, as ``supervisor:add_restart/1`` does.

    :meth:`add` records one restart (a group restart under one_for_all or rest_for_one is one
    call) and returns False when it makes more than ``max_restarts`` within ``max_seconds``:
    the supervisor must then give up. Restarts older than ``now - max_seconds`` are forgotten.
    OTP counts in whole seconds; this counts in the clock's float seconds.
    """

    def __init__(
        self,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        if not isinstance(max_seconds, int | float) or max_seconds <= 0:
            raise ValueError(f"max_seconds must be a number > 0, got {max_seconds!r}")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._times: deque[float] = deque()

    def add(self) -> bool:
        """Record a restart now; False if that exceeds the intensity."""
        now = self._clock()
        self._times.append(now)
        threshold = now - self.max_seconds
        while self._times and self._times[0] < threshold:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    @property
    def recent(self) -> int:
        """Restarts currently inside the window (counting the one just added)."""
        return len(self._times)


@dataclass(frozen=True)
class Backoff:
    """Wait before a restart: ``min_seconds * 2**(n-1)`` for the n-th restart inside the
    intensity window, capped at ``max_seconds``, times a random factor in
    ``[1, 1 + jitter]`` so that many children crashing together do not restart in lockstep.

    Off by default in supervisors (OTP restarts at once). Beyond OTP: useful when a crash is
    caused by something outside (a file, a device) that needs time to come back.
    """

    min_seconds: float = 0.1
    max_seconds: float = 10.0
    jitter: float = 0.2
    rng: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"Backoff needs 0 <= min_seconds <= max_seconds, got "
                f"{self.min_seconds!r} and {self.max_seconds!r}"
            )
        if self.jitter < 0:
            raise ValueError(f"Backoff.jitter must be >= 0, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based) in the window."""
        base = min(self.max_seconds, self.min_seconds * 2 ** max(0, attempt - 1))
        return min(self.max_seconds, base * (1.0 + self.jitter * self.rng()))
