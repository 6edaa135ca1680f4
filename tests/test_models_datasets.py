"""Offline dataset loaders on small files written here, plus the real Fashion-MNIST if present."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_models.usererror import UserInputError
from models.datasets import DATASETS, ENV_VAR, dataset_info, load_dataset, read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n: int = 12, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem, count in (("train", n), ("t10k", n // 2)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{stem}-{kind}-ubyte"
            data = _idx(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out[stem] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    ref = _write_mnist(tmp_path / "fashion-mnist", gz=gz)
    for split, stem in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path)
        images, labels = ref[stem]
        assert ds.images.dtype == np.float32 and ds.images.shape == (len(labels), 1, 28, 28)
        np.testing.assert_array_equal(ds.images[:, 0], images.astype(np.float32) / 255)
        assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels.tolist()
        assert ds.num_classes == 10 and ds.mean == [0.2860] and ds.std == [0.3530]
        assert ds.input_shape == (1, 28, 28) and ds.name == "fashion-mnist"
    assert len(load_dataset("fashion-mnist", "train", data_dir=tmp_path, limit=5)) == 5


def test_data_dir_itself_and_env_var(tmp_path, monkeypatch):
    ref = _write_mnist(tmp_path / "flat")  # files directly in the folder
    ds = load_dataset("mnist", "train", data_dir=tmp_path / "flat")
    assert ds.labels.tolist() == ref["train"][1].tolist() and ds.mean == [0.1307]
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    _write_mnist(tmp_path / "mnist", seed=1)
    ds = load_dataset("mnist", "test")
    assert ds.source == str(tmp_path / "mnist")


def test_missing_data_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(UserInputError) as err:
        load_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "/usr/share/datasets/mnist" in msg and "fix:" in msg
    import models.datasets as mod

    monkeypatch.setattr(mod, "_search_dirs", lambda name, data_dir: [tmp_path / name])
    with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (lambda b: b"\x01" + b[1:], "IDX"),  # bad magic
        (lambda b: b[:3] + b"\x04" + b[4:], "dimensions"),
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\x00", "truncated"),
        (lambda b: b[:10], "truncated"),
    ],
)
def test_corrupt_idx_names_the_file(tmp_path, damage, pattern):
    _write_mnist(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(UserInputError, match=pattern) as err:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    assert str(target) in str(err.value)


def test_corrupt_gzip_and_mismatched_counts(tmp_path):
    _write_mnist(tmp_path)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:20])
    with pytest.raises(UserInputError, match="train-labels"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    gz.write_bytes(gzip.compress(_idx(np.zeros(3, np.uint8))))
    with pytest.raises(UserInputError, match="3 labels for 12 images"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    gz.write_bytes(gzip.compress(_idx(np.full(12, 11, np.uint8))))
    with pytest.raises(UserInputError, match="label 11"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_read_idx_raw(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a", 3), arr)


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    recs = {}
    for name, n in [(f"data_batch_{i}.bin", 3) for i in range(1, 6)] + [("test_batch.bin", 4)]:
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        pix = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pix], axis=1).tobytes())
        recs[name] = (labels, pix)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    labels, pix = recs["test_batch.bin"]
    assert ds.images.shape == (4, 3, 32, 32) and ds.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(ds.images[2, 1].reshape(-1), pix[2, 1024:2048] / np.float32(255))
    tr = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(tr) == 15 and tr.labels[3] == recs["data_batch_2.bin"][0][0]
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(UserInputError, match="test_batch.bin"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_svhn_mat(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "test", data_dir=tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 9, 0] and ds.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(ds.images[1, 2], x[:, :, 2, 1] / np.float32(255))
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="test_32x32.mat"):
        load_dataset("svhn", "test", data_dir=tmp_path)


def test_synthetic_is_deterministic_and_balanced():
    a = load_dataset("synthetic", "train", limit=500)
    b = load_dataset("synthetic", "train", limit=500)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.min() >= 0 and a.images.max() <= 1 and a.images.dtype == np.float32
    assert set(a.labels.tolist()) == set(range(10))
    t = load_dataset("synthetic", "test")
    assert not np.array_equal(t.images[:10], a.images[:10])
    rgb = load_dataset("synthetic-rgb", "test", limit=3)
    assert rgb.images.shape == (3, 3, 32, 32) and len(rgb.mean) == 3


def test_bad_arguments():
    assert set(DATASETS) >= {"fashion-mnist", "mnist", "svhn", "cifar10", "synthetic"}
    with pytest.raises(UserInputError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(UserInputError, match="split"):
        load_dataset("synthetic", "valid")
    with pytest.raises(UserInputError, match="limit"):
        load_dataset("synthetic", limit=0)
    assert dataset_info("cifar10")["in_channels"] == 3


def test_module_imports_without_torch():
    code = "import sys, models.datasets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.dataset
@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST")
def test_real_fashion_mnist():
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert abs(float(test.images.mean()) - 0.286) < 0.01
    train = load_dataset("fashion-mnist", "train", limit=1000)
    assert train.images.shape == (1000, 1, 28, 28) and train.labels[:4].tolist() == [9, 0, 0, 3]
