"""``--log-dir DIR``: a run's metrics where people look for them, TensorBoard and a CSV.

In DIR: ``metrics.csv`` (one row per epoch and one per ``every`` steps; appended to, so a resumed
run continues it) and TensorBoard event files written by tensorboardX (``tensorboard --logdir
DIR``). Scalars: ``step/train_loss`` and ``step/train_accuracy`` (the mean over the last
``every`` steps), ``epoch/train_loss``, ``epoch/train_accuracy``, ``epoch/test_loss``,
``epoch/test_accuracy``, ``epoch/samples_per_second`` and, with a validation split,
``epoch/val_loss`` and ``epoch/val_accuracy``, all against the optimisation step.

Step metrics are what the coordinator committed: a lockstep run commits its steps when the run
ends (an epoch, a checkpoint or a fault), so they arrive in bursts, with their own step numbers. A
step redone after a failure is logged once.
"""

from __future__ import annotations

import atexit
import csv
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otpnn.errors import UsageError
from otpnn.schedule import steps_per_epoch
from otpnn.training.state import JobState, Progress

if TYPE_CHECKING:
    from otpnn.training.job import TrainingJob

CSV_NAME = "metrics.csv"
EPOCH_SCALARS = (
    "train_loss", "train_accuracy", "test_loss", "test_accuracy", "samples_per_second",
    "val_loss", "val_accuracy",
)  # fmt: skip
COLUMNS = ("kind", "step", "epoch", *EPOCH_SCALARS)


class LogDirError(UsageError):
    """--log-dir cannot be used (not writable, tensorboardX missing); the message says why."""


class RunLog:
    """Writes the metrics of one job into a log directory; :meth:`follow` attaches it."""

    def __init__(self, directory: str | os.PathLike, every: int, steps_per_epoch: int) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise LogDirError(
                "--log-dir needs tensorboardX: pip install 'otpnn[tensorboard]'"
            ) from None
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / CSV_NAME
            new = not path.exists() or path.stat().st_size == 0
            self._file = path.open("a", newline="", buffering=1)
        except OSError as e:
            raise LogDirError(f"--log-dir {directory}: {e.strerror}") from None
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(COLUMNS)
        self._tb = SummaryWriter(logdir=str(self.directory), flush_secs=5)
        self._every = every
        self._per_epoch = steps_per_epoch
        self._lock = threading.Lock()
        self._last_step = 0
        self._window: list[tuple[float, float]] = []
        self._last_epoch = 0
        self._closed = False
        atexit.register(self.close)  # a CLI run may end by sys.exit on any path

    def follow(self, state: JobState) -> None:
        """Log ``state``'s steps and epochs from now on (a resumed job's are logged already)."""
        done = state.progress
        self._last_step = done.step
        self._last_epoch = done.last_epoch["epoch"] if done.last_epoch else 0
        state.on_step = self.step
        printer = state._on_progress

        def on_progress(p: Progress) -> None:
            if printer is not None:
                printer(p)
            self.progress(p)

        state._on_progress = on_progress

    def step(self, step: int, loss: float, accuracy: float) -> None:
        with self._lock:
            if self._closed or step <= self._last_step:
                return  # a redone step: logged already
            self._last_step = step
            self._window.append((loss, accuracy))
            if step % self._every and step % self._per_epoch:
                return
            n = len(self._window)
            loss = sum(x for x, _ in self._window) / n
            accuracy = sum(a for _, a in self._window) / n
            self._window.clear()
            epoch = -(-step // self._per_epoch)
            blank = ("",) * (len(EPOCH_SCALARS) - 2)
            self._csv.writerow(("step", step, epoch, f"{loss:.6f}", f"{accuracy:.6f}", *blank))
            self._tb.add_scalar("step/train_loss", loss, step)
            self._tb.add_scalar("step/train_accuracy", accuracy, step)

    def progress(self, p: Progress) -> None:
        row = p.last_epoch
        with self._lock:
            if self._closed or row is None or row["epoch"] <= self._last_epoch:
                return
            self._last_epoch = row["epoch"]
            step = row["epoch"] * self._per_epoch
            self._csv.writerow(
                ("epoch", step, row["epoch"], *(_cell(row.get(k)) for k in EPOCH_SCALARS))
            )
            for key in EPOCH_SCALARS:
                if row.get(key) is not None:
                    self._tb.add_scalar(f"epoch/{key}", float(row[key]), step)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._tb.close()
        self._file.close()
        atexit.unregister(self.close)


def _cell(value: Any) -> str:
    return "" if value is None else f"{float(value):.6f}"


def log_job(job: TrainingJob, directory: str | os.PathLike, every: int) -> RunLog:
    """A RunLog in ``directory`` following ``job`` (call after its progress printer is set)."""
    per_epoch = steps_per_epoch(len(job.dataset.train_labels), job.config.batch_size)
    run_log = RunLog(directory, every, per_epoch)
    run_log.follow(job.state)
    return run_log
