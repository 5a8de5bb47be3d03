"""The `otpnn` command: a click group whose subcommands live in small modules (cli_train, ...).

Subcommands are imported when first used (click's lazy-loading pattern), so this module costs
only click's import. Ctrl-C exits 130 wherever it lands, during imports and data loading too
(click would print "Aborted!" and exit 1); a command that handles signals itself (train, serve)
stops in order and exits the same way.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from otpnn import __version__
from otpnn.entry import EXIT_INTERRUPTED

SUBCOMMANDS = {
    "compare": "otpnn.cli_compare:compare_command",
    "data": "otpnn.cli_data:data",
    "evaluate": "otpnn.cli_predict:evaluate_command",
    "export": "otpnn.cli_predict:export_command",
    "export-init": "otpnn.cli_compare:export_init_command",
    "predict": "otpnn.cli_predict:predict_command",
    "serve": "otpnn.cli_serve:serve",
    "train": "otpnn.cli_train:train",
}


class _Otpnn(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("otpnn: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # stdout closed early (`otpnn train | head`): as click does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Otpnn)
@click.version_option(__version__, prog_name="otpnn")
def main() -> None:
    """Parallel neural-network training as an OTP-style supervision tree of actors."""
