"""Protocol drivers: how the steps of a job are computed, one module per protocol.

==========  ==============================================  =====================================
protocol    module                                          workers
==========  ==============================================  =====================================
lockstep    :mod:`~otpnn.training.drivers.lockstep`         thread, process (x86-64); the workers
                                                            reduce and update in shared memory
stepwise    :mod:`~otpnn.training.drivers.stepwise`         any (Ray through its transport); the
                                                            coordinator reduces and updates
==========  ==============================================  =====================================

A protocol is a :class:`~otpnn.training.drivers.base.Driver` subclass (its name, which backends
it supports, start/state/run/close) plus the :class:`~otpnn.training.drivers.task.WorkerTask`
messages its workers perform, in a module of its own; :data:`DRIVERS` lists them, in the order
``auto`` prefers them.
"""

from __future__ import annotations

from otpnn.training.drivers.base import Driver
from otpnn.training.drivers.lockstep import LockstepDriver
from otpnn.training.drivers.stepwise import StepwiseDriver

DRIVERS: dict[str, type[Driver]] = {d.name: d for d in (LockstepDriver, StepwiseDriver)}


def driver_class(protocol: str) -> type[Driver]:
    """The driver for ``protocol`` (a name in :data:`DRIVERS`, resolved by run options)."""
    return DRIVERS[protocol]
