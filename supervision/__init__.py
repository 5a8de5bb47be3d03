"""OTP supervision for Pykka actors: supervisors, monitors, links, a registry, process actors."""

from supervision.actor import Actor, Crash, ThreadActorRef
from supervision.childspec import ChildSpec
from supervision.dynamic import DynamicSupervisor, DynamicSupervisorRef
from supervision.intensity import Backoff, RestartIntensity
from supervision.links import Exit, link
from supervision.reasons import KILLED, NORMAL, SHUTDOWN, describe, is_normal_exit, shutdown
from supervision.refs import NOPROC, ActorHandle, Down, Monitor
from supervision.registry import AlreadyRegisteredError, Registry, default_registry
from supervision.spawn import register_kind, spawn
from supervision.supervisor import (
    ChildAlreadyPresentError,
    ChildInfo,
    ChildNotFoundError,
    ChildRunningError,
    GaveUp,
    MaxChildrenError,
    StartChildError,
    Supervisor,
    SupervisorError,
    SupervisorRef,
)

__all__ = [
    "KILLED",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "ActorHandle",
    "AlreadyRegisteredError",
    "Backoff",
    "ChildAlreadyPresentError",
    "ChildInfo",
    "ChildNotFoundError",
    "ChildRunningError",
    "ChildSpec",
    "Crash",
    "Down",
    "DynamicSupervisor",
    "DynamicSupervisorRef",
    "Exit",
    "GaveUp",
    "MaxChildrenError",
    "Monitor",
    "Registry",
    "RestartIntensity",
    "StartChildError",
    "Supervisor",
    "SupervisorError",
    "SupervisorRef",
    "ThreadActorRef",
    "default_registry",
    "describe",
    "is_normal_exit",
    "link",
    "register_kind",
    "shutdown",
    "spawn",
]
