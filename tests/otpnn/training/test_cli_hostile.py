"""``otpnn train`` against a hostile user and an unlucky operator.

Unusable output paths, NaN, empty layer sizes, Ctrl-C at any moment, a slowed thread worker at
Ctrl-C, a disk that fills mid-run; and hypothesis-generated option sets, each of which must end
in exit 0, 1 or 2 with no traceback and nothing left running.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import structlog
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_train import SMALL, otpnn
from training_support import config, dataset

from otpnn import atomic
from otpnn.checkpoint import load_checkpoint
from otpnn.cli import main
from otpnn.training.job import JobOptions, TrainingFailed, TrainingJob


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step-timeout", "nan"], "'nan' is not a finite number"),
        (["--chaos", "nan"], "'nan' is not a finite number"),
        (["--max-seconds", "nan"], "'nan' is not a finite number"),
        (["--max-seconds", "inf"], "'inf' is not a finite number"),
        (["--lr", "nan"], "invalid lr=nan"),
        (["--hidden", "128,,64"], "expected comma-separated integers"),
        (["--hidden", "128,"], "expected comma-separated integers"),
        (["--checkpoint-dir", "/proc/ck"], "--checkpoint-dir /proc/ck: cannot write there"),
    ],
)
def test_hostile_values_are_one_message_and_exit_2(args, message) -> None:
    run = otpnn("train", *SMALL, "--epochs", "1", *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_checkpoint_dir_under_a_file_is_refused_before_training(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    run = otpnn("train", *SMALL, "--epochs", "1", "--checkpoint-dir", str(tmp_path / "afile/ck"))
    assert run.returncode == 2, run.stderr
    assert "cannot write there (Not a directory)" in run.stderr
    assert len(run.stderr.splitlines()) <= 4  # usage, hint, blank, the error: no crashes


def test_a_disk_that_fills_mid_run_fails_the_job_with_one_message(tmp_path, monkeypatch) -> None:
    writes = 0
    real = atomic.write_atomic

    def fills_up(path, data):  # the first checkpoint fits, the second finds the disk full
        nonlocal writes
        writes += 1
        if writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr("otpnn.checkpoint.write_atomic", fills_up)
    cfg = config(epochs=3, workers=2, backend="thread")
    job = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path)))
    job.start()
    try:
        with pytest.raises(TrainingFailed, match=r"No space left on device.*step 12.*intact"):
            job.wait()
    finally:
        job.stop()
    monkeypatch.undo()
    resumed = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    assert resumed.progress.step == 12  # the last good checkpoint, whole


@pytest.mark.parametrize(
    ("fields", "protocol"),
    [({}, "lockstep"), ({}, "stepwise"), ({"algorithm": "async", "staleness": 3}, "lockstep"),
     ({"algorithm": "local-sgd", "sync_every": 2}, "auto")],
)  # fmt: skip
def test_a_diverging_run_fails_with_one_message_and_keeps_its_last_finite_checkpoint(
    tmp_path, fields, protocol, capfd
) -> None:
    """lr 1e6 overflows within a few steps: the job fails naming the first step whose loss is
    not finite, without numpy's warnings, and writes no checkpoint after it."""
    cfg = config(epochs=3, workers=2, backend="process", lr=1e6, checkpoint_every=2, **fields)
    options = JobOptions(checkpoint_dir=str(tmp_path), protocol=protocol)
    job = TrainingJob(cfg, dataset(), options)
    job.start()
    try:
        with pytest.raises(
            TrainingFailed,
            match=r"training diverged: the loss of step (\d+) "
            r"\(epoch 1\) is nan; a lower --lr \(now 1000000.0\)",
        ) as failed:
            job.wait(timeout=60)
    finally:
        job.stop()
    assert "Warning" not in capfd.readouterr().err
    step = int(re.search(r"step (\d+)", str(failed.value)).group(1))
    path = tmp_path / "checkpoint.safetensors"
    if path.exists():  # one written before the divergence showed: finite, and before it
        params, _, meta = load_checkpoint(path)
        assert meta["step"] < step
        assert np.isfinite(params).all()


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.8, 1.5])
def test_ctrl_c_at_any_moment_exits_130_without_a_traceback(delay) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "3000", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)  # imports, data loading, the tree's start or training: each must hold
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # 3000 epochs outlast the longest delay on any machine: a 0 means the Ctrl-C was lost.
    assert proc.returncode != 0, f"the run went on to its end after a Ctrl-C:\n{err}"
    if "init_import_site" in err:  # a loaded machine: Python itself was still starting up
        pytest.skip("the signal landed in the interpreter's start-up, before any otpnn code")
    assert proc.returncode in (130, -signal.SIGINT), err  # -2: before Python was up
    assert "Traceback" not in err
    assert "Aborted!" not in err


def test_a_ctrl_c_python_swallowed_during_start_up_still_stops_the_run() -> None:
    """A KeyboardInterrupt landing in a finalizer is printed and dropped by Python; the entry
    point remembers the signal, and the train command honours it once it takes over."""
    script = (
        "import sys, signal, otpnn.entry as entry\n"
        "entry.EARLY_SIGNAL['signum'] = signal.SIGINT  # as if one had been swallowed\n"
        f"sys.argv = ['otpnn', 'train', *{SMALL!r}, '--epochs', '3000', '--workers', '2']\n"
        "entry.run()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 130, run.stderr
    assert "otpnn: stopped by signal at step" in run.stderr
    assert "Traceback" not in run.stderr


def test_ctrl_c_with_a_slowed_thread_worker_exits_without_waiting_out_the_delay() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--backend", "thread", "--fault", "slow=120:worker=any@step=3", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the delay is under way
        if "fault_injected" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)  # the bug: the interpreter waited the full 120 s
    assert proc.returncode == 130, err


