"""Checkpoints and exported weights in safetensors, with JSON metadata; never pickle.

A checkpoint holds the flat parameter vector ("params"), the optimizer's state tensors
("optimizer.<name>"), optionally other tensors of the run ("extra.<name>", e.g. the best
epoch's parameters) and JSON metadata (step, epoch, seed, config, ...) plus the SHA-256 of the
parameters and of each extra tensor, checked on load: safetensors validates the layout but not
the bytes.
Files are written atomically (temp file in the same directory, fsync, rename), so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from otpnn.atomic import write_atomic
from otpnn.errors import UsageError
from otpnn.model.params import Sizes, layer_views, params_sha256
from otpnn.model.sgd import SGD

CHECKPOINT_FORMAT = "otpnn-checkpoint/1"
WEIGHTS_FORMAT = "otpnn-weights/1"


class CheckpointError(UsageError):
    """A checkpoint or weights file that cannot be used; the message names the file and why."""


def save_checkpoint(
    path: str | os.PathLike,
    params: np.ndarray,
    optimizer: SGD,
    meta: dict,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    tensors = {"params": params}
    tensors.update({f"optimizer.{k}": v for k, v in optimizer.state_arrays().items()})
    extra = extra or {}
    tensors.update({f"extra.{k}": v for k, v in extra.items()})
    sums: dict[str, Any] = {"params_sha256": params_sha256(params)}
    if extra:
        sums["extra_sha256"] = {k: params_sha256(v) for k, v in extra.items()}
    _save(path, tensors, CHECKPOINT_FORMAT, {**meta, **sums})


def load_checkpoint(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Return (params, optimizer state arrays, metadata); CheckpointError on any defect."""
    params, state, _extra, meta = read_checkpoint(path)
    return params, state, meta


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Return (params, optimizer state arrays, extra arrays, metadata); CheckpointError on any
    defect."""
    tensors, meta = _load(path, CHECKPOINT_FORMAT)
    params = tensors.pop("params", None)
    if params is None or params.ndim != 1:
        raise CheckpointError(f"{path}: expected a 1-D tensor 'params' in the checkpoint")
    if params_sha256(params) != meta.get("params_sha256"):
        raise CheckpointError(
            f"{path}: parameters do not match the SHA-256 recorded in the checkpoint (corrupted)"
        )
    extra = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    sums = meta.get("extra_sha256") or {}
    for name, array in extra.items():
        if not isinstance(sums, dict) or params_sha256(array) != sums.get(name):
            raise CheckpointError(
                f"{path}: tensor 'extra.{name}' does not match its recorded SHA-256 (corrupted)"
            )
    state = {
        k.removeprefix("optimizer."): v for k, v in tensors.items() if not k.startswith("extra.")
    }
    return params, state, extra, meta


def save_weights(path: str | os.PathLike, params: np.ndarray, sizes: Sizes, meta: dict) -> None:
    """Export per-layer tensors "layer{i}.weight" (in, out) and "layer{i}.bias" (out,)."""
    tensors = {}
    for i, (w, b) in enumerate(layer_views(params, sizes)):
        tensors[f"layer{i}.weight"], tensors[f"layer{i}.bias"] = w, b
    full = {**meta, "layer_sizes": list(sizes), "params_sha256": params_sha256(params)}
    _save(path, tensors, WEIGHTS_FORMAT, full)


def load_weights(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, ...], dict]:
    """Inverse of save_weights: (flat params, layer sizes, metadata)."""
    tensors, meta = _load(path, WEIGHTS_FORMAT)
    try:
        sizes = tuple(int(s) for s in meta["layer_sizes"])
        parts = []
        for i in range(len(sizes) - 1):
            parts += [tensors[f"layer{i}.weight"].ravel(), tensors[f"layer{i}.bias"]]
        params = np.concatenate(parts)
        layer_views(params, sizes)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not match their layer sizes ({e})") from None
    if params_sha256(params) != meta.get("params_sha256"):
        raise CheckpointError(f"{path}: weights do not match their recorded SHA-256 (corrupted)")
    return params, sizes, meta


def _save(path: str | os.PathLike, tensors: dict, fmt: str, meta: dict) -> None:
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    data = st_save(contiguous, metadata={"format": fmt, "otpnn": json.dumps(meta)})
    write_atomic(path, data)


def _load(path: str | os.PathLike, fmt: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_len])
        stored = header.get("__metadata__") or {}
        if stored.get("format") != fmt:
            raise CheckpointError(f"{path}: not an {fmt} file (format={stored.get('format')!r})")
        meta = json.loads(stored["otpnn"])
        tensors = st_load(data)
    except CheckpointError:
        raise
    except Exception as e:  # any parse failure of untrusted bytes is one clear error
        raise CheckpointError(
            f"{path}: not a valid safetensors {fmt} file ({type(e).__name__}: {e})"
        ) from None
    return tensors, meta
