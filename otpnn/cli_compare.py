"""``otpnn export-init`` and ``otpnn compare``: run the same training elsewhere, then judge.

``export-init`` writes what another implementation needs to compute exactly what ``otpnn train``
computes with the same options (initial parameters, sample order, learning rates, data; see
otpnn.interchange).
``compare`` sets reports side by side; exit 0 equivalent, 1 not equivalent, 2 bad input, 3
equivalent but a run's planned faults never fired (its recovery claim was not tested).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from otpnn.compare import (
    DEFAULT_ACC_ATOL,
    DEFAULT_RTOL,
    ReportError,
    compare,
    describe,
    plot,
    table,
)
from otpnn.config import (
    ACTIVATIONS,
    ALGORITHM_DEFAULTED,
    DATASETS,
    DTYPES,
    LR_SCHEDULES,
    ConfigError,
    TrainConfig,
    algorithm_defaults,
)
from otpnn.data import DataError, find_mnist, load_dataset
from otpnn.interchange import export_init
from otpnn.run_checks import EXIT_UNFIRED_FAULTS

# The options of `otpnn train` that determine the arithmetic (workers and backend do not).
_CONFIG_OPTIONS = (
    ("dataset", click.Choice(DATASETS)),
    ("data_dir", click.Path(file_okay=False)),
    ("epochs", int),
    ("batch_size", int),
    ("shard_size", int),
    ("lr", float),
    ("momentum", float),
    ("weight_decay", float),
    ("lr_schedule", click.Choice(LR_SCHEDULES)),
    ("lr_step_epochs", int),
    ("lr_gamma", float),
    ("lr_min", float),
    ("lr_warmup_steps", int),
    ("hidden", str),
    ("activation", click.Choice(ACTIVATIONS)),
    ("dtype", click.Choice(DTYPES)),
    ("seed", int),
    ("synthetic_train", int),
    ("synthetic_test", int),
)


class UsageError(click.ClickException):
    """Bad input: the message goes to stderr, exit status 2, no traceback."""

    exit_code = 2


def _config_options(fn: Any) -> Any:
    sync = algorithm_defaults("sync", 1)  # what another implementation trains: sync SGD
    for name, kind in reversed(_CONFIG_OPTIONS):
        default = sync[name] if name in ALGORITHM_DEFAULTED else getattr(TrainConfig, name, None)
        if name == "hidden":
            default = ",".join(map(str, TrainConfig.hidden))
        fn = click.option(
            f"--{name.replace('_', '-')}", name, type=kind, default=default, show_default=True
        )(fn)
    return fn


def _config(opts: dict[str, Any]) -> TrainConfig:
    fields = {name: opts[name] for name, _ in _CONFIG_OPTIONS}
    try:
        fields["hidden"] = tuple(int(h) for h in fields["hidden"].split(",") if h.strip())
        return TrainConfig(**fields)
    except ValueError as e:  # ConfigError, or a non-integer hidden size
        raise UsageError(
            str(e) if isinstance(e, ConfigError) else f"invalid --hidden: {e}"
        ) from None


def _train_command(opts: dict[str, Any]) -> str:
    """The `otpnn train` command line that trains what was exported."""
    args = ["otpnn", "train"]
    for name, _ in _CONFIG_OPTIONS:
        if opts[name] is not None:
            args += [f"--{name.replace('_', '-')}", str(opts[name])]
    return shlex.join(args)


@click.command("export-init")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@_config_options
def export_init_command(out_dir: Path, **opts: Any) -> None:
    """Write OUT_DIR/manifest.json, init.safetensors, order.bin, lr.bin (and data/ for
    synthetic): the initial parameters, sample order and learning rate of every update that
    `otpnn train` would use with these options."""
    cfg = _config(opts)
    try:
        dataset = load_dataset(cfg, download=False)
        mnist_dir = str(find_mnist(cfg.data_dir)) if cfg.dataset == "mnist" else None
        manifest = export_init(cfg, dataset, out_dir, mnist_dir=mnist_dir)
    except DataError as e:
        raise UsageError(str(e)) from None
    click.echo(f"wrote {manifest} (+ init.safetensors, order.bin, lr.bin)")
    click.echo(f"otpnn:  {_train_command(opts)} --report otpnn.json")
    export = shlex.quote(str(out_dir.resolve()))
    click.echo(
        "elixir: cd examples/elixir_reference && "
        f"mix otpnn_ref.train {export} --workers 2 --report elixir.json"
    )


@click.command("compare")
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--rtol",
    type=click.FloatRange(min=0),
    default=DEFAULT_RTOL,
    show_default=True,
    help="Relative tolerance on per-epoch losses.",
)
@click.option(
    "--acc-atol",
    type=click.FloatRange(min=0),
    default=DEFAULT_ACC_ATOL,
    show_default=True,
    help="Absolute tolerance on per-epoch accuracies.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write a PNG: loss curves and speed-up vs workers (needs matplotlib).",
)
@click.option(
    "--allow-unfired-faults",
    is_flag=True,
    help="Exit 0 for equivalent runs even if one planned faults that never fired.",
)
def compare_command(
    reports: tuple[str, ...],
    rtol: float,
    acc_atol: float,
    plot_path: str | None,
    allow_unfired_faults: bool,
) -> None:
    """Compare run reports (the first is the reference): a per-epoch table and the verdict.
    Exit 0 equivalent, 1 not equivalent, 2 unreadable, malformed or mismatched reports, 3
    equivalent but a run's planned faults never fired (unless --allow-unfired-faults)."""
    try:
        loaded, v = compare(list(reports), rtol, acc_atol)
        if plot_path:
            plot(loaded, plot_path)
    except ReportError as e:
        raise UsageError(str(e)) from None
    click.echo(table(loaded))
    click.echo()
    click.echo(describe(v))
    if plot_path:
        click.echo(f"figure: {plot_path}")
    if not v.equivalent:
        raise SystemExit(1)
    if v.unfired and not allow_unfired_faults:
        raise SystemExit(EXIT_UNFIRED_FAULTS)
