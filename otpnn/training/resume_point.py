"""A job's checkpoint: written from the coordinator's snapshots; read, checked against the job
and turned into a snapshot where a resumed job starts.

A checkpoint is input like any other: its bytes are verified by :mod:`otpnn.checkpoint`, and
here its meaning is. Rules:

- The config must be the job's, except the fields in ``RESUMABLE_FIELDS`` (they change speed or
  length, never the arithmetic; with local SGD the worker count does: it must be the same; with
  the cosine learning-rate schedule the number of epochs does: it spans the run). A field the
  checkpoint predates counts as its default.
- An async checkpoint holds the S-1 parameter versions before its step (``extra.earlier_params``,
  what the next updates' gradients read); no other holds any.
- ``step`` is an integer from 0 to the job's last step. A checkpoint past the job's end was made
  by a longer run: resuming it with fewer epochs is refused, naming how many it needs. A
  checkpoint exactly at the end is a finished run: the job completes at once with its result.
- The history holds one row per finished epoch, and the parameters and optimizer state have the
  network's size; the epoch tallies are finite numbers. With ``keep_best``, the best epoch so
  far (``best`` in the metadata, its parameters in the tensor ``extra.best_params``) is one of
  the finished epochs. Anything else names the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from otpnn.checkpoint import read_checkpoint, save_checkpoint
from otpnn.config import ALGORITHM_DEFAULTED, TrainConfig
from otpnn.errors import UsageError
from otpnn.local_sgd import RoundSchedule
from otpnn.model import SGD, num_params
from otpnn.schedule import steps_per_epoch
from otpnn.training.state import EpochTally, Snapshot
from otpnn.validation import Best

CHECKPOINT_FILE = "checkpoint.safetensors"  # in a job's checkpoint directory
# Fields that change speed or length, never the arithmetic: a run may resume with other values.
RESUMABLE_FIELDS = ("workers", "backend", "data_dir", "checkpoint_every", "epochs")
# Local SGD averages one replica per worker: the worker count is part of its arithmetic.
LOCAL_SGD_RESUMABLE = tuple(f for f in RESUMABLE_FIELDS if f != "workers")
# Async SGD's parameter versions before the checkpoint's step (see otpnn.async_sgd).
EARLIER_PARAMS = "earlier_params"


class ResumeError(UsageError, ValueError):
    """A checkpoint that cannot be resumed with this config."""


def read_resume_point(path: Path, config: TrainConfig, n_train: int) -> Snapshot:
    """The snapshot to resume ``config`` from, read from the checkpoint at ``path``."""
    if not path.exists():
        raise ResumeError(f"no checkpoint to resume from at {path}")
    params, optimizer, extra, meta = read_checkpoint(path)
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise ResumeError(f"{path}: its metadata has no config")
    now = config.to_record()
    defaults = TrainConfig().to_dict()  # a field added since the checkpoint: its default
    resumable = LOCAL_SGD_RESUMABLE if config.algorithm == "local-sgd" else RESUMABLE_FIELDS
    if config.lr_schedule == "cosine":  # its rate at every step depends on the run's length
        resumable = tuple(f for f in resumable if f != "epochs")
    different = sorted(k for k in now if k not in resumable and saved.get(k, defaults[k]) != now[k])
    if different:
        diffs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in different)
        hint = ""
        if "shard_size" in different and config.shard_size is None:
            hint = "; the default shard size follows the cores: pass --shard-size to match"
        defaulted = [f for f in ALGORITHM_DEFAULTED if f in different]
        if defaulted:
            options = " ".join(f"--{f.replace('_', '-')} {saved.get(f)!r}" for f in defaulted)
            fields = ", ".join(defaulted)
            hint += f"; the defaults of {fields} follow the algorithm: pass {options} to match"
        raise ResumeError(f"{path} was made with another config ({diffs}{hint})")

    per_epoch = steps_per_epoch(n_train, config.batch_size)
    total = per_epoch * config.epochs
    step = meta.get("step")
    if not _is_int(step) or step < 0:
        raise ResumeError(f"{path}: invalid step={step!r} in its metadata (a whole number >= 0)")
    if step > total:
        needed = -(-step // per_epoch)
        raise ResumeError(
            f"{path} is at step {step} (epoch {needed}), past the end of a {config.epochs}-epoch "
            f"run ({total} steps): resume with --epochs {needed} or more"
        )
    if (
        config.algorithm == "local-sgd"
        and step
        and RoundSchedule.of(config, per_epoch).last_of_round(step) != step
    ):
        raise ResumeError(f"{path}: step {step} is not at an average of local SGD's replicas")
    history = meta.get("history", [])
    if not (isinstance(history, list) and all(_is_row(r) for r in history)):
        raise ResumeError(f"{path}: invalid history in its metadata (a list of epoch rows)")
    if len(history) != step // per_epoch:
        raise ResumeError(
            f"{path}: its history has {len(history)} epoch rows, but step {step} means "
            f"{step // per_epoch} finished epochs"
        )
    expected = num_params(config.layer_sizes)
    earlier = _earlier(path, config, extra.pop(EARLIER_PARAMS, None), expected)
    arrays = {
        "params": params,
        **{f"optimizer.{k}": v for k, v in optimizer.items()},
        **{f"extra.{k}": v for k, v in extra.items()},
    }
    for name, array in arrays.items():
        if array.shape != (expected,) or array.dtype != np.dtype(config.dtype):
            raise ResumeError(
                f"{path}: tensor {name!r} is {array.dtype}{list(array.shape)}, "
                f"expected {config.dtype}[{expected}]"
            )
    tallies = {}
    for field in ("epoch_loss_sum", "epoch_correct", "epoch_samples", "epoch_seconds"):
        value = meta.get(field, 0)
        if not (isinstance(value, int | float) and not isinstance(value, bool)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ResumeError(f"{path}: invalid {field}={value!r} in its metadata")
        tallies[field] = value
    tally = EpochTally(
        loss_sum=float(tallies["epoch_loss_sum"]),
        correct=int(tallies["epoch_correct"]),
        samples=int(tallies["epoch_samples"]),
        seconds=float(tallies["epoch_seconds"]),
    )
    best = _best(path, config, meta, extra, history)
    return Snapshot(step, params, optimizer, history, tally, best, earlier)


def _best(
    path: Path,
    config: TrainConfig,
    meta: dict[str, Any],
    extra: dict[str, np.ndarray],
    history: list[dict[str, Any]],
) -> Best | None:
    """The best epoch so far recorded in a checkpoint of a ``keep_best`` run (None before the
    first epoch's end)."""
    if not config.keep_best or not history:
        return None
    best = meta.get("best")
    epoch = best.get("epoch") if isinstance(best, dict) else None
    if "best_params" not in extra or not _is_int(epoch) or not 1 <= epoch <= len(history):
        raise ResumeError(
            f"{path}: no best epoch (metadata 'best' and tensor 'extra.best_params') among its "
            f"{len(history)} finished epochs, which a keep_best run records"
        )
    row = history[epoch - 1]
    accuracy = row.get("val_accuracy")
    if not isinstance(accuracy, float):
        raise ResumeError(f"{path}: epoch {epoch}, its best, has no val_accuracy in its history")
    return Best(epoch, accuracy, extra["best_params"])


def write_snapshot(path: Path, config: TrainConfig, snap: Snapshot, *, epoch_end: bool) -> None:
    """Write ``snap`` atomically to ``path`` (its directory made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = SGD(config.lr, config.momentum, config.weight_decay)
    optimizer.load_state(snap.optimizer)
    tally = snap.tally
    meta = {
        "step": snap.step,
        "epoch_end": epoch_end,
        "seed": config.seed,
        "config": config.to_record(),
        "history": snap.history,
        "epoch_loss_sum": tally.loss_sum,
        "epoch_correct": tally.correct,
        "epoch_samples": tally.samples,
        "epoch_seconds": tally.seconds,
    }
    extra = {}
    if snap.best is not None:
        meta["best"] = {"epoch": snap.best.epoch, "val_accuracy": snap.best.val_accuracy}
        extra["best_params"] = snap.best.params
    if snap.earlier is not None:
        extra[EARLIER_PARAMS] = snap.earlier
    save_checkpoint(path, snap.params, optimizer, meta, extra)


def _earlier(
    path: Path, config: TrainConfig, earlier: np.ndarray | None, n_params: int
) -> np.ndarray | None:
    """The checkpoint's earlier parameter versions, checked to be what ``config`` reads."""
    rows = config.staleness - 1 if config.algorithm == "async" else 0
    if not rows:
        if earlier is not None:
            raise ResumeError(f"{path}: unexpected tensor 'extra.{EARLIER_PARAMS}' for this config")
        return None
    shape = (rows, n_params)
    if earlier is None or earlier.shape != shape or earlier.dtype != np.dtype(config.dtype):
        found = "none" if earlier is None else f"{earlier.dtype}{list(earlier.shape)}"
        raise ResumeError(
            f"{path}: tensor 'extra.{EARLIER_PARAMS}' is {found}, expected {config.dtype}"
            f"{list(shape)} (the parameters after the {rows} updates before its step, which "
            "async SGD's next gradients read)"
        )
    return earlier


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_row(row: Any) -> bool:
    return isinstance(row, dict) and _is_int(row.get("epoch"))
