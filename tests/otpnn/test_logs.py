"""Log lines and the progress bar share stderr: a line must never land inside the bar."""

from __future__ import annotations

import io
import re
import sys

import pytest
from tqdm import tqdm

from otpnn.logs import AboveTheBar


def _screen(raw: str) -> list[str]:
    """What a terminal shows: a carriage return overwrites its line from the first column."""
    lines = []
    for line in raw.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", shown).rstrip())
    return lines


def test_a_log_line_is_printed_above_the_bar_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(tqdm, "monitor_interval", 0)  # no monitor thread left behind
    bar = tqdm(total=10, desc="training", file=err, ascii=True)
    try:
        bar.update(3)
        stream = AboveTheBar()
        for piece in ("worker_lost ", "actor=worker-1", "\n"):  # print() writes line and end apart
            stream.write(piece)
        bar.update(1)
    finally:
        bar.close()
    screen = _screen(err.getvalue())
    assert "worker_lost actor=worker-1" in screen
    assert not any("training" in line and "worker_lost" in line for line in screen)


def test_an_unfinished_line_waits_for_its_end(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    stream = AboveTheBar()
    stream.write("half")
    assert err.getvalue() == ""
    stream.write(" and the rest\nnext")
    assert _screen(err.getvalue()) == ["half and the rest", ""]
