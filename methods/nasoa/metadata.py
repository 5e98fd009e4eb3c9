"""Meta-data for the accuracy predictor: random fine-tuning runs and their meta-features.

One run (Algorithm 3, OFFLINETRAINING): a random model of the candidate set, lr in
{0.1, 0.01, 0.001, 0.0001}, frozen stages in {-1..3} and a number of iterations, on a
random subset of a dataset (a random number of classes, a random number of images per
class). Its meta-features (paper, section 3.3) are the model one-hot, the domain
similarity to the source (EMD between class-mean penultimate features, Cui et al.:
sim = exp(-gamma EMD), class weights proportional to image counts, Euclidean ground
distance, solved with POT's ``ot.emd2``), mean and std images per class, the model's
source accuracy, the number of classes, iterations, lr and frozen stages; the target is
the val accuracy reached (restricted to the subset's classes).

Every fine-tuning run goes through ``bench.engine.fit``. Source weights come from the
harness's cached pretraining (``bench.models.pretrain.pretrained_source``); the embedded source
stands in for ImageNet at smoke tier. ``shard`` runs a seeded batch of runs and caches it
as JSON under ``$BENCH_CACHE_DIR/nasoa`` (file lock, atomic write), so suite cells that
need the stream and the cells that generate it share one copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import engine
from bench.cache import atomic_write_text, cache_file, cached
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import Diverged
from bench.measure import Stopwatch
from bench.models.net import MappedNet, build_model
from bench.models.pretrain import PretrainRecipe, pretrained_source
from methods.nasoa.builder import freeze_stages
from methods.nasoa.steptime import FINETUNE

LRS = (0.1, 0.01, 0.001, 0.0001)
FROZEN = (-1, 0, 1, 2, 3)


@dataclass(frozen=True)
class ZooConfig:
    """The candidate models (config side); width/input size 0 mean "the task's"."""

    models: tuple[str, ...] = ("etnas_a", "etnas_b", "etnas_d")
    width: float = 0.0
    input_size: int = 0
    batch_size: int = 64

    def resolve(self, task: Any) -> ZooSpec:
        s = task.settings
        return ZooSpec(
            self.models,
            self.width or s.width,
            self.input_size or s.input_size,
            s.source or "",
            s.source_seed,
            s.pretrain,
            self.batch_size,
            task.download,
        )


@dataclass(frozen=True)
class ZooSpec:
    """The candidate models with resolved width, input size and source weights."""

    models: tuple[str, ...]
    width: float
    input_size: int
    source: str
    source_seed: int
    recipe: PretrainRecipe
    batch_size: int = 64
    download: bool = False

    def source_classes(self) -> int:
        from bench.data.registry import dataset_info

        return 1000 if self.source == "imagenet" else dataset_info(self.source).num_classes

    def source_weights(self, model: str, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(state_dict, meta with ``source_test_top1_pct``) of ``model`` on the source."""
        if self.source == "imagenet":
            # The harness's ImageNet path: torchvision checkpoints, or the zoo's registered loader.
            from bench.models.pretrain import imagenet_state_dict
            from methods.nasoa.series import imagenet_top1
            from methods.nasoa.zoo import ZOO

            top1 = ZOO[model].top1_pct if model in ZOO else imagenet_top1(model)
            return imagenet_state_dict(model, self.width, download=self.download), {"source_test_top1_pct": top1}
        if not self.source:
            raise ValueError("NASOA needs source weights: set the task's source (an embedded dataset or imagenet)")
        return pretrained_source(model, self.width, self.source, self.input_size, self.recipe, self.source_seed, device)

    def build(self, model: str, num_classes: int, device: torch.device) -> MappedNet:
        """``model`` with source weights and a fresh ``num_classes`` head."""
        state, _ = self.source_weights(model, device)
        net = build_model(model, self.source_classes(), width=self.width)
        net.load_state_dict(state, strict=True)
        net.reset_classifier(num_classes)
        return net.to(device)


