"""A script that starts process actors outside ``if __name__ == "__main__":`` gets one clear
message (the children would re-import it and run that code again), before any child starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ACTOR = """
import pykka
from supervision.process import start


class Echo(pykka.ThreadingActor):
    def on_receive(self, message):
        return message

"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(ACTOR + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )


def test_unguarded_top_level_start_is_one_clear_error(tmp_path) -> None:
    run = run_script(tmp_path, "ref = start(Echo)\nprint(ref.ask('hi'))\nref.stop()\n")
    assert run.returncode == 1
    assert "MainModuleNotGuarded" in run.stderr
    script = tmp_path / "script.py"
    line = script.read_text().splitlines().index("ref = start(Echo)") + 1
    assert f"{script}, line {line}" in run.stderr
    assert 'if __name__ == "__main__":' in run.stderr
    assert run.stderr.count("Traceback") == 1
    assert "bootstrapping" not in run.stderr


def test_guarded_script_starts_an_actor_defined_in_it(tmp_path) -> None:
    run = run_script(
        tmp_path,
        """
        if __name__ == "__main__":
            ref = start(Echo)
            print(ref.ask("hi"))
            ref.stop()
        """,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hi"


def test_a_function_called_from_the_guard_is_guarded(tmp_path) -> None:
    run = run_script(
        tmp_path,
        """
        def main():
            ref = start(Echo)
            print(ref.ask("hi"))
            ref.stop()


        if __name__ == "__main__":
            main()
        """,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hi"


def test_a_guard_inside_a_try_block_counts(tmp_path) -> None:
    run = run_script(
        tmp_path,
        """
        try:
            if __name__ == "__main__":
                ref = start(Echo)
                print(ref.ask("hi"))
                ref.stop()
        finally:
            pass
        """,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hi"
