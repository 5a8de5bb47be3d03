"""Protocol drivers: how the steps of a job are computed, one module per protocol.

=================  =================================================  ===========================
protocol           module                                             workers
=================  =================================================  ===========================
lockstep           :mod:`~otpnn.training.drivers.lockstep`            thread, process (x86-64);
                                                                      the workers reduce and
                                                                      update in shared memory
stepwise           :mod:`~otpnn.training.drivers.stepwise`            any (Ray through its
                                                                      transport); the
                                                                      coordinator reduces and
                                                                      updates
local-sgd-lockstep :mod:`~otpnn.training.drivers.local_sgd_lockstep`  thread, process (x86-64);
                                                                      the workers train rounds
                                                                      and average them
local-sgd-stepwise :mod:`~otpnn.training.drivers.local_sgd`           any (Ray through its
                                                                      transport); shares sent
                                                                      per round, the driver
                                                                      averages them
async-lockstep     :mod:`~otpnn.training.drivers.async_lockstep`      thread, process (x86-64);
                                                                      each worker computes and
                                                                      applies whole updates
async-stepwise     :mod:`~otpnn.training.drivers.async_stepwise`      any (Ray through its
                                                                      transport); the
                                                                      coordinator applies them
=================  =================================================  ===========================

A protocol is a :class:`~otpnn.training.drivers.base.Driver` subclass (its name, which backends
it supports, start/state/run/close) plus the :class:`~otpnn.training.drivers.task.WorkerTask`
messages its workers perform, in a module of its own. :data:`ALGORITHM_PROTOCOLS` lists each
algorithm's protocols under the names ``--protocol`` gives them, in the order ``auto``
prefers them; :data:`DRIVERS` are synchronous SGD's (``--algorithm sync``).
"""

from __future__ import annotations

from otpnn.training.drivers.async_lockstep import AsyncLockstepDriver
from otpnn.training.drivers.async_stepwise import AsyncStepwiseDriver
from otpnn.training.drivers.base import Driver
from otpnn.training.drivers.local_sgd import LocalSGDDriver
from otpnn.training.drivers.local_sgd_lockstep import LocalSGDLockstepDriver
from otpnn.training.drivers.lockstep import LockstepDriver
from otpnn.training.drivers.stepwise import StepwiseDriver

DRIVERS: dict[str, type[Driver]] = {d.name: d for d in (LockstepDriver, StepwiseDriver)}
ALGORITHM_PROTOCOLS: dict[str, dict[str, type[Driver]]] = {
    "sync": DRIVERS,
    "async": {"lockstep": AsyncLockstepDriver, "stepwise": AsyncStepwiseDriver},
    "local-sgd": {"lockstep": LocalSGDLockstepDriver, "stepwise": LocalSGDDriver},
}


def driver_class(protocol: str) -> type[Driver]:
    """The driver named ``protocol`` (a driver's ``name``, as run options resolve it)."""
    for drivers in ALGORITHM_PROTOCOLS.values():
        for driver in drivers.values():
            if driver.name == protocol:
                return driver
    raise KeyError(protocol)
