"""The harness's on-disk caches: where they live, what their keys hold, how they are written.

Every artefact the harness or a method computes once and reuses (source checkpoints
pretrained on an embedded set, Tr-NAS reference accuracies and target-pretrained sources,
NASOA meta-data shards and step-time tables) lives at::

    cache_dir() / KIND / STEM-KEY.SUFFIX        e.g. sources/resnet20-w0.25-mnist5k-16px-s0-3f9a....pt

``KEY = cache_key(inputs, device)`` hashes the artefact's inputs **and** the arithmetic
that computes it (``bench.env.arithmetic``: torch version, device, CPU threads, the ISA
that ATen, oneDNN and MKL use, deterministic mode). Runs whose arithmetic differs never
share an entry: a cache filled by ``make bench`` (native ISA) cannot leak into the
AVX2-pinned smoke gate, nor a 2-thread run into a 1-thread one.

``cached(path, compute, load, save)`` is the one read-or-compute path: an exclusive file
lock (concurrent workers compute once), then a hit is loaded or ``compute()`` runs, with
the caller's random streams set aside (a hit and a miss leave them alike), and is written
to a temporary file and renamed, so a reader never sees a partial file.

The root is ``$BENCH_CACHE_DIR``, else ``~/.cache/archbench``. The smoke gate points it
at a fresh folder of its own (Makefile ``SMOKE_CACHE``), so CI never reads what earlier
runs left behind. Files a user places there (e.g. ``etnas/`` ImageNet weights) are inputs,
not computed artefacts, and are read as they are.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bench.contract.cell import short_hash
from bench.contract.config import canonical_json

T = TypeVar("T")
KEY_VERSION = 2  # 2: the arithmetic joined the key


def cache_dir() -> Path:
    """Root of the harness's caches: ``$BENCH_CACHE_DIR`` or ``~/.cache/archbench``."""
    root = os.environ.get("BENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "archbench")
    return Path(root)


def cache_key(inputs: dict[str, Any], device: Any = "cpu") -> str:
    """Hash of an artefact's ``inputs`` and of the arithmetic that computes it on ``device``."""
    from bench.env import arithmetic

    return short_hash(canonical_json({"inputs": inputs, "arithmetic": arithmetic(device), "v": KEY_VERSION}))


def cache_file(kind: str, stem: str, inputs: dict[str, Any], device: Any = "cpu", suffix: str = ".pt") -> Path:
    """``cache_dir()/kind/stem-KEY.suffix`` for an artefact computed on ``device`` (see the module docstring)."""
    return cache_dir() / kind / f"{stem}-{cache_key(inputs, device)}{suffix}"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (no-op where fcntl is unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: a reader sees the old file or the whole new one, never a part, even after a crash.

    The one atomic write of the harness: cache artefacts, reference files, published shards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``atomic_write``."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: Path) -> None:
    """Text through ``atomic_write``."""

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def torch_load(path: Path) -> Any:
    """A cached torch blob, on the CPU: tensors and plain containers only (``weights_only``), so a
    file planted in the cache cannot run code when it is read."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block without moving the caller's random streams (python, numpy, torch CPU and CUDA)."""
    import random

    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def cached(
    path: Path,
    compute: Callable[[], T],
    load: Callable[[Path], T] = torch_load,
    save: Callable[[T, Path], None] = atomic_save,
) -> tuple[T, bool]:
    """``(value, hit)``: the artefact at ``path``, or ``compute()`` saved there, under a file lock.

    ``compute`` runs under ``isolated_rng``: a hit and a miss leave the caller's random
    streams in the same state, so whether a cell found the artefact cached (which depends on
    what ran before it, and where) never changes the cell's own numbers. ``compute`` must
    seed whatever randomness it uses from its inputs. A file that does not load (truncated,
    corrupted, or not what ``load`` accepts: torch blobs load with ``weights_only``) is named in
    a warning, deleted and computed again.
    """
    with file_lock(path.with_suffix(path.suffix + ".lock")):
        if path.exists():
            try:
                return load(path), True
            except Exception as err:  # noqa: BLE001 - any unreadable file is rebuilt, never trusted
                first_line = (str(err).splitlines() or [""])[0][:160]
                warnings.warn(
                    f"cache file {path} is unreadable ({type(err).__name__}: {first_line}); "
                    "deleting it and computing it again",
                    RuntimeWarning,
                    stacklevel=2,
                )
                path.unlink(missing_ok=True)
        with isolated_rng():
            value = compute()
        save(value, path)
        return value, False
