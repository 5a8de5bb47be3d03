"""examples/service_client.py does what it claims: the fault fires, the faulty and fault-free
jobs' checksums are compared, and nothing is written into the current directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "service_client.py"


@pytest.mark.slow
def test_service_client_compares_with_a_fault_free_job_and_writes_to_a_temp_dir(tmp_path):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "injected kill:worker=0@step=100" in run.stdout
    assert ": equal" in run.stdout
    assert "checksum matches" in run.stdout
    assert list(cwd.iterdir()) == []
    written = list(tmp.glob("otpnn-client-*/model.safetensors"))
    assert len(written) == 1
    assert not list(tmp.glob("otpnn-state-*"))  # its own service's state dir is removed
