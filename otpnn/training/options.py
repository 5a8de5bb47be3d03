"""A job's run options, and the one place that checks them against its config.

The CLI, the service and the Python API all call :func:`resolve` (``TrainingJob`` does on
construction), so a combination is accepted or refused the same way everywhere, with the same
message, before anything starts:

- the protocol: the caller's wish (``auto``, ``lockstep`` or ``stepwise``) among the
  algorithm's protocols, against what the backend's workers and this machine support; ``auto``
  takes the first that can (see :mod:`otpnn.training.drivers`);
- fault targets: a fault for worker I needs I < the worker count;
- Ray: ``ray_address`` only with the ray backend, which needs Ray installed;
- resuming needs a checkpoint directory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass

from otpnn.config import TrainConfig
from otpnn.errors import UsageError
from otpnn.faults import Chaos, Fault
from otpnn.training.drivers import ALGORITHM_PROTOCOLS, DRIVERS

AUTO = "auto"
PROTOCOLS = (AUTO, *DRIVERS)  # what a caller may ask for


class OptionsError(UsageError, ValueError):
    """Run options that do not fit together or with the config; the message says which."""


@dataclass(frozen=True)
class JobOptions:
    """How a job runs, beside what it computes (the :class:`TrainConfig`)."""

    faults: tuple[Fault, ...] = ()
    chaos: Chaos | None = None
    checkpoint_dir: str | None = None
    resume: bool = False
    step_timeout: float = 30.0
    max_restarts: int = 3
    max_seconds: float = 5.0
    ray_address: str | None = None  # backend "ray": join this cluster (None: a local Ray)
    protocol: str = AUTO  # a name in PROTOCOLS; auto: the first driver the backend supports


@dataclass(frozen=True)
class RunPlan:
    """What :func:`resolve` decided: the worker count and the protocol's driver name."""

    workers: int
    protocol: str


def default_workers() -> int:
    """The worker count when none is given on the command line or in a request: the cores."""
    return os.cpu_count() or 1


def resolve(config: TrainConfig, options: JobOptions) -> RunPlan:
    """Check ``options`` against ``config``; OptionsError naming the first misfit.

    ``config.workers`` None means one worker here (the CLI and the service put
    :func:`default_workers` into the config first)."""
    workers = config.workers or 1
    if options.ray_address is not None and config.backend != "ray":
        raise OptionsError("--ray-address needs --backend ray")
    if config.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise OptionsError(
            "--backend ray needs Ray, which is not installed: pip install 'otpnn[ray]'"
        )
    if options.resume and not options.checkpoint_dir:
        raise OptionsError("--resume needs --checkpoint-dir (where the checkpoint is)")
    check_fault_targets(options.faults, workers)
    return RunPlan(workers, resolve_protocol(config.algorithm, config.backend, options.protocol))


def resolve_protocol(algorithm: str, backend: str, wish: str) -> str:
    """The driver (its name) that runs ``algorithm`` on ``backend``'s workers: the protocol
    ``wish`` if it can, else OptionsError; for ``auto`` the algorithm's first that can."""
    protocols = ALGORITHM_PROTOCOLS[algorithm]
    if wish == AUTO:
        for driver in protocols.values():
            if driver.unsupported(backend) is None:
                return driver.name
        raise OptionsError(f"no protocol supports the {backend} backend on this machine")
    wished = protocols.get(wish)
    if wished is None and wish not in DRIVERS:
        raise OptionsError(f"unknown protocol {wish!r}; expected one of {', '.join(PROTOCOLS)}")
    if wished is None:
        raise OptionsError(
            f"--protocol {wish} is not one of --algorithm {algorithm}'s: {', '.join(protocols)}"
        )
    why = wished.unsupported(backend)
    if why is not None:
        raise OptionsError(f"--protocol {wish} with --backend {backend}: {why}")
    return wished.name


def check_fault_targets(faults: Iterable[Fault], workers: int) -> None:
    """A fault for worker I needs a worker I (``worker=any`` fits every job)."""
    for fault in faults:
        if fault.target == "worker" and fault.worker is not None and fault.worker >= workers:
            raise OptionsError(f"fault {fault}: this job has workers 0..{workers - 1}")
