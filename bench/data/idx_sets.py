"""Datasets read from IDX gz files on disk (kind ``file``): Fashion-MNIST, parsed by the harness.

No torchvision and no network: the four files (train/test images and labels, the MNIST IDX
format, gzip-compressed) are read from ``<data_root>/<folder>`` when ``--bench-data-root`` is
given and holds that folder, else from the folder a Debian package installs them in.
``IDX_SETS`` lists them for the registry (``bench.data.registry``); the raw arrays (uint8
images ``[N, H, W]``, int64 labels ``[N]``) are cached per process and folder.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np

from bench.errors import DatasetNotFound

__all__ = ["IDX_SETS", "IdxSet", "find_folder", "load_idx_set", "read_idx"]

IMAGES_MAGIC = 2051  # IDX: unsigned byte data, 3 dimensions (images, rows, columns)
LABELS_MAGIC = 2049  # IDX: unsigned byte data, 1 dimension (labels)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class IdxSet:
    """One IDX dataset: its folder under the data root, the system folder and the Debian package."""

    name: str
    num_classes: int
    flip_ok: bool
    folder: str
    system_dir: str
    package: str
    train_images: int
    description: str


IDX_SETS: dict[str, IdxSet] = {
    "fashion-mnist": IdxSet(
        "fashion-mnist",
        10,
        True,  # clothes: a mirrored shirt is still a shirt
        "fashion-mnist",
        "/usr/share/datasets/fashion-mnist",
        "dataset-fashion-mnist",
        60_000,
        "Zalando Fashion-MNIST (MIT), 60,000 train + 10,000 test 28x28 gray, IDX gz files",
    ),
}


def _complete(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in FILES.values())


def find_folder(name: str, data_root: str | os.PathLike | None) -> str:
    """The folder ``load_idx_set`` reads ``name`` from; ``DatasetNotFound`` names every place looked in.

    ``<data_root>/<folder>`` wins when it exists (a partial copy there is an error, not a silent
    fall back); otherwise the Debian package's folder. Cheap: only ``os.path`` checks.
    """
    spec = IDX_SETS[name]
    files = ", ".join(FILES.values())
    if data_root is not None:
        local = os.path.join(os.fspath(data_root), spec.folder)
        if os.path.isdir(local):
            missing = [f for f in FILES.values() if not os.path.isfile(os.path.join(local, f))]
            if missing:
                raise DatasetNotFound(f"dataset '{name}' at {local}: missing {', '.join(missing)} (expected {files})")
            return local
        looked = f"{local} (under --bench-data-root) and {spec.system_dir}"
    else:
        looked = f"{spec.system_dir} (no --bench-data-root given)"
    if _complete(spec.system_dir):
        return spec.system_dir
    raise DatasetNotFound(
        f"dataset '{name}' not found: looked in {looked} for {files}. Install it with "
        f"`apt-get install {spec.package}` (it fills {spec.system_dir}), or place the four files in "
        f"<data_root>/{spec.folder} and pass --bench-data-root; it is never downloaded."
    )


def read_idx(path: str, magic: int) -> np.ndarray:
    """The uint8 array in the gzip IDX file ``path``; ``ValueError`` naming the file when malformed."""
    ndim = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}[magic]
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # not gzip, or a truncated gzip stream
        raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">i", raw[:4])
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    size = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != size:
        raise ValueError(f"{path}: {len(body)} data bytes, the header's dimensions {dims} need {size}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_pair(folder: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = os.path.join(folder, FILES[f"{part}_images"])
    labels_path = os.path.join(folder, FILES[f"{part}_labels"])
    x = read_idx(images_path, IMAGES_MAGIC)
    y = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
    if len(y) != len(x):
        raise ValueError(f"{labels_path}: {len(y)} labels for the {len(x)} images of {images_path}")
    return x, y


@functools.cache
def load_idx_set(folder: str, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) from ``folder``; images uint8 ``[N, H, W]``."""
    x_train, y_train = _read_pair(folder, "train")
    x_test, y_test = _read_pair(folder, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{folder}: train images are {x_train.shape[1:]}, test images {x_test.shape[1:]}")
    for part, y in (("train", y_train), ("test", y_test)):
        if len(y) and int(y.max()) >= num_classes:
            path = os.path.join(folder, FILES[f"{part}_labels"])
            raise ValueError(f"{path}: label {int(y.max())} outside 0..{num_classes - 1}")
    return x_train, y_train, x_test, y_test
