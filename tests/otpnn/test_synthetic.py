import numpy as np

from otpnn.config import TrainConfig
from otpnn.data import load_dataset, synthetic_dataset


def test_synthetic_is_deterministic_mnist_shaped_and_balanced():
    a = synthetic_dataset(1, 200, 50)
    b = load_dataset(
        TrainConfig(dataset="synthetic", seed=1, synthetic_train=200, synthetic_test=50)
    )
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.train_images.shape == (200, 784)
    assert a.train_images.dtype == np.uint8
    assert a.train_images.flags.c_contiguous
    assert a.train_labels.dtype == np.uint8
    assert np.bincount(a.train_labels).tolist() == [20] * 10
    assert not np.array_equal(a.train_images, synthetic_dataset(2, 200, 50).train_images)
    assert a.name.startswith("synthetic(seed=1")


def test_synthetic_defaults_are_small():
    ds = synthetic_dataset(0)
    assert (len(ds.train_labels), len(ds.test_labels)) == (2048, 512)