@dataclass(frozen=True)
class MetaConfig:
    """How meta-data runs are sampled."""

    runs: int = 200
    min_classes: int = 2
    min_images_per_class: int = 5
    max_images_per_class: int = 0  # 0: all available
    min_iters: int = 20
    max_iters: int = 2000
    emd_gamma: float = 0.01
    min_source_images: int = 200
    full_last: bool = True  # the shard's last run uses the whole split (its model is the cell's)


@dataclass
class MetaRun:
    """One meta-data record."""

    model: str
    lr: float
    frozen: int
    iters: int
    num_classes: int
    mean_ipc: float
    std_ipc: float
    similarity: float
    source_top1_pct: float
    top1_pct: float
    train_s: float
    dataset: str = ""
    diverged: bool = False  # its training diverged: top1_pct is chance (100 / num_classes), kept as data
    extra: dict[str, Any] = field(default_factory=dict)


def features(run: MetaRun | dict[str, Any], models: Sequence[str]) -> list[float]:
    """Raw meta-feature vector (z-scoring happens in ``Standardizer``); log lr and log iters are ours."""
    r = run if isinstance(run, dict) else asdict(run)
    onehot = [1.0 if r["model"] == m else 0.0 for m in models]
    return onehot + [
        r["similarity"],
        r["mean_ipc"],
        r["std_ipc"],
        r["source_top1_pct"] / 100.0,
        r["num_classes"],
        math.log(r["iters"]),
        math.log10(r["lr"]),
        float(r["frozen"]),
    ]


class Standardizer:
    """z-score with fixed statistics (one-hot columns are left as they are)."""

    def __init__(self, rows: np.ndarray, n_onehot: int) -> None:
        self.mean = rows.mean(0)
        self.std = rows.std(0)
        self.mean[:n_onehot], self.std[:n_onehot] = 0.0, 1.0
        self.std[self.std < 1e-8] = 1.0

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        return torch.tensor((np.asarray(rows) - self.mean) / self.std, dtype=torch.float32)


@torch.no_grad()
def penultimate(net: MappedNet, split: Split, batch: int = 256) -> torch.Tensor:
    """Features before the classifier for every image of ``split``."""
    from bench.data.loader import iter_eval

    net.eval()
    cls = net.structure.sequence.index(net.structure.classifier)
    parts = [m for _, m in net.parts()[:cls]]
    out = []
    for x, _ in iter_eval(split, batch):
        for m in parts:
            x = m(x)
        out.append(x.float().cpu())
    return torch.cat(out)


