"""What ``otpnn train`` prints: a bar only on a terminal, JSON logs that parse line by line,
plain numbers, no tracebacks for planned crashes, honest resume and give-up messages."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

SMALL = [
    "--dataset", "synthetic", "--synthetic-train", "768", "--synthetic-test", "256",
    "--batch-size", "64", "--shard-size", "16", "--seed", "7", "--workers", "2",
]  # fmt: skip


def otpnn(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpnn", "train", *SMALL, *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        **kw,
    )


def test_json_logs_parse_line_by_line_and_carry_plain_numbers() -> None:
    run = otpnn("--epochs", "2", "--log-format", "json", "--fault", "crash:worker=1@step=3")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    epochs = [e for e in events if e["event"] == "epoch_done"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert isinstance(epochs[0]["train_loss"], float)
    assert "np.float64" not in run.stderr


def test_a_librarys_warnings_come_in_the_logs_format_and_its_chatter_stays_out() -> None:
    """A library logging through the standard library while ``otpnn train`` runs (Ray warns so
    when it starts a local cluster): its warning is one JSON line like the trainer's own, its
    info lines are not printed."""
    chatty_library = (
        "import logging, sys, otpnn.cli_train as cli; real = cli.load_dataset\n"
        "def load(cfg):\n"
        "    logging.getLogger('somelib.setup').warning('a library warns')\n"
        "    logging.getLogger('somelib.setup').info('a library chats')\n"
        "    return real(cfg)\n"
        "cli.load_dataset = load\n"
        "from otpnn.entry import run\n"
        "sys.argv = ['otpnn', 'train', *sys.argv[1:]]\n"
        "run()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", chatty_library, *SMALL, "--epochs", "1", "--log-format", "json"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    library = [e for e in events if e.get("logger") == "somelib.setup"]
    assert [(e["event"], e["level"]) for e in library] == [("a library warns", "warning")]
    assert any(e["event"] == "epoch_done" for e in events)


def test_console_logs_to_a_pipe_get_no_progress_bar() -> None:
    run = otpnn("--epochs", "1")
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    assert "step/s" not in run.stderr
    assert "epoch 1:" in run.stdout


def test_on_a_terminal_the_bar_shows_epoch_loss_and_accuracy() -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    args = [*SMALL, "--epochs", "2", "--workers", "1"]
    with subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    ) as proc:
        os.close(follower)
        drawn = b""
        while True:  # read as it is drawn (a full terminal buffer would block the writer)
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
        os.close(leader)
        assert proc.wait(90) == 0
    text = drawn.decode(errors="replace")
    assert "training:" in text
    assert "epoch=2" in text
    assert "loss=" in text
    assert "acc=" in text


def test_quiet_run_prints_no_traceback_for_a_planned_crash() -> None:
    run = otpnn(
        "--epochs", "1", "--quiet", "--backend", "thread", "--fault", "crash:worker=1@step=3"
    )
    assert run.returncode == 0, run.stderr
    assert "fault_injected" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_resumed_run_prints_only_the_epochs_it_trains(tmp_path) -> None:
    ck = str(tmp_path / "ck")
    first = otpnn("--epochs", "1", "--checkpoint-dir", ck, "--quiet")
    assert first.returncode == 0, first.stderr
    resumed = otpnn("--epochs", "2", "--checkpoint-dir", ck, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2:" in resumed.stdout
    assert "epoch 1:" not in resumed.stdout


def test_giving_up_before_the_first_checkpoint_says_so(tmp_path) -> None:
    ck = tmp_path / "ck"
    run = otpnn("--epochs", "1", "--quiet", "--chaos", "1.0", "--checkpoint-dir", str(ck))
    assert run.returncode == 1
    assert f"no checkpoint in {ck} yet" in run.stderr
    assert "use --checkpoint-dir" not in run.stderr


def test_help_describes_the_options_the_fault_grammar_and_the_exit_codes() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "otpnn", "train", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text = " ".join(run.stdout.split())
    for expected in (
        "--lr FLOAT Learning rate.",
        "--momentum FLOAT SGD momentum [default: 0.5; async with staleness S >= 2: 0;",
        "--hidden TEXT Hidden layer sizes",
        "--seed INTEGER Seed of the initial weights",
        "repeat for several",
        "KIND crash | kill | hang | exit | slow=SECONDS",
        "3 planned faults never fired",
    ):
        assert expected in text
