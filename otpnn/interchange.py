"""Export of a run's starting point for another implementation (the Elixir reference), and back.

Two systems compute the same training only if they start from the same parameters, visit the same
samples in the same order and read the same pixels. ``export_init`` writes all three into one
directory, so the other side needs no random generator compatible with numpy's:

``manifest.json``
    ``{"format": "otpnn-interchange/1", "config": {...TrainConfig, effective shard_size},
    "layer_sizes": [...], "init": "init.safetensors", "order": "order.bin",
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
``data/*-idx?-ubyte``
    for the synthetic dataset only: the samples as raw IDX files, so the other side reads them
    with the same code as MNIST. For MNIST the manifest points at the verified MNIST files.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from otpnn.atomic import write_atomic
from otpnn.checkpoint import load_weights, save_weights
from otpnn.config import TrainConfig
from otpnn.data import Dataset, find_mnist
from otpnn.data.mnist import FILES
from otpnn.errors import UsageError
from otpnn.model import init_params, params_sha256
from otpnn.schedule import epoch_permutation

FORMAT = "otpnn-interchange/1"
ORDER_MAGIC = b"OTPNORD1"
MANIFEST = "manifest.json"
INIT_FILE = "init.safetensors"
ORDER_FILE = "order.bin"


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
        "config": {**cfg.to_dict(), "shard_size": cfg.effective_shard_size},
        "layer_sizes": list(cfg.layer_sizes),
        "init": INIT_FILE,
        "order": ORDER_FILE,
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


def load_export(out_dir: str | os.PathLike) -> tuple[TrainConfig, np.ndarray, np.ndarray, dict]:
    """(config, initial params, order (epochs, n), manifest) of an export directory."""
    out = Path(out_dir)
    try:
        manifest: dict[str, Any] = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise InterchangeError(f"{out / MANIFEST}: cannot read the manifest ({e})") from None
    if manifest.get("format") != FORMAT:
        raise InterchangeError(
            f"{out / MANIFEST}: format is {manifest.get('format')!r}, not {FORMAT!r}"
        )
    cfg = TrainConfig.from_dict(manifest["config"])
    params, sizes, _meta = load_weights(out / manifest["init"])
    if list(sizes) != list(cfg.layer_sizes):
        raise InterchangeError(f"{out}: weights have layer sizes {sizes}, config {cfg.layer_sizes}")
    return cfg, params, read_order(out / manifest["order"]), manifest
