"""The processes a test process started, directly or not: for the leak checks."""

from __future__ import annotations

import os
from pathlib import Path


def descendants() -> set[int]:
    """Live (or zombie) descendants of this process, read from /proc.

    Descendants, not only children: process actors are forked by the forkserver (a child of
    this process), so an actor left running is a grandchild.
    """
    children_of: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        children_of.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in children_of.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
