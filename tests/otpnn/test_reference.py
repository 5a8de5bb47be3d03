import numpy as np
import pytest

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.model import SGD, init_params, params_sha256, shard_gradient
from otpnn.reference import StepBuffers, reference_step, train_reference
from otpnn.schedule import batch_indices, epoch_permutation

CFG = TrainConfig(
    dataset="synthetic", epochs=2, batch_size=32, shard_size=8, hidden=(32, 16),
    synthetic_train=640, synthetic_test=200, lr=0.1,
)  # fmt: skip


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(CFG.seed, CFG.synthetic_train, CFG.synthetic_test)


def test_reference_learns_and_reports_each_epoch(dataset):
    rows = []
    result = train_reference(CFG, dataset, on_epoch=rows.append)
    assert result.history == rows
    assert [r["epoch"] for r in rows] == [1, 2]
    assert result.steps == 2 * 20
    assert set(rows[0]) >= {
        "epoch", "seconds", "samples_per_second", "train_loss", "train_accuracy", "test_accuracy",
    }  # fmt: skip
    assert rows[-1]["test_accuracy"] > 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.params_sha256 == params_sha256(result.params)


def test_reference_is_deterministic_and_seeded(dataset):
    a = train_reference(CFG, dataset).params_sha256
    assert train_reference(CFG, dataset).params_sha256 == a
    other_seed = TrainConfig(**{**CFG.to_dict(), "seed": 1})
    assert train_reference(other_seed, dataset).params_sha256 != a


def test_a_step_is_the_mean_batch_gradient_update(dataset):
    """Shard split + in-order reduction is, up to rounding, one SGD step on the whole batch."""
    cfg = TrainConfig(**{**CFG.to_dict(), "dtype": "float64", "batch_size": 30, "shard_size": 7})
    params = init_params(cfg)
    batch = batch_indices(epoch_permutation(640, cfg.seed, 1), 0, cfg.batch_size)
    x, y = dataset.train_images[batch], dataset.train_labels[batch]
    whole = np.empty_like(params)
    loss, correct = shard_gradient(params, cfg.layer_sizes, cfg.activation, x, y, whole)
    expected = params - cfg.lr * whole / len(batch)

    buffers = StepBuffers(cfg, params.size)
    assert buffers.slots.shape[0] == 5  # 7 + 7 + 7 + 7 + 2
    step_loss, step_correct = reference_step(
        cfg, params, SGD(cfg.lr), dataset.train_images, dataset.train_labels, batch, buffers
    )
    np.testing.assert_allclose(params, expected, rtol=1e-12, atol=1e-15)
    assert step_loss == pytest.approx(loss, rel=1e-12)
    assert step_correct == correct


def test_shard_size_is_part_of_the_arithmetic(dataset):
    """Different micro-shard sizes round differently: it is config, not a tuning knob."""
    a = train_reference(TrainConfig(**{**CFG.to_dict(), "epochs": 1, "shard_size": 8}), dataset)
    b = train_reference(TrainConfig(**{**CFG.to_dict(), "epochs": 1, "shard_size": 16}), dataset)
    assert a.params_sha256 != b.params_sha256
    np.testing.assert_allclose(a.params, b.params, rtol=1e-3, atol=1e-4)
