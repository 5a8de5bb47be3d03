"""What service tests share by name: the small job every test trains, and records on disk
(``from conftest import`` would find whichever conftest.py was imported first)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otpnn.config import TrainConfig
from otpnn.service import records
from otpnn.service.jobs import DEFAULT_CHECKPOINT_EVERY
from otpnn.service.records import RUN_OPTIONS
from otpnn.service.schema import JobRequest
from otpnn.service.store import Store

# 768 samples, batch 64: 12 steps an epoch, 24 in all; 4 micro-shards a step.
JOB = {
    "dataset": "synthetic",
    "synthetic_train": 768,
    "synthetic_test": 256,
    "epochs": 2,
    "batch_size": 64,
    "shard_size": 16,
    "seed": 7,
    "workers": 2,
    "backend": "process",
}


def write_record(state_dir: Path, state: str = "queued", **overrides: Any) -> dict[str, Any]:
    """A job record on disk, as the service writes one for a submit of ``JOB | overrides``."""
    body = JobRequest.model_validate({**JOB, **overrides}).model_dump()
    options = {k: body.pop(k) for k in RUN_OPTIONS}
    body["checkpoint_every"] = body["checkpoint_every"] or DEFAULT_CHECKPOINT_EVERY
    record = {**records.new(Store.new_id(), TrainConfig.from_dict(body), options), "state": state}
    directory = state_dir / "jobs" / record["id"]
    directory.mkdir(parents=True)
    (directory / "job.json").write_text(json.dumps(record))
    return record
