"""Imported by the process actors' forkserver, and by nothing else
(``TrainingJob.start`` names it: ``FORKSERVER_PRELOAD`` in :mod:`otpnn.training.job`).

A worker process used to import numpy and the trainer (~300 ms) at every start, and again at
every restart after a crash. Preloaded in the forkserver, they are imported once, and every
worker forked from it starts with them loaded. BLAS is made single-threaded first, before numpy
loads (see :mod:`otpnn.training.blas`); that setting is inherited by every process the
forkserver forks, which is why no other process may import this module.
"""

import os

from otpnn.training.blas import ONE_BLAS_THREAD

os.environ.update(ONE_BLAS_THREAD)

# numpy, the model (its compiled update too), the Worker and the protocols' messages. Not the
# CLI: training never imports it (the console script's own module, otpnn.entry, is small enough
# to re-import in a child).
import otpnn.training.worker  # noqa: F401
from otpnn.model import fused

fused.warm_up()  # the update's compiled pass, compiled or loaded from numba's cache once
