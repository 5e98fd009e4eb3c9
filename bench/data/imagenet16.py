"""ImageNet16-120 (kind ``pickle``): the downsampled 16x16 ImageNet files as NAS-Bench-201 reads them.

The files are those of Chrabaszcz et al. (2017), "A Downsampled Variant of ImageNet as an
Alternative to the CIFAR datasets" (image-net.org, "Imagenet16" / "Imagenet16_train" +
"Imagenet16_val" archives), placed unpacked in ``<data_root>/ImageNet16``:

- ``train_data_batch_1`` .. ``train_data_batch_10`` and ``val_data``: Python pickles of a dict
  with ``data`` (uint8 ``[N, 768]``, the 3 colour planes of a 16x16 image one after the other,
  i.e. ``reshape(N, 3, 16, 16)``) and ``labels`` (N ints, **1-based**, 1..1000), plus a
  ``mean`` the harness ignores.
- ImageNet16-120 keeps the images whose label is in 1..120, as NB201's ``ImageNet16(root,
  train, transform, 120)`` does, and labels them 0..119 (NB201 subtracts 1 in
  ``__getitem__``): 151,700 train and 6,000 val images. The order of the files and of the
  images inside each file is kept, because NB201's split file
  (``imagenet-16-120-test-split.txt``) indexes the filtered val list by position.

The pickles are read with a restricted unpickler that only rebuilds numpy arrays (a file that
names any other global is refused, naming the file), never ``pickle.load``'s arbitrary code.
Nothing is downloaded: a missing file is a ``DatasetNotFound`` naming it and where to get it.
The arrays are cached per process, folder and class count (``load_imagenet16``).
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
from dataclasses import dataclass

import numpy as np

from bench.errors import DatasetNotFound

__all__ = ["IMAGENET16_SETS", "ImageNet16Set", "find_imagenet16", "load_imagenet16", "read_batch"]

FOLDER = "ImageNet16"
TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
VAL_FILE = "val_data"
FILES = (*TRAIN_FILES, VAL_FILE)
SIDE = 16
WHERE = (
    "the downsampled ImageNet 16x16 files (Chrabaszcz et al. 2017) from image-net.org "
    "(Download > 'Downsampled ImageNet', Imagenet16_train and Imagenet16_val), unpacked as NB201 uses them"
)


@dataclass(frozen=True)
class ImageNet16Set:
    """One class subset of ImageNet16: the first ``num_classes`` of the 1000 labels (1-based)."""

    name: str
    num_classes: int
    train_images: int
    test_images: int
    description: str


IMAGENET16_SETS: dict[str, ImageNet16Set] = {
    "imagenet16-120": ImageNet16Set(
        "imagenet16-120",
        120,
        151_700,
        6_000,
        "ImageNet16-120 (NAS-Bench-201): 16x16 downsampled ImageNet, labels 1..120 of 1000; "
        "151,700 train + 6,000 val images from <data_root>/ImageNet16",
    ),
}

# Globals a numpy-array pickle needs (numpy 1 names them numpy.core, numpy 2 numpy._core).
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists and numpy arrays only; any other global is an error."""

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core.") :]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not a numpy array part")
        return getattr(importlib.import_module(module), name)


def find_imagenet16(data_root: str | os.PathLike | None) -> str:
    """``<data_root>/ImageNet16`` when it holds every file; ``DatasetNotFound`` naming what is missing."""
    if data_root is None:
        raise DatasetNotFound(
            f"dataset 'imagenet16-120' is read from disk but no data root was given: pass "
            f"--bench-data-root DIR (or set data_root) to the folder that holds '{FOLDER}' "
            f"({', '.join(FILES)})"
        )
    folder = os.path.join(os.fspath(data_root), FOLDER)
    missing = [f for f in FILES if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DatasetNotFound(
            f"dataset 'imagenet16-120' not found: expected {folder} containing {', '.join(FILES)}; "
            f"missing: {', '.join(missing)}. It is never downloaded: place there {WHERE}."
        )
    return folder


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images ``[N, 3, 16, 16]``, 1-based int64 labels ``[N]``) of one ImageNet16 pickle.

    ``ValueError`` naming the file when it is not such a pickle."""
    try:
        with open(path, "rb") as fh:
            entry = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not an ImageNet16 pickle ({err})") from err
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels', got {keys}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise ValueError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, {3 * SIDE * SIDE}]")
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 1 or labels.max() > 1000):
        raise ValueError(f"{path}: labels must be 1-based in 1..1000, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, SIDE, SIDE), labels


def _read_part(folder: str, files: tuple[str, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images with label in 1..num_classes from ``files`` in order, labels made 0-based."""
    xs, ys = [], []
    for name in files:
        x, y = read_batch(os.path.join(folder, name))
        keep = (y >= 1) & (y <= num_classes)  # filtered per file: never the whole 1000 classes in memory
        xs.append(x[keep])
        ys.append(y[keep] - 1)
    return np.concatenate(xs), np.concatenate(ys)


@functools.cache
def load_imagenet16(folder: str, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, val images, val labels) of the first ``num_classes`` classes.

    Images uint8 ``[N, 3, 16, 16]``, labels 0-based; the official val file is NB201's "test" part
    (the one its split file halves into valid and test)."""
    x_train, y_train = _read_part(folder, TRAIN_FILES, num_classes)
    x_val, y_val = _read_part(folder, (VAL_FILE,), num_classes)
    return x_train, y_train, x_val, y_val
