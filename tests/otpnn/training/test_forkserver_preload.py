"""Process workers fork from a forkserver that already holds numpy and the trainer, so a worker
(re)starts in milliseconds instead of importing them again (~300 ms)."""

from __future__ import annotations

import os
import sys

import pykka

from supervision.process import start


class Probe(pykka.ThreadingActor):
    """Reports what its process had before anything of this module's could import it."""

    def on_receive(self, message: object) -> object:
        return {
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "modules": {
                m for m in ("numpy", "otpnn.training.worker", "otpnn.cli") if m in sys.modules
            },
        }


def test_a_process_actor_starts_with_the_trainer_loaded_and_one_blas_thread() -> None:
    # This module imports neither numpy nor the trainer: the child has them from the forkserver
    # (preloaded as a training job does, see tests/conftest.py and TrainingJob.start).
    probe = start(Probe)
    try:
        seen = probe.ask("what", timeout=10)
    finally:
        probe.stop(timeout=10)
    # The trainer, not the command line: training never imports the CLI (the console script's
    # own module, otpnn.entry, is small enough that a child re-importing it costs nothing).
    assert seen["modules"] == {"numpy", "otpnn.training.worker"}
    assert seen["blas_threads"] == "1"  # set before numpy loaded in the forkserver
