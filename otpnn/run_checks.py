"""What a finished run is checked against before ``otpnn train`` calls it a success.

A fault-injection run whose planned faults did not all fire tested nothing, yet would end with
the same checksum as a clean run: the worst way for such a test to pass. So it is an error with
its own exit code, unless the user allowed it. ``--expect-sha256`` turns the determinism
guarantee into an assertion a script can rely on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from otpnn.faults import Fault

EXIT_UNFIRED_FAULTS = 3  # the run finished, but planned faults never fired
EXIT_CHECKSUM_MISMATCH = 4  # the final parameters' SHA-256 is not the one expected

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def parse_sha256(value: str) -> str:
    """A SHA-256 in hex (64 digits, any case) in lower case; ValueError naming the problem."""
    hexdigest = value.strip().lower()
    if not _SHA256.match(hexdigest):
        raise ValueError(f"{value!r} is not a SHA-256 (64 hexadecimal digits)")
    return hexdigest


def unfired_message(unfired: Sequence[Fault], steps: int) -> str:
    """The warning for planned faults that never fired, with the usual reasons."""
    specs = ", ".join(str(f) for f in unfired)
    return (
        f"otpnn: ERROR: {len(unfired)} planned fault(s) never fired: {specs}\n"
        f"  the run took {steps} steps; a fault past the end, or aimed at a worker that was never "
        "given work (a step has batch-size / shard-size shards: workers beyond that get none), "
        "does not fire.\n"
        "  Nothing was tested. Pass --allow-unfired-faults to accept this."
    )


def checksum_message(expected: str, actual: str) -> str:
    return f"otpnn: ERROR: params sha256 {actual} differs from --expect-sha256 {expected}"
