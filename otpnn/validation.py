"""The validation split and best-epoch keeping (``val_split``, ``keep_best``).

Rules every trainer follows (the serial reference and the actor job call these functions):

- ``val_split`` holds out rows of the training set before anything trains: a fraction in
  (0, 1) holds out ``ceil(fraction * n)`` rows, a whole number that many rows (scikit-learn's
  ``test_size`` convention). Which rows is drawn from the seed and the row count alone, so it is
  the same for any worker count, kind or resume. The held-out rows are never trained on: the
  job trains on the remaining rows, in their original order, exactly as on a dataset that
  never had the others (so its bits are that dataset's).
- After every epoch the held-out rows are evaluated like the test set: the epoch's row gains
  ``val_loss`` and ``val_accuracy``.
- ``keep_best`` keeps the parameters after the epoch with the highest validation accuracy
  (ties: the earliest epoch). They are what ``--save`` and the service's model file hold; the
  report names the epoch. The best so far travels in every snapshot and checkpoint, so a
  restarted or resumed job keeps it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from otpnn.config import ConfigError, TrainConfig
from otpnn.data import Dataset
from otpnn.model import evaluate, params_sha256

# The holdout's random stream: apart from the epoch permutations, which use (seed, epoch >= 1).
_HOLDOUT_STREAM = 0x76616C  # "val"


@dataclass(frozen=True)
class Holdout:
    """The held-out rows (indices into the full training set, ascending) and their data."""

    rows: np.ndarray
    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Best:
    """The parameters after the epoch with the best validation accuracy so far."""

    epoch: int
    val_accuracy: float
    params: np.ndarray  # a copy, never written to

    def summary(self) -> dict[str, Any]:
        """The report's ``best``: which epoch, its validation accuracy and checksum."""
        return {
            "epoch": self.epoch,
            "val_accuracy": self.val_accuracy,
            "params_sha256": params_sha256(self.params),
        }


def held_out_count(val_split: float | int, n: int) -> int:
    """How many of ``n`` training rows ``val_split`` holds out; ConfigError unless at least one
    is held out and one remains to train on."""
    count = math.ceil(val_split * n) if isinstance(val_split, float) else val_split
    if count >= n:
        raise ConfigError(
            f"invalid val_split={val_split!r}: it holds out {count} of the {n} training rows; "
            "at least one must remain to train on"
        )
    return count


def held_out_rows(cfg: TrainConfig, n: int) -> np.ndarray:
    """The held-out rows of a training set of ``n`` rows (ascending; empty without a split)."""
    if cfg.val_split is None:
        return np.empty(0, np.int64)
    count = held_out_count(cfg.val_split, n)
    rng = np.random.default_rng((cfg.seed, _HOLDOUT_STREAM))
    return np.sort(rng.permutation(n)[:count]).astype(np.int64, copy=False)


def split_dataset(dataset: Dataset, cfg: TrainConfig) -> tuple[Dataset, Holdout | None]:
    """(the dataset to train on, the held-out rows) for ``cfg``; the dataset itself and None
    without a split."""
    if cfg.val_split is None:
        return dataset, None
    n = len(dataset.train_labels)
    rows = held_out_rows(cfg, n)
    keep = np.ones(n, bool)
    keep[rows] = False
    train = dataclasses.replace(
        dataset,
        train_images=np.ascontiguousarray(dataset.train_images[keep]),
        train_labels=np.ascontiguousarray(dataset.train_labels[keep]),
    )
    return train, Holdout(rows, dataset.train_images[rows], dataset.train_labels[rows])


def validate(cfg: TrainConfig, params: np.ndarray, holdout: Holdout | None) -> dict[str, float]:
    """An epoch row's validation keys: ``val_loss``, ``val_accuracy`` (none without a split)."""
    if holdout is None:
        return {}
    loss, accuracy = evaluate(
        params, cfg.layer_sizes, cfg.activation, holdout.images, holdout.labels
    )
    return {"val_loss": loss, "val_accuracy": accuracy}


def keep_if_best(
    cfg: TrainConfig, best: Best | None, row: dict[str, Any], params: np.ndarray
) -> Best | None:
    """The best after the epoch of ``row`` (its parameters ``params``): a copy of them if its
    validation accuracy beats ``best``'s strictly (a tie keeps the earlier epoch)."""
    if not cfg.keep_best:
        return None
    accuracy = row["val_accuracy"]
    if best is None or accuracy > best.val_accuracy:
        return Best(row["epoch"], accuracy, params.copy())
    return best


def model_params(result: dict[str, Any]) -> np.ndarray:
    """The parameters a job's ``result`` saves as its model: the best epoch's if kept."""
    best = result.get("best")
    return result["params"] if best is None else best.params
