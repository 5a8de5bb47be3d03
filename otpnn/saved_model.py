"""A trained network as a user keeps it: the weights plus what is needed to use them.

``otpnn train --save FILE`` writes an ``otpnn-weights/1`` safetensors file (per-layer tensors, see
:func:`otpnn.checkpoint.save_weights`) whose metadata holds the training config, so activation and
layer sizes travel with the weights. :func:`load_model` reads that, the service's
``model.safetensors``, and a training checkpoint alike: whichever a user has, it predicts.

Inputs are MNIST-shaped: ``uint8`` rows of 784 pixels, white digit on black, scaled by 1/255 as
in training. Logits come from the forward pass of otpnn's own evaluation, in the stored dtype, so
a predicted class is the one the test accuracy counted; probabilities are their softmax.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otpnn.checkpoint import (
    CHECKPOINT_FORMAT,
    WEIGHTS_FORMAT,
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_weights,
)
from otpnn.config import ACTIVATIONS, ConfigError, TrainConfig
from otpnn.model.mlp import evaluate, predict_logits
from otpnn.model.params import layer_views


@dataclass
class Model:
    """Flat parameters, the layer sizes they fit and the activation between layers."""

    params: np.ndarray
    sizes: tuple[int, ...]
    activation: str
    config: TrainConfig | None = None  # the training config, where the file records it
    meta: dict[str, Any] = field(default_factory=dict)

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, b) per layer, W as (in, out): a layer is ``x @ W + b``."""
        return layer_views(self.params, self.sizes)

    def logits(self, images_u8: np.ndarray) -> np.ndarray:
        """Logits (N, 10) for uint8 images (N, 784), as otpnn's evaluation computes them."""
        return predict_logits(self.params, self.sizes, self.activation, images_u8)

    def probabilities(self, images_u8: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, 10), in float64, of :meth:`logits`."""
        z = self.logits(images_u8).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def loss_and_accuracy(self, images_u8: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Exactly otpnn's evaluation (the epoch rows' test_loss and test_accuracy)."""
        return evaluate(self.params, self.sizes, self.activation, images_u8, labels)


def save_model(
    path: str | os.PathLike, params: np.ndarray, config: TrainConfig, meta: dict[str, Any]
) -> None:
    """Write the weights with the config that trained them (atomically)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, params, config.layer_sizes, {**meta, "config": config.to_dict()})


def load_model(path: str | os.PathLike) -> Model:
    """A saved model, the service's model file or a checkpoint; CheckpointError naming the file
    and the problem for anything else."""
    fmt = _format(path)
    if fmt == CHECKPOINT_FORMAT:
        params, _optimizer, meta = load_checkpoint(path)
        config = _config(path, meta)
        if config is None:
            raise CheckpointError(f"{path}: the checkpoint records no training config")
        sizes = config.layer_sizes
    else:
        params, sizes, meta = load_weights(path)
        config = _config(path, meta)
    activation = config.activation if config is not None else "relu"
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{path}: unknown activation {activation!r}")
    try:
        layer_views(params, sizes)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if sizes[0] != 784 or sizes[-1] != 10:
        raise CheckpointError(f"{path}: layer sizes {list(sizes)} are not 784 -> ... -> 10")
    return Model(params, tuple(sizes), activation, config, meta)


def _format(path: str | os.PathLike) -> str:
    """The ``format`` recorded in a safetensors header (read without loading the tensors)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        fmt = (header.get("__metadata__") or {}).get("format")
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    except Exception:  # any parse failure of untrusted bytes is one clear error
        raise CheckpointError(f"{path}: not a safetensors file") from None
    if fmt not in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        raise CheckpointError(
            f"{path}: not an otpnn model or checkpoint (format={fmt!r}; expected "
            f"{WEIGHTS_FORMAT!r} or {CHECKPOINT_FORMAT!r})"
        )
    return fmt


def _config(path: str | os.PathLike, meta: dict[str, Any]) -> TrainConfig | None:
    raw = meta.get("config")
    if raw is None:
        return None
    try:
        return TrainConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: its training config is invalid ({e})") from None