def class_means(feats: torch.Tensor, labels: torch.Tensor, min_images: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(class-mean features, image counts) of the classes with at least ``min_images`` images."""
    means, counts = [], []
    for c in labels.unique().tolist():
        sel = labels.cpu() == c
        if int(sel.sum()) >= min_images:
            means.append(feats[sel].mean(0).numpy())
            counts.append(int(sel.sum()))
    return np.asarray(means, dtype=np.float64), np.asarray(counts, dtype=np.float64)


def emd_similarity(src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray], gamma: float) -> float:
    """exp(-gamma * EMD) between two weighted sets of class means (POT ``ot.emd2``)."""
    import ot

    (xs, ws), (xt, wt) = src, tgt
    cost = ot.dist(xs, xt, metric="euclidean")
    emd = float(ot.emd2(ws / ws.sum(), wt / wt.sum(), cost))
    return math.exp(-gamma * emd)


def sample_subset(train: Split, rng: np.random.Generator, cfg: MetaConfig, full: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``train``, the chosen classes): random classes, random images per class."""
    labels = train.y.cpu().numpy()
    classes = np.unique(labels)
    if full:
        return np.arange(len(labels)), classes
    k = int(rng.integers(min(cfg.min_classes, len(classes)), len(classes) + 1))
    chosen = np.sort(rng.choice(classes, size=k, replace=False))
    idx = []
    for c in chosen:
        pool = np.flatnonzero(labels == c)
        hi = len(pool) if cfg.max_images_per_class <= 0 else min(len(pool), cfg.max_images_per_class)
        n = int(rng.integers(min(cfg.min_images_per_class, hi), hi + 1))
        idx.append(rng.choice(pool, size=n, replace=False))
    return np.sort(np.concatenate(idx)), chosen


def relabel(split: Split, classes: np.ndarray, idx: np.ndarray | None = None, name: str | None = None) -> Split:
    """Rows of ``split`` (``idx`` or every row of ``classes``) with labels remapped to 0..k-1."""
    y = split.y.cpu().numpy()
    if idx is None:
        idx = np.flatnonzero(np.isin(y, classes))
    remap = {int(c): i for i, c in enumerate(classes)}
    sub = split.subset(torch.as_tensor(idx, device=split.device), name)
    new_y = torch.tensor([remap[int(v)] for v in y[idx]], device=split.device, dtype=split.y.dtype)
    return Split(sub.name, sub.x, new_y, len(classes), sub.input_size, sub.mean, sub.std, sub.flip_ok)


def finetune(
    zoo: ZooSpec,
    model: str,
    train: Split,
    val: Split,
    *,
    lr: float,
    frozen: int,
    iters: int,
    device: torch.device,
    seed: int,
    rec: Recorder | None = None,
    stage: str = "meta",
    hooks: engine.StepHooks | None = None,
    watch: Stopwatch | None = None,
) -> tuple[MappedNet, float, float]:
    """Fine-tune ``model`` from source weights: (network, val top-1 %, training seconds).

    The training is timed by ``watch`` (a new ``Stopwatch`` when None): a caller that runs this as
    an inner run reads the seconds a diverged training spent from its own ``watch``."""
    net = zoo.build(model, train.num_classes, device)
    freeze_stages(net, frozen)
    # The one recipe: the step-time tables time exactly this step (``steptime.FINETUNE``).
    cfg = dataclasses.replace(
        FINETUNE, steps=max(1, iters), lr=lr, batch_size=min(zoo.batch_size, len(train)), log_every=max(1, iters)
    )
    rec = rec or Recorder(device)
    sw = watch if watch is not None else Stopwatch(device)
    with sw:
        engine.fit(net, train, cfg, rec, stage=stage, seed=seed, hooks=hooks)
    return net, engine.evaluate(net, val)["top1_pct"], sw.total_s


class SourceFeatures:
    """The source's class-mean features under the similarity network (computed once)."""

    def __init__(self, zoo: ZooSpec, cfg: MetaConfig, device: torch.device) -> None:
        from bench.data.registry import load_splits

        self.net = zoo.build(zoo.models[0], 2, device)
        src_train, _, _ = load_splits(zoo.source, seed=zoo.source_seed, input_size=zoo.input_size, device=device)
        feats = penultimate(self.net, src_train)
        self.means = class_means(feats, src_train.y, cfg.min_source_images)
        if len(self.means[0]) == 0:
            self.means = class_means(feats, src_train.y, 1)

    def similarity(self, split: Split, gamma: float) -> float:
        return emd_similarity(self.means, class_means(penultimate(self.net, split), split.y), gamma)


def generate(
    zoo: ZooSpec,
    cfg: MetaConfig,
    train: Split,
    val: Split,
    *,
    dataset: str,
    seed: int,
    device: torch.device,
    rec: Recorder | None = None,
    runs: int | None = None,
) -> tuple[list[MetaRun], MappedNet | None]:
    """``runs`` random fine-tuning runs on subsets of ``train`` (the last on all of it if ``full_last``).

    A run whose training diverges is kept (``diverged=True``, ``top1_pct`` at chance for its
    subset's classes; ``bench.engine.inner``), so the stream is not biased towards the runs that
    survived; ``rec`` (the cell's) counts it in ``inner_diverged_count``. The returned network is
    the last run's when it used the whole split and did not diverge, else None.
    """
    rng = np.random.default_rng(seed)
    cell = rec if rec is not None else Recorder(device)
    src = SourceFeatures(zoo, cfg, device)
    source_acc = {m: float(zoo.source_weights(m, device)[1]["source_test_top1_pct"]) for m in zoo.models}
    out, last = [], None
    n = cfg.runs if runs is None else runs
    for i in range(n):
        full = cfg.full_last and i == n - 1
        idx, classes = sample_subset(train, rng, cfg, full)
        sub, sub_val = relabel(train, classes, idx), relabel(val, classes)
        model = str(rng.choice(zoo.models))
        lr, frozen = float(rng.choice(LRS)), int(rng.choice(FROZEN))
        iters = int(round(math.exp(rng.uniform(math.log(cfg.min_iters), math.log(cfg.max_iters)))))
        counts = np.bincount(sub.y.cpu().numpy(), minlength=len(classes))
        sim = src.similarity(sub, cfg.emd_gamma)
        torch.manual_seed(seed * 100_003 + i)  # the new head: a run is the same whoever generates the shard
        watch = Stopwatch(device)
        got = engine.inner_run(
            partial(
                finetune,
                zoo,
                model,
                sub,
                sub_val,
                lr=lr,
                frozen=frozen,
                iters=iters,
                device=device,
                seed=seed * 100_003 + i,
                watch=watch,
            ),
            cell,
            stage="meta",
            what=f"meta run {i + 1}/{n} ({model} lr {lr:g} frozen {frozen} iters {iters})",
        )
        net: MappedNet | None
        if isinstance(got, Diverged):
            net, acc, secs, diverged = None, engine.chance_pct(len(classes)), watch.total_s, True
        else:
            (net, acc, secs), diverged = got, False
        out.append(
            MetaRun(
                model,
                lr,
                frozen,
                iters,
                len(classes),
                float(counts.mean()),
                float(counts.std()),
                sim,
                source_acc[model],
                acc,
                secs,
                dataset,
                diverged,
            )
        )
        if rec is not None:
            rec.progress(
                f"meta run {i + 1}/{n}: {model} lr {lr:g} frozen {frozen} iters {iters} "
                f"{len(classes)} classes -> {acc:.1f}%" + (" (diverged: chance)" if diverged else "")
            )
        last = net if full else None
    return out, last


def shard_path(
    zoo: ZooSpec, cfg: MetaConfig, dataset: str, seed: int, task_key: dict[str, Any], device: Any = "cpu"
) -> Path:
    """Cache file of one meta-data shard computed on ``device`` (``bench.cache``: the arithmetic is in the key)."""
    inputs = {"zoo": asdict(zoo), "meta": asdict(cfg), "dataset": dataset, "seed": seed, "task": task_key}
    return cache_file("nasoa", f"meta-{dataset}-s{seed}", inputs, device, suffix=".json")


def shard(
    zoo: ZooSpec,
    cfg: MetaConfig,
    dataset: str,
    seed: int,
    device: torch.device,
    splits: tuple[Split, Split] | None = None,
    rec: Recorder | None = None,
) -> tuple[list[dict], bool]:
    """The cached meta-data shard (dataset, seed), generating it on a miss: (records, generated now)."""
    from bench.data.registry import load_splits

    def compute() -> list[dict]:
        if splits is None:
            tr, va, _ = load_splits(dataset, seed=seed, input_size=zoo.input_size, device=device)
        else:
            tr, va = splits
        runs, _ = generate(zoo, cfg, tr, va, dataset=dataset, seed=seed, device=device, rec=rec)
        return [asdict(r) for r in runs]

    records, hit = cached(
        shard_path(zoo, cfg, dataset, seed, SHARD_TASK, device),
        compute,
        load=lambda p: json.loads(p.read_text()),
        save=save_shard,
    )
    return records, not hit


# The split fractions a shard's runs are drawn from (``load_splits`` defaults).
SHARD_TASK = {"val_frac": 0.2, "test_frac": 0.2}


def save_shard(records: list[dict], path: Path) -> None:
    """Write a shard atomically (temporary file, then rename)."""
    atomic_write_text(json.dumps(records), path)
