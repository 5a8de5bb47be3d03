"""export-init: the files another implementation reads must hold exactly otpnn's init, order,
learning rates and data, and broken files must be refused with the file named."""

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
from otpnn.lr_schedule import LrSchedule
from otpnn.model import init_params
from otpnn.schedule import epoch_permutation

CFG = TrainConfig(
    dataset="synthetic", synthetic_train=100, synthetic_test=20, hidden=(8,), epochs=3, seed=5,
    batch_size=32, lr_schedule="cosine", lr_min=0.01, lr_warmup_steps=3,
)  # fmt: skip
STEPS = 3 * 4  # 3 epochs of 100 samples in batches of 32 (the last one partial)


@pytest.fixture
def exported(tmp_path):
    dataset = synthetic_dataset(CFG.seed, CFG.synthetic_train, CFG.synthetic_test)
    export_init(CFG, dataset, tmp_path)
    return tmp_path, dataset


def test_export_holds_otpnns_init_order_and_data(exported) -> None:
    out, dataset = exported
    cfg, params, order, _lrs, manifest = load_export(out)
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


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        dataclasses.replace(
            CFG, lr_schedule="step", lr_min=0.0, lr_step_epochs=1, lr_gamma=0.5, lr_warmup_steps=5
        ),
        dataclasses.replace(CFG, lr_schedule="constant", lr_min=0.0, lr_warmup_steps=0),
    ],
    ids=["cosine", "step-warmup", "constant"],
)
def test_rate_file_holds_every_updates_rate_as_the_trainers_compute_it(tmp_path, cfg) -> None:
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    export_init(cfg, dataset, tmp_path)
    data = (tmp_path / "lr.bin").read_bytes()
    assert data[:8] == b"OTPNLRS1"
    assert struct.unpack("<II", data[8:16]) == (4, 3)  # steps per epoch, epochs
    schedule = LrSchedule.of(cfg, 4)
    expected = [schedule.hyper(t).lr for t in range(1, STEPS + 1)]
    assert list(struct.unpack(f"<{STEPS}d", data[16:])) == expected  # bit for bit
    assert load_export(tmp_path).lrs.tolist() == expected
    assert json.loads((tmp_path / "manifest.json").read_text())["lr"] == "lr.bin"


def _nan_at_3(d: bytes) -> bytes:
    return d[: 16 + 8 * 2] + struct.pack("<d", float("nan")) + d[16 + 8 * 3 :]


def _negative_first(d: bytes) -> bytes:
    return d[:16] + struct.pack("<d", -0.1) + d[24:]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda d: d[:-8], "expected 112"),
        (lambda d: b"OTPNORD1" + d[8:], "not an otpnn rate file"),
        (lambda d: d[:12], "not an otpnn rate file"),
        (_nan_at_3, "update 3 is nan"),
        (_negative_first, "update 1 is -0.1"),
        (lambda d: d[:8] + struct.pack("<II", 6, 2) + d[16:], "the config trains 12"),
    ],
    ids=["truncated", "magic", "header-only", "nan", "negative", "other-shape"],
)
def test_damaged_rate_file_is_refused_naming_it(exported, damage, says) -> None:
    out, _ = exported
    path = out / "lr.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InterchangeError, match=rf"lr\.bin.*{says}"):
        load_export(out)


def test_a_manifest_without_rates_is_read_only_for_a_constant_rate(exported) -> None:
    """A /1 export predates lr.bin: its config (without schedule fields, then) means a constant
    rate; a scheduled config without a rate file is refused rather than trained wrongly."""
    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["lr"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InterchangeError, match=r"manifest\.json.*'cosine'.*names no rate file"):
        load_export(out)
    schedule_fields = ("lr_schedule", "lr_min", "lr_warmup_steps", "lr_step_epochs", "lr_gamma")
    old = {k: v for k, v in manifest["config"].items() if k not in schedule_fields}
    (out / "manifest.json").write_text(
        json.dumps({**manifest, "format": "otpnn-interchange/1", "config": old})
    )
    export = load_export(out)
    assert export.config.lr_schedule == "constant"
    assert export.lrs.tolist() == [CFG.lr] * STEPS
