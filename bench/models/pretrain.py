"""Source weights: ImageNet checkpoints from the torch hub cache, or harness-pretrained sources.

``source="imagenet"`` loads torchvision's checkpoint for the architecture from
``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``). Offline and uncached, it
raises ``WeightsNotFound`` naming the file, the folder and the URL to fetch it from;
with ``download=True`` it lets torch hub fetch it. ImageNet weights exist only at
width 1.0 for architectures that declare them.

``source=<embedded or file dataset>`` (``bench.data.registry.SOURCE_KINDS``: ``mnist5k``,
``fashion-mnist``, ...) pretrains the architecture on that dataset with a fixed
``PretrainRecipe`` and caches the checkpoint under a hash of (architecture, width,
source, input size, recipe, source seed) and of the arithmetic that computed it
(``bench.cache``) in ``$BENCH_CACHE_DIR/sources`` (default ``~/.cache/archbench``). A file
lock makes concurrent workers pretrain once; the checkpoint is written to a temporary
file and renamed, so readers never see a partial file. Pretraining runs under its own RNG
fork, so whether a cell hit or missed the cache never changes that cell's own random stream.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.cache import cache_file, cached
from bench.contract.settings import PretrainRecipe
from bench.errors import InvalidConfig, WeightsNotFound

if TYPE_CHECKING:
    from bench.contract.interface import Task
    from bench.models.net import MappedNet


def source_inputs(
    model: str, width: float, source: str, input_size: int, recipe: PretrainRecipe, seed: int
) -> dict[str, Any]:
    """What one pretrained source checkpoint is computed from (the cache key adds the arithmetic)."""
    return {
        "model": model,
        "width": width,
        "source": source,
        "input_size": input_size,
        "recipe": dataclasses.asdict(recipe),
        "seed": seed,
    }


def source_path(
    model: str, width: float, source: str, input_size: int, recipe: PretrainRecipe, seed: int, device: Any = "cpu"
) -> Path:
    """Cache file of one source checkpoint pretrained on ``device`` with this process's arithmetic."""
    return cache_file(
        "sources",
        f"{model}-w{width:g}-{source}-{input_size}px-s{seed}",
        source_inputs(model, width, source, input_size, recipe, seed),
        device,
    )


def imagenet_state_dict(model: str, width: float, *, download: bool = False) -> dict[str, torch.Tensor]:
    """torchvision ImageNet weights for ``model`` from the hub cache (see module docstring)."""
    from torchvision.models import get_weight

    from bench.models.net import model_info

    info = model_info(model)
    if info.imagenet_loader is not None:
        if width != 1.0:
            raise InvalidConfig(f"ImageNet weights exist only at width 1.0, not width {width:g}")
        return info.imagenet_loader()
    if not info.imagenet_weights:
        raise InvalidConfig(
            f"model '{model}' has no ImageNet weights; use an embedded source (e.g. source='mnist5k') or source=None"
        )
    if width != 1.0:
        raise InvalidConfig(f"ImageNet weights exist only at width 1.0, not width {width:g}")
    url = get_weight(info.imagenet_weights).url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / os.path.basename(url)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    if download:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
    raise WeightsNotFound(
        f"ImageNet weights for '{model}' are not cached and downloading is off: place "
        f"'{path.name}' in {folder} (fetch it from {url} on a machine with network), "
        f"set TORCH_HOME to a folder holding hub/checkpoints/{path.name}, or pass --bench-download"
    )


def pretrained_source(
    model: str,
    width: float,
    source: str,
    input_size: int,
    recipe: PretrainRecipe,
    seed: int,
    device: torch.device,
    data_root: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of ``model`` pretrained on the embedded or file dataset ``source``.

    ``data_root`` is where a file dataset is looked for first (``bench.data.idx_sets``); the
    files are the same wherever they are found, so it is not part of the cache key. ``meta``
    holds the source test accuracy, the pretraining time and whether this call hit the cache.
    """
    path = source_path(model, width, source, input_size, recipe, seed, device)

    def compute() -> dict[str, Any]:
        state, meta = _pretrain(model, width, source, input_size, recipe, seed, device, data_root)
        return {"state_dict": state, "meta": meta}

    blob, hit = cached(path, compute)  # torch_load: weights_only, on the CPU
    return blob["state_dict"], {**blob["meta"], "cache_hit": hit, "path": str(path)}


def _pretrain(
    model: str,
    width: float,
    source: str,
    input_size: int,
    recipe: PretrainRecipe,
    seed: int,
    device: torch.device,
    data_root: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from bench import engine
    from bench.contract.recorder import Recorder
    from bench.data.registry import load_splits
    from bench.models.net import build_model

    t0 = time.perf_counter()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        tr, va, te = load_splits(
            source,
            seed=seed,
            input_size=input_size,
            val_frac=recipe.val_frac,
            test_frac=recipe.test_frac,
            data_root=data_root,
            device=device,
        )
        net = build_model(model, num_classes=tr.num_classes, width=width).to(device)
        rec = Recorder(device, label=f"pretrain {model} w{width:g} on {source}")
        engine.fit(net, tr, recipe.train, rec, stage="pretrain", seed=seed)
        test = engine.evaluate(net, te)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {
        "source_test_top1_pct": test["top1_pct"],
        "pretrain_s": time.perf_counter() - t0,
        "model": model,
        "width": width,
        "source": source,
        "input_size": input_size,
        "seed": seed,
    }
    return state, meta


def warm_source(task: Task) -> dict[str, Any] | None:
    """Make sure the task's embedded source checkpoint exists (pretraining it on a miss).

    The runner calls this in its own ``source`` stage before ``fit``, so the one-off
    pretraining cost never lands in the fit time or fit memory of whichever cell
    happened to need the source first. Returns the checkpoint's meta, or None when the
    task has no embedded source.
    """
    s = task.settings
    if not s.source or s.source == "imagenet":
        return None
    _, meta = pretrained_source(
        task.model, s.width, s.source, s.input_size, s.pretrain, s.source_seed, task.device, task.data_root
    )
    return meta


def build_model(task: Task, *, pretrained: bool = True) -> MappedNet:
    """The task's architecture with source weights (if asked and configured) and a new head."""
    from bench.data.registry import dataset_info
    from bench.models.net import build_model as build_arch

    s = task.settings
    if not (pretrained and s.source):
        return build_arch(task.model, num_classes=task.num_classes, width=s.width).to(task.device)
    if s.source == "imagenet":
        state = imagenet_state_dict(task.model, s.width, download=task.download)
        meta: dict[str, Any] = {"source": "imagenet"}
        source_classes = 1000
    else:
        source_classes = dataset_info(s.source).num_classes
        state, meta = pretrained_source(
            task.model, s.width, s.source, s.input_size, s.pretrain, s.source_seed, task.device, task.data_root
        )
    net = build_arch(task.model, num_classes=source_classes, width=s.width)
    net.load_state_dict(state, strict=True)
    net.reset_classifier(task.num_classes)
    task.info["source"] = meta
    return net.to(task.device)
