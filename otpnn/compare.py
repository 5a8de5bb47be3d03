"""Side-by-side comparison of run reports (otpnn's and the Elixir reference's) and a verdict.

Reports are validated before anything is computed: a file that is not an ``otpnn-report/1``
report, or reports whose training configs differ in a field that changes the arithmetic, are
refused with one message (comparing them would be meaningless). Worker count, backend and system
may differ: that is what is being compared.

Equivalence, and why a tolerance: otpnn computes in float32 by default (as the paper's Matrex),
the Elixir reference always in float64 (Erlang has no other float). From the same initial
parameters and sample order they follow the same trajectory up to rounding, until float32
rounding, amplified by training, drifts them apart over a few hundred steps (figures in
benchmarks/README.md). The default tolerance, 1e-3 relative on losses and 0.005 absolute on
accuracies, is for short float32-vs-float64 runs: a real difference (another order, a sum
instead of a mean, a missing shard or momentum) is off by far more from the first epoch. For a
strict check over long runs compare float64 with float64 (`otpnn export-init --dtype float64`,
`otpnn train --dtype float64`): those agree to rounding, so `--rtol 1e-9` holds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otpnn.errors import UsageError

SCHEMA = "otpnn-report/1"
# Config fields that change the arithmetic: reports that differ in any of them are not comparable.
# dtype is not one of them (rounding is what the tolerance is for); workers/backend are compared.
SAME_FIELDS = (
    "dataset",
    "epochs",
    "batch_size",
    "shard_size",
    "lr",
    "momentum",
    "weight_decay",
    "hidden",
    "activation",
    "seed",
)
# The algorithm's fields, with the value a report that predates them (or the Elixir
# reference's, which trains sync SGD) means; local SGD's arithmetic depends on the worker count.
ALGORITHM_FIELDS = {"algorithm": "sync", "sync_every": 8, "warmup_steps": 0, "staleness": 2}
# The learning-rate schedule's own fields: only those of the report's schedule are compared (a
# constant run's lr_gamma is whatever the default was, which changes nothing).
SCHEDULE_FIELDS = {"step": ("lr_step_epochs", "lr_gamma"), "cosine": ("lr_min",)}
ROW_FIELDS = ("epoch", "seconds", "samples_per_second", "train_loss", "train_accuracy")
DEFAULT_RTOL = 1e-3
DEFAULT_ACC_ATOL = 0.005
DTYPE_NOTE = (
    "float32 and float64 runs agree to rounding for a few hundred steps, then may drift; "
    "for a strict check compare float64 runs (export-init and train with --dtype float64)"
)


class ReportError(UsageError, ValueError):
    """A report that cannot be compared; the message names the file and what is wrong."""


@dataclass
class Report:
    path: Path
    data: dict[str, Any]
    label: str = ""

    @property
    def system(self) -> str:
        return self.data["system"]

    @property
    def workers(self) -> int:
        return self.data["config"]["workers"]

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.data["epochs"]


@dataclass
class Pair:
    """One report measured against the reference report (the first one given)."""

    label: str
    train_loss_rel: float
    test_loss_rel: float | None
    accuracy_abs: float
    identical_params: bool
    equivalent: bool


@dataclass
class Verdict:
    reference: str
    pairs: list[Pair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rtol: float = DEFAULT_RTOL
    acc_atol: float = DEFAULT_ACC_ATOL
    # Per report label: the faults it planned that never fired (a recovery claim not tested).
    unfired: dict[str, list[str]] = field(default_factory=dict)

    @property
    def equivalent(self) -> bool:
        return all(p.equivalent for p in self.pairs)


def load_report(path: str | os.PathLike) -> Report:
    """Read and validate one report; ReportError naming the file and the first problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None
    problem = _problem(data)
    if problem:
        raise ReportError(f"{path}: not a usable {SCHEMA} report: {problem}")
    return Report(path, data)


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "expected a JSON object"
    if data.get("schema") != SCHEMA:
        return f"schema is {data.get('schema')!r}, expected {SCHEMA!r}"
    for key, kind in (("system", str), ("config", dict), ("epochs", list), ("final", dict)):
        if not isinstance(data.get(key), kind):
            return f"missing or invalid {key!r} (expected {kind.__name__})"
    if data["final"].get("failed"):
        return "the run failed (final.failed is true)"
    if not data["epochs"]:
        return "no epoch rows"
    workers = data["config"].get("workers")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return f"config.workers is {workers!r}, expected a positive integer"
    missing = [f for f in SAME_FIELDS if f not in data["config"]]
    if missing:
        return f"config lacks {', '.join(missing)}"
    for i, row in enumerate(data["epochs"]):
        bad = [f for f in ROW_FIELDS if not _number(row.get(f) if isinstance(row, dict) else None)]
        if bad:
            return f"epochs[{i}] lacks a number for {', '.join(bad)}"
    return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_comparable(reports: list[Report]) -> list[str]:
    """Raise ReportError if configs differ in an arithmetic field; return notes on lesser
    differences (dataset name, dtype)."""
    ref = reports[0]
    notes = []
    for r in reports[1:]:
        diffs = [
            f"{f}: {ref.data['config'][f]!r} vs {r.data['config'][f]!r}"
            for f in SAME_FIELDS
            if ref.data["config"][f] != r.data["config"][f]
        ]
        diffs += _algorithm_differences(ref.data["config"], r.data["config"])
        if len(r.epochs) != len(ref.epochs):
            diffs.append(f"epoch rows: {len(ref.epochs)} vs {len(r.epochs)}")
        if diffs:
            raise ReportError(
                f"{ref.path} and {r.path} are different trainings, not comparable "
                f"({'; '.join(diffs)})"
            )
        for f in ("dataset_name", "dtype"):
            a, b = ref.data["config"].get(f), r.data["config"].get(f)
            if a != b:
                notes.append(f"{f} differs: {a!r} ({ref.label}) vs {b!r} ({r.label})")
                if f == "dtype":
                    notes.append(DTYPE_NOTE)
    return list(dict.fromkeys(notes))  # the dtype explanation once, however many reports


