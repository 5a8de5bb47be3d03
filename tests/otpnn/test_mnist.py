import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from otpnn.config import TrainConfig
from otpnn.data import (
    DataError,
    cache_dir,
    fetch_mnist,
    find_mnist,
    load_dataset,
    load_mnist,
    verify_mnist,
)
from otpnn.data.mnist import FILES

GZ = [f"{b}.gz" for b in FILES.values()]


def _copy_small_files(src: Path, dst: Path) -> Path:
    """The two label files are small and real; the image files are stand-ins (for find order)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in GZ:
        if "labels" in name:
            shutil.copy(src / name, dst / name)
        else:
            (dst / name).write_bytes(b"")
    return dst


def test_search_order_explicit_alone_else_env_then_cache(tmp_path, monkeypatch, mnist_dir):
    explicit = _copy_small_files(mnist_dir, tmp_path / "explicit")
    env = _copy_small_files(mnist_dir, tmp_path / "env")
    cache = _copy_small_files(mnist_dir, cache_dir())
    monkeypatch.setenv("OTPNN_DATA_DIR", str(env))
    assert find_mnist(explicit) == explicit
    assert find_mnist(None) == env
    monkeypatch.delenv("OTPNN_DATA_DIR")
    assert find_mnist(None) == cache
    with pytest.raises(DataError, match="empty: missing"):
        find_mnist(tmp_path / "empty")  # an explicit directory is the only one looked in


def test_missing_everywhere_says_where_to_put_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OTPNN_DATA_DIR", str(tmp_path / "mine"))
    with pytest.raises(DataError) as err:
        find_mnist()
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg
    assert str(cache_dir()) in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert "OTPNN_DATA_DIR" in msg


def test_an_explicit_wrong_data_dir_is_an_error_without_fallback_or_download(
    tmp_path, serve, mnist_dir, monkeypatch
):
    monkeypatch.setenv("OTPNN_DATA_DIR", str(mnist_dir))  # would be found if looked at
    mirror = serve(tmp_path / "empty-mirror")
    cfg = TrainConfig(data_dir=str(tmp_path / "typo"))
    with pytest.raises(DataError) as err:
        load_dataset(cfg, mirrors=[mirror])
    msg = str(err.value)
    assert f"{tmp_path / 'typo'}: missing" in msg
    assert "Download failed" not in msg
    assert str(mnist_dir) not in msg


def test_offline_and_absent_is_one_clear_error(tmp_path, serve):
    dead = serve(tmp_path / "empty-mirror")  # answers 404 for everything
    cfg = TrainConfig()
    with pytest.raises(DataError) as err:
        load_dataset(cfg, mirrors=[dead, "http://127.0.0.1:9/"])
    msg = str(err.value)
    assert "MNIST not found" in msg
    assert "Download failed" in msg
    assert "Put the four MNIST files" in msg
    assert not list(cache_dir().glob("*.gz"))


def test_real_mnist_loads_verified(mnist_dir):
    data = load_mnist(mnist_dir)
    assert data["train_images"].shape == (60000, 784)
    assert data["train_images"].dtype == np.uint8
    assert data["train_images"].flags.c_contiguous
    assert data["test_labels"].shape == (10000,)
    assert int(data["train_labels"][0]) == 5
    assert verify_mnist(mnist_dir)[0].shape == (60000, 28, 28)
    ds = load_dataset(TrainConfig(data_dir=str(mnist_dir)), mirrors=[])
    assert ds.name.startswith("mnist(")


def _small_mnist_like(src: Path, dst: Path, n_test: int, n_labels: int) -> None:
    """Real train files; a small stand-in test split (structure and counts are checked before
    checksums, so their errors are the ones reported)."""
    dst.mkdir()
    for name in GZ[:2]:
        shutil.copy(src / name, dst / name)
    images = np.zeros((n_test, 28, 28), np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (dst / "t10k-images-idx3-ubyte").write_bytes(header + images.tobytes())
    labels = bytes([0, 0, 8, 1]) + n_labels.to_bytes(4, "big") + bytes(n_labels)
    (dst / "t10k-labels-idx1-ubyte").write_bytes(labels)


def test_modified_or_mismatched_files_are_named(tmp_path, mnist_dir):
    bad = tmp_path / "bad"
    _small_mnist_like(mnist_dir, bad, 10, 10)
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte: content SHA-256 [0-9a-f]+ does not match"
    ):
        verify_mnist(bad)
    labels = tmp_path / "labels"
    _small_mnist_like(mnist_dir, labels, 10, 10)
    raw = bytearray((labels / FILES["test_labels"]).read_bytes())
    raw[-1] = 12
    (labels / FILES["test_labels"]).write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 12 out of range"):
        verify_mnist(labels)
    other = tmp_path / "other"
    shutil.copytree(mnist_dir, other)
    raw = gzip.decompress((other / GZ[3]).read_bytes())
    (other / GZ[3]).unlink()
    (other / FILES["test_labels"]).write_bytes(raw[:-1])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: truncated: 10007 bytes"):
        load_mnist(other)


def test_download_from_local_mirror_verified_and_atomic(tmp_path, serve, mnist_dir):
    good = serve(mnist_dir)
    corrupt_dir = tmp_path / "corrupt-mirror"  # valid gzip, one pixel changed: only a checksum
    corrupt_dir.mkdir()  # of the content can tell
    for name in GZ:
        content = bytearray(gzip.decompress((mnist_dir / name).read_bytes()))
        content[-1] ^= 0x01
        (corrupt_dir / name).write_bytes(gzip.compress(bytes(content), compresslevel=1))
    truncated_dir = tmp_path / "truncated-mirror"
    truncated_dir.mkdir()
    for name in GZ:
        (truncated_dir / name).write_bytes((mnist_dir / name).read_bytes()[:5000])
    truncated = serve(truncated_dir)
    corrupt = serve(corrupt_dir)

    only_bad = tmp_path / "only-bad"
    with pytest.raises(DataError) as err:
        fetch_mnist(only_bad, [corrupt, truncated], progress=False)
    msg = str(err.value)
    assert msg.startswith("could not download train-images-idx3-ubyte.gz: ")
    assert f"{corrupt}train-images-idx3-ubyte.gz: content SHA-256" in msg
    assert "does not match the expected ba891046" in msg
    assert f"{truncated}train-images-idx3-ubyte.gz: train-images-idx3-ubyte.gz: corrupted" in msg
    assert list(only_bad.iterdir()) == []  # no half or unverified file left behind

    target = fetch_mnist(
        None, [corrupt, truncated, good], progress=False
    )  # falls through to the good one
    assert target == cache_dir()
    assert sorted(p.name for p in target.iterdir()) == sorted(GZ)
    assert len(verify_mnist(target)) == 4
    assert load_dataset(TrainConfig(), mirrors=[]).train_labels.shape == (60000,)
