"""The JSON report of a run: the same schema for the CLI, the service and the Elixir reference.

Top-level keys: ``config``, ``environment``, ``epochs`` (one row per epoch), ``restarts``,
``events``, ``faults`` (``planned`` and ``unfired`` specs), ``final``; ``schema`` names the
version. See README.md, "Report format".
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_info

from otpnn.atomic import write_atomic
from otpnn.config import TrainConfig
from otpnn.model import params_sha256

if TYPE_CHECKING:
    from otpnn.training.job import TrainingJob

SCHEMA = "otpnn-report/1"


def environment(workers: int, backend: str, protocol: str | None = None) -> dict[str, Any]:
    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    return {
        "blas_kernel": blas_kernel(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "blas": blas,
        "blas_threads_per_worker": 1,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "workers": workers,
        "backend": backend,
        **({"protocol": protocol} if protocol else {}),
    }


def blas_kernel() -> str:
    """The BLAS library and the kernel it chose for this CPU, e.g. ``openblas 0.3.27 Haswell``.

    Checksums are reproducible for a given kernel: another kernel (another CPU kind) rounds a
    matrix product differently, so this names what a run's ``params_sha256`` holds for."""
    libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    if not libs:
        return "unknown"
    lib = libs[0]
    parts = (lib.get("internal_api"), lib.get("version"), lib.get("architecture"))
    return " ".join(str(p) for p in parts if p) or "unknown"


def build_report(
    config: TrainConfig,
    workers: int,
    *,
    epochs: list[dict[str, Any]],
    events: list[dict[str, Any]],
    restarts: int,
    final: dict[str, Any],
    dataset: str,
    protocol: str | None = None,
    faults: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    cfg = config.to_record()
    cfg.update(workers=workers, dataset_name=dataset)
    return {
        "schema": SCHEMA,
        "system": "otpnn",
        "config": cfg,
        "environment": environment(workers, config.backend, protocol),
        "epochs": epochs,
        "restarts": restarts,
        "events": events,
        "faults": faults or {"planned": [], "unfired": []},
        "final": final,
    }


def job_report(job: TrainingJob, final: dict[str, Any] | None) -> dict[str, Any]:
    """The report of a job as it stands: epochs from its latest snapshot; ``final`` is None for
    a job that failed or was stopped."""
    snap = job.state.latest_snapshot()
    return build_report(
        job.config,
        job.workers,
        epochs=snap.history if snap else [],
        events=[e.to_dict() for e in job.state.events()],
        restarts=job.state.restarts,
        final=final or {"failed": True, "steps": job.progress.step},
        dataset=job.dataset.name,
        protocol=job.protocol,
        faults={
            "planned": [str(f) for f in job.state.planned_faults()],
            "unfired": [str(f) for f in job.state.unfired_faults()],
        },
    )


def final_summary(job: TrainingJob, result: dict[str, Any]) -> dict[str, Any]:
    """The report's ``final`` for a job that succeeded with ``result``; with ``keep_best``,
    ``best`` names the kept epoch (its validation and test accuracy, its checksum)."""
    history = result["history"]
    final = {
        "test_accuracy": history[-1]["test_accuracy"] if history else None,
        "params_sha256": params_sha256(result["params"]),
        "steps": job.state.progress.step,
        "seconds": time.perf_counter() - job.started_at,
    }
    best = result.get("best")
    if best is not None:
        test_accuracy = history[best.epoch - 1]["test_accuracy"]
        final["best"] = {**best.summary(), "test_accuracy": test_accuracy}
    return final


def write_report(path: str | os.PathLike, report: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
