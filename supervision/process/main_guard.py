"""A script that starts process actors must keep that code under ``if __name__ == "__main__":``.

Why: the forkserver start method (like spawn) re-imports the parent's main script in each new
process, so that classes and functions defined in it can be unpickled there. Unguarded top-level
code that starts actors then runs again in the child, during its bootstrap, and multiprocessing
refuses (a RuntimeError about the "bootstrapping phase"); the parent only sees its children die
while starting, a wall of tracebacks. :func:`check_main_guard` turns that into one message, in the
parent and before any process is started, and also in a child that gets there anyway.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from functools import cache
from types import FrameType


class MainModuleNotGuarded(RuntimeError):
    """Process actors started from a script's top-level code, outside the main guard."""


def _message(path: str, line: int | None) -> str:
    where = f"{path}, line {line}" if line else path
    return (
        f"process actors are started from top-level code of the script {where}, outside "
        '`if __name__ == "__main__":`. Each new process re-imports the script, so that code '
        'would run again there: put it under `if __name__ == "__main__":`.'
    )


def check_main_guard() -> None:
    """Raise :class:`MainModuleNotGuarded` if process actors are being started by top-level
    code of the main script that is not inside the main guard (see the module docstring)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A child importing the script runs its unguarded code: the parent's check was evaded.
        main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")
        raise MainModuleNotGuarded(_message(getattr(main, "__file__", "?"), None))
    frame = _main_script_frame()
    if frame is None:
        return
    path = frame.f_code.co_filename
    if not _guarded(path, frame.f_lineno):
        raise MainModuleNotGuarded(_message(path, frame.f_lineno))


def _main_script_frame() -> FrameType | None:
    """The frame running the main script's own top-level code, if that is on the stack."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None:  # interactive, python -c: nothing is re-imported in children
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            return frame
        frame = frame.f_back
    return None


@cache
def _guard_lines(path: str) -> tuple[tuple[int, int], ...] | None:
    """Line spans of the script's ``if __name__ == "__main__":`` blocks, also nested ones (in
    a ``try``, say). None if the source cannot be read or parsed: then nothing is claimed."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            spans.append((node.lineno, node.end_lineno or node.lineno))
    return tuple(spans)


def _is_main_test(test: ast.expr) -> bool:
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    consts = {n.value for n in ast.walk(test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in consts


def _guarded(path: str, line: int) -> bool:
    spans = _guard_lines(path)
    return spans is None or any(start <= line <= end for start, end in spans)