SPECS = ["crash:worker=0@step=2", "kill:worker=any@step=3", "slow=0.1:worker=1@step=1",
         "crash:coordinator@step=4", "exit:loader@epoch=1", "crash:worker=9@step=1",
         "crash:gpu@step=1", "nonsense", "crash:worker=0@shard=5"]  # fmt: skip
HOSTILE_NUMBERS = ["0", "-1", "nan", "inf", "1e400", "x", "", "99999999999"]


def _option(name: str, sane: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    value = st.one_of(sane, sane, st.sampled_from(HOSTILE_NUMBERS))
    return st.one_of(st.just([]), value.map(lambda v: [name, v]))


OPTION_SETS = st.tuples(
    _option("--epochs", st.sampled_from(["1", "2"])),
    _option("--batch-size", st.sampled_from(["16", "64", "100"])),
    _option("--shard-size", st.sampled_from(["4", "16", "64"])),
    _option("--lr", st.sampled_from(["0.05", "0.5"])),
    _option("--momentum", st.sampled_from(["0", "0.9", "1"])),
    _option("--hidden", st.sampled_from(["8", "16,8", "4,,4", "0"])),
    _option("--workers", st.sampled_from(["1", "2", "3"])),
    _option("--backend", st.sampled_from(["thread", "process", "gpu"])),
    _option("--synthetic-train", st.sampled_from(["64", "200", "10000000000"])),
    _option("--chaos", st.sampled_from(["0.01", "0.2"])),
    _option("--max-restarts", st.sampled_from(["0", "3"])),
    _option("--checkpoint-every", st.sampled_from(["0", "2"])),
    _option("--algorithm", st.sampled_from(["sync", "async", "local-sgd"])),
    _option("--protocol", st.sampled_from(["lockstep", "stepwise"])),
    st.lists(st.sampled_from(SPECS), max_size=2).map(
        lambda fs: [a for f in fs for a in ("--fault", f)]
    ),
).map(lambda parts: [a for part in parts for a in part])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(args=OPTION_SETS)
def test_any_option_set_ends_in_0_1_or_2_without_a_traceback(tmp_path: Path, args) -> None:
    base = ["train", "--dataset", "synthetic", "--synthetic-test", "32", "--quiet",
            "--step-timeout", "5", "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    logging = structlog.get_config()
    try:
        result = CliRunner().invoke(main, [*base, *args])
    finally:
        structlog.configure(**logging)  # the command configures logging for the whole process
    assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.output


def test_a_give_up_is_one_line_per_failure_without_verbose() -> None:
    args = [*SMALL, "--epochs", "1", "--workers", "2", "--backend", "thread", "--chaos", "1.0"]
    quiet = otpnn("train", *args)
    assert quiet.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "gave up" in quiet.stderr
    verbose = otpnn("train", *args, "--verbose")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr  # asked for: the crashes with their tracebacks


def test_a_closed_pipe_on_stderr_does_not_wedge_a_failing_run() -> None:
    # `otpnn train ... 2>&1 | head -3`: the reader goes away while the tree is giving up.
    cmd = [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "1", "--workers", "2",
           "--chaos", "1.0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 1  # it used to hang forever in a log call


def test_a_second_copy_on_the_same_checkpoint_dir_is_refused(tmp_path) -> None:
    ckpt = str(tmp_path / "ck")
    first = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--checkpoint-dir", ckpt, "--fault", "slow=30:worker=any@step=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lock = tmp_path / "ck" / ".otpnn.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = otpnn("train", *SMALL, "--epochs", "2", "--workers", "1", "--checkpoint-dir", ckpt)
        assert second.returncode == 2, second.stderr
        assert f"in use by another otpnn training job (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    # The lock went with its holder: the directory is free again.
    third = otpnn("train", *SMALL, "--epochs", "2", "--workers", "2", "--checkpoint-dir", ckpt,
                  "--resume")  # fmt: skip
    assert third.returncode == 0, third.stderr


def test_a_killed_resource_tracker_leaves_no_noise_and_no_segment() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--fault", "slow=2:worker=any@step=5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = False
    deadline = time.monotonic() + 30
    while not killed and time.monotonic() < deadline:
        time.sleep(0.1)
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" in cmdline:
                os.kill(int(child), signal.SIGKILL)
                killed = True
    _, err = proc.communicate(timeout=60)
    assert killed
    assert proc.returncode == 0, err
    assert "KeyError" not in err  # a relaunched tracker asked to forget names it never had
    assert not list(Path("/dev/shm").glob(f"otpnn_{proc.pid}_*"))


def test_a_second_ctrl_c_exits_at_once_without_the_orderly_stop() -> None:
    # The coordinator is held in a 60 s delay, so the orderly stop the first Ctrl-C asks for
    # would wait for it (up to the stop deadline); the second one does not.
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--fault", "slow=60:coordinator@step=3", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the delay is under way
        if "fault_injected" in line:
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None  # still stopping in order, behind the delayed coordinator
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert "second signal: exiting now" in err
