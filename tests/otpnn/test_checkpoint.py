import json
from pathlib import Path

import numpy as np
import pytest

from otpnn.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    save_weights,
)
from otpnn.model import SGD, init_params, layer_views, params_sha256

SIZES = (784, 16, 10)


def _trained():
    params = init_params(SIZES, 0)
    opt = SGD(0.1, momentum=0.9)
    opt.step(params, np.ones_like(params), 4)
    return params, opt


def test_checkpoint_round_trip(tmp_path: Path):
    params, opt = _trained()
    meta = {"step": 7, "epoch": 1, "seed": 0, "config": {"lr": 0.1}}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, params, opt, meta)
    loaded, state, meta2 = load_checkpoint(path)
    assert params_sha256(loaded) == params_sha256(params)
    assert state["velocity"].tobytes() == opt.velocity.tobytes()
    assert {k: meta2[k] for k in meta} == meta
    assert meta2["params_sha256"] == params_sha256(params)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left


def test_extra_tensors_round_trip_apart_from_the_optimizer_and_are_checked(tmp_path: Path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    params, opt = _trained()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, params, opt, {"step": 3}, {"best_params": params * 2})
    _params, state, extra, _meta = read_checkpoint(path)
    assert set(state) == {"velocity"}
    assert params_sha256(extra["best_params"]) == params_sha256(params * 2)
    assert set(load_checkpoint(path)[1]) == {"velocity"}  # the 3-tuple loader drops extras
    with safe_open(path, "np") as f:
        header = f.metadata()
    tensors = load_file(path)
    tensors["extra.best_params"][0] += 1  # a flipped value the layout check cannot see
    save_file(tensors, path, metadata=header)
    with pytest.raises(CheckpointError, match=r"'extra\.best_params' does not match its recorded"):
        read_checkpoint(path)


def test_loading_never_unpickles(tmp_path: Path):
    import pickle

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"params": np.zeros(3)}))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "weights_file", "missing"])
def test_bad_checkpoint_gives_one_clear_error(tmp_path: Path, damage: str):
    params, opt = _trained()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, params, opt, {"step": 1})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-5] ^= 0xFF  # inside the parameter bytes
        path.write_bytes(bytes(data))
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 100)
    elif damage == "weights_file":
        save_weights(path, params, SIZES, {})
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_weights_export_has_per_layer_tensors(tmp_path: Path):
    from safetensors.numpy import load_file

    params, _ = _trained()
    path = tmp_path / "w.safetensors"
    save_weights(path, params, SIZES, {"epoch": 5})
    tensors = load_file(path)
    assert sorted(tensors) == ["layer0.bias", "layer0.weight", "layer1.bias", "layer1.weight"]
    w, b = layer_views(params, SIZES)[1]
    assert np.array_equal(tensors["layer1.weight"], w)
    assert np.array_equal(tensors["layer1.bias"], b)
    flat, sizes, meta = load_weights(path)
    assert sizes == SIZES
    assert params_sha256(flat) == params_sha256(params)
    assert meta["epoch"] == 5
    assert json.dumps(meta)
