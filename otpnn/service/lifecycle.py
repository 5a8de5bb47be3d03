"""One job's lifecycle in the service: its TrainingJob built from the record, run under the
service's tree, its result kept (weights, report), and how it ended as an :class:`Outcome`.

Rules (the JobManager's waiter thread applies them, see otpnn.service.jobs):

- The job runs through :meth:`TrainingJob.run`, the trainer's one lifecycle (start, wait, stop,
  leaving nothing running whatever happens).
- Whatever fails on the way (the config, the data, the tree giving up, writing the weights or
  the report) ends the job ``failed`` with the reason (:func:`failed`), never with an exception
  out of the waiter. The reason a client sees names no server path (data-layer messages name the
  cache and the directories searched; OSErrors the state dir); ``detail`` keeps them for the log.
  What remains (a checkpoint's path) the JobManager shows with the state dir as ``<state dir>``.
- A job whose trainer finished is ``succeeded``, also when a stop (a cancel, SIGTERM) arrived
  during its last steps: the result exists, so nothing is left to resume.
- A job stopped by the service's shutdown before its end is ``interrupted``: it stays
  ``running`` on disk and the next start resumes it from its checkpoint.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from otpnn.checkpoint import save_weights
from otpnn.config import TrainConfig
from otpnn.data import DataError, Dataset, load_dataset
from otpnn.errors import OtpnnError
from otpnn.faults import Chaos, parse_fault
from otpnn.service.schema import NOT_MNIST
from otpnn.service.store import Store, StoreClosed
from otpnn.training import (
    CHECKPOINT_FILE,
    JobOptions,
    JobStopped,
    TrainingFailed,
    TrainingJob,
    final_summary,
    job_report,
    write_report,
)
from otpnn.validation import model_params

DATASET_CACHE = 4


@dataclass
class Outcome:
    """How a job's lifecycle ended: ``succeeded``, ``failed``, ``cancelled`` or ``interrupted``
    (the service stopped it; it resumes later). ``error`` is shown to clients; ``detail`` (which
    may name server paths) and ``exc`` are for the operator's log."""

    state: str
    error: str | None = None
    final: dict[str, Any] | None = None
    detail: str | None = None
    exc: BaseException | None = None


class DataUnavailable(Exception):
    """The job's data could not be loaded; the message is generic (see the module's rules)."""

    def __init__(self, cause: DataError, data_dir: str | None) -> None:
        super().__init__(
            f"data_dir: {NOT_MNIST}"
            if data_dir
            else "no data_dir given, and the service has no MNIST of its own"
        )
        self.detail = str(cause).splitlines()[0]


class StepFailed(Exception):
    """Keeping a job's result failed on the disk: what, and the system's reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class Datasets:
    """Datasets loaded once per (dataset, source, sizes, seed), the last few kept: MNIST takes
    about a second to read. Never downloads: a request must not make the service fetch from the
    network or write outside its state dir (``otpnn data fetch`` puts MNIST in place first)."""

    def __init__(self, keep: int = DATASET_CACHE) -> None:
        self.keep = keep
        self._loaded: OrderedDict[tuple, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, config: TrainConfig) -> Dataset:
        if config.dataset == "synthetic":
            key: tuple = ("synthetic", config.seed, config.synthetic_train, config.synthetic_test)
        else:
            key = ("mnist", config.data_dir)
        with self._lock:
            if key not in self._loaded:
                try:
                    self._loaded[key] = load_dataset(config, download=False)
                except DataError as e:
                    raise DataUnavailable(e, config.data_dir) from None
                while len(self._loaded) > self.keep:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
            return self._loaded[key]


def build(job_id: str, record: dict[str, Any], store: Store, datasets: Datasets) -> TrainingJob:
    """The job of a (validated) record; it resumes from its checkpoint when it has one."""
    config = TrainConfig.from_dict(record["config"])
    opts = record["options"]
    checkpoint_dir = store.checkpoint_dir(job_id)
    resume = (checkpoint_dir / CHECKPOINT_FILE).is_file()
    options = JobOptions(
        # Planned faults belong to the first run: a resumed one would fire them again.
        faults=() if resume else tuple(parse_fault(s) for s in opts["faults"]),
        chaos=Chaos(opts["chaos"], opts["chaos_seed"]) if opts["chaos"] else None,
        checkpoint_dir=str(checkpoint_dir),
        resume=resume,
        step_timeout=opts["step_timeout"],
        max_restarts=opts["max_restarts"],
        max_seconds=opts["max_seconds"],
    )
    return TrainingJob(config, datasets.get(config), options, name=job_id)


def run(
    job: TrainingJob,
    under: Any,
    store: Store,
    cancelled: threading.Event,
    allow_unfired: bool = False,
) -> Outcome:
    """Run the job under ``under`` (the service's jobs supervisor) and keep its result;
    StepFailed (or StoreClosed) if the result cannot be kept. A job whose planned faults did
    not all fire tested nothing: it ends ``failed`` (its report and weights kept), unless the
    request allowed it, as ``otpnn train`` exits 3."""
    job_id = job.name
    try:
        result = job.run(under=under)
    except JobStopped:
        if job.state.result is None:
            return Outcome("cancelled" if cancelled.is_set() else "interrupted")
        result = job.state.result  # it finished while stopping: done, nothing to resume
    except TrainingFailed as e:
        outcome = Outcome("failed", str(e))
        try:
            with store.writing():
                write_report(store.report_path(job_id), job_report(job, None))
        except (OSError, StoreClosed) as not_written:
            outcome.detail = f"the report was not written: {not_written}"
        return outcome
    final = final_summary(job, result)
    meta = {"job": job_id, "config": job.config.to_dict(), "test_accuracy": final["test_accuracy"]}
    with store.writing():
        with _failing_as("saving the model"):
            params = model_params(result)  # the best epoch's, with keep_best
            save_weights(store.model_path(job_id), params, job.config.layer_sizes, meta)
        with _failing_as("writing the report"):
            write_report(store.report_path(job_id), job_report(job, final))
    unfired = job.state.unfired_faults()
    if unfired and not allow_unfired:
        specs = ", ".join(str(f) for f in unfired)
        return Outcome(
            "failed",
            f"{len(unfired)} planned fault(s) never fired: {specs} (the job trained "
            f"{final['steps']} steps: nothing was tested; allow_unfired_faults accepts this)",
            final=final,
        )
    return Outcome("succeeded", final=final)


def failed(e: Exception) -> Outcome:
    """The outcome of a job whose lifecycle raised ``e``."""
    return Outcome("failed", reason(e), detail=getattr(e, "detail", None), exc=e)


def reason(e: BaseException) -> str:
    """One line saying what went wrong, for a client (an OSError without its path)."""
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (OtpnnError, ValueError, DataUnavailable, StepFailed)):
        return text
    return f"{type(e).__name__}: {text}"


def live(job: TrainingJob) -> dict[str, Any]:
    """What a running job shows: progress, latest epoch metrics, restarts, faults, pids."""
    p = job.progress
    return {
        "step": p.step,
        "epoch": p.epoch,
        "total_steps": p.total_steps,
        "metrics": p.last_epoch,
        "restarts": job.state.restarts,
        "restarts_by_actor": job.state.restarts_by_actor(),
        "faults_injected": job.state.faults_fired,
        "pids": dict(job.state.pids),
    }


@contextlib.contextmanager
def _failing_as(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise StepFailed(f"{what} failed: {e.strerror or e}", detail=str(e)) from e
