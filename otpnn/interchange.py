"""Export of a run's starting point for another implementation (the Elixir reference), and back.

Two systems compute the same training only if they start from the same parameters, visit the same
samples in the same order, read the same pixels and step at the same rates. ``export_init``
writes all four into one directory, so the other side needs no random generator compatible with
numpy's and no copy of otpnn's learning-rate schedules:

``manifest.json``
    ``{"format": "otpnn-interchange/2", "config": {...TrainConfig, effective shard_size},
    "layer_sizes": [...], "init": "init.safetensors", "order": "order.bin", "lr": "lr.bin",
    "train": {"images": PATH, "labels": PATH, "count": N}, "test": {... "count": M},
    "dataset_name": ..., "init_params_sha256": ...}``. Paths are relative to the directory or
    absolute; ``count`` says how many leading samples of each file are used (a subset of MNIST).
``init.safetensors``
    the initial parameters, as ``otpnn.checkpoint.save_weights`` writes them: ``layer{i}.weight``
    (in, out) and ``layer{i}.bias`` (out,), in the config's dtype.
``order.bin``
    the batch order: the 8 bytes ``OTPNORD1``, then ``n`` and ``epochs`` as uint32 little-endian,
    then for epoch 1, 2, ... the ``n`` sample indices of that epoch as uint32 little-endian
    (``otpnn.schedule.epoch_permutation(n, seed, epoch)``). Batch b of an epoch is entries
    ``[b * batch_size, (b + 1) * batch_size)``; its micro-shards are ``shard_bounds``.
``lr.bin``
    the learning rate of every update: the 8 bytes ``OTPNLRS1``, then ``steps_per_epoch`` and
    ``epochs`` as uint32 little-endian, then for update t = 1, 2, ..., steps_per_epoch x epochs
    its rate as float64 little-endian (``otpnn.lr_schedule.LrSchedule.lr(t)``, what every
    trainer uses). Rates are finite and >= 0. Momentum and weight decay stay the config's.
``data/*-idx?-ubyte``
    for the synthetic dataset only: the samples as raw IDX files, so the other side reads them
    with the same code as MNIST. For MNIST the manifest points at the verified MNIST files.

Format ``/2`` added ``lr.bin``: a reader of ``/1`` ignores it and would train a cosine run at a
constant rate, so the format changed to make such a reader refuse it. A ``/1`` manifest has no
rate file and is read only if its config trains at a constant rate without warm-up.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from otpnn.atomic import write_atomic
from otpnn.checkpoint import load_weights, save_weights
from otpnn.config import TrainConfig
from otpnn.data import Dataset, find_mnist
from otpnn.data.mnist import FILES
from otpnn.errors import UsageError
from otpnn.lr_schedule import LrSchedule
from otpnn.model import init_params, params_sha256
from otpnn.schedule import epoch_permutation, steps_per_epoch

FORMAT = "otpnn-interchange/2"
FORMAT_V1 = "otpnn-interchange/1"  # before lr.bin: readable when the rate is constant
ORDER_MAGIC = b"OTPNORD1"
LR_MAGIC = b"OTPNLRS1"
MANIFEST = "manifest.json"
INIT_FILE = "init.safetensors"
ORDER_FILE = "order.bin"
LR_FILE = "lr.bin"


class InterchangeError(UsageError, ValueError):
    """An export directory or order file that cannot be used; the message names the file."""


def limit_dataset(dataset: Dataset, n_train: int | None, n_test: int | None) -> Dataset:
    """The first n_train / n_test samples (a fixed subset, the same on both sides)."""
    if n_train is None and n_test is None:
        return dataset
    a = dataset.train_images[:n_train], dataset.train_labels[:n_train]
    b = dataset.test_images[:n_test], dataset.test_labels[:n_test]
    return Dataset(*a, *b, name=f"{dataset.name}[train {len(a[1])}, test {len(b[1])}]")


def order_bytes(n: int, seed: int, epochs: int) -> bytes:
    """The order file's content for n training samples (see the module docstring)."""
    body = b"".join(
        epoch_permutation(n, seed, e).astype("<u4").tobytes() for e in range(1, epochs + 1)
    )
    return ORDER_MAGIC + struct.pack("<II", n, epochs) + body


def read_order(path: str | os.PathLike) -> np.ndarray:
    """The order file as an (epochs, n) int64 array; InterchangeError on any defect."""
    data = Path(path).read_bytes()
    if len(data) < 16 or data[:8] != ORDER_MAGIC:
        raise InterchangeError(f"{path}: not an otpnn order file (expected magic {ORDER_MAGIC!r})")
    n, epochs = struct.unpack("<II", data[8:16])
    if len(data) != 16 + 4 * n * epochs:
        raise InterchangeError(
            f"{path}: {len(data)} bytes, expected {16 + 4 * n * epochs} for {epochs} x {n}"
        )
    return np.frombuffer(data, "<u4", offset=16).reshape(epochs, n).astype(np.int64)


def lr_bytes(cfg: TrainConfig, n: int) -> bytes:
    """The rate file's content for n training samples (see the module docstring)."""
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    schedule = LrSchedule.of(cfg, per_epoch)
    rates = np.array([schedule.lr(t) for t in range(1, schedule.total_steps + 1)], "<f8")
    return LR_MAGIC + struct.pack("<II", per_epoch, cfg.epochs) + rates.tobytes()