def _algorithm_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """How two reports' algorithms and rate schedules differ (local SGD: the worker count is
    part of the algorithm)."""
    fields = {f: (a.get(f, d), b.get(f, d)) for f, d in ALGORITHM_FIELDS.items()}
    if "local-sgd" in fields["algorithm"]:
        fields["workers"] = (a.get("workers"), b.get("workers"))
    # A report that predates schedules trained at a constant rate without warm-up.
    kinds = (a.get("lr_schedule", "constant"), b.get("lr_schedule", "constant"))
    fields["lr_schedule"] = kinds
    fields["lr_warmup_steps"] = (a.get("lr_warmup_steps", 0), b.get("lr_warmup_steps", 0))
    if kinds[0] == kinds[1]:
        fields |= {f: (a.get(f), b.get(f)) for f in SCHEDULE_FIELDS.get(kinds[0], ())}
    return [f"{f}: {x!r} vs {y!r}" for f, (x, y) in fields.items() if x != y]


def label_reports(reports: list[Report]) -> None:
    """Short labels ("otpnn, 2 workers"); the file name is added where two would be alike."""
    base = [f"{r.system}, {r.workers} worker{'s' if r.workers > 1 else ''}" for r in reports]
    for r, b in zip(reports, base, strict=True):
        r.label = b if base.count(b) == 1 else f"{b} [{r.path.name}]"


def verdict(
    reports: list[Report], rtol: float = DEFAULT_RTOL, acc_atol: float = DEFAULT_ACC_ATOL
) -> Verdict:
    """Each report against the first: worst per-epoch differences, and whether they are within
    tolerance. Equal params_sha256 means bit-identical parameters (same arithmetic and dtype)."""
    ref = reports[0]
    result = Verdict(ref.label, rtol=rtol, acc_atol=acc_atol)
    for r in reports[1:]:
        rows = list(zip(ref.epochs, r.epochs, strict=True))
        train = max(_rel(a["train_loss"], b["train_loss"]) for a, b in rows)
        tests = [
            _rel(a["test_loss"], b["test_loss"])
            for a, b in rows
            if _number(a.get("test_loss")) and _number(b.get("test_loss"))
        ]
        test = max(tests) if tests else None
        acc = max(
            abs(a[k] - b[k])
            for a, b in rows
            for k in ("train_accuracy", "test_accuracy")
            if _number(a.get(k)) and _number(b.get(k))
        )
        sha = ref.data["final"].get("params_sha256")
        result.pairs.append(
            Pair(
                r.label,
                train,
                test,
                acc,
                identical_params=sha is not None and sha == r.data["final"].get("params_sha256"),
                equivalent=train <= rtol and (test is None or test <= rtol) and acc <= acc_atol,
            )
        )
    return result


def unfired_faults(r: Report) -> list[str]:
    """The faults a report says were planned but never fired (none if it does not say)."""
    faults = r.data.get("faults")
    unfired = faults.get("unfired") if isinstance(faults, dict) else None
    return [str(f) for f in unfired] if isinstance(unfired, list) else []


def _rate(r: Report) -> float:
    """Mean samples/s over the run's epochs."""
    return sum(row["samples_per_second"] for row in r.epochs) / len(r.epochs)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def speedups(reports: list[Report]) -> dict[str, list[float | None]]:
    """Per report label, per epoch: seconds of the same system's 1-worker run / this run's."""
    base: dict[str, Report] = {}
    for r in reports:
        if r.workers == 1:
            base.setdefault(r.system, r)
    out: dict[str, list[float | None]] = {}
    for r in reports:
        b = base.get(r.system)
        out[r.label] = [
            b.epochs[i]["seconds"] / row["seconds"] if b and i < len(b.epochs) else None
            for i, row in enumerate(r.epochs)
        ]
    return out


