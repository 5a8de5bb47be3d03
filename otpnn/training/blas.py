"""BLAS threads: one per worker process, and one in a process while a training job runs in it.

A worker uses one core: N workers use N cores, and results do not depend on how many threads
BLAS would otherwise pick. Limiting BLAS after numpy loaded (threadpoolctl) leaves OpenBLAS's
idle threads competing with the other workers, and a process that forks children must not hold
BLAS threads: hence the environment of worker processes, set before numpy loads (this module
imports nothing heavy at import time).

The process that hosts a job (the CLI, the service, a user's script) keeps its BLAS threads, and
OpenBLAS's idle threads spin for a while after each threaded call: the Coordinator's epoch-end
evaluation would leave one spinning into the next epoch, on the workers' cores (measurements in
benchmarks/README.md). So while any job runs in a process, BLAS there uses one thread. Jobs are
counted rather than each limiting its own evaluation, so the result does not depend on the order in
which the service's concurrent jobs start and stop; the last job to stop restores what was set
before.
"""

from __future__ import annotations

import threading
from typing import Any

ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_lock = threading.Lock()
_jobs = 0
_limiter: Any = None  # threadpoolctl's limiter while _jobs > 0: it knows the limits to restore


def hold_one_thread() -> None:
    """A job starts in this process: BLAS here uses one thread until the last job releases."""
    global _jobs, _limiter
    from threadpoolctl import threadpool_limits  # not at import: workers import this module first

    with _lock:
        if _jobs == 0:
            _limiter = threadpool_limits(limits=1)
        _jobs += 1


def release_one_thread() -> None:
    """A job that held one thread stopped; the last one restores the previous limits."""
    global _jobs, _limiter
    with _lock:
        _jobs -= 1
        if _jobs == 0 and _limiter is not None:
            _limiter.restore_original_limits()
            _limiter = None