def read_lrs(path: str | os.PathLike) -> tuple[int, np.ndarray]:
    """(steps per epoch, the rate of every update) of a rate file; InterchangeError on any
    defect (the Elixir reference refuses the same files)."""
    data = Path(path).read_bytes()
    if len(data) < 16 or data[:8] != LR_MAGIC:
        raise InterchangeError(f"{path}: not an otpnn rate file (expected magic {LR_MAGIC!r})")
    per_epoch, epochs = struct.unpack("<II", data[8:16])
    if len(data) != 16 + 8 * per_epoch * epochs:
        raise InterchangeError(
            f"{path}: {len(data)} bytes, expected {16 + 8 * per_epoch * epochs} "
            f"for {epochs} x {per_epoch} float64 rates"
        )
    rates = np.frombuffer(data, "<f8", offset=16).astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(rates) & (rates >= 0)))
    if bad.size:
        raise InterchangeError(
            f"{path}: the rate of update {bad[0] + 1} is {float(rates[bad[0]])}, "
            "expected a finite number >= 0"
        )
    return per_epoch, rates


def idx_bytes(array: np.ndarray) -> bytes:
    """A raw (uncompressed) IDX file of unsigned bytes with the array's dimensions."""
    dims = array.shape if array.ndim == 1 else (array.shape[0], 28, 28)
    header = struct.pack(">I", 0x0800 | len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def export_init(
    cfg: TrainConfig, dataset: Dataset, out_dir: str | os.PathLike, *, mnist_dir: str | None = None
) -> Path:
    """Write manifest, initial parameters, order and (synthetic) data into out_dir.

    For MNIST pass the (verified) directory the dataset was read from; the dataset may be a
    leading subset of it (see limit_dataset). Returns the manifest's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = len(dataset.train_labels), len(dataset.test_labels)
    params = init_params(cfg)
    save_weights(out / INIT_FILE, params, cfg.layer_sizes, {"seed": cfg.seed})
    write_atomic(out / ORDER_FILE, order_bytes(n_train, cfg.seed, cfg.epochs))
    write_atomic(out / LR_FILE, lr_bytes(cfg, n_train))
    if cfg.dataset == "synthetic":
        (out / "data").mkdir(exist_ok=True)
        files = {}
        for role, base in FILES.items():
            array = getattr(dataset, role)
            write_atomic(out / "data" / base, idx_bytes(array))
            files[role] = f"data/{base}"
    else:
        src = Path(mnist_dir or find_mnist(cfg.data_dir)).resolve()
        files = {role: str(_mnist_file(src, base)) for role, base in FILES.items()}
    manifest = {
        "format": FORMAT,
        "config": cfg.to_record(),
        "layer_sizes": list(cfg.layer_sizes),
        "init": INIT_FILE,
        "order": ORDER_FILE,
        "lr": LR_FILE,
        "train": {
            "images": files["train_images"],
            "labels": files["train_labels"],
            "count": n_train,
        },
        "test": {"images": files["test_images"], "labels": files["test_labels"], "count": n_test},
        "dataset_name": dataset.name,
        "init_params_sha256": params_sha256(params),
    }
    write_atomic(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return out / MANIFEST


def _mnist_file(directory: Path, base: str) -> Path:
    gz = directory / f"{base}.gz"
    return gz if gz.is_file() else directory / base


class Export(NamedTuple):
    """An export directory as read back: what the other side trains from."""

    config: TrainConfig
    params: np.ndarray
    order: np.ndarray  # (epochs, n) sample indices
    lrs: np.ndarray  # (epochs x steps per epoch,) the rate of update t at [t - 1]
    manifest: dict[str, Any]


def load_export(out_dir: str | os.PathLike) -> Export:
    """Read and check an export directory; InterchangeError naming the file on any defect."""
    out = Path(out_dir)
    try:
        manifest: dict[str, Any] = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise InterchangeError(f"{out / MANIFEST}: cannot read the manifest ({e})") from None
    if manifest.get("format") not in (FORMAT, FORMAT_V1):
        raise InterchangeError(
            f"{out / MANIFEST}: format is {manifest.get('format')!r}, not {FORMAT!r}"
        )
    # A manifest from before schedules trained at a constant rate, whatever today's default.
    cfg = TrainConfig.from_dict({"lr_schedule": "constant", **manifest["config"]})
    params, sizes, _meta = load_weights(out / manifest["init"])
    if list(sizes) != list(cfg.layer_sizes):
        raise InterchangeError(f"{out}: weights have layer sizes {sizes}, config {cfg.layer_sizes}")
    order = read_order(out / manifest["order"])
    return Export(cfg, params, order, _load_lrs(out, manifest, cfg, order.shape[1]), manifest)


def _load_lrs(out: Path, manifest: dict[str, Any], cfg: TrainConfig, n: int) -> np.ndarray:
    """The rates of the export, checked against its config (the Elixir side checks alike)."""
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    if "lr" not in manifest:
        if cfg.lr_schedule != "constant" or cfg.lr_warmup_steps:
            raise InterchangeError(
                f"{out / MANIFEST}: the config's learning rate is scheduled "
                f"(lr_schedule {cfg.lr_schedule!r}, lr_warmup_steps {cfg.lr_warmup_steps}) "
                "but the manifest names no rate file; export again with otpnn export-init"
            )
        return np.full(per_epoch * cfg.epochs, cfg.lr)
    path = out / manifest["lr"]
    file_per_epoch, rates = read_lrs(path)
    if (file_per_epoch, len(rates)) != (per_epoch, per_epoch * cfg.epochs):
        raise InterchangeError(
            f"{path}: rates for {len(rates)} updates ({file_per_epoch} an epoch), the config "
            f"trains {per_epoch * cfg.epochs} ({per_epoch} an epoch, {cfg.epochs} epochs)"
        )
    return rates
