"""Tests of the ``fashion-mnist`` file dataset (bench.data.idx_sets): a tiny IDX set the tests write,
malformed files, the not-found message, and the real Debian files when they are installed."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from bench.contract.settings import TaskSettings
from bench.data import idx_sets
from bench.data import registry as data
from bench.errors import DatasetNotFound

SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"


def _write_idx(path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(f">i{array.ndim}i", magic, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _tiny_set(root, n_train: int = 30, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is 8 * label + 1 (so a label can be read back from its image)."""
    folder = root / "fashion-mnist"
    folder.mkdir()
    y_train, y_test = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    for part, y in (("train", y_train), ("t10k", y_test)):
        x = np.broadcast_to((8 * y + 1)[:, None, None], (len(y), 28, 28))
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz", x, 2051)
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", y, 2049)
    return y_train, y_test


@pytest.fixture(autouse=True)
def _fresh_cache():
    idx_sets.load_idx_set.cache_clear()
    yield
    idx_sets.load_idx_set.cache_clear()


def test_registered_as_a_file_dataset_and_a_source():
    info = data.dataset_info("fashion-mnist")
    assert (info.kind, info.num_classes, info.flip_ok, info.folder) == ("file", 10, True, "fashion-mnist")
    assert (info.train_pool, info.split_scheme) == (60_000, "carve_val")
    assert data.list_datasets("file") == ["fashion-mnist"]
    assert "fashion-mnist" in data.list_sources() and "mnist5k" in data.list_sources()
    assert "cifar10" not in data.list_sources()
    assert data.train_images("fashion-mnist", TaskSettings(val_frac=0.2)) == 48_000
    assert data.train_images("fashion-mnist", TaskSettings(val_frac=0.2, train_limit=500)) == 500


def test_tiny_idx_set_parses_and_splits(tmp_path):
    y_train, y_test = _tiny_set(tmp_path)
    x_tr, y_tr, x_te, y_te = idx_sets.load_idx_set(str(tmp_path / "fashion-mnist"), 10)
    assert x_tr.shape == (30, 28, 28) and x_te.shape == (10, 28, 28) and x_tr.dtype == np.uint8
    assert y_tr.tolist() == y_train.tolist() and y_te.tolist() == y_test.tolist()
    assert int(x_tr[7, 3, 5]) == 8 * 7 + 1

    train, val, test = data.load_splits("fashion-mnist", seed=0, input_size=16, val_frac=0.2, data_root=tmp_path)
    assert (len(train), len(val), len(test)) == (24, 6, 10)
    assert sorted(test.y.tolist()) == sorted(y_test.tolist())
    for s in (train, val, test):
        assert tuple(s.x.shape) == (len(s), 3, 16, 16) and s.x.dtype == torch.float32
        assert (s.num_classes, s.input_size, s.flip_ok) == (10, 16, True)
        # every image is one gray level 8 * label + 1, normalised with the train split's mean/std
        raw = s.x[:, 0, 0, 0] * s.std[0] + s.mean[0]
        assert torch.allclose(raw, (8 * s.y + 1).float() / 255.0, atol=1e-5)
    assert sorted(np.bincount(val.y.numpy(), minlength=10).tolist()) == [0] * 4 + [1] * 6  # stratified, 3 per class
    train_mean = float(((8 * train.y + 1).float() / 255.0).mean())
    assert train.mean == (pytest.approx(train_mean, abs=1e-6),) * 3

    limited = data.load_splits("fashion-mnist", seed=0, input_size=16, train_limit=10, data_root=tmp_path)
    assert (len(limited[0]), len(limited[1]), len(limited[2])) == (10, 6, 10)


def test_tiny_split_is_deterministic_per_seed(tmp_path):
    _tiny_set(tmp_path)

    def val_labels_and_pixels(seed):
        _, val, _ = data.load_splits("fashion-mnist", seed=seed, input_size=28, data_root=tmp_path)
        return val.x[:, 0, 0, 0].tolist()

    assert val_labels_and_pixels(1) == val_labels_and_pixels(1)
    assert any(val_labels_and_pixels(s) != val_labels_and_pixels(1) for s in (2, 3, 4))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda p: _write_idx(p, np.zeros((30, 28, 28)), 2049), "IDX magic number 2049, expected 2051"),
        (lambda p: p.write_bytes(gzip.compress(struct.pack(">4i", 2051, 30, 28, 28) + b"\0" * 100)), "data bytes"),
        (lambda p: p.write_bytes(p.read_bytes()[:-20]), "not a readable gzip file"),
        (lambda p: _write_idx(p, np.zeros((29, 28, 28)), 2051), "29 images"),
    ],
    ids=["bad-magic", "truncated-data", "truncated-gzip", "count-mismatch"],
)
def test_malformed_file_is_an_error_naming_it(tmp_path, corrupt, match):
    _tiny_set(tmp_path)
    path = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    corrupt(path)
    with pytest.raises(DatasetNotFound, match=match) as err:
        data.load_splits("fashion-mnist", seed=0, input_size=16, data_root=tmp_path)
    assert str(path) in str(err.value)


def test_missing_folder_names_both_paths_and_the_apt_command(tmp_path, monkeypatch):
    nowhere = str(tmp_path / "no-system-copy")
    spec = dataclasses.replace(idx_sets.IDX_SETS["fashion-mnist"], system_dir=nowhere)
    monkeypatch.setitem(idx_sets.IDX_SETS, "fashion-mnist", spec)
    with pytest.raises(DatasetNotFound) as err:
        data.check_available("fashion-mnist", tmp_path)
    message = str(err.value)
    assert os.path.join(str(tmp_path), "fashion-mnist") in message and nowhere in message
    assert "apt-get install dataset-fashion-mnist" in message
    with pytest.raises(DatasetNotFound, match="no --bench-data-root given.*apt-get install dataset-fashion-mnist"):
        data.check_available("fashion-mnist", None)
    (tmp_path / "fashion-mnist").mkdir()  # a partial copy under the data root is an error, no fall back
    with pytest.raises(DatasetNotFound, match="missing train-images-idx3-ubyte.gz"):
        data.check_available("fashion-mnist", tmp_path)


def test_data_root_copy_wins_over_the_system_copy(tmp_path):
    _tiny_set(tmp_path)
    assert idx_sets.find_folder("fashion-mnist", tmp_path) == str(tmp_path / "fashion-mnist")


@pytest.mark.skipif(
    not os.path.isdir(SYSTEM_DIR), reason=f"{SYSTEM_DIR} absent (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_files():
    x_tr, y_tr, x_te, y_te = idx_sets.load_idx_set(SYSTEM_DIR, 10)
    assert x_tr.shape == (60_000, 28, 28) and x_te.shape == (10_000, 28, 28)
    assert np.bincount(y_tr).tolist() == [6000] * 10 and np.bincount(y_te).tolist() == [1000] * 10
    train, val, test = data.load_splits("fashion-mnist", seed=0, input_size=28, val_frac=0.2)
    assert (len(train), len(val), len(test)) == (48_000, 12_000, 10_000)
    assert np.bincount(val.y.numpy()).tolist() == [1200] * 10
    assert train.mean[0] == pytest.approx(0.286, abs=0.002) and train.std[0] == pytest.approx(0.353, abs=0.002)
