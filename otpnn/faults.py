"""Fault plans: break a training job on purpose, at a chosen point, repeatably.

A fault is written ``KIND:TARGET@WHEN``::

    KIND    crash | kill | hang | exit | slow=SECONDS
    TARGET  worker=I | worker=any | loader | coordinator | pool
    WHEN    step=N | epoch=N | shard=N        (all numbered from 1)

``step=N`` fires during the N-th optimisation step of the job, ``epoch=N`` at the first step of
epoch N, ``shard=N`` on the N-th micro-shard of the job (steps x shards per batch, counted in
order). Each planned fault fires once: the redo after recovery does not trip it again, which is
what makes a faulty run comparable with a fault-free one.

What each kind does to its target:

- ``crash``: the actor raises :class:`InjectedCrash` in a message handler (let it crash).
- ``kill``: a process actor gets SIGKILL; a thread actor cannot be killed in Python, so the
  nearest equivalent is its handle's ``kill()``: marked dead at once with reason ``killed``, its
  pending asks fail, and its thread abandons the message.
- ``hang``: the actor stops answering until it is killed (the caller's deadline runs out, it
  kills the actor, the supervisor restarts it). A hung thread actor wakes when killed and leaves
  without side effects.
- ``exit``: a process actor calls ``os._exit(3)``; a thread actor exits with the same reason a
  process would report, ``ExitedWithCode(3)``.
- ``slow=SECONDS``: the actor sleeps that long, then does its work: a delay, not a failure.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from otpnn.errors import UsageError
from supervision.reasons import ExitedWithCode

KINDS = ("crash", "kill", "hang", "exit", "slow")
TARGETS = ("worker", "loader", "coordinator", "pool")
WHENS = ("step", "epoch", "shard")
EXIT_CODE = 3

GRAMMAR = """\
fault spec grammar: KIND:TARGET@WHEN
  KIND    crash | kill | hang | exit | slow=SECONDS
  TARGET  worker=I | worker=any | loader | coordinator | pool (crash or kill only)
  WHEN    step=N | epoch=N | shard=N   (numbered from 1; shard for workers only)
examples: crash:worker=1@step=10  kill:worker=0@step=25  hang:worker=any@shard=7
          crash:coordinator@step=40  crash:loader@epoch=2  slow=0.5:worker=any@step=3"""

_SPEC = re.compile(r"^(?P<kind>[^:@]+):(?P<target>[^@]+)@(?P<when>.+)$")


class FaultSpecError(UsageError, ValueError):
    """A fault spec that does not parse; the message names the bad part and shows the grammar."""

    def __init__(self, spec: str, problem: str) -> None:
        super().__init__(f"bad fault spec {spec!r}: {problem}\n{GRAMMAR}")


class InjectedCrash(RuntimeError):
    """The exception an injected ``crash`` raises."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str
    when: str
    at: int
    worker: int | None = None  # for target "worker": an index, or None for "any"
    seconds: float = 0.0  # for kind "slow"

    @property
    def action(self) -> str:
        """What the target is told to do: the kind, with its seconds for ``slow``."""
        return f"slow={self.seconds:g}" if self.kind == "slow" else self.kind

    def __str__(self) -> str:
        kind = self.action
        target = self.target
        if target == "worker":
            target = f"worker={'any' if self.worker is None else self.worker}"
        return f"{kind}:{target}@{self.when}={self.at}"


