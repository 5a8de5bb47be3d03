"""Links, built on monitors (``erlang:link/1``).

``link(a, b)`` ties two actors' fates: when one exits with an abnormal reason, the other exits
with the same reason, without cleanup (as an exit signal kills a process that does not trap
exits); a ``normal`` exit is not propagated. An actor that traps exits (``trap_exits=True`` for
that side) instead receives an :class:`Exit` message and decides itself. ``shutdown`` is
propagated as in OTP (it is not ``normal``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from pykka import ActorDeadError

from supervision.reasons import NORMAL, Reason
from supervision.refs import ActorHandle, Down


@dataclass(frozen=True)
class Exit:
    """OTP's ``{'EXIT', From, Reason}`` message, delivered to an actor that traps exits."""

    actor_urn: str
    reason: Reason
    ref: ActorHandle = field(repr=False, compare=False)


def link(
    a: ActorHandle, b: ActorHandle, *, a_traps_exits: bool = False, b_traps_exits: bool = False
) -> None:
    """Link ``a`` and ``b`` (both directions)."""
    a.monitor(lambda down: _propagate(down, b, b_traps_exits))
    b.monitor(lambda down: _propagate(down, a, a_traps_exits))


def _propagate(down: Down, to: ActorHandle, traps_exits: bool) -> None:
    with contextlib.suppress(ActorDeadError):
        if traps_exits:
            to.tell(Exit(down.actor_urn, down.reason, down.ref))
        elif down.reason != NORMAL:
            to.kill(down.reason)
