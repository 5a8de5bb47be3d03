"""`otpnn data verify|fetch`: check or download MNIST, with one clear error line on failure."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from otpnn.data import DEFAULT_MIRRORS, DataError, cache_dir, fetch_mnist, find_mnist, verify_mnist


class UsageError(click.ClickException):
    """Bad input: the message goes to stderr, exit status 2, no traceback."""

    exit_code = 2


@contextmanager
def _clear_errors() -> Iterator[None]:
    try:
        yield
    except DataError as e:
        raise UsageError(str(e)) from None


@click.group()
def data() -> None:
    """Check or download the MNIST files."""


@data.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def verify(directory: Path | None) -> None:
    """Verify the four MNIST files in DIRECTORY (default: the first place they are found:
    $OTPNN_DATA_DIR, then the cache): structure, counts and SHA-256."""
    with _clear_errors():
        for f in verify_mnist(directory or find_mnist()):
            shape = "x".join(map(str, f.shape))
            click.echo(f"ok  {f.path}  {shape}  content-sha256={f.sha256}")


@data.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--mirror",
    "mirrors",
    multiple=True,
    metavar="URL",
    help="Base URL to download from (repeatable, tried in order). Default: public mirrors.",
)
def fetch(directory: Path | None, mirrors: tuple[str, ...]) -> None:
    """Download MNIST into DIRECTORY (default: the per-user cache) unless already there,
    verifying every file's SHA-256."""
    with _clear_errors():
        target = fetch_mnist(directory or cache_dir(), mirrors or DEFAULT_MIRRORS)
        verify_mnist(target)
    click.echo(f"MNIST ready in {target}")
