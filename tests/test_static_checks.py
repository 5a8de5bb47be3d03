"""The linters are part of the test suite, so the README's one test command (what .ci/run runs)
fails on a lint or type error: ``ruff check`` over the repository and ``mypy`` over the two
packages, with the configuration in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]' installs it)")
    return subprocess.run(
        [found, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_supervision_and_otpnn() -> None:
    result = _run("mypy", "supervision", "otpnn")
    assert result.returncode == 0, result.stdout + result.stderr


def test_supervision_knows_nothing_of_otpnn_and_training_nothing_of_the_cli() -> None:
    """One-way dependencies: otpnn -> supervision, and the CLI -> the trainer, never back."""
    for path in (ROOT / "supervision").rglob("*.py"):
        assert "otpnn" not in path.read_text(), f"{path} names otpnn"
    code = (
        "import sys, supervision, supervision.process, supervision.shm, supervision.ray;"
        "assert not [m for m in sys.modules if m.startswith('otpnn')], 'supervision imports otpnn';"
        "import otpnn.training, otpnn.training.forkserver_preload, otpnn.training.ray_backend;"
        "assert 'otpnn.cli' not in sys.modules, 'training imports the CLI'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
