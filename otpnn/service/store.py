"""The state directory: where every file the service writes lives, and nowhere else.

::

    <state-dir>/.otpnn.lock                   held (flock) by the one service using this dir
    <state-dir>/jobs/<id>/job.json            the job record: config, options, state, times, error
    <state-dir>/jobs/<id>/job.json.damaged    a record that failed validation, kept as it was
    <state-dir>/jobs/<id>/ckpt/checkpoint.safetensors
    <state-dir>/jobs/<id>/report.json         the same report as ``otpnn train --report``
    <state-dir>/jobs/<id>/model.safetensors   the trained weights

Rules:

- One service per state dir: :meth:`Store.lock` takes its :class:`~otpnn.dirlock.DirLock`,
  which the kernel releases when the process ends however it ends (a SIGKILLed service leaves
  no stale lock); a second service on the same dir is refused before it reads a record.
- Nothing is written after :meth:`Store.close`: every write goes through :meth:`Store.writing`,
  which refuses once the store is closed (a job thread that outlived a shutdown writes nothing).
- Job ids are made here (random hex) and checked against a strict pattern before they become a
  path, so no request can name a file outside the state directory. Every write is atomic.
- Reading never trusts the disk: :meth:`Store.read` turns any unreadable record (truncated,
  not UTF-8, a directory in its place) into :class:`DamagedRecord` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from otpnn.atomic import write_atomic
from otpnn.dirlock import DirLock

JOB_ID = re.compile(r"^[0-9a-f]{12}$")
RECORD = "job.json"
DAMAGED = "job.json.damaged"


class UnknownJob(KeyError):
    """No job with this id (or an id that cannot be one)."""


class StoreClosed(RuntimeError):
    """A write after the service shut down: refused, so the state dir stays as it was left."""


class DamagedRecord(ValueError):
    """A job record that cannot be used; the message says why."""


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.jobs = self.root / "jobs"
        self.jobs.mkdir(parents=True, exist_ok=True)
        self._dir_lock = DirLock(self.root, "otpnn serve")
        self._closed = False
        self._write_lock = threading.Lock()

    # -- the one service of this directory ----------------------------------------------------
    def lock(self) -> None:
        """Hold the state dir for this process until :meth:`close` or the process's end;
        DirectoryBusy (naming the holder's pid) if another process holds it. Idempotent."""
        self._dir_lock.acquire()

    def close(self) -> None:
        """No write from now on (waits for one in progress); then give the lock back."""
        with self._write_lock:
            self._closed = True
        self._dir_lock.release()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while writing anything under the state dir: StoreClosed after :meth:`close`."""
        with self._write_lock:
            if self._closed:
                raise StoreClosed("the service has stopped: nothing more is written")
            yield

    # -- paths --------------------------------------------------------------------------------
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

    # -- records ------------------------------------------------------------------------------
    def save(self, record: dict[str, Any]) -> None:
        """Write a job record atomically (a crash leaves the old record or the new one)."""
        with self.writing():
            directory = self.job_dir(record["id"])
            directory.mkdir(parents=True, exist_ok=True)
            write_json(directory / RECORD, record)

    def job_ids(self) -> list[str]:
        """Every job directory that has something where its record belongs."""
        return sorted(
            p.name
            for p in self.jobs.iterdir()
            if JOB_ID.match(p.name) and os.path.lexists(p / RECORD)
        )

    def read(self, job_id: str) -> Any:
        """The parsed content of a job's record; DamagedRecord if it cannot be read as JSON."""
        path = self.job_dir(job_id) / RECORD
        try:
            return json.loads(path.read_bytes().decode())
        except IsADirectoryError:
            raise DamagedRecord(f"{RECORD} is a directory") from None
        except OSError as e:
            raise DamagedRecord(f"{RECORD} cannot be read ({e.strerror})") from None
        except UnicodeDecodeError:
            raise DamagedRecord(f"{RECORD} is not UTF-8 text") from None
        except ValueError as e:
            raise DamagedRecord(f"{RECORD} is not valid JSON ({e})") from None

    def record_mtime(self, job_id: str) -> float | None:
        with contextlib.suppress(OSError):
            return (self.job_dir(job_id) / RECORD).lstat().st_mtime
        return None

    def set_aside(self, job_id: str) -> None:
        """Move a damaged record to ``job.json.damaged`` (for its owner to look at), so that a
        fresh record can take its place; OSError if that cannot be done."""
        with self.writing():
            directory = self.job_dir(job_id)
            os.replace(directory / RECORD, directory / DAMAGED)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
