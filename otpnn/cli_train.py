"""``otpnn train``: one training job from the command line.

Exit codes: 0 success; 2 bad usage, config, data or checkpoint (one clear message, no
traceback); 1 training failed (the tree gave up: which actor, why, where the last checkpoint is);
3 trained, but planned faults never fired (unless --allow-unfired-faults); 4 trained, but the
checksum is not --expect-sha256's; 130 after Ctrl-C and 143 after SIGTERM (the tree stopped in
order, a final checkpoint written).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import click
from tqdm import tqdm

from otpnn.config import (
    ACTIVATIONS,
    ALGORITHM_DEFAULTS_TEXT,
    ALGORITHMS,
    BACKENDS,
    DATASETS,
    DTYPES,
    LR_SCHEDULES,
    TrainConfig,
)
from otpnn.data import load_dataset
from otpnn.entry import EARLY_SIGNAL
from otpnn.faults import GRAMMAR, Chaos, parse_fault
from otpnn.logdir import log_job
from otpnn.logs import AboveTheBar, configure_logging, route_stdlib_logging
from otpnn.run_checks import (
    EXIT_CHECKSUM_MISMATCH,
    EXIT_UNFIRED_FAULTS,
    checksum_message,
    parse_sha256,
    unfired_message,
)
from otpnn.saved_model import save_model
from otpnn.training import (
    PROTOCOLS,
    JobOptions,
    JobStopped,
    Progress,
    TrainingFailed,
    TrainingJob,
    UsageError,
    final_summary,
    job_report,
    resolve,
    write_report,
)
from otpnn.training.memory import check_memory
from otpnn.training.options import default_workers
from otpnn.training.report import blas_kernel
from otpnn.validation import model_params

EXIT_CODES = (
    "exit codes: 0 success; 1 training failed (the tree gave up); 2 bad usage, config, data or\n"
    f"  checkpoint; {EXIT_UNFIRED_FAULTS} planned faults never fired; {EXIT_CHECKSUM_MISMATCH} "
    "checksum differs from --expect-sha256;\n"
    "  130 / 143 stopped by Ctrl-C / SIGTERM (resumable with --resume)"
)


def _hidden(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    parts = [v.strip() for v in value.split(",")]
    if not all(p.isdigit() for p in parts):
        raise click.BadParameter(
            f"{value!r}: expected comma-separated integers, e.g. 128,64"
        ) from None
    return tuple(int(p) for p in parts)


def _val_split(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> float | int | None:
    """A fraction ("0.1") or a row count ("5000"); the config checks the range."""
    if value is None:
        return None
    try:
        return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected a fraction (e.g. 0.1) or a number of rows (e.g. 5000)"
        ) from None


class _Finite(click.FloatRange):
    """A FloatRange that also refuses nan and inf (a range check lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.command(epilog="\b\n" + GRAMMAR + "\n\n\b\n" + EXIT_CODES)
@click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True)
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Directory with the MNIST files."
)
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option(
    "--shard-size",
    type=int,
    help="Micro-shard size [default: batch-size / cores (at least 2 shards), at least 32 rows; "
    "local-sgd and async: batch-size; the report records it].",
)
@click.option("--lr", type=float, default=TrainConfig.lr, show_default=True, help="Learning rate.")
@click.option(
    "--momentum",
    type=float,
    help=f"SGD momentum [default: {ALGORITHM_DEFAULTS_TEXT['momentum']}; the report records it].",
)
@click.option("--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True)
@click.option(
    "--hidden",
    default="128,64",
    callback=_hidden,
    show_default=True,
    help="Hidden layer sizes, comma-separated (784 inputs and 10 outputs are added).",
)
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--workers", type=int, help="Number of workers [default: number of cores].")
@click.option("--backend", type=click.Choice(BACKENDS), default="process", show_default=True)
@click.option(
    "--ray-address",
    metavar="ADDR",
    help="With --backend ray: join this Ray cluster [default: start a local Ray for the job].",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="auto",
    show_default=True,
    help="lockstep: workers run the steps over shared memory; stepwise: the coordinator sends "
    "every step and does the update (Ray's); auto: lockstep where it works. Every algorithm has "
    "both.",
)
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default="sync",
    show_default=True,
    help="sync: one averaged gradient per step, the same bits for any workers; local-sgd: each "
    "worker trains its own replica, averaged every --sync-every steps (depends on --workers); "
    "async: each update's gradient on the parameters --staleness updates old (the same bits "
    "for any workers).",
)
@click.option(
    "--sync-every",
    type=int,
    default=TrainConfig.sync_every,
    show_default=True,
    metavar="H",
    help="local-sgd: local steps between averages.",
)
@click.option(
    "--warmup-steps",
    type=int,
    default=TrainConfig.warmup_steps,
    show_default=True,
    help="local-sgd: synchronous steps first (post-local SGD).",
)
@click.option(
    "--staleness",
    type=int,
    default=TrainConfig.staleness,
    show_default=True,
    metavar="S",
    help="async: update t's gradient is taken on the parameters after update t-S (1 is sync).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default=TrainConfig.lr_schedule,
    show_default=True,
    help="The learning rate of each step: constant (--lr); step (times --lr-gamma every "
    "--lr-step-epochs epochs); cosine (from --lr down to --lr-min at the end of the run).",
)
@click.option(
    "--lr-step-epochs",
    type=int,
    default=TrainConfig.lr_step_epochs,
    show_default=True,
    metavar="N",
    help="step: epochs between decays.",
)
@click.option(
    "--lr-gamma",
    type=float,
    default=TrainConfig.lr_gamma,
    show_default=True,
    help="step: the factor of each decay.",
)
@click.option(
    "--lr-min",
    type=float,
    default=TrainConfig.lr_min,
    show_default=True,
    help="cosine: the learning rate at the end of the run.",
)
@click.option(
    "--lr-warmup-steps",
    type=int,
    metavar="N",
    help="Linear warm-up, any schedule: step t <= N trains at t/N of the schedule's rate "
    f"[default: {ALGORITHM_DEFAULTS_TEXT['lr_warmup_steps']}].",
)
@click.option(
    "--val-split",
    callback=_val_split,
    metavar="FRACTION|ROWS",
    help="Hold out this fraction (e.g. 0.1) or number of rows of the training set (the same "
    "rows for a seed), never trained on; its loss and accuracy are measured every epoch.",
)
@click.option(
    "--keep-best",
    is_flag=True,
    help="With --val-split: keep the parameters of the epoch with the best validation accuracy "
    "(ties: the earliest); --save writes those, the report's final.best names the epoch.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initial weights, the sample order (and synthetic data).",
)
@click.option("--synthetic-train", type=int, default=TrainConfig.synthetic_train, show_default=True)
@click.option("--synthetic-test", type=int, default=TrainConfig.synthetic_test, show_default=True)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here."
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    help="Write TensorBoard scalars and metrics.csv here (per epoch and per --log-every steps).",
)
@click.option(
    "--log-every",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Steps per step row in --log-dir.",
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False),
    help="Save the trained model here (safetensors: weights and config; see otpnn predict); "
    "with --keep-best, the best validation epoch's.",
)
@click.option("--checkpoint-dir", type=click.Path(file_okay=False))
@click.option(
    "--checkpoint-every", type=int, default=0, show_default=True, help="Steps; 0 = epoch ends."
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    help="Inject a fault: KIND:TARGET@WHEN (grammar below); repeat for several.",
)
@click.option(
    "--allow-unfired-faults",
    is_flag=True,
    help=f"Exit 0 even if planned faults never fired [default: exit {EXIT_UNFIRED_FAULTS}].",
)
@click.option(
    "--expect-sha256",
    metavar="HEX",
    callback=lambda _ctx, _param, value: _sha256_option(value),
    help=f"Exit {EXIT_CHECKSUM_MISMATCH} unless the final parameters have this SHA-256.",
)
@click.option("--chaos", type=_Finite(0, 1), default=0.0, help="Per-shard failure rate.")
@click.option("--chaos-seed", type=int, default=0, show_default=True)
@click.option(
    "--step-timeout",
    type=_Finite(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a worker may take for its shards before it is deemed hung.",
)
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--max-seconds", type=_Finite(min=0.001), default=5.0, show_default=True)
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
@click.option("--quiet", is_flag=True, help="No progress bar; warnings and errors only.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Log every lifecycle event (actor starts with pids, restarts) and crashes with their "
    "tracebacks; json logs always have the events.",
)
def train(**opts: Any) -> None:
    """Train the MLP with a supervision tree of Loader, workers and Coordinator."""
    # On a console the bar and the epoch lines tell the story; lifecycle events are for --verbose
    # or for machines (json). Warnings (faults, lost workers, give-ups) always show.
    chatty = opts["verbose"] or (opts["log_format"] == "json" and not opts["quiet"])
    # A bar only for a person at a terminal: into a pipe or a file it is noise, and tqdm's
    # write lock is one more thing a closed pipe can wedge.
    show_bar = not opts["quiet"] and opts["log_format"] == "console" and sys.stderr.isatty()
    stream = AboveTheBar() if show_bar else None
    configure_logging(
        opts["log_format"], quiet=not chatty, stream=stream, tracebacks=opts["verbose"]
    )
    # A library's warnings (e.g. Ray's) in the same format and stream; its chatter stays out.
    route_stdlib_logging(opts["log_format"], logging.WARNING, stream=stream)
    try:
        config, options = _parse(opts)
        _check_outputs(opts)
        check_memory(config)  # before reading any data
        display = _Display(quiet=opts["quiet"], bar=show_bar)
        job = TrainingJob(config, load_dataset(config), options, on_progress=display.update)
        if opts["log_dir"]:
            log_job(job, opts["log_dir"], opts["log_every"])
    except UsageError as e:  # config, options, data, checkpoint, memory: one line, no traceback
        raise click.UsageError(str(e)) from None
    stop_signal = _install_signal_handlers(job)
    try:
        with display:
            result = job.run()  # stops the tree however it ends
    except UsageError as e:  # from starting it, e.g. a Ray cluster that cannot be joined
        raise click.UsageError(str(e)) from None
    except JobStopped:
        if job.state.result is None:  # stopped before the last commit: resume finishes it
            where = (
                f"checkpoint in {job.checkpoint_path}"
                if job.checkpoint_path
                else "no --checkpoint-dir"
            )
            click.echo(f"otpnn: stopped by signal at step {job.progress.step}; {where}", err=True)
            sys.exit(128 + stop_signal.get("signum", signal.SIGTERM))
        result = job.state.result  # the signal came after the last commit: the job is done
    except TrainingFailed as e:
        _write_report(opts, job, None)
        click.echo(f"otpnn: {e}", err=True)
        sys.exit(1)
    if job.already_complete:
        click.echo(
            f"otpnn: {job.checkpoint_path} is a finished run ({job.progress.step} steps): "
            "nothing left to train",
            err=True,
        )
    final = final_summary(job, result)
    _write_report(opts, job, final)
    if opts["save_path"]:
        try:
            save_model(opts["save_path"], model_params(result), config, {"final": final})
        except OSError as e:  # checked up front, so a disk that filled during the run
            click.echo(f"otpnn: cannot write the model {opts['save_path']}: {e}", err=True)
            sys.exit(1)
    events = job.state.events()
    faults = sum(e.kind == "fault_injected" for e in events)
    click.echo(
        f"done: test accuracy {final['test_accuracy']:.4f}, {final['steps']} steps in "
        f"{final['seconds']:.1f} s, params sha256 {final['params_sha256']} "
        f"(BLAS kernel: {blas_kernel()})"
    )
    if "best" in final:
        best = final["best"]
        click.echo(
            f"best epoch {best['epoch']}: val accuracy {best['val_accuracy']:.4f}, test accuracy "
            f"{best['test_accuracy']:.4f}, params sha256 {best['params_sha256']}"
            + (" (saved)" if opts["save_path"] else "")
        )
    click.echo(f"faults injected: {faults}, restarts: {job.state.restarts}, events: {len(events)}")
    _check_outcome(opts, job, final)


def _check_outcome(opts: dict[str, Any], job: TrainingJob, final: dict[str, Any]) -> None:
    """Exit non-zero for a run that trained but is not what was asked (see otpnn.run_checks)."""
    code = 0
    unfired = job.state.unfired_faults()
    if unfired and not opts["allow_unfired_faults"]:
        click.echo(unfired_message(unfired, final["steps"]), err=True)
        code = EXIT_UNFIRED_FAULTS
    expected = opts["expect_sha256"]
    if expected is not None and expected != final["params_sha256"]:
        click.echo(checksum_message(expected, final["params_sha256"]), err=True)
        code = EXIT_CHECKSUM_MISMATCH  # a wrong result outranks an untested one
    if code:
        sys.exit(code)


def _sha256_option(value: str | None) -> str | None:
    try:
        return None if value is None else parse_sha256(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _parse(opts: dict[str, Any]) -> tuple[TrainConfig, JobOptions]:
    """The config and run options from the command line, checked (UsageError if not) before
    any data is read."""
    fields = {f: opts[f] for f in TrainConfig.__dataclass_fields__ if f in opts}
    config = TrainConfig(**fields)
    config = TrainConfig(**{**fields, "workers": config.workers or default_workers()})
    options = JobOptions(
        faults=tuple(parse_fault(s) for s in opts["faults"]),
        chaos=Chaos(opts["chaos"], opts["chaos_seed"]) if opts["chaos"] else None,
        checkpoint_dir=opts["checkpoint_dir"],
        resume=opts["resume"],
        step_timeout=opts["step_timeout"],
        max_restarts=opts["max_restarts"],
        max_seconds=opts["max_seconds"],
        ray_address=opts["ray_address"],
        protocol=opts["protocol"],
    )
    resolve(config, options)
    return config, options


def _check_outputs(opts: dict[str, Any]) -> None:
    """Every path the run will write is usable now, not after an epoch of training: the
    checkpoint and log directories (created if missing) and the directories of the report and
    the saved model (which must exist)."""
    for option, key in (("--checkpoint-dir", "checkpoint_dir"), ("--log-dir", "log_dir")):
        if opts[key]:
            directory = Path(opts[key])
            try:
                directory.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=directory).close()
            except OSError as e:
                raise click.UsageError(
                    f"{option} {directory}: cannot write there ({e.strerror or e})"
                ) from None
    for option, key in (("--report", "report_path"), ("--save", "save_path")):
        if opts[key]:
            path = Path(opts[key])
            if path.is_dir():
                raise click.UsageError(f"{option} {path}: is a directory")
            if not path.parent.is_dir():
                raise click.UsageError(f"{option} {path}: no directory {path.parent}")
            try:
                tempfile.TemporaryFile(dir=path.parent).close()
            except OSError as e:
                raise click.UsageError(
                    f"{option} {path}: cannot write to {path.parent} ({e.strerror or e})"
                ) from None


class _Display:
    """The progress bar (while a ``with`` block runs, if wanted: step, epoch, the last epoch's
    loss and accuracy) and one summary line per epoch finished while it runs (progress told
    before, a resumed job's, is where the run starts: not printed again)."""

    def __init__(self, *, quiet: bool, bar: bool) -> None:
        self._quiet, self._want_bar = quiet, bar
        self._bar: tqdm | None = None
        self._printed = 0
        self._running = False

    def __enter__(self) -> _Display:
        self._running = True
        if self._want_bar:
            self._bar = tqdm(desc="training", unit="step", dynamic_ncols=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def update(self, p: Progress) -> None:
        bar = self._bar
        row = p.last_epoch
        if bar is not None:
            bar.total = p.total_steps
            postfix: dict[str, object] = {"epoch": p.epoch}
            if row is not None:
                postfix.update(loss=f"{row['train_loss']:.4f}", acc=f"{row['train_accuracy']:.4f}")
            bar.set_postfix(postfix, refresh=False)
            bar.update(p.step - bar.n)
        if row is not None and not self._running:
            self._printed = row["epoch"]  # the resume point: trained before this run
        if row is not None and row["epoch"] > self._printed and not self._quiet:
            self._printed = row["epoch"]
            line = (
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                f"train acc {row['train_accuracy']:.4f}, test acc {row['test_accuracy']:.4f}, "
                + (
                    f"val loss {row['val_loss']:.4f}, val acc {row['val_accuracy']:.4f}, "
                    if "val_accuracy" in row
                    else ""
                )
                + f"{row['seconds']:.2f} s ({row['samples_per_second']:.0f} samples/s)"
            )
            (bar.write if bar is not None else click.echo)(line)


def _install_signal_handlers(job: TrainingJob) -> dict[str, int]:
    """SIGINT/SIGTERM: ask the job to stop; the main thread then stops the tree in order (the
    coordinator snapshots first) and exits 128 + the signal number. A second signal exits at
    once. The previous handlers are back when the command ends (it may run in-process)."""
    received: dict[str, int] = {}
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    click.get_current_context().call_on_close(restore)

    def handler(signum: int, _frame: FrameType | None) -> None:
        if "signum" in received:  # a second signal: the user will not wait for an orderly stop
            os.write(2, b"otpnn: second signal: exiting now\n")
            os._exit(128 + signum)
        received["signum"] = signum
        job.request_stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if "signum" in EARLY_SIGNAL:  # a Ctrl-C during start-up that Python swallowed: honour it
        handler(EARLY_SIGNAL["signum"], None)
    return received


def _write_report(opts: dict[str, Any], job: TrainingJob, final: dict[str, Any] | None) -> None:
    if not opts["report_path"]:
        return
    try:
        write_report(opts["report_path"], job_report(job, final))
    except OSError as e:  # checked up front, so a disk that filled during the run
        click.echo(f"otpnn: cannot write the report {opts['report_path']}: {e}", err=True)
        sys.exit(1)
