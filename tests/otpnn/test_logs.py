"""Log lines and the progress bar share stderr: a line must never land inside the bar."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time

import pytest
import structlog
from tqdm import tqdm

from otpnn import logs
from otpnn.logs import AboveTheBar, adopt_library_logger, configure_logging, route_stdlib_logging


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


class _SlowStderr(io.StringIO):
    """stderr that lets other threads run inside every write, where a torn line would show."""

    def write(self, text: str) -> int:
        time.sleep(0)
        return super().write(text)


def test_structlog_and_library_lines_never_share_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service logs through structlog and through uvicorn's standard-library loggers at
    once; in JSON format each line must stay one JSON object."""
    err = _SlowStderr()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(logs, "_routed", False)
    monkeypatch.setattr(logs, "_OWN_HANDLER_LIBRARIES", ())
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json")
        route_stdlib_logging("json")

        def ours() -> None:
            for i in range(300):
                structlog.get_logger().info("ours", i=i)

        def theirs() -> None:
            for i in range(300):
                logging.getLogger("a.library").info("theirs %d", i)  # as uvicorn logs

        threads = [threading.Thread(target=f) for f in (ours, theirs, ours, theirs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    events = [json.loads(line)["event"] for line in err.getvalue().splitlines()]
    assert events.count("ours") == 600
    assert len(events) == 1200


@pytest.mark.parametrize("imported_before_routing", [True, False])
def test_a_library_with_a_handler_of_its_own_is_routed_like_the_rest(
    monkeypatch: pytest.MonkeyPatch, imported_before_routing: bool
) -> None:
    """Ray's import gives the "ray" logger a stderr handler of its own and stops propagation:
    once records are routed, its warnings come in the log's format too, whether it was imported
    before the routing or after (then the trainer adopts it when it starts a Ray job); below
    the routing's level nothing of it shows; unrouted, it keeps its own handler."""
    monkeypatch.setattr(logs, "_routed", False)
    monkeypatch.setattr(logs, "_OWN_HANDLER_LIBRARIES", ("somelib",))
    lib, root = logging.getLogger("somelib"), logging.getLogger()
    own = logging.StreamHandler(io.StringIO())
    saved = root.handlers[:], root.level
    lib.handlers[:], lib.propagate = [own], False
    try:
        adopt_library_logger("somelib")
        assert lib.handlers == [own]  # not routed: an embedding application's set-up stays
        if imported_before_routing:
            monkeypatch.setitem(sys.modules, "somelib", object())
        out = io.StringIO()
        route_stdlib_logging("json", logging.WARNING, stream=out)
        if not imported_before_routing:
            assert lib.handlers == [own]
            adopt_library_logger("somelib")
        assert lib.handlers == []
        lib.getChild("setup").warning("a library warns")
        lib.getChild("setup").info("a library chats")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        lib.handlers[:], lib.propagate = [], True
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in events] == [
        ("a library warns", "warning", "somelib.setup")
    ]
    assert own.stream.getvalue() == ""
