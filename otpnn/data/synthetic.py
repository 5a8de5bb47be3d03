"""A synthetic MNIST-shaped dataset for tests and air-gapped demos.

Each of the 10 classes has a random binary prototype image; a sample is its class prototype with
Gaussian pixel noise, clipped to uint8. It is deterministic from the seed and learnable (an MLP
reaches high accuracy in an epoch or two), which is all a test of the training machinery needs.
"""

from __future__ import annotations

import numpy as np

PIXELS = 784
CLASSES = 10


def _samples(
    rng: np.random.Generator, prototypes: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % CLASSES).astype(np.uint8)
    noisy = prototypes[labels] + rng.normal(0.0, 70.0, (n, PIXELS))
    return np.ascontiguousarray(np.clip(noisy, 0, 255).astype(np.uint8)), labels


def synthetic_arrays(
    seed: int, n_train: int, n_test: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels), images uint8 (N, 784)."""
    rng = np.random.default_rng((seed, 0x5EED))
    prototypes = (rng.random((CLASSES, PIXELS)) < 0.2) * 200.0
    return (*_samples(rng, prototypes, n_train), *_samples(rng, prototypes, n_test))
