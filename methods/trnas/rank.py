"""``trnas_rank``: how well a proxy protocol ranks NB201 architectures (the paper's Tables 1-3).

``fit`` samples ``archs`` architectures (seeded by the cell seed), trains each with the
proxy protocol (Original: the plain NB201 network for 12 epochs; Tr-Net-i-j: the frozen
ResNet prefix plus the remaining cells for 18 epochs with 13 of linear warmup) and
scores it on the task's validation split. The reference (the paper's ground truth) is

* the NATS-Bench table (NAS-Bench-201's own 200-epoch trainings) whenever one is given:
  ``nats_path``, or the tier's default ``<data_root>/NATS-tss-v1_0-3ffb9-simple``
  (``reference="auto"``, the default; ``"nats"`` requires it). The reference is the table's
  200-epoch ``test-accuracy`` averaged over the seeds the table holds (note ``reference_kind``
  = ``nats-200ep-mean-seeds(777,888,999)``, the seeds it found). The table's accuracies are on
  NB201's splits, so the task must use them (``TaskSettings.split="nb201"``: proxies train on
  NB201's train split and score on its valid split, where the table's ``valid-accuracy`` is;
  its ``test-accuracy`` is on NB201's test split): a table with any other split policy is an
  ``InvalidConfig`` (at collection when ``nats_path`` or ``reference="nats"`` says so).
  ``proxy_from_table`` reads the Original proxy as the table's 12-epoch ``valid-accuracy``, as
  the paper does, which is the same split the Tr-Net proxies score on. Or
* without a table (``reference="harness"``, or ``"auto"`` finding none), the harness's own
  reference: the original NB201 network trained longer (``reference_train``) on the task's
  train split and scored on its test split, cached per (architectures, recipe, task) so the
  Original and Tr variants of a seed share it (``reference_kind`` = ``harness-<epochs>ep``).

Every row says which: the notes ``reference_kind`` and ``split_policy`` and the scalar
``reference_table_bool`` (1 = the table, 0 = the harness).

Metrics: ``krocc_tau`` / ``srocc_rho`` (Kendall tau-b, Spearman rho) over the random sample
and ``krocc_topk_tau`` / ``srocc_topk_rho`` over a top-k set, each with a percentile bootstrap
CI over architectures (``*_lo_tau``, ``*_hi_tau``, ...). The top-k set (note ``topk_source``):

* with a table, Table 3's: the ``top_k`` best architectures of the whole space by the table's
  200-epoch test accuracy (``topk_space="all"``: all 15,625 cells, as the paper's "top-k
  networks on NAS-Bench-201"; ``"unique"``: one per isomorphism class, the lowest-index one,
  of 6,466), each trained by the proxy too: a second set of proxy trainings (stage
  ``topk_proxy``, seeds ``topk-init`` / ``topk-data``; an architecture also in the random
  sample reuses its proxy result, counted in ``topk_proxy_reused_count``). At the paper tier
  that is 1,000 trainings beside the sample's 1,000.
* without a table, the ``sample_top_k`` best of the random sample by the harness reference
  (``topk_source`` says "top-k of a random sample of N").

Series: ``rank_proxy_val_top1_pct`` and ``rank_reference_top1_pct`` at step = architecture
number (strings in the note ``archs``), and for the table's top-k ``rank_topk_proxy_val_top1_pct``
/ ``rank_topk_reference_top1_pct`` (strings in ``topk_archs``). Cost: ``proxy_s``,
``proxy_epoch_s`` (mean time per proxy epoch), ``proxy_act_mib`` (saved activations of one
training batch) and, on CUDA, ``proxy_peak_alloc_mib``.

The returned model is the proxy's best architecture of the random sample as the proxy trained
it (its ``test_top1_pct`` is that network's, not the reference's); the table or reference
accuracy of that architecture is ``proxy_best_reference_top1_pct``.

A proxy (or reference) training that diverges is an inner run (``bench.engine.inner``): its
score is chance (100 / classes, which ranks it at or below every network that learned
anything), it stays in the correlations, it is counted (``inner_diverged_count``;
``proxy_diverged_count`` with the note ``proxy_diverged_archs``, ``topk_proxy_diverged_count``,
``reference_diverged_count``) and it is never the returned architecture. When every proxy
training of the sample diverged the cell fails with ``InnerRunsDiverged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from bench import engine
from bench.cache import cached
from bench.contract.config import require
from bench.contract.interface import CellFacts, Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InnerRunsDiverged, InvalidConfig
from bench.registry import register_method
from bench.results.analysis import (
    DegenerateRanking,
    bootstrap_ci,
    kendall_tau,
    rank_correlation,
    spearman_rho,
)
from methods.trnas.common import (
    Builder,
    NatsTable,
    Trained,
    TransferConfig,
    find_table,
    nats_bench_module,
    nats_dataset,
    nb201_train,
    reference_path,
    train_candidate,
    with_warmup,
)
from methods.trnas.network import nb201
from methods.trnas.seeds import role_seed
from methods.trnas.space import SPACE_SIZE, Arch, all_archs, canonical, format_arch, sample, to_index

UNIQUE_SIZE = 6_466  # NB201's unique topologies (space.canonical)


@dataclass(frozen=True)
class RankConfig:
    """Paper settings by default: 1000 architectures, Tr-Net-5-5, 18 epochs with 13 of warmup,
    the table as reference when there is one, Table 3's top-1000 of the whole space."""

    archs: int = 1000
    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    proxy: engine.TrainConfig = field(default_factory=lambda: nb201_train(18.0))
    warmup_epochs: float = 13.0
    reference: Literal["auto", "harness", "nats"] = "auto"
    reference_train: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    nats_path: str = ""
    nats_dataset: str = ""
    proxy_from_table: bool = False
    top_k: int = 1000
    topk_space: Literal["all", "unique"] = "all"
    sample_top_k: int = 250
    bootstrap: int = 1000
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        require(self.archs >= 3, f"archs must be >= 3 (a rank correlation needs 3 items), got {self.archs}")
        require(self.N >= 1 and self.C >= 0, "N must be >= 1 and C >= 0 (0: the source's stem width)")
        require(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        space = SPACE_SIZE if self.topk_space == "all" else UNIQUE_SIZE
        require(
            3 <= self.top_k <= space, f"top_k must be in 3..{space} (topk_space={self.topk_space}), got {self.top_k}"
        )
        require(
            3 <= self.sample_top_k <= self.archs,
            f"sample_top_k (the top-k of the random sample, without a table) must be in 3..archs={self.archs}, "
            f"got {self.sample_top_k}",
        )
        require(self.bootstrap >= 0 and 0 < self.ci_level < 1, "bootstrap must be >= 0 and ci_level in (0, 1)")
        if self.reference == "harness":
            require(not self.nats_path, "nats_path is set but reference='harness'; use reference='auto' or 'nats'")
            require(not self.proxy_from_table, "proxy_from_table needs a NATS-Bench table (reference 'auto' or 'nats')")
        if self.reference == "nats" or self.nats_path:
            nats_bench_module()  # the package's absence is an error at collection

    @property
    def wants_table(self) -> bool:
        """Whether the config itself says the table is the reference (known at collection)."""
        return self.reference == "nats" or bool(self.nats_path)

    def harness_kind(self) -> str:
        """``harness-<epochs>ep`` (or ``-<steps>steps``): the harness reference's label."""
        t = self.reference_train
        return f"harness-{t.steps}steps" if t.steps else f"harness-{t.epochs:g}ep"


def correlations(
    proxy: list[float], reference: list[float], rec: Recorder, prefix: str, cfg: RankConfig, seed: int
) -> None:
    """Record ``<prefix>`` tau/rho and their bootstrap CIs (a degenerate ranking becomes a note)."""
    kname, sname = ("krocc", "srocc") if not prefix else (f"krocc_{prefix}", f"srocc_{prefix}")
    try:
        tau, rho = rank_correlation(proxy, reference)
    except DegenerateRanking as err:
        rec.note(f"{kname}_degenerate", str(err))
        return
    if not (math.isfinite(tau) and math.isfinite(rho)):
        return
    rec.scalar(f"{kname}_tau", tau)
    rec.scalar(f"{sname}_rho", rho)
    if cfg.bootstrap:
        for name, stat, unit in ((kname, kendall_tau, "tau"), (sname, spearman_rho, "rho")):
            try:
                lo, hi = bootstrap_ci(proxy, reference, stat, resamples=cfg.bootstrap, level=cfg.ci_level, seed=seed)
            except DegenerateRanking as err:
                rec.note(f"{name}_ci_degenerate", str(err))
                continue
            rec.scalar(f"{name}_lo_{unit}", lo)
            rec.scalar(f"{name}_hi_{unit}", hi)


def table_top_k(table: NatsTable, k: int, space: str, device: Any = "cpu") -> list[Arch]:
    """The ``k`` best architectures of the whole space by the table's 200-epoch test accuracy (ties:
    lower index first); ``space="unique"`` keeps the lowest-index architecture of each isomorphism class."""
    scores = table.whole_space(device)
    archs = list(all_archs())
    if space == "unique":
        seen: set[str] = set()
        kept = []
        for a in archs:  # index order: the first of each class represents it
            key = canonical(a)
            if key not in seen:
                seen.add(key)
                kept.append(a)
        archs = kept
    return sorted(archs, key=lambda a: (-scores[format_arch(a)], to_index(a)))[:k]


def require_nb201_split(task_split: str, where: str) -> None:
    """The table's accuracies are on NB201's splits: the task must use them too."""
    if task_split != "nb201":
        raise InvalidConfig(
            f"the NATS-Bench table is the reference {where}, but the task's split is {task_split!r}: the table's "
            "valid/test accuracies are on NAS-Bench-201's own splits, so set the task's split='nb201' "
            "(proxies then train on NB201 train and score on NB201 valid) or reference='harness'"
        )


@register_method("trnas_rank")
class TrNasRank(BaseMethod[RankConfig]):
    """Rank correlation of a proxy protocol with a reference; see the module docstring."""

    Config: ClassVar[type] = RankConfig
    name: ClassVar[str]

    @classmethod
    def check_cell(cls, config: Any, facts: CellFacts) -> None:
        """At collection: a config that names the table needs NB201's splits and one of NB201's datasets."""
        super().check_cell(config, facts)
        if config.wants_table:
            require_nb201_split(facts.settings.split, f"(nats_path / reference='nats') {facts.where()}")
            nats_dataset(facts.dataset, config.nats_dataset)

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        archs = sample(cfg.archs, task.seed)
        rec.note("archs", [format_arch(a) for a in archs])
        rec.note("proxy", cfg.transfer.label())
        table = self._table(task)
        if cfg.proxy_from_table and table is None:
            raise InvalidConfig(
                "proxy_from_table needs a NATS-Bench table: set nats_path or place it under --bench-data-root"
            )
        builder = Builder(task, cfg.C, cfg.N, cfg.transfer)
        rec.scalar("nas_width_count", builder.C)
        proxy_cfg = with_warmup(cfg.proxy, cfg.warmup_epochs, len(task.train))
        rec.scalar("proxy_warmup_frac", proxy_cfg.warmup_frac)
        rec.note("split_policy", task.settings.split)
        rec.scalar("reference_table_bool", float(table is not None))
        with rec.stage("reference"):
            reference = self._reference(task, archs, builder, table, rec)
        kind = table.kind(archs) if table is not None else cfg.harness_kind()
        rec.note("reference_kind", kind)
        if table is not None:
            rec.scalar("reference_seeds_min_count", float(min(len(s) for s in table.seeds(archs))))
        with rec.stage("proxy"):
            got = self._proxies(task, archs, builder, proxy_cfg, table, rec, "proxy", keep_models=True)
        diverged = [k for k, g in enumerate(got) if g is not None and g.diverged]
        proxy_acc = [self._score(g, a, table) for g, a in zip(got, archs)]
        rec.scalar("proxy_diverged_count", len(diverged))
        rec.note("proxy_diverged_archs", [format_arch(archs[k]) for k in diverged])
        if len(diverged) == len(archs):
            raise InnerRunsDiverged(
                f"every one of the {len(archs)} proxy trainings diverged (recorded at chance); "
                "there is no ranking to correlate and no architecture to return"
            )
        for k, (p, r) in enumerate(zip(proxy_acc, reference)):
            rec.point("rank_proxy_val_top1_pct", k, p)
            rec.point("rank_reference_top1_pct", k, r)
        trained = [g for g in got if g is not None]
        if trained:
            epochs = proxy_cfg.total_steps(len(task.train)) / max(1, len(task.train) // proxy_cfg.batch_size)
            rec.scalar("proxy_epoch_s", float(np.mean([g.train_s for g in trained])) / epochs)
            rec.scalar("proxy_act_mib", float(np.mean([g.act_mib for g in trained])))
            peaks = [g.peak_alloc_mib for g in trained if g.peak_alloc_mib is not None]
            if peaks:
                rec.scalar("proxy_peak_alloc_mib", float(np.mean(peaks)))
        correlations(proxy_acc, reference, rec, "", cfg, task.seed)
        self._top_k(task, archs, proxy_acc, reference, builder, proxy_cfg, table, rec)
        best = max((k for k in range(len(archs)) if k not in diverged), key=lambda k: proxy_acc[k])
        rec.note("proxy_best_arch", format_arch(archs[best]))
        rec.scalar("proxy_best_reference_top1_pct", reference[best])
        best_got = got[best]
        model = (
            best_got.model
            if best_got is not None and not isinstance(best_got.model, torch.nn.Identity)
            else builder.net(archs[best], seed=role_seed("proxy-init", task.seed, best))
        )
        rec.scalar("trainable_params", sum(p.numel() for p in model.parameters() if p.requires_grad))
        return Fitted(model, format_arch(archs[best]), info={"proxy": cfg.transfer.label(), "reference_kind": kind})

    # ------------------------------------------------------------------ pieces

    def _table(self, task: Task) -> NatsTable | None:
        """The NATS-Bench table this cell uses (``find_table``), or None for the harness reference."""
        cfg = self.config
        if cfg.reference == "harness":
            return None
        table = find_table(task, cfg.nats_path, cfg.nats_dataset, required=cfg.reference == "nats")
        if table is not None:
            require_nb201_split(task.settings.split, f"({table.path}) on {task.dataset}")
        return table

    def _uses_table_proxy(self, table: NatsTable | None) -> bool:
        return table is not None and self.config.proxy_from_table and not self.config.transfer.enabled

    def _score(self, got: Trained | None, arch: Arch, table: NatsTable | None) -> float:
        """The proxy's accuracy: the training's val score, or the table's 12-epoch valid accuracy."""
        if got is None:
            assert table is not None
            return table.valid_accuracy(arch, "12")
        return got.val_top1_pct

    def _proxies(
        self,
        task: Task,
        archs: list[Arch],
        builder: Builder,
        proxy_cfg: engine.TrainConfig,
        table: NatsTable | None,
        rec: Recorder,
        stage: str,
        *,
        keep_models: bool,
    ) -> list[Trained | None]:
        """Train every architecture with the proxy and score it on ``task.val`` (None: read from the table).

        ``stage="proxy"`` is the random sample (seeds ``proxy-*``), ``"topk_proxy"`` the table's top-k
        (``topk-*``). With ``keep_models`` the best network that did not diverge keeps its weights
        (it is the returned model); every other result's ``model`` is dropped (``nn.Identity``) as soon
        as a better one trains, so at most one trained network is held."""
        init, data = ("proxy-init", "proxy-data") if stage == "proxy" else ("topk-init", "topk-data")
        out: list[Trained | None] = []
        best: Trained | None = None
        for k, arch in enumerate(archs):
            if self._uses_table_proxy(table):
                out.append(None)
                continue
            net = builder.net(arch, seed=role_seed(init, task.seed, k))
            got = train_candidate(
                net,
                arch,
                task.train,
                task.val,
                proxy_cfg,
                seed=role_seed(data, task.seed, k),
                stage=stage,
                rec=rec,
            )
            if keep_models and not got.diverged and (best is None or got.val_top1_pct > best.val_top1_pct):
                if best is not None:
                    best.model = torch.nn.Identity()
                best = got
            else:
                got.model = torch.nn.Identity()  # scored, never returned: free its weights now
            out.append(got)
            rec.progress(f"{stage} {k + 1}/{len(archs)} {format_arch(arch)}: val {got.val_top1_pct:.2f}%")
        return out

    def _top_k(
        self,
        task: Task,
        archs: list[Arch],
        proxy_acc: list[float],
        reference: list[float],
        builder: Builder,
        proxy_cfg: engine.TrainConfig,
        table: NatsTable | None,
        rec: Recorder,
    ) -> None:
        """``krocc_topk_tau`` / ``srocc_topk_rho``: Table 3's top-k of the whole space by the table, or
        without a table the top-k of the random sample by the harness reference (``topk_source``)."""
        cfg = self.config
        if table is None:
            k = cfg.sample_top_k
            top = np.argsort(-np.asarray(reference), kind="stable")[:k]
            rec.note(
                "topk_source",
                f"top-{len(top)} of a random sample of {len(archs)} by the harness reference ({cfg.harness_kind()})",
            )
            rec.scalar("topk_archs_count", len(top))
            correlations([proxy_acc[t] for t in top], [reference[t] for t in top], rec, "topk", cfg, task.seed)
            return
        space = SPACE_SIZE if cfg.topk_space == "all" else UNIQUE_SIZE
        top_archs = table_top_k(table, cfg.top_k, cfg.topk_space, task.device)
        rec.note(
            "topk_source",
            f"top-{len(top_archs)} of the whole space ({space} architectures, topk_space={cfg.topk_space}) "
            f"by the table's 200-epoch test accuracy ({table.kind(top_archs)})",
        )
        rec.note("topk_archs", [format_arch(a) for a in top_archs])
        rec.scalar("topk_archs_count", len(top_archs))
        in_sample = {a: k for k, a in enumerate(archs)}
        fresh = [a for a in top_archs if a not in in_sample]
        rec.scalar("topk_proxy_reused_count", len(top_archs) - len(fresh))
        with rec.stage("topk_proxy"):
            got = dict(
                zip(fresh, self._proxies(task, fresh, builder, proxy_cfg, table, rec, "topk_proxy", keep_models=False))
            )
        rec.scalar("topk_proxy_diverged_count", sum(1 for g in got.values() if g is not None and g.diverged))
        top_proxy = [proxy_acc[in_sample[a]] if a in in_sample else self._score(got[a], a, table) for a in top_archs]
        top_ref = [table.test_accuracy(a) for a in top_archs]
        for k, (p, r) in enumerate(zip(top_proxy, top_ref)):
            rec.point("rank_topk_proxy_val_top1_pct", k, p)
            rec.point("rank_topk_reference_top1_pct", k, r)
        correlations(top_proxy, top_ref, rec, "topk", cfg, task.seed)

    def _reference(
        self, task: Task, archs: list[Arch], builder: Builder, table: NatsTable | None, rec: Recorder
    ) -> list[float]:
        """Reference accuracy of every architecture (table, or cached harness training)."""
        cfg = self.config
        if table is not None:
            return [table.test_accuracy(a) for a in archs]
        path = reference_path(task, archs, cfg.reference_train, builder.C, cfg.N, task.seed)

        def compute() -> dict:
            devices = [task.device] if task.device.type == "cuda" else []
            out: dict = {"acc": [], "diverged": []}
            with torch.random.fork_rng(devices=devices):
                for k, arch in enumerate(archs):
                    torch.manual_seed(role_seed("reference-init", task.seed, k))
                    net = nb201(arch, builder.C, cfg.N, task.num_classes).to(task.device)
                    got = train_candidate(
                        net,
                        arch,
                        task.train,
                        task.test,
                        cfg.reference_train,
                        seed=role_seed("reference-data", task.seed, k),
                        stage="reference",
                        rec=rec,
                    )
                    out["acc"].append(got.val_top1_pct)
                    out["diverged"].append(got.diverged)
                    rec.progress(f"reference {k + 1}/{len(archs)}: test {got.val_top1_pct:.2f}%")
            return out

        blob, hit = cached(path, compute)
        rec.scalar("reference_cache_hit_bool", float(hit))
        rec.scalar("reference_diverged_count", sum(blob.get("diverged", ())))
        return [float(a) for a in blob["acc"]]


__all__ = ["RankConfig", "TrNasRank", "correlations", "table_top_k"]
