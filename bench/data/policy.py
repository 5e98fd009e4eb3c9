"""The split policy: deterministic, stratified index splits that depend on a seed alone.

Pure numpy (plus scikit-learn's stratified splitter), shared by the embedded and the
torchvision datasets.
"""

from __future__ import annotations

import math

import numpy as np


def carve(idx: np.ndarray, y: np.ndarray, take: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken), ``taken`` a fraction or count, stratified by ``y[idx]``.

    Falls back to a plain random split only where stratifying is impossible (a class with
    one member, or fewer images on a side than there are classes).
    """
    from sklearn.model_selection import train_test_split

    n = len(idx)
    n_take = take_count(take, n)
    if n_take <= 0:
        return np.sort(idx), idx[:0]
    if n_take >= n:
        return idx[:0], np.sort(idx)
    _, counts = np.unique(y[idx], return_counts=True)
    can_stratify = counts.min() >= 2 and min(n_take, n - n_take) >= len(counts)
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed, stratify=y[idx] if can_stratify else None)
    return np.sort(rest), np.sort(taken)


def take_count(take: float | int, n: int) -> int:
    """How many of ``n`` images ``carve`` takes for ``take`` (a count, or a fraction rounded up)."""
    return take if isinstance(take, int) else math.ceil(take * n)


SCHEMES = ("all", "carve_val", "official_val")


def train_count(pool: int, scheme: str, *, val_frac: float = 0.2, test_frac: float = 0.2, train_limit: int = 0) -> int:
    """The size of the train split the policy draws from ``pool`` images, without drawing it.

    ``scheme``: ``all`` (no official split: test, val and train carved from the pool, as
    ``split_indices``), ``carve_val`` (an official test split elsewhere; val carved from the
    pool, the official train split), ``official_val`` (official val and test: the pool is train).
    The same arithmetic as the splitters, so the grid can refuse a batch larger than the train
    split at collection without loading any images (a test checks it against them)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; valid: {', '.join(SCHEMES)}")

    def rest(n: int, take: float) -> int:
        return max(0, n - min(n, take_count(take, n)))

    if scheme == "all":
        left = rest(pool, test_frac)
        train = rest(left, val_frac / (1.0 - test_frac))
    elif scheme == "carve_val":
        train = rest(pool, val_frac)
    else:
        train = pool
    return train if train_limit <= 0 else min(train, int(train_limit))


def split_indices(
    y: np.ndarray, *, seed: int, val_frac: float = 0.2, test_frac: float = 0.2, train_limit: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, val, test) indices into ``y``; fractions are of all images."""
    rest, test = carve(np.arange(len(y)), y, test_frac, seed)
    train, val = carve(rest, y, val_frac / (1.0 - test_frac), seed)
    return limit(train, y, train_limit, seed), val, test


def limit(train: np.ndarray, y: np.ndarray, train_limit: int, seed: int) -> np.ndarray:
    """A stratified ``train_limit``-image subset of ``train`` (all of it when 0 or larger)."""
    if train_limit <= 0 or train_limit >= len(train):
        return train
    return carve(train, y, int(train_limit), seed)[1]
