"""``otpnn serve``: the training service (HTTP JSON API, one supervision tree, a state dir).

SIGTERM or Ctrl-C: uvicorn stops accepting requests, the JobManager stops running jobs at a step
boundary (each writes its checkpoint) within ``--shutdown-timeout``, and the process exits 0;
the next ``otpnn serve`` on the same state dir resumes them.
"""

from __future__ import annotations

from pathlib import Path

import click

from otpnn.logs import configure_logging, route_stdlib_logging


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("otpnn-state"),
    show_default=True,
    help="Job records, checkpoints, reports and weights; the only place the service writes.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Require 'Authorization: Bearer <token>' (the file's content) on all but /healthz.",
)
@click.option("--shutdown-timeout", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
def serve(
    host: str,
    port: int,
    state_dir: Path,
    max_jobs: int,
    token_file: Path | None,
    shutdown_timeout: float,
    log_format: str,
) -> None:
    """Run training jobs behind an HTTP JSON API (see /docs when it runs)."""
    try:
        import uvicorn

        from otpnn.service import create_app
        from otpnn.service.auth import read_token
        from otpnn.service.server import ServiceServer
    except ImportError as e:
        raise click.UsageError(
            f"{e}: install the service extra: pip install 'otpnn[service]'"
        ) from None
    configure_logging(log_format)
    route_stdlib_logging(log_format)  # uvicorn's lines too, access log included, in the same format
    try:
        token = read_token(token_file) if token_file else None
    except (OSError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    app = create_app(state_dir, max_jobs=max_jobs, token=token, shutdown_timeout=shutdown_timeout)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep route_stdlib_logging's handler
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    ServiceServer(config).run()
