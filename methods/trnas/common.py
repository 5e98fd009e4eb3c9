"""Shared pieces of the Tr-NAS methods: transfer settings, the training protocols, building
and training one candidate network, the harness reference cache and the NATS-Bench table
(``NatsTable``, found by ``find_table``: ``nats_path`` or ``<data_root>/NATS-tss-v1_0-3ffb9-simple``).

The grid's *model* of a Tr-NAS cell is the hand-crafted network B whose stem and first
``j`` blocks are transferred (``resnet32``, CIFAR option A); ``task.build_model()``
returns it with the source weights the harness pretrained on the task's ``source`` at
the tier's scale (cached), exactly as for any other method. The NAS networks are the
method's own; their width ``C`` defaults to B's stem width so Tr-Net-5-5 fits.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bench import engine
from bench.cache import cache_file, cached
from bench.contract.config import require
from bench.contract.interface import Split, Task
from bench.contract.recorder import Recorder
from bench.errors import Diverged, InvalidConfig
from bench.measure import MemoryMeter, Stopwatch
from bench.models.net import MappedNet
from methods.trnas.network import (
    Count,
    NB201Net,
    nb201,
    saved_activation_bytes,
    transfer,
)
from methods.trnas.seeds import role_seed
from methods.trnas.space import Arch, all_archs, format_arch, parse

MIB = float(1 << 20)


def nb201_train(epochs: float = 200.0, **overrides: Any) -> engine.TrainConfig:
    """NAS-Bench-201 hyperparameters: SGD nesterov 0.9, lr 0.1, wd 5e-4, batch 256, cosine, crop + flip."""
    base = {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "batch_size": 256,
        "epochs": epochs,
        "schedule": "cosine",
        "crop_pad": 4,
        "log_every": 100,
    }
    return engine.TrainConfig(**{**base, **overrides})


@dataclass(frozen=True)
class TransferConfig:
    """Tr-Net-i-j: ``enabled`` replaces NB201's stem + first ``i`` entries by B's stem + ``j`` blocks.

    ``count="modules"`` counts ``i`` over cells and reduction blocks (methods.md's default),
    ``"cells"`` over cells only. ``pretrain_on="source"`` takes B with the task's source
    weights (the harness's cached source pretraining); ``"target"`` pretrains B on the
    task's own *training* split with ``pretrain`` (the paper: NB201 train split, SGD
    nesterov lr 0.1 cosine, wd 5e-4, batch 256, 200 epochs), cached the same way.
    """

    enabled: bool = True
    i: int = 5
    j: int = 5
    count: Literal["modules", "cells"] = "modules"
    pretrain_on: Literal["source", "target"] = "source"
    pretrain: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))

    def __post_init__(self) -> None:
        require(self.i >= 0 and self.j >= 0, f"i and j must be >= 0, got {self.i}, {self.j}")

    def label(self) -> str:
        return f"tr{self.i}_{self.j}" + ("" if self.count == "modules" else "c") if self.enabled else "original"


def with_warmup(cfg: engine.TrainConfig, warmup_epochs: float, train_size: int) -> engine.TrainConfig:
    """``cfg`` with linear warmup over ``warmup_epochs`` (cosine over the rest: methods.md's choice)."""
    total = cfg.total_steps(train_size)
    per_epoch = max(1, train_size // cfg.batch_size)
    frac = min(warmup_epochs * per_epoch / total, 0.99) if warmup_epochs > 0 else 0.0
    return dataclasses.replace(cfg, warmup_frac=frac)


def network_width(task: Task, C: int) -> int:
    """``C`` if set, else the stem width of the task's source network B (16 x width)."""
    if C:
        return C
    return task.build_model(pretrained=False).get_submodule("conv1").out_channels


class Builder:
    """Builds candidate networks for one task: original NB201 or Tr-Net-i-j, seeded.

    ``random_b=True`` builds Tr-Nets around a randomly initialised B, on purpose: only for
    measurements that do not depend on B's weights (``trnas_memory``). Otherwise B is
    ``pretrained_source``'s, and a task without one is an error.
    """

    def __init__(self, task: Task, C: int, N: int, tr: TransferConfig, *, random_b: bool = False) -> None:
        self.task, self.N, self.tr = task, N, tr
        self.C = network_width(task, C)
        self.source: MappedNet | None = None
        if tr.enabled:
            self.source = task.build_model(pretrained=False) if random_b else pretrained_source(task, tr)

    def net(self, arch: Arch, seed: int, *, transferred: bool | None = None) -> MappedNet:
        """``arch`` at width C and depth N, initialised from ``seed``; Tr-Net when transfer is on."""
        torch.manual_seed(seed)
        net = nb201(arch, self.C, self.N, self.task.num_classes)
        return self.wrap(net, transferred)

    def wrap(self, net: NB201Net, transferred: bool | None = None) -> MappedNet:
        use = self.tr.enabled if transferred is None else transferred
        if not use:
            return net.to(self.task.device)
        assert self.source is not None
        return transfer(net, copy.deepcopy(self.source), self.tr.i, self.tr.j, self.tr.count).to(self.task.device)


def pretrained_source(task: Task, tr: TransferConfig) -> MappedNet:
    """B with the weights ``tr.pretrain_on`` says: the task's source (the harness's cached source
    pretraining) or the task's own training split (``target_source``).

    A task without a source and ``pretrain_on="source"`` is an ``InvalidConfig``: ``task.build_model()``
    would return a randomly initialised B, and freezing random blocks is not Tr-NAS.
    """
    if tr.pretrain_on == "target":
        return target_source(task, tr.pretrain)
    if not task.settings.source:
        raise InvalidConfig(
            "the transferred prefix needs a pretrained B: set the task's source (e.g. "
            "source='mnist5k') or transfer.pretrain_on='target'"
        )
    return task.build_model()


def target_source(task: Task, recipe: engine.TrainConfig) -> MappedNet:
    """B pretrained on the task's training split (never val or test), cached per task and recipe."""
    inputs = {
        "model": task.model,
        "dataset": task.dataset,
        "seed": task.seed,
        "settings": dataclasses.asdict(task.settings),
        "recipe": dataclasses.asdict(recipe),
        "version": 2,
    }
    path = cache_file("trnas-source", f"{task.model}-{task.dataset}-s{task.seed}", inputs, task.device)

    def compute() -> dict:
        devices = [task.device] if task.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(role_seed("pretrain-init", task.seed))
            net = task.build_model(pretrained=False)
            quiet = Recorder(task.device, progress=lambda _m: None)
            engine.fit(net, task.train, recipe, quiet, stage="pretrain", seed=role_seed("pretrain-data", task.seed))
        return {"state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}

    blob, _ = cached(path, compute)
    net = task.build_model(pretrained=False)
    net.load_state_dict(blob["state"])
    return net.to(task.device)


@dataclass
class Trained:
    """One candidate trained with a protocol; ``diverged``: its training diverged, so
    ``val_top1_pct`` is chance (100 / classes) and ``model`` holds non-finite weights."""

    arch: Arch
    model: nn.Module
    val_top1_pct: float
    train_s: float
    act_mib: float
    peak_alloc_mib: float | None = None
    diverged: bool = False


def train_candidate(
    net: nn.Module,
    arch: Arch,
    train: Split,
    val: Split,
    cfg: engine.TrainConfig,
    seed: int,
    stage: str,
    *,
    rec: Recorder,
) -> Trained:
    """Train ``net`` with ``cfg`` through the engine (a quiet recorder) and score it on ``val``.

    Activation memory is the saved-tensor bytes of one training batch (any device, fp32 NCHW: a
    forward outside the engine); on CUDA the allocator's peak of the whole training is recorded
    too, in the precision the engine trains in, so ``rec`` gets ``<stage>_bf16_bool`` and
    ``<stage>_channels_last_bool`` (1 where that peak is under bf16 autocast / channels_last,
    which the engine applies on CUDA only; no claim reads these peaks). The training is an inner
    run (``bench.engine.inner``): when it diverges the result says so, at chance accuracy, and
    ``rec`` (the cell's recorder) counts it in ``inner_diverged_count``.
    """
    device = train.device
    n = min(cfg.batch_size, len(train))
    x, y = train.batch(slice(0, n))
    act = saved_activation_bytes(net, x, y) / MIB
    quiet = Recorder(device, progress=lambda _m: None)
    meter = MemoryMeter(device) if device.type == "cuda" else contextlib.nullcontext()
    rec.scalar(f"{stage}_bf16_bool", float(device.type == "cuda" and cfg.bf16))
    rec.scalar(f"{stage}_channels_last_bool", float(device.type == "cuda" and cfg.channels_last))
    watch = Stopwatch(device)

    def run() -> None:
        with meter, watch:
            engine.fit(net, train, cfg, quiet, stage=stage, seed=seed)

    got = engine.inner_run(run, rec, stage=stage, what=f"{stage} training of {format_arch(arch)}")
    peak = meter.result()["peak_alloc_mib"] if isinstance(meter, MemoryMeter) else None
    if isinstance(got, Diverged):
        return Trained(arch, net, engine.chance_pct(val.num_classes), watch.total_s, act, peak, diverged=True)
    acc = engine.evaluate(net, val)["top1_pct"]
    return Trained(arch, net, acc, watch.total_s, act, peak)


# ------------------------------------------------------------------ harness reference cache


def reference_path(task: Task, archs: list[Arch], cfg: engine.TrainConfig, C: int, N: int, seed: int) -> Path:
    """Cache file of the harness reference accuracies of ``archs`` for this task (``bench.cache``)."""
    inputs = {
        "archs": [format_arch(a) for a in archs],
        "train": dataclasses.asdict(cfg),
        "C": C,
        "N": N,
        "seed": seed,
        "dataset": task.dataset,
        "settings": dataclasses.asdict(task.settings),
        "version": 2,
    }
    return cache_file("trnas-reference", f"{task.dataset}-C{C}-N{N}-s{seed}", inputs, task.device)


# ----------------------------------------------------------------------------- NATS-Bench

#: The NATS-Bench topology table (NAS-Bench-201's 15,625 cells) in its fast-mode folder form; a tier
#: looks for it under ``--bench-data-root`` (``find_table``). The single-file form
#: ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` is read too when ``nats_path`` names it.
NATS_TSS = "NATS-tss-v1_0-3ffb9-simple"
#: Harness dataset -> the NATS-Bench dataset whose accuracies match NB201's splits (``split="nb201"``):
#: ``cifar10-valid`` trains on the train half and reports valid (valid half) and test (official test).
NATS_DATASETS = {"cifar10": "cifar10-valid", "cifar100": "cifar100", "imagenet16-120": "ImageNet16-120"}
#: The NATS-Bench datasets a harness dataset may be read as (``nats_dataset``); ``cifar10`` is NB201's
#: training on train + valid (no valid accuracy; test on the official test set).
NATS_CHOICES = {
    "cifar10": ("cifar10-valid", "cifar10"),
    "cifar100": ("cifar100",),
    "imagenet16-120": ("ImageNet16-120",),
}
NATS_HELP = (
    "the optional package nats_bench (pip install nats_bench) and the NATS-Bench topology table "
    f"({NATS_TSS}, from NATS-Bench's release page)"
)


def nats_bench_module() -> Any:
    """The ``nats_bench`` package; ``InvalidConfig`` saying how to get it when it is not installed."""
    try:
        import nats_bench
    except ImportError:
        raise InvalidConfig(
            f"a NATS-Bench reference needs {NATS_HELP}; nats_bench is not installed here. Use "
            "reference='harness' for a reference training by the harness itself"
        ) from None
    return nats_bench


class NatsTable:
    """NAS-Bench-201 / NATS-Bench topology table through the optional ``nats_bench`` package.

    Accuracies are NATS-Bench's ``get_more_info(index, dataset, hp, is_random=False)``: the mean
    over every seed the table trained that architecture with (``seeds`` says which:
    ``query_meta_info_by_index(index, hp).get_dataset_seeds(dataset)``; 777/888/999 at 200
    epochs for most cells). ``test_accuracy`` is the 200-epoch ``test-accuracy`` (cifar10-valid:
    the official test set; cifar100 / ImageNet16-120: NB201's ``xtest`` half), ``valid_accuracy``
    the ``valid-accuracy`` (NB201's valid half / ``xvalid``). Rows are memoised; in fast mode
    (the ``-simple`` folder) each architecture's file is dropped from the api after it is read,
    so reading the whole space does not keep 15,625 result files in memory.
    """

    def __init__(self, path: str, dataset: str) -> None:
        nats_bench = nats_bench_module()
        if not path or not Path(path).exists():
            raise InvalidConfig(
                f"nats_path {path!r} does not exist; point it at the NATS-Bench topology "
                f"folder {NATS_TSS} (or the file NATS-tss-v1_0-3ffb9.pickle.pbz2), or place the folder "
                "under --bench-data-root"
            )
        self.path, self.dataset = str(path), dataset
        self.fast = Path(path).is_dir()
        self.api = nats_bench.create(self.path, "tss", fast_mode=self.fast, verbose=False)
        self._rows: dict[tuple[Arch, str, str], tuple[float, tuple[int, ...]]] = {}

    def _index(self, arch: Arch) -> int:
        text = format_arch(arch)
        index = self.api.query_index_by_arch(text)
        if not isinstance(index, int) or index < 0:
            raise InvalidConfig(f"the NATS-Bench table at {self.path} has no architecture {text}")
        return index

    def row(self, arch: Arch, hp: str, key: str) -> tuple[float, tuple[int, ...]]:
        """(``key`` averaged over the table's seeds, those seeds) of ``arch`` trained ``hp`` epochs."""
        memo = (tuple(arch), hp, key)
        if memo in self._rows:
            return self._rows[memo]
        index = self._index(arch)
        info = self.api.get_more_info(index, self.dataset, hp=hp, is_random=False)
        if key not in info or info[key] is None:
            hint = (
                " (NB201 trains 'cifar10' on train + valid: use nats_dataset='cifar10-valid')"
                if (self.dataset == "cifar10" and key.startswith("valid"))
                else ""
            )
            raise InvalidConfig(
                f"the NATS-Bench table has no {key} for {self.dataset} at {hp} epochs{hint}; it has "
                f"{', '.join(sorted(k for k in info if k.endswith('accuracy')))}"
            )
        seeds = tuple(
            sorted(int(x) for x in self.api.query_meta_info_by_index(index, hp=hp).get_dataset_seeds(self.dataset))
        )
        if self.fast:  # re-read on demand by nats_bench's _prepare_info; only the fast mode can re-read
            infos = getattr(self.api, "arch2infos_dict", None)
            if isinstance(infos, dict):
                infos.pop(index, None)
        self._rows[memo] = (float(info[key]), seeds)
        return self._rows[memo]

    def accuracy(self, arch: Arch, hp: str, key: str) -> float:
        """``key`` ('valid-accuracy' or 'test-accuracy') of ``arch`` trained for ``hp`` epochs, mean over seeds."""
        return self.row(arch, hp, key)[0]

    def test_accuracy(self, arch: Arch) -> float:
        """The 200-epoch test accuracy (%), mean over the table's seeds: the reference."""
        return self.accuracy(arch, "200", "test-accuracy")

    def valid_accuracy(self, arch: Arch, hp: str = "12") -> float:
        """The ``hp``-epoch valid accuracy (%): the Original proxy as the paper reads it (12 epochs)."""
        return self.accuracy(arch, hp, "valid-accuracy")

    def seeds(self, archs: Iterable[Arch], hp: str = "200", key: str = "test-accuracy") -> list[tuple[int, ...]]:
        """The seeds each of ``archs`` was averaged over."""
        return [self.row(a, hp, key)[1] for a in archs]

    def kind(self, archs: Iterable[Arch]) -> str:
        """``nats-200ep-mean-seeds(777,888,999)``: the reference the rows hold, with the union of seeds."""
        union = sorted({s for seeds in self.seeds(archs) for s in seeds})
        return f"nats-200ep-mean-seeds({','.join(str(s) for s in union)})"

    def whole_space(self, device: Any = "cpu") -> dict[str, float]:
        """The 200-epoch test accuracy of every architecture of the space (by string), cached.

        Read once per table and dataset (``bench.cache``: keyed on the table's path, its
        modification time and the dataset) because 15,625 fast-mode reads take minutes."""
        target = Path(self.path).resolve()
        inputs = {"path": str(target), "mtime_ns": target.stat().st_mtime_ns, "dataset": self.dataset, "version": 1}
        path = cache_file("trnas-nats", f"{self.dataset}-tss-200ep", inputs, device)

        def compute() -> dict:
            out = {}
            for arch in all_archs():
                acc, seeds = self.row(arch, "200", "test-accuracy")
                out[format_arch(arch)] = (acc, seeds)
            return {"rows": out}

        blob, _ = cached(path, compute)
        for text, (acc, seeds) in blob["rows"].items():
            self._rows.setdefault((parse(text), "200", "test-accuracy"), (float(acc), tuple(seeds)))
        return {text: float(acc) for text, (acc, _) in blob["rows"].items()}


def nats_dataset(dataset: str, override: str) -> str:
    """The NATS-Bench dataset of a harness dataset (``override`` when it is one the dataset may be read as)."""
    if dataset not in NATS_DATASETS:
        if override:  # a dataset the harness does not know as NB201's: the user's explicit choice
            return override
        raise InvalidConfig(
            f"no NATS-Bench table for dataset '{dataset}'; tables exist for "
            f"{', '.join(NATS_DATASETS)} (or set nats_dataset)"
        )
    if override and override not in NATS_CHOICES[dataset]:
        raise InvalidConfig(
            f"nats_dataset={override!r} does not hold '{dataset}''s accuracies; valid: "
            f"{', '.join(NATS_CHOICES[dataset])}"
        )
    return override or NATS_DATASETS[dataset]


def default_table_path(data_root: str | None) -> Path | None:
    """``<data_root>/NATS-tss-v1_0-3ffb9-simple`` when it exists, else None."""
    if not data_root:
        return None
    path = Path(data_root) / NATS_TSS
    return path if path.exists() else None


def find_table(task: Task, nats_path: str, override: str, *, required: bool = False) -> NatsTable | None:
    """The NATS-Bench table of ``task``: ``nats_path`` when set (it must exist), else the tier's default
    ``<data_root>/NATS-tss-v1_0-3ffb9-simple`` when present and the dataset is one of NB201's (or
    ``override`` names a NATS dataset), else None (``required``: an ``InvalidConfig`` saying where to put it)."""
    if nats_path:
        return NatsTable(nats_path, nats_dataset(task.dataset, override))
    found = default_table_path(task.data_root)
    if found is not None and (task.dataset in NATS_DATASETS or override):
        return NatsTable(str(found), nats_dataset(task.dataset, override))
    if required:
        where = (
            f"{task.data_root}/{NATS_TSS}" if task.data_root else f"<data_root>/{NATS_TSS} (no --bench-data-root given)"
        )
        raise InvalidConfig(
            f"reference='nats' needs a NATS-Bench table: set nats_path or place {where}; needs {NATS_HELP}"
        )
    return None


__all__ = [
    "NATS_DATASETS",
    "NATS_TSS",
    "Builder",
    "Count",
    "NatsTable",
    "default_table_path",
    "find_table",
    "nats_bench_module",
    "nats_dataset",
    "Trained",
    "TransferConfig",
    "nb201_train",
    "network_width",
    "pretrained_source",
    "reference_path",
    "target_source",
    "train_candidate",
    "with_warmup",
]
