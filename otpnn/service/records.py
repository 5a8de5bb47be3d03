"""The job record (``jobs/<id>/job.json``): what a new one holds, and how one read back is checked.

A record read from disk is input like a request: it may be truncated, hand-edited, or left by
another version. :func:`checked` validates it with the API's own request schema (its config and
options together must be a valid :class:`JobRequest`) plus the record's own fields, so that a
damaged record becomes a failed job with a reason, never an exception inside the service (a
``state`` no counter knows, a ``created`` that cannot be sorted, a missing config).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from otpnn.config import ConfigError, TrainConfig
from otpnn.service.schema import STORED, JobRequest
from otpnn.service.store import JOB_ID, DamagedRecord

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(State)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
# The per-run options of a request (the rest of it is the TrainConfig).
RUN_OPTIONS = (
    "faults", "chaos", "chaos_seed", "step_timeout", "max_restarts", "max_seconds",
    "allow_unfired_faults",
)  # fmt: skip

NOT_STARTED: dict[str, Any] = {
    "step": 0,
    "epoch": 0,
    "total_steps": 0,
    "metrics": None,
    "restarts": 0,
    "restarts_by_actor": {},
    "faults_injected": 0,
    "pids": {},
}

Count = Annotated[int, Field(ge=0)]


class _EpochRow(BaseModel):
    """An epoch's metrics as the trainer reports them (``/metrics`` reads samples_per_second)."""

    model_config = ConfigDict(extra="allow", strict=True)

    epoch: Count
    seconds: float
    samples_per_second: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float


class _Final(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    params_sha256: str
    test_accuracy: float | None
    steps: Count


class _Record(BaseModel):
    """The fields the service reads; unknown ones are kept as they are. ``config`` and
    ``options`` may be missing only in a failed record (one that replaced a damaged one)."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: Annotated[str, Field(pattern=JOB_ID.pattern)]
    state: State
    config: dict[str, Any] | None
    options: dict[str, Any] | None
    created: Annotated[float, Field(allow_inf_nan=False)]  # records are sorted by it
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    resumes: Count = 0
    step: Count = 0
    epoch: Count = 0
    total_steps: Count = 0
    metrics: _EpochRow | None = None
    restarts: Count = 0
    restarts_by_actor: dict[str, Count] = {}
    faults_injected: Count = 0
    pids: dict[str, int] = {}
    injected: list[str] = []
    final: _Final | None = None

    @model_validator(mode="after")
    def _a_valid_request(self) -> _Record:
        if self.config is None or self.options is None:
            if self.state != "failed":
                raise ValueError("only a failed job may lack its config or options")
            return self
        try:
            JobRequest.model_validate({**self.config, **self.options}, context=STORED)
            TrainConfig.from_dict(self.config)
        except ValidationError as e:
            raise ValueError(f"not a valid job request: {_summary(e)}") from None
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


def new(job_id: str, config: TrainConfig, options: dict[str, Any]) -> dict[str, Any]:
    """The record of a job just submitted: queued, nothing run yet. Its config holds the
    effective shard size (a default may depend on the machine's cores), so that the job resumes
    with the same bits on whichever machine the service restarts."""
    return {
        "id": job_id,
        "state": "queued",
        "config": config.to_record(),
        "options": options,
        "created": time.time(),
        "started": None,
        "finished": None,
        "error": None,
        "resumes": 0,
        "injected": [],
        **NOT_STARTED,
    }


def replacing_damaged(job_id: str, reason: str, created: float | None) -> dict[str, Any]:
    """A failed record standing for a damaged one: it keeps the job listed, with the reason."""
    return {
        "id": job_id,
        "state": "failed",
        "config": None,
        "options": None,
        "created": created if created is not None else time.time(),
        "started": None,
        "finished": time.time(),
        "error": f"damaged job record: {reason}",
        "resumes": 0,
        **NOT_STARTED,
    }


def checked(raw: object, job_id: str) -> dict[str, Any]:
    """The record read from ``jobs/<job_id>/job.json``, validated; DamagedRecord says why not."""
    if not isinstance(raw, dict):
        raise DamagedRecord(f"not a JSON object but {type(raw).__name__}")
    try:
        record = _Record.model_validate(raw)
    except ValidationError as e:
        raise DamagedRecord(_summary(e)) from None
    if record.id != job_id:
        raise DamagedRecord(f"its id {record.id!r} is not its directory's name")
    return record.model_dump()


def _summary(e: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'record'}: "
        + err["msg"].removeprefix("Value error, ")
        for err in e.errors()
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more
