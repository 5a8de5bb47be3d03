"""Every code block of README.md that says how to do something runs as written.

Blocks fenced as ``sh`` or ``python`` run in README order in one directory, as a reader following
it would (shell blocks with ``bash -e``, the repository's ``otpnn`` first on the PATH, the
``examples/`` tree copied in; Python blocks as a script), unless the line before the fence is
``<!-- readme-test: skip (REASON) -->`` (the rendered README does not show it).
``<!-- readme-test: needs MNIST -->`` blocks run with $OTPNN_DATA_DIR at the real MNIST, and are
skipped where there is none (a test never downloads). Untagged blocks are diagrams, usage
synopses and file layouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(
    r"(?:<!-- readme-test: (?:skip \((?P<why>[^)]*(?:\([^)]*\)[^)]*)*)\)|(?P<mnist>needs MNIST))"
    r" -->\n)?```(?P<lang>sh|python)\n(?P<code>.*?\n)```",
    re.S,
)
MNIST_DIR = Path(os.environ.get("OTPNN_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))


def blocks() -> list[pytest.param]:
    text = (REPO / "README.md").read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("lang")) + 1
        first = m["code"].splitlines()[0][:40]
        marks = [pytest.mark.slow]
        if m["why"]:
            marks.append(pytest.mark.skip(reason=f"README says: {m['why']}"))
        if m["mnist"] and not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
            marks.append(pytest.mark.skip(reason=f"real MNIST not found in {MNIST_DIR}"))
        if "mix " in m["code"] and shutil.which("mix") is None:
            marks.append(pytest.mark.skip(reason="Elixir's mix is not installed"))
        found.append(
            pytest.param(
                m["lang"], m["code"], bool(m["mnist"]), id=f"line{line}:{first}", marks=marks
            )
        )
    return found


def test_the_readme_has_runnable_blocks() -> None:
    runnable = [p for p in blocks() if not any(m.name == "skip" for m in p.marks)]
    assert len(runnable) >= 3
    assert any(p.values[0] == "python" for p in runnable)


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory) -> Path:
    """The one directory the blocks run in, in order (later ones use earlier ones' files)."""
    where = tmp_path_factory.mktemp("readme")
    shutil.copytree(
        REPO / "examples", where / "examples", ignore=shutil.ignore_patterns("_build", "deps")
    )
    return where


@pytest.mark.parametrize(("lang", "code", "mnist"), blocks())
def test_readme_block_runs_as_written(lang: str, code: str, mnist: bool, reader_dir: Path) -> None:
    tmp_path = reader_dir
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "MIX_BUILD_PATH": str(tmp_path / "_mix_build"),
    }
    if mnist:
        env["OTPNN_DATA_DIR"] = str(MNIST_DIR)
    if lang == "python":
        script = tmp_path / "readme_block.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code]
    run = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