def parse_fault(spec: str) -> Fault:
    """Parse ``KIND:TARGET@WHEN``; raise FaultSpecError naming the part that is wrong."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise FaultSpecError(spec, "expected the form KIND:TARGET@WHEN")
    kind_s, target_s, when_s = m["kind"].strip(), m["target"].strip(), m["when"].strip()

    seconds = 0.0
    kind = kind_s
    if kind_s.startswith("slow"):
        kind = "slow"
        try:
            seconds = float(kind_s.removeprefix("slow").removeprefix("="))
        except ValueError:
            raise FaultSpecError(
                spec, f"KIND {kind_s!r}: slow needs seconds, e.g. slow=0.5"
            ) from None
        if not (0 < seconds < 3600):
            raise FaultSpecError(spec, f"KIND {kind_s!r}: seconds must be in (0, 3600)")
    elif kind_s not in KINDS:
        raise FaultSpecError(spec, f"unknown KIND {kind_s!r}; expected one of {', '.join(KINDS)}")

    target, _, index = target_s.partition("=")
    worker: int | None = None
    if target not in TARGETS:
        raise FaultSpecError(spec, f"unknown TARGET {target_s!r}")
    if target == "worker":
        if index == "any":
            worker = None
        elif index.isdigit():
            worker = int(index)
        else:
            raise FaultSpecError(spec, f"TARGET {target_s!r}: expected worker=I or worker=any")
    elif index:
        raise FaultSpecError(spec, f"TARGET {target_s!r}: {target} takes no '='")

    when, _, at_s = when_s.partition("=")
    if when not in WHENS:
        raise FaultSpecError(spec, f"unknown WHEN {when_s!r}; expected step=N, epoch=N or shard=N")
    if not at_s.isdigit() or int(at_s) < 1:
        raise FaultSpecError(spec, f"WHEN {when_s!r}: N must be an integer >= 1")
    if target == "pool" and kind not in ("crash", "kill"):
        raise FaultSpecError(spec, f"KIND {kind_s!r}: the pool (a supervisor) takes crash or kill")
    if target != "worker" and when == "shard":
        raise FaultSpecError(spec, f"WHEN {when_s!r}: shard=N applies to workers only")
    return Fault(kind, target, when, int(at_s), worker, seconds)


@dataclass(frozen=True)
class Chaos:
    """Each worker shard fails (crashes its worker) with probability ``rate``.

    The draw depends only on (seed, step, shard, attempt), so a chaos run is repeatable, and a
    redone shard draws again instead of failing forever (at rate < 1).
    """

    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, int | float) and 0.0 <= self.rate <= 1.0):
            raise ValueError(f"chaos rate {self.rate!r}: expected a number from 0 to 1")

    def strikes(self, step: int, shard: int, attempt: int) -> bool:
        if self.rate <= 0.0:
            return False
        return np.random.default_rng((self.seed, step, shard, attempt)).random() < self.rate


def act_out(
    kind: str, *, own_process: bool, stopped: threading.Event, kill_self: Callable[[], None]
) -> None:
    """Do what fault ``kind`` (``crash``, ``kill``, ``hang``, ``exit`` or ``slow=S``) says, inside
    the actor told to. ``own_process`` is True in a process actor; for a thread actor,
    ``stopped`` is set once it has been killed and ``kill_self`` is its nearest SIGKILL."""
    if kind.startswith("slow="):
        # A killed thread actor wakes at once (a process is simply gone): a stopped job must
        # not wait out the delay, nor keep the interpreter from exiting.
        if stopped.wait(float(kind.removeprefix("slow="))):
            raise InjectedCrash("slowed actor was killed: abandoning the message")
    elif kind == "crash":
        raise InjectedCrash("injected crash")
    elif kind == "kill":
        if own_process:
            os.kill(os.getpid(), signal.SIGKILL)
        kill_self()
        raise InjectedCrash("killed (thread actor): abandoning the message")
    elif kind == "exit":
        if own_process:
            os._exit(EXIT_CODE)
        raise ExitedWithCode(EXIT_CODE)
    elif kind == "hang":
        # A process blocks until SIGKILL arrives; a thread actor until it has been killed.
        stopped.wait()
        raise InjectedCrash("hung actor was killed: abandoning the message")
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


class FaultTarget:
    """Mixin for actors that can be told to act out a fault (the Worker and the Loader).

    The actor class sets ``own_process`` (True when it runs as a process actor).
    """

    own_process: bool = False
    # Given by the actor class this is mixed into (see supervision.Actor).
    actor_stopped: threading.Event
    actor_ref: Any

    def inject(self, action: str) -> None:
        """Act out ``action``: a :attr:`Fault.action` such as ``crash`` or ``slow=0.5``."""
        act_out(
            action,
            own_process=self.own_process,
            stopped=self.actor_stopped,
            kill_self=self._kill_self,
        )

    def _kill_self(self) -> None:
        self.actor_ref.kill()
