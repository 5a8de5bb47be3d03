"""Training configuration: one frozen, validated, JSON-friendly record.

Field names double as CLI long options (with underscores) and as HTTP request keys, so a job is
described the same way everywhere. Validation happens at construction, so an invalid config never
reaches the trainer; every error names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, TypeGuard

from otpnn.errors import UsageError

DATASETS = ("mnist", "synthetic")
ACTIVATIONS = ("relu", "sigmoid")
DTYPES = ("float32", "float64")
BACKENDS = ("thread", "process", "ray")
ALGORITHMS = ("sync", "local-sgd", "async")  # see otpnn.local_sgd, otpnn.async_sgd
LR_SCHEDULES = ("constant", "step", "cosine")  # see otpnn.lr_schedule
INPUT_SIZE = 784
NUM_CLASSES = 10
# The default micro-shard: the batch cut into one shard per core, but never below this many rows
# (or the batch). A shard has a fixed cost whatever its rows (small numpy calls, GEMMs that stream
# all the weights, a whole gradient row written and reduced), so fewer, larger shards cost less,
# and smaller ones than these cost as much as these (see benchmarks/README.md).
MIN_DEFAULT_SHARD_ROWS = 32
# Why async's staleness starts at 1 (said where a 0 is refused).
STALENESS_RULE = (
    "update t's gradient is taken on the parameters after update t-staleness; 1 is sync SGD, "
    "0 would need update t's own result"
)
# The fields whose default is the algorithm's: None in a TrainConfig's constructor takes
# algorithm_defaults' value, an explicit value always wins.
ALGORITHM_DEFAULTED = ("momentum", "lr_warmup_steps")
SYNC_MOMENTUM = 0.5
ASYNC_WARMUP_PER_STALENESS = 100  # async: lr warm-up steps for each update of delay
# What algorithm_defaults gives, as the CLI's help and the service's schema say it.
ALGORITHM_DEFAULTS_TEXT = {
    "momentum": f"{SYNC_MOMENTUM}; async with staleness S >= 2: 0",
    "lr_warmup_steps": f"0; async: {ASYNC_WARMUP_PER_STALENESS} x (S - 1)",
}


def algorithm_defaults(algorithm: str, staleness: int) -> dict[str, float | int]:
    """The momentum and learning-rate warm-up ``algorithm`` trains with where a config names
    none (chosen on MNIST at the default network, batch and lr, 5 epochs, with the serial
    references; the grid is in benchmarks/README.md).

    sync and local-sgd: momentum 0.5, no warm-up. async with staleness S >= 2: momentum 0 and
    the rate ramped up over ``100 x (S - 1)`` updates. A gradient S updates old already acts
    like momentum (about ``1 - 1/S``: Mitliagkas et al. 2016, "Asynchrony begets momentum"), so
    explicit momentum on top of it overshoots (S = 4 at momentum 0.5 diverges); and stale
    gradients hurt most early on, while they are large and change fastest. S = 1 is sync, so
    it takes sync's defaults (and its bits)."""
    if algorithm == "async" and _is_int(staleness) and staleness >= 2:
        return {"momentum": 0.0, "lr_warmup_steps": ASYNC_WARMUP_PER_STALENESS * (staleness - 1)}
    return {"momentum": SYNC_MOMENTUM, "lr_warmup_steps": 0}


