"""``otpnn serve``: the training service (HTTP JSON API, one supervision tree, a state dir).

Start-up order: the state dir's lock, then the port, then the jobs. A second service on the same
state dir, or on a port already taken, exits 2 with one line before it reads or resumes any job.

SIGTERM or Ctrl-C: uvicorn stops accepting requests, the JobManager stops running jobs at a step
boundary (each writes its checkpoint) within ``--shutdown-timeout``, and the process exits 0;
the next ``otpnn serve`` on the same state dir resumes them.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from otpnn.dirlock import DirectoryBusy
from otpnn.logs import configure_logging, route_stdlib_logging


class ServeError(click.ClickException):
    """The service cannot start as asked (its state dir or port is taken): one line, exit 2."""

    exit_code = 2


def _finite(_ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Ranges let NaN through (every comparison with it is false)."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", param=param)
    return value


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("otpnn-state"),
    show_default=True,
    help="Job records, checkpoints, reports and weights; the only place the service writes. "
    "One service per state dir.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--max-queued",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Jobs that may wait for a slot; a submit beyond it is refused (429).",
)
@click.option(
    "--data-root",
    "data_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Allow a request's data_dir only under this directory (repeatable; default: anywhere).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Require 'Authorization: Bearer <token>' (the file's content) on all but /healthz.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    callback=_finite,
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=10.0,
    show_default=True,
    help="Seconds a client has to send a whole request (headers and body); then it is cut off.",
    callback=_finite,
)
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
@click.option("--verbose", is_flag=True, help="Log tracebacks with failures (default: one line).")
def serve(
    host: str,
    port: int,
    state_dir: Path,
    max_jobs: int,
    max_queued: int,
    data_roots: tuple[Path, ...],
    token_file: Path | None,
    shutdown_timeout: float,
    read_timeout: float,
    log_format: str,
    verbose: bool,
) -> None:
    """Run training jobs behind an HTTP JSON API (see /docs when it runs)."""
    try:
        import uvicorn

        from otpnn.service import create_app
        from otpnn.service.auth import read_token
        from otpnn.service.server import ServiceServer, bind
    except ImportError as e:
        raise click.UsageError(
            f"{e}: install the service extra: pip install 'otpnn[service]'"
        ) from None
    configure_logging(log_format, tracebacks=verbose)
    route_stdlib_logging(log_format)  # uvicorn's lines too, access log included, in the same format
    try:
        token = read_token(token_file) if token_file else None
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    try:
        app = create_app(
            state_dir,
            max_jobs=max_jobs,
            token=token,
            shutdown_timeout=shutdown_timeout,
            max_queued=max_queued,
            data_roots=data_roots,
            verbose=verbose,
        )
    except OSError as e:
        raise ServeError(f"cannot use --state-dir {state_dir}: {e.strerror}") from None
    try:
        app.state.manager.store.lock()  # held until shutdown; the kernel drops it if we die
    except DirectoryBusy as e:
        raise ServeError(f"--state-dir {e}; stop that one or pass another") from None
    except OSError as e:
        raise ServeError(f"cannot lock --state-dir {state_dir}: {e.strerror}") from None
    try:
        sock = bind(host, port)
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    config = uvicorn.Config(
        app,
        log_config=None,  # keep route_stdlib_logging's handler
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    with sock:
        ServiceServer(config, read_timeout=read_timeout).run(sockets=[sock])
