"""What a client may send: the job request, validated before anything runs.

The config fields are :class:`~otpnn.config.TrainConfig`'s (the CLI's long options with
underscores) plus the CLI's per-run options (faults, chaos, step timeout, restart intensity).
Bounds here are the service's resource limits, tighter than the trainer's own checks, so no
request can ask for a model or a dataset that would exhaust the machine; ``TrainConfig``
validates again (e.g. ``shard_size <= batch_size``). This model is also the OpenAPI schema.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from otpnn.config import ALGORITHM_DEFAULTS_TEXT, ConfigError, TrainConfig
from otpnn.data.mnist import FILES as MNIST_FILES
from otpnn.training.memory import check_memory, dataset_sizes
from otpnn.validation import held_out_count

MAX_PARAMETERS = 4_000_000
# Validation context of a request read back from a job record (see JobRequest._model_fits).
STORED = {"stored": True}
MAX_WORKERS = max(16, 2 * (os.cpu_count() or 1))

Size = Annotated[int, Field(ge=1, le=100_000)]
Layer = Annotated[int, Field(ge=1, le=4096)]
CONFIG_FIELDS = frozenset(TrainConfig.__dataclass_fields__)


class JobRequest(BaseModel):
    """A training job: the fields of ``otpnn train``'s options; omitted ones take its defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: Literal["mnist", "synthetic"] = "mnist"
    data_dir: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None,
        description="Absolute path of a directory with the four MNIST files (under the "
        "service's --data-root directories, if it has any); read only.",
    )
    epochs: Annotated[int, Field(ge=1, le=1000)] = 5
    batch_size: Annotated[int, Field(ge=1, le=60_000)] = 64
    shard_size: Annotated[int, Field(ge=1, le=60_000)] | None = Field(
        None,
        description="Micro-shard rows. Default: batch_size / cores (2 or more shards), >= 32 rows.",
    )
    lr: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 0.2
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = Field(
        None, description=f"SGD momentum. Default: {ALGORITHM_DEFAULTS_TEXT['momentum']}."
    )
    weight_decay: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    hidden: Annotated[list[Layer], Field(min_length=1, max_length=8)] = [128, 64]
    activation: Literal["relu", "sigmoid"] = "relu"
    dtype: Literal["float32", "float64"] = "float32"
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] | None = Field(
        None, description="Default: one per core."
    )
    backend: Literal["thread", "process"] = "process"
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    synthetic_train: Size = 2048
    synthetic_test: Size = 512
    checkpoint_every: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        None, description="Steps between checkpoints; 0 = epoch ends; default: the service's."
    )
    algorithm: Literal["sync", "local-sgd", "async"] = Field(
        "sync",
        description="local-sgd: replicas averaged every sync_every steps; async: gradients on "
        "parameters staleness updates old (see README).",
    )
    sync_every: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        8, description="local-sgd: local steps between averages."
    )
    warmup_steps: Annotated[int, Field(ge=0, le=100_000_000)] = Field(
        0, description="local-sgd: synchronous steps first (post-local SGD)."
    )
    staleness: Annotated[int, Field(ge=1, le=1000)] = Field(
        2, description="async: update t's gradient is taken on the parameters after t-staleness."
    )
    lr_schedule: Literal["constant", "step", "cosine"] = Field(
        "step", description="The learning rate of each step (see README: --lr-schedule)."
    )
    lr_step_epochs: Annotated[int, Field(ge=1, le=1000)] = Field(
        4, description="step: epochs between decays."
    )
    lr_gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        0.1, description="step: the factor of each decay."
    )
    lr_min: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = Field(
        0.0, description="cosine: the rate at the end of the run (at most lr)."
    )
    lr_warmup_steps: Annotated[int, Field(ge=0, le=100_000_000)] | None = Field(
        None,
        description="Linear warm-up: step t <= N trains at t/N of the schedule's rate. "
        f"Default: {ALGORITHM_DEFAULTS_TEXT['lr_warmup_steps']}.",
    )
    val_split: (
        Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
        | Annotated[int, Field(ge=1, le=100_000)]
        | None
    ) = Field(
        None,
        description="Hold out this fraction (e.g. 0.1) or this many rows of the training set, "
        "evaluated after every epoch (val_loss, val_accuracy), never trained on.",
    )
    keep_best: bool = Field(
        False, description="With val_split: the saved model is the best validation epoch's."
    )
    faults: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=32)] = Field(
        [], description="Fault specs KIND:TARGET@WHEN, as --fault; for the first run only."
    )
    chaos: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    chaos_seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    step_timeout: Annotated[float, Field(ge=0.1, le=3600, allow_inf_nan=False)] = 30.0
    max_restarts: Annotated[int, Field(ge=0, le=1000)] = 3
    max_seconds: Annotated[float, Field(ge=0.001, le=3600, allow_inf_nan=False)] = 5.0
    allow_unfired_faults: bool = Field(
        False, description="Without it, a job whose planned faults never fired ends failed."
    )

    @model_validator(mode="after")
    def _model_fits(self, info: ValidationInfo) -> JobRequest:
        sizes = [784, *self.hidden, 10]
        n = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
        if n > MAX_PARAMETERS:
            raise ValueError(f"the network has {n} parameters; at most {MAX_PARAMETERS} allowed")
        if info.context == STORED:
            return self  # accepted before; free memory is the machine's now: checked at its run
        fields = {k: v for k, v in self.model_dump().items() if k in CONFIG_FIELDS}
        fields["checkpoint_every"] = fields["checkpoint_every"] or 0
        try:
            config = TrainConfig(**fields)
        except ConfigError:
            return self  # named when the job is built from this request
        check_memory(config)  # JobTooLarge is a ValueError: a 422 saying what it would need
        if config.val_split is not None:  # ConfigError if it leaves no row to train on: a 422
            held_out_count(config.val_split, dataset_sizes(config)[0])
        return self


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    spec: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="KIND:TARGET@WHEN, the grammar of --fault, e.g. kill:worker=0@step=10"
    )


NOT_MNIST = "not an MNIST directory this service may read"


def check_data_dir(value: str | None, state_dir: Path, roots: Sequence[Path] = ()) -> str | None:
    """A data_dir is read-only input: an absolute path without ``..`` to a directory holding the
    four MNIST files, outside the state directory and, if the operator named data roots
    (``--data-root``), under one of them. Returns it resolved; ValueError says what is wrong.

    Every refusal of a well-formed path says the same thing (:data:`NOT_MNIST`), so an answer
    tells a client nothing about the server's files: not whether a path exists, what it
    resolves to (``/proc/self`` names the server's pid), or where the state directory is."""
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError("data_dir must not contain NUL bytes")
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"data_dir {value!r} must be an absolute path without '..'")
    resolved = path.resolve()
    if (
        _within(resolved, state_dir)
        or (roots and not any(_within(resolved, root) for root in roots))
        or not is_mnist_dir(resolved)
    ):
        raise ValueError(f"data_dir {value!r}: {NOT_MNIST}")
    return str(resolved)


def is_mnist_dir(directory: Path) -> bool:
    """The four MNIST files are there (by name, gzipped or not); the job checks their content."""
    try:
        return all(
            (directory / f"{base}.gz").is_file() or (directory / base).is_file()
            for base in MNIST_FILES.values()
        )
    except OSError:  # e.g. a directory this process may not search
        return False


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
