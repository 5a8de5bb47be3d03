"""The `otpnn` command: a click group; subcommands live in small modules (cli_data, ...)."""

from __future__ import annotations

import click

from otpnn import __version__
from otpnn.cli_compare import compare_command, export_init_command
from otpnn.cli_data import data
from otpnn.cli_serve import serve
from otpnn.cli_train import train


@click.group()
@click.version_option(__version__, prog_name="otpnn")
def main() -> None:
    """Parallel neural-network training as an OTP-style supervision tree of actors."""


main.add_command(compare_command)
main.add_command(data)
main.add_command(export_init_command)
main.add_command(serve)
main.add_command(train)
