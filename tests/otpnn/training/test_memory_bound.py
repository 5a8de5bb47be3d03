"""A job's memory is known before it starts, and a job that cannot fit is refused up front."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from test_cli_train import otpnn

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.training.job import TrainingJob
from otpnn.training.memory import JobTooLarge, check_memory, job_memory, parse_size
from otpnn.training.state import Progress


def _our_segments() -> int:
    """Bytes of this process's shared-memory segments now (SharedArray names carry the pid)."""
    return sum(p.stat().st_size for p in Path("/dev/shm").glob(f"otpnn_{os.getpid()}_*"))


def test_the_estimate_covers_the_segments_a_running_job_allocates() -> None:
    # Many small shards: the gradient rows dominate, as in the job that asked for 986 MB.
    cfg = TrainConfig(
        dataset="synthetic", synthetic_train=2048, synthetic_test=64, epochs=1,
        batch_size=2048, shard_size=8, hidden=(16,), workers=2, backend="process",
    )  # fmt: skip
    seen: list[int] = []
    looked = threading.Event()

    def on_progress(_: Progress) -> None:
        if not looked.is_set():
            seen.append(_our_segments())
            looked.set()

    data = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    TrainingJob(cfg, data, on_progress=on_progress).run()
    need = job_memory(cfg)
    assert seen
    assert 0.8 * need.shared_total <= seen[0] <= need.shared_total


def test_the_issue_job_is_refused_under_a_limit_naming_the_gradient_rows() -> None:
    cfg = TrainConfig(dataset="synthetic", synthetic_train=20000, batch_size=20000, shard_size=1,
                      hidden=(16,), epochs=1)  # fmt: skip
    with pytest.raises(JobTooLarge, match=r"would need about 1\.\d GiB.*20000 of 1 rows"):
        check_memory(cfg, limit=512 * 2**20)
    assert check_memory(cfg, limit=4 * 2**30).total > 900 * 2**20


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 * 2**20), ("8G", 8 * 2**30), ("1.5GiB", 3 * 2**29), ("1000", 1000)],
)
def test_sizes_parse(text, size) -> None:
    assert parse_size(text, "X") == size


def test_a_bad_size_names_the_setting() -> None:
    with pytest.raises(JobTooLarge, match="OTPNN_MAX_MEMORY='lots'"):
        parse_size("lots", "OTPNN_MAX_MEMORY")


@pytest.mark.parametrize(
    ("args", "largest"),
    [
        (["--synthetic-train", "99999999"], "dataset (loaded)"),
        (["--hidden", "99999999"], "coordinator buffers"),
        (
            ["--synthetic-train", "60000", "--batch-size", "60000", "--shard-size", "1"],
            "gradient rows",
        ),
    ],
)
def test_the_cli_refuses_a_job_too_large_with_one_message(args, largest, monkeypatch) -> None:
    monkeypatch.setenv("OTPNN_MAX_MEMORY", "8G")  # the same answer on a machine with more
    run = otpnn("train", "--dataset", "synthetic", "--quiet", *args)
    assert run.returncode == 2, run.stderr
    assert "would need about" in run.stderr
    assert largest in run.stderr
    assert "Traceback" not in run.stderr
    assert "MemoryError" not in run.stderr
