"""Protocol drivers: how the steps of a job are computed, one module per protocol.

==========  ==============================================  =====================================
protocol    module                                          workers
==========  ==============================================  =====================================
lockstep    :mod:`~otpnn.training.drivers.lockstep`         thread, process (x86-64); the workers
                                                            reduce and update in shared memory
stepwise    :mod:`~otpnn.training.drivers.stepwise`         any (Ray through its transport); the
                                                            coordinator reduces and updates
local-sgd   :mod:`~otpnn.training.drivers.local_sgd`        any (Ray through its transport);
                                                            algorithm local-sgd: replicas
                                                            averaged every H steps
async       :mod:`~otpnn.training.drivers.async_sgd`        any (Ray through its transport);
                                                            algorithm async: gradients on
                                                            parameters S updates old
==========  ==============================================  =====================================

A protocol is a :class:`~otpnn.training.drivers.base.Driver` subclass (its name, which backends
it supports, start/state/run/close) plus the :class:`~otpnn.training.drivers.task.WorkerTask`
messages its workers perform, in a module of its own; :data:`DRIVERS` lists the protocols of
synchronous SGD (``--algorithm sync``), in the order ``auto`` prefers them, and
:data:`ALGORITHM_DRIVERS` the driver of each other algorithm (it is that algorithm's protocol).
"""

from __future__ import annotations

from otpnn.training.drivers.async_sgd import AsyncDriver
from otpnn.training.drivers.base import Driver
from otpnn.training.drivers.local_sgd import LocalSGDDriver
from otpnn.training.drivers.lockstep import LockstepDriver
from otpnn.training.drivers.stepwise import StepwiseDriver

DRIVERS: dict[str, type[Driver]] = {d.name: d for d in (LockstepDriver, StepwiseDriver)}
ALGORITHM_DRIVERS: dict[str, type[Driver]] = {d.name: d for d in (LocalSGDDriver, AsyncDriver)}


def driver_class(protocol: str) -> type[Driver]:
    """The driver for ``protocol`` (a name in :data:`DRIVERS` or :data:`ALGORITHM_DRIVERS`,
    resolved by run options)."""
    return DRIVERS.get(protocol) or ALGORITHM_DRIVERS[protocol]
