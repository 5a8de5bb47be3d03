"""Datasets held once in memory as uint8 (N, 784) C-contiguous images and uint8 (N,) labels.

Normalisation is done late and once per micro-shard (x / 255 into float32, see
otpnn.model.mlp): the dataset stays 1 byte per pixel (47 MB for MNIST, shareable as is) and a
batch is a cheap gather of rows by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from otpnn.config import TrainConfig
from otpnn.data.errors import DataError
from otpnn.data.mnist import (
    DEFAULT_MIRRORS,
    cache_dir,
    fetch_mnist,
    find_mnist,
    load_mnist,
    verify_mnist,
)
from otpnn.data.synthetic import synthetic_arrays

__all__ = [
    "DEFAULT_MIRRORS",
    "DataError",
    "Dataset",
    "cache_dir",
    "fetch_mnist",
    "find_mnist",
    "load_dataset",
    "load_mnist",
    "synthetic_dataset",
    "verify_mnist",
]


@dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str


def synthetic_dataset(seed: int, n_train: int = 2048, n_test: int = 512) -> Dataset:
    arrays = synthetic_arrays(seed, n_train, n_test)
    return Dataset(*arrays, name=f"synthetic(seed={seed}, train={n_train}, test={n_test})")


def load_dataset(
    cfg: TrainConfig, *, mirrors: Sequence[str] = DEFAULT_MIRRORS, download: bool = True
) -> Dataset:
    """The config's dataset. MNIST missing everywhere is downloaded into the cache (if
    `download`, and never when ``cfg.data_dir`` names where it should be); offline, the error
    says where to put the files."""
    if cfg.dataset == "synthetic":
        return synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    try:
        directory = find_mnist(cfg.data_dir)
    except DataError as missing:
        if not download or cfg.data_dir:
            raise
        try:
            directory = fetch_mnist(cache_dir(), mirrors)
        except DataError as failed:
            reason = str(failed).splitlines()[0]  # its advice repeats the one in `missing`
            raise DataError(f"{missing}\nDownload failed: {reason}") from None
    a = load_mnist(directory)
    return Dataset(
        a["train_images"],
        a["train_labels"],
        a["test_images"],
        a["test_labels"],
        name=f"mnist({directory})",
    )
