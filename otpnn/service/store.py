"""The state directory: where every file the service writes lives, and nowhere else.

::

    <state-dir>/jobs/<id>/job.json            the job record: config, options, state, times, error
    <state-dir>/jobs/<id>/ckpt/checkpoint.safetensors
    <state-dir>/jobs/<id>/report.json         the same report as ``otpnn train --report``
    <state-dir>/jobs/<id>/model.safetensors   the trained weights

Job ids are made here (random hex) and checked against a strict pattern before they become a
path, so no request can name a file outside the state directory. Every write is atomic.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from otpnn.atomic import write_atomic

JOB_ID = re.compile(r"^[0-9a-f]{12}$")


class UnknownJob(KeyError):
    """No job with this id (or an id that cannot be one)."""


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.jobs = self.root / "jobs"
        self.jobs.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)

    def job_dir(self, job_id: str) -> Path:
        """The directory of a job; UnknownJob for anything that is not a well-formed id."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise UnknownJob(job_id)
        return self.jobs / job_id

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "ckpt"

    def report_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "report.json"

    def model_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "model.safetensors"

    def save(self, record: dict[str, Any]) -> None:
        """Write a job record atomically (a crash leaves the old record or the new one)."""
        directory = self.job_dir(record["id"])
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "job.json", record)

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable job record, oldest first; unreadable ones are skipped (and named by
        the caller's log), so one damaged directory does not keep the service down."""
        records = []
        for path in sorted(self.jobs.glob("*/job.json")):
            if not JOB_ID.match(path.parent.name):
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("id") == path.parent.name:
                records.append(record)
        return sorted(records, key=lambda r: (r.get("created", 0), r["id"]))


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