def table(reports: list[Report]) -> str:
    """Per epoch, one line per report: losses, accuracies, time, throughput, speed-up, restarts."""
    ups = speedups(reports)
    head = (
        "epoch",
        "run",
        "train loss",
        "train acc",
        "test loss",
        "test acc",
        "seconds",
        "samples/s",
        "speed-up",
        "restarts",
    )
    lines = [head]
    for e in range(len(reports[0].epochs)):
        for r in reports:
            row, up = r.epochs[e], ups[r.label][e]
            lines.append(
                (
                    str(row["epoch"]),
                    r.label,
                    f"{row['train_loss']:.6f}",
                    f"{row['train_accuracy']:.4f}",
                    f"{row['test_loss']:.6f}" if _number(row.get("test_loss")) else "-",
                    f"{row['test_accuracy']:.4f}" if _number(row.get("test_accuracy")) else "-",
                    f"{row['seconds']:.2f}",
                    f"{row['samples_per_second']:.0f}",
                    f"{up:.2f}x" if up is not None else "-",
                    str(r.data.get("restarts", "-")),
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def describe(v: Verdict) -> str:
    """The verdict as text: one line per compared report, notes, then the overall verdict."""
    lines = [
        f"reference: {v.reference}; tolerance: loss relative {v.rtol:g}, accuracy {v.acc_atol:g}"
    ]
    for p in v.pairs:
        test = f"{p.test_loss_rel:.1e}" if p.test_loss_rel is not None else "n/a"
        state = "EQUIVALENT" if p.equivalent else "NOT EQUIVALENT"
        bits = ", bit-identical parameters" if p.identical_params else ""
        lines.append(
            f"{state}: {p.label}: max train-loss rel diff {p.train_loss_rel:.1e}, "
            f"test-loss {test}, accuracy abs diff {p.accuracy_abs:.4f}{bits}"
        )
    lines += [f"note: {n}" for n in v.notes]
    lines += [
        f"WARNING: {label}: planned faults never fired ({', '.join(specs)}): "
        "this run did not test recovery"
        for label, specs in v.unfired.items()
    ]
    verdict_line = "equivalent" if v.equivalent else "NOT equivalent"
    if v.unfired:
        verdict_line += ", but planned faults never fired"
    lines.append("verdict: " + verdict_line)
    return "\n".join(lines)


def compare(
    paths: list[str | os.PathLike], rtol: float, acc_atol: float
) -> tuple[list[Report], Verdict]:
    """Load, validate and judge: (reports, verdict); ReportError if they cannot be compared."""
    if len(paths) < 2:
        raise ReportError("give at least two reports to compare")
    reports = [load_report(p) for p in paths]
    label_reports(reports)
    notes = check_comparable(reports)
    v = verdict(reports, rtol, acc_atol)
    v.notes = notes
    v.unfired = {r.label: unfired_faults(r) for r in reports if unfired_faults(r)}
    return reports, v


def plot(reports: list[Report], path: str | os.PathLike) -> None:
    """Loss curves of every run and speed-up vs workers per system (needs the `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--plot needs matplotlib: pip install 'otpnn[plot]'") from None
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, up_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    systems = list(dict.fromkeys(r.system for r in reports))
    for r in reports:
        # One line style per system, so equivalent runs that overlap stay visible.
        style = ("-", "--", ":")[systems.index(r.system) % 3]
        epochs = [row["epoch"] for row in r.epochs]
        train = [row["train_loss"] for row in r.epochs]
        loss_ax.plot(epochs, train, "o" + style, label=f"{r.label} train", alpha=0.8)
        if all(_number(row.get("test_loss")) for row in r.epochs):
            test = [row["test_loss"] for row in r.epochs]
            loss_ax.plot(epochs, test, "x" + style, label=f"{r.label} test", alpha=0.8)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss per epoch")
    loss_ax.legend(fontsize=7)
    for system in systems:
        runs = sorted((r for r in reports if r.system == system), key=lambda r: r.workers)
        base = next((r for r in runs if r.workers == 1), None)
        if base is None:
            continue
        ups = [_rate(r) / _rate(base) for r in runs]
        up_ax.plot([r.workers for r in runs], ups, "o-", label=system)
    up_ax.set(xlabel="workers", ylabel="speed-up vs 1 worker", title="Throughput speed-up")
    if up_ax.lines:
        up_ax.legend(fontsize=8)
    else:
        up_ax.text(
            0.5, 0.5, "no 1-worker run to compare with", ha="center", transform=up_ax.transAxes
        )
    for ax in (loss_ax, up_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
