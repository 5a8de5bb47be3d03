"""While a training job runs in a process, BLAS there uses one thread (OpenBLAS's idle threads
would otherwise spin on the workers' cores after the Coordinator's evaluation); when the last
job of the process stops, the limits from before are back."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits
from training_support import config, dataset

from otpnn.training import TrainingJob, blas


def _blas_threads() -> int:
    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


@pytest.fixture
def two_blas_threads():
    """The test process's BLAS at two threads, whatever the environment set."""
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() != 2:
            pytest.skip("this BLAS cannot run two threads here (built or limited to one)")
        yield


def test_a_job_holds_blas_to_one_thread_while_it_runs(two_blas_threads) -> None:
    job = TrainingJob(config(workers=1, backend="process", epochs=1), dataset())
    job.start()
    try:
        assert _blas_threads() == 1
        job.wait()
    finally:
        job.stop()
    assert _blas_threads() == 2


def test_the_last_of_overlapping_jobs_restores_the_limits(two_blas_threads) -> None:
    blas.hold_one_thread()  # job A starts
    blas.hold_one_thread()  # job B starts
    blas.release_one_thread()  # job A stops: B still runs
    assert _blas_threads() == 1
    blas.release_one_thread()  # job B stops
    assert _blas_threads() == 2


def test_a_job_whose_start_fails_gives_the_threads_back(two_blas_threads, monkeypatch) -> None:
    def broken_tree(self):
        raise RuntimeError("the tree could not start")

    monkeypatch.setattr(TrainingJob, "_start_tree", broken_tree)
    job = TrainingJob(config(workers=1, backend="thread", epochs=1), dataset())
    with pytest.raises(RuntimeError, match="could not start"):
        job.run()
    assert _blas_threads() == 2
