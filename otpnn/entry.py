"""The console script's entry point: as little as possible before Ctrl-C is handled.

``otpnn`` and ``python -m otpnn`` start here; the command itself (:mod:`otpnn.cli`) is imported
inside the handler, so a Ctrl-C while Python imports click, numpy or the trainer exits 130 like
everywhere else, without a traceback.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def run() -> None:
    try:
        from otpnn.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("otpnn: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    main()
