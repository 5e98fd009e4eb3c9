"""NAS-Bench-201's own splits (``TaskSettings.split="nb201"``), read from NB201's split files.

NB201 (Dong & Yang 2020, ``xautodl/datasets/get_dataset_with_transform.py``) defines:

==============  =================================  ===============================  ==================
dataset         train                              valid                            test
==============  =================================  ===============================  ==================
cifar10         ``train`` half of the official     ``valid`` half of the official   official test
                train set (25,000)                 train set (25,000)               (10,000)
cifar100        official train (50,000)            ``xvalid`` half of the official  ``xtest`` half
                                                   test set (5,000)                 (5,000)
imagenet16-120  official train (151,700)           ``xvalid`` half of the val       ``xtest`` half
                                                   file (3,000)                     (3,000)
==============  =================================  ===============================  ==================

These are the sets behind the NATS-Bench table's accuracies: ``cifar10-valid`` trains on the
cifar10 train half and reports ``valid-accuracy`` on the valid half and ``test-accuracy`` on the
official test set; ``cifar100`` and ``ImageNet16-120`` train on the official train set and report
``valid-accuracy`` on ``xvalid`` and ``test-accuracy`` on ``xtest``. A method that scores on the
task's ``val`` and compares with the table's test accuracy therefore scores where NB201 does.

The split files are NB201's (``configs/nas-benchmark/`` of github.com/D-X-Y/AutoDL-Projects,
also in D-X-Y/NAS-Bench-201): ``cifar-split.txt``, ``cifar100-test-split.txt``,
``imagenet-16-120-test-split.txt``. The harness never downloads them: place them in
``<data_root>/nas-benchmark/`` (NB201's folder name) or directly in ``<data_root>``. Their format
is NB201's config JSON: ``{"train": ["int", ["0", "5", ...]], "valid": ["int", [...]]}``.

NB201's splits do not depend on the cell seed (``val_frac``/``test_frac`` are unused);
``train_limit`` still keeps a stratified, seeded subset of NB201's train split.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from bench.errors import DatasetNotFound

__all__ = ["NB201_SPLITS", "NB201Split", "find_split_file", "nb201_indices", "read_split_file", "spec_of"]

FOLDER = "nas-benchmark"
REPO = "configs/nas-benchmark/ of NB201's repository (github.com/D-X-Y/AutoDL-Projects or D-X-Y/NAS-Bench-201)"


@dataclass(frozen=True)
class NB201Split:
    """How NB201 splits one dataset: ``file`` halves the official ``halves`` part into ``keys``
    (valid, test) or (train, valid); ``train_images`` is the size of NB201's train split."""

    dataset: str
    file: str
    keys: tuple[str, str]
    halves: str  # "train": the file halves the official train set (cifar10); "test": the test set
    train_images: int


NB201_SPLITS: dict[str, NB201Split] = {
    "cifar10": NB201Split("cifar10", "cifar-split.txt", ("train", "valid"), "train", 25_000),
    "cifar100": NB201Split("cifar100", "cifar100-test-split.txt", ("xvalid", "xtest"), "test", 50_000),
    "imagenet16-120": NB201Split(
        "imagenet16-120", "imagenet-16-120-test-split.txt", ("xvalid", "xtest"), "test", 151_700
    ),
}


def spec_of(dataset: str) -> NB201Split:
    """The ``NB201Split`` of ``dataset``; ``DatasetNotFound`` for a dataset NB201 does not split."""
    if dataset not in NB201_SPLITS:
        raise DatasetNotFound(
            f"split='nb201' is NAS-Bench-201's own split, defined for {', '.join(NB201_SPLITS)} only; "
            f"dataset '{dataset}' has none (use split='harness')"
        )
    return NB201_SPLITS[dataset]


def find_split_file(dataset: str, data_root: str | os.PathLike | None) -> str:
    """The path of ``dataset``'s NB201 split file; ``DatasetNotFound`` naming it and where to get it."""
    spec = spec_of(dataset)
    if data_root is None:
        raise DatasetNotFound(
            f"split='nb201' for '{dataset}' reads NB201's split file {spec.file}, but no data root was "
            f"given: pass --bench-data-root DIR and place {spec.file} (from {REPO}) in DIR/{FOLDER}/"
        )
    root = os.fspath(data_root)
    places = [os.path.join(root, FOLDER, spec.file), os.path.join(root, spec.file)]
    for path in places:
        if os.path.isfile(path):
            return path
    raise DatasetNotFound(
        f"NB201 split file {spec.file} for '{dataset}' (split='nb201') not found: looked for "
        f"{' and '.join(places)}. It is never downloaded: copy {spec.file} from {REPO} into "
        f"{os.path.join(root, FOLDER)}"
    )


def read_split_file(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The int64 index arrays ``keys`` of an NB201 split file; ``DatasetNotFound`` naming the file when malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as err:
        raise DatasetNotFound(f"NB201 split file {path} is not readable JSON: {err}") from err
    out: dict[str, np.ndarray] = {}
    for key in keys:
        entry = raw.get(key) if isinstance(raw, dict) else None
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "int" and isinstance(entry[1], list)):
            found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise DatasetNotFound(
                f"NB201 split file {path}: expected the key '{key}' as [\"int\", [indices]] (NB201's config "
                f"format), found keys {found}"
            )
        try:
            out[key] = np.asarray([int(v) for v in entry[1]], dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise DatasetNotFound(f"NB201 split file {path}: '{key}' holds a non-integer index ({err})") from err
    return out


def nb201_indices(
    dataset: str, data_root: str | os.PathLike | None, n_train: int, n_test: int
) -> list[tuple[str, np.ndarray]]:
    """``[(part, indices)]`` for NB201's train, valid and test splits of ``dataset``.

    ``part`` names the official part the indices point into (``"train"`` or ``"test"``), of
    ``n_train`` and ``n_test`` images. The file's two halves must be non-empty, duplicate-free,
    disjoint and inside their part; a file that is not is a ``DatasetNotFound`` naming it.
    """
    spec = spec_of(dataset)
    path = find_split_file(dataset, data_root)
    halves = read_split_file(path, spec.keys)
    size = n_train if spec.halves == "train" else n_test
    a, b = (halves[k] for k in spec.keys)
    for key, idx in halves.items():
        if len(idx) == 0:
            raise DatasetNotFound(f"NB201 split file {path}: '{key}' is empty")
        if idx.min() < 0 or idx.max() >= size:
            raise DatasetNotFound(
                f"NB201 split file {path}: '{key}' indexes {idx.min()}..{idx.max()} but the official "
                f"{spec.halves} part of '{dataset}' has {size} images (is it the file for another dataset?)"
            )
        if len(np.unique(idx)) != len(idx):
            raise DatasetNotFound(f"NB201 split file {path}: '{key}' repeats indices")
    if np.intersect1d(a, b).size:
        raise DatasetNotFound(f"NB201 split file {path}: '{spec.keys[0]}' and '{spec.keys[1]}' overlap")
    if spec.halves == "train":  # cifar10: train / valid halves of the train set, official test
        return [("train", a), ("train", b), ("test", np.arange(n_test))]
    return [("train", np.arange(n_train)), ("test", a), ("test", b)]
