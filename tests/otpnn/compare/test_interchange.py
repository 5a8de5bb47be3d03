"""export-init: the files another implementation reads must hold exactly otpnn's init, order
and data, and broken files must be refused with the file named."""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.data.idx import read_idx
from otpnn.interchange import InterchangeError, export_init, load_export, read_order
from otpnn.model import init_params
from otpnn.schedule import epoch_permutation

CFG = TrainConfig(
    dataset="synthetic", synthetic_train=100, synthetic_test=20, hidden=(8,), epochs=3, seed=5
)


@pytest.fixture
def exported(tmp_path):
    dataset = synthetic_dataset(CFG.seed, CFG.synthetic_train, CFG.synthetic_test)
    export_init(CFG, dataset, tmp_path)
    return tmp_path, dataset


def test_export_holds_otpnns_init_order_and_data(exported) -> None:
    out, dataset = exported
    cfg, params, order, manifest = load_export(out)
    assert dataclasses.replace(cfg, shard_size=None) == CFG  # shard size exported explicitly
    assert np.array_equal(params, init_params(CFG))
    assert order.shape == (3, 100)
    for epoch in (1, 2, 3):
        assert np.array_equal(order[epoch - 1], epoch_permutation(100, CFG.seed, epoch))
    images = read_idx(out / manifest["train"]["images"], 3).reshape(100, -1)
    assert np.array_equal(images, dataset.train_images)
    assert np.array_equal(read_idx(out / manifest["test"]["labels"], 1), dataset.test_labels)
    assert manifest["config"]["shard_size"] == CFG.effective_shard_size


def test_order_file_layout_is_the_documented_one(exported) -> None:
    out, _ = exported
    data = (out / "order.bin").read_bytes()
    assert data[:8] == b"OTPNORD1"
    assert struct.unpack("<II", data[8:16]) == (100, 3)
    first = struct.unpack("<100I", data[16 : 16 + 400])
    assert list(first) == epoch_permutation(100, CFG.seed, 1).tolist()


@pytest.mark.parametrize(
    "damage", [lambda d: d[:-4], lambda d: b"XXXXXXXX" + d[8:], lambda d: d[:10]]
)
def test_damaged_order_file_is_refused_naming_it(exported, damage) -> None:
    out, _ = exported
    path = out / "order.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InterchangeError, match=r"order\.bin"):
        read_order(path)


def test_manifest_of_another_format_is_refused(exported) -> None:
    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(InterchangeError, match="other/9"):
        load_export(out)