def default_shards_per_batch() -> int:
    """The cores this process may run on, at least 2 (so that two workers can share a step).

    Machine-dependent on purpose: on N cores N workers each take one shard of a step. The trained
    bits depend on the shard size, so reports and exports record the effective one, a resume is
    checked against it, and ``--shard-size`` reproduces a run made on any machine."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None  # not on macOS
    return max(2, len(usable) if usable is not None else os.cpu_count() or 1)


class ConfigError(UsageError, ValueError):
    """An invalid configuration value; the message names the field and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and, with the seed, its exact result).

    The defaults lr=0.2, momentum=0.5 (batch 64), decayed tenfold after 4 epochs (the ``step``
    schedule) were the best of small grids on MNIST over 6 seeds (see benchmarks/README.md).
    ``momentum`` and ``lr_warmup_steps`` left None take the algorithm's defaults
    (:func:`algorithm_defaults`); the constructed config holds the values that apply, so it
    records and reproduces a run as it is. (``dataclasses.replace`` therefore carries them over:
    pass None again to take another algorithm's.)
    `workers` and `backend` change only speed, never the trained parameters, except with
    ``algorithm="local-sgd"``: each worker count is its own algorithm there (the number of
    replicas averaged; `sync_every` and `warmup_steps` see :mod:`otpnn.local_sgd`).
    ``algorithm="async"`` keeps that promise for its ``staleness`` (see :mod:`otpnn.async_sgd`).
    The ``lr_*`` fields are the learning-rate schedule (:mod:`otpnn.lr_schedule`); ``val_split``
    and ``keep_best`` the validation split and best-epoch keeping (:mod:`otpnn.validation`).
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int = 64
    shard_size: int | None = None
    lr: float = 0.2
    momentum: float = None  # type: ignore[assignment]  # None: the algorithm's default
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    dtype: str = "float32"
    workers: int | None = None
    backend: str = "process"
    seed: int = 0
    synthetic_train: int = 2048
    synthetic_test: int = 512
    checkpoint_every: int = 0
    algorithm: str = "sync"
    sync_every: int = 8  # local-sgd: local steps between averages
    warmup_steps: int = 0  # local-sgd: synchronous steps first
    staleness: int = 2  # async: update t's gradient is taken on the parameters after t-staleness
    lr_schedule: str = "step"
    lr_step_epochs: int = 4  # step: epochs between decays
    lr_gamma: float = 0.1  # step: the factor of each decay
    lr_min: float = 0.0  # cosine: the lr at the end of the run
    # Any schedule: linear warm-up over the first updates; None: the algorithm's default.
    lr_warmup_steps: int = None  # type: ignore[assignment]
    val_split: float | int | None = None  # a fraction in (0, 1) or a row count (scikit-learn's)
    keep_best: bool = False  # keep the parameters of the best validation accuracy

    def __post_init__(self) -> None:
        hidden: object = self.hidden  # a JSON request gives a list
        if isinstance(hidden, list):
            object.__setattr__(self, "hidden", tuple(hidden))
        defaults = algorithm_defaults(self.algorithm, self.staleness)
        for field in ALGORITHM_DEFAULTED:
            if getattr(self, field) is None:
                object.__setattr__(self, field, defaults[field])
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for the first invalid field."""
        _choice("dataset", self.dataset, DATASETS)
        data_dir: object = self.data_dir  # from JSON: anything
        if data_dir is not None and not isinstance(data_dir, str):
            _fail("data_dir", data_dir, "a directory path (string) or null")
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        if self.shard_size is not None:
            _int("shard_size", self.shard_size, 1)
            if self.shard_size > self.batch_size:
                _fail("shard_size", self.shard_size, f"at most batch_size ({self.batch_size})")
        _float("lr", self.lr, low=0.0, low_open=True)
        _float("momentum", self.momentum, low=0.0, high=1.0)
        _float("weight_decay", self.weight_decay, low=0.0)
        hidden: object = self.hidden
        if not isinstance(hidden, tuple) or not all(_is_int(h) and h >= 1 for h in hidden):
            _fail("hidden", self.hidden, "a list of positive integers (hidden layer sizes)")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("dtype", self.dtype, DTYPES)
        if self.workers is not None:
            _int("workers", self.workers, 1)
        _choice("backend", self.backend, BACKENDS)
        _int("seed", self.seed, 0)
        _int("synthetic_train", self.synthetic_train, 1)
        _int("synthetic_test", self.synthetic_test, 1)
        _int("checkpoint_every", self.checkpoint_every, 0)
        _choice("algorithm", self.algorithm, ALGORITHMS)
        _int("sync_every", self.sync_every, 1)
        _int("warmup_steps", self.warmup_steps, 0)
        if not _is_int(self.staleness) or self.staleness < 1:
            _fail("staleness", self.staleness, f"an integer >= 1 ({STALENESS_RULE})")
        for field, algorithm in _ALGORITHM_FIELDS.items():
            value, default = getattr(self, field), _DEFAULTS[field]
            if self.algorithm != algorithm and value != default:
                _fail(field, value, f"{default} (it applies to algorithm '{algorithm}' only)")
        self._validate_lr_schedule()
        self._validate_val_split()

    def _validate_lr_schedule(self) -> None:
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _int("lr_step_epochs", self.lr_step_epochs, 1)
        _float("lr_gamma", self.lr_gamma, low=0.0, low_open=True)
        if self.lr_gamma > 1:
            _fail("lr_gamma", self.lr_gamma, "a finite number > 0.0 and <= 1.0 (a decay)")
        _float("lr_min", self.lr_min, low=0.0)
        if self.lr_min > self.lr:
            _fail("lr_min", self.lr_min, f"at most lr ({self.lr}): cosine decays from lr to it")
        _int("lr_warmup_steps", self.lr_warmup_steps, 0)
        only = {"lr_step_epochs": "step", "lr_gamma": "step", "lr_min": "cosine"}
        for field, schedule in only.items():
            value, default = getattr(self, field), _DEFAULTS[field]
            if self.lr_schedule != schedule and value != default:
                _fail(field, value, f"{default} (it applies to lr_schedule {schedule!r} only)")

    def _validate_val_split(self) -> None:
        split: object = self.val_split
        if split is not None and not (
            (_is_int(split) and split >= 1)
            or (isinstance(split, float) and math.isfinite(split) and 0 < split < 1)
        ):
            _fail("val_split", split, "a fraction > 0 and < 1 (e.g. 0.1) or a row count >= 1")
        keep_best: object = self.keep_best  # from JSON: anything
        if not isinstance(keep_best, bool):
            _fail("keep_best", keep_best, "true or false")
        if self.keep_best and split is None:
            _fail("keep_best", True, "false without val_split (the best epoch is the best on it)")

    @property
    def effective_shard_size(self) -> int:
        """Micro-shard size: fixed by the config, never by the worker count (bit-identity).

        Default for ``sync``: the batch cut into :func:`default_shards_per_batch` shards (one per
        core), so that the workers share each step, but at least MIN_DEFAULT_SHARD_ROWS rows (or
        the whole batch, if smaller). For ``local-sgd`` and ``async``, the whole batch: one
        worker computes a batch there (a replica's local step; an async update, except where
        the stepwise protocol has more workers than the staleness), and every further shard
        would only cost (it streams every weight matrix again)."""
        if self.shard_size is not None:
            return self.shard_size
        if self.algorithm != "sync":
            return self.batch_size
        per_core = math.ceil(self.batch_size / default_shards_per_batch())
        return max(per_core, min(self.batch_size, MIN_DEFAULT_SHARD_ROWS))

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (INPUT_SIZE, *self.hidden, NUM_CLASSES)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_dict` with the effective shard size, as reports, checkpoints and exports
        record a run: a default derived from the machine's cores would not reproduce it."""
        return {**self.to_dict(), "shard_size": self.effective_shard_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        return cls(**d)


# Fields of one algorithm: any other algorithm takes them at their default only.
_ALGORITHM_FIELDS = {"sync_every": "local-sgd", "warmup_steps": "local-sgd", "staleness": "async"}
_DEFAULTS = {
    f: getattr(TrainConfig, f) for f in (*_ALGORITHM_FIELDS, "lr_step_epochs", "lr_gamma", "lr_min")
}


def _fail(field: str, value: object, allowed: str) -> None:
    raise ConfigError(f"invalid {field}={value!r}: expected {allowed}")


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(field: str, value: object, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        _fail(field, value, f"an integer >= {minimum}")


def _float(
    field: str, value: object, *, low: float, high: float | None = None, low_open: bool = False
) -> None:
    ok = False
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        ok = (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        lo = f"> {low}" if low_open else f">= {low}"
        hi = f" and < {high}" if high is not None else ""
        _fail(field, value, f"a finite number {lo}{hi}")


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(field, value, "one of " + ", ".join(map(repr, allowed)))
