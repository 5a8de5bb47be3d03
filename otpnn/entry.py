"""The console script's entry point: as little as possible before Ctrl-C is handled.

``otpnn`` and ``python -m otpnn`` start here; the command itself (:mod:`otpnn.cli`) is imported
inside the handler, so a Ctrl-C while Python imports click, numpy or the trainer exits 130 like
everywhere else, without a traceback.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

EARLY_SIGNAL: dict[str, int] = {}
"""A Ctrl-C that came before the command installed its own handler (``signum``), kept so the
command can still honour it: see :func:`_early_interrupt`."""


def _early_interrupt(signum: int, _frame: FrameType | None) -> None:
    """Python's default reaction (KeyboardInterrupt), remembered. A KeyboardInterrupt that lands
    in a finalizer (a ``__del__``, a weakref callback) is printed and swallowed by Python, and
    the command would then run to its end as if no Ctrl-C had come; the train command looks here
    when it takes over the signal."""
    EARLY_SIGNAL["signum"] = signum
    raise KeyboardInterrupt


def run() -> None:
    signal.signal(signal.SIGINT, _early_interrupt)
    try:
        from otpnn.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("otpnn: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    main()
