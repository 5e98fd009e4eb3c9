"""``trnas_rank``: how well a proxy protocol ranks NB201 architectures (the paper's Tables 1-3).

``fit`` samples ``archs`` architectures (seeded by the cell seed), trains each with the
proxy protocol (Original: the plain NB201 network for 12 epochs; Tr-Net-i-j: the frozen
ResNet prefix plus the remaining cells for 18 epochs with 13 of linear warmup) and
scores it on the validation split. The reference is either

* ``reference="harness"``: the original NB201 network trained longer by the harness
  (``reference_train``) at the tier's scale, scored on the test split; cached per
  (architectures, recipe, task), so the Original and Tr variants of a seed share it; or
* ``reference="nats"``: NAS-Bench-201's 200-epoch test accuracy from the NATS-Bench
  table (optional ``nats_bench`` package and file; ``proxy_from_table`` reads the
  Original proxy as the table's 12-epoch validation accuracy, as the paper does).

Metrics: ``krocc_tau`` / ``srocc_rho`` (Kendall tau-b, Spearman rho) over all
architectures and ``krocc_topk_tau`` / ``srocc_topk_rho`` over the ``top_k`` best by
reference, each with a percentile bootstrap CI over architectures (``*_lo_tau``,
``*_hi_tau``, ...). Series: ``rank_proxy_val_top1_pct`` and ``rank_reference_top1_pct``
at step = architecture number (their strings are in the note ``archs``). Cost:
``proxy_s``, ``proxy_epoch_s`` (mean time per proxy epoch), ``proxy_act_mib`` (saved
activations of one training batch) and, on CUDA, ``proxy_peak_alloc_mib``.

The returned model is the proxy's best architecture as the proxy trained it (its
``test_top1_pct`` is that network's, not the reference's); the table or reference
accuracy of that architecture is ``proxy_best_reference_top1_pct``.

A proxy (or reference) training that diverges is an inner run (``bench.engine.inner``): its
score is chance (100 / classes, which ranks it at or below every network that learned
anything), it stays in the correlations, it is counted (``inner_diverged_count``;
``proxy_diverged_count`` with the note ``proxy_diverged_archs``, ``reference_diverged_count``)
and it is never the returned architecture. When every proxy training diverged the cell fails
with ``InnerRunsDiverged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from bench import engine
from bench.cache import cached
from bench.contract.config import require
from bench.contract.interface import Fitted, Task
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
    TransferConfig,
    nats_dataset,
    nb201_train,
    reference_path,
    train_candidate,
    with_warmup,
)
from methods.trnas.network import nb201
from methods.trnas.seeds import role_seed
from methods.trnas.space import Arch, format_arch, sample


@dataclass(frozen=True)
class RankConfig:
    """Paper settings by default: 1000 architectures, Tr-Net-5-5, 18 epochs with 13 of warmup."""

    archs: int = 1000
    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    proxy: engine.TrainConfig = field(default_factory=lambda: nb201_train(18.0))
    warmup_epochs: float = 13.0
    reference: Literal["harness", "nats"] = "harness"
    reference_train: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    nats_path: str = ""
    nats_dataset: str = ""
    proxy_from_table: bool = False
    top_k: int = 250
    bootstrap: int = 1000
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        require(self.archs >= 3, f"archs must be >= 3 (a rank correlation needs 3 items), got {self.archs}")
        require(self.N >= 1 and self.C >= 0, "N must be >= 1 and C >= 0 (0: the source's stem width)")
        require(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        require(self.top_k >= 3, f"top_k must be >= 3, got {self.top_k}")
        require(self.bootstrap >= 0 and 0 < self.ci_level < 1, "bootstrap must be >= 0 and ci_level in (0, 1)")
        if self.reference == "nats":
            try:
                import nats_bench  # noqa: F401
            except ImportError:
                raise InvalidConfig(
                    "reference='nats' needs the optional package nats_bench (pip install nats_bench) and the "
                    "NATS-Bench topology file at nats_path; it is not installed here. Use reference='harness' "
                    "for a reference training by the harness itself"
                ) from None
        elif self.proxy_from_table:
            raise InvalidConfig("proxy_from_table needs reference='nats'")


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


@register_method("trnas_rank")
class TrNasRank(BaseMethod[RankConfig]):
    """Rank correlation of a proxy protocol with a reference; see the module docstring."""

    Config: ClassVar[type] = RankConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        archs = sample(cfg.archs, task.seed)
        rec.note("archs", [format_arch(a) for a in archs])
        rec.note("proxy", cfg.transfer.label())
        table = (
            NatsTable(cfg.nats_path, nats_dataset(task.dataset, cfg.nats_dataset)) if cfg.reference == "nats" else None
        )
        builder = Builder(task, cfg.C, cfg.N, cfg.transfer)
        rec.scalar("nas_width_count", builder.C)
        proxy_cfg = with_warmup(cfg.proxy, cfg.warmup_epochs, len(task.train))
        rec.scalar("proxy_warmup_frac", proxy_cfg.warmup_frac)
        with rec.stage("reference"):
            reference = self._reference(task, archs, builder, table, rec)
        proxy_acc, times, acts, peaks = [], [], [], []
        diverged: list[int] = []  # architectures whose proxy training diverged: scored chance, never best
        best_model, best_acc = None, -1.0
        with rec.stage("proxy"):
            for k, arch in enumerate(archs):
                if table is not None and cfg.proxy_from_table and not cfg.transfer.enabled:
                    proxy_acc.append(table.accuracy(arch, "12", "valid-accuracy"))
                    continue
                net = builder.net(arch, seed=role_seed("proxy-init", task.seed, k))
                got = train_candidate(
                    net,
                    arch,
                    task.train,
                    task.val,
                    proxy_cfg,
                    seed=role_seed("proxy-data", task.seed, k),
                    stage="proxy",
                    rec=rec,
                )
                proxy_acc.append(got.val_top1_pct)
                if got.diverged:
                    diverged.append(k)
                elif got.val_top1_pct > best_acc:
                    best_model, best_acc = got.model, got.val_top1_pct
                times.append(got.train_s)
                acts.append(got.act_mib)
                if got.peak_alloc_mib is not None:
                    peaks.append(got.peak_alloc_mib)
                rec.progress(f"proxy {k + 1}/{len(archs)} {format_arch(arch)}: val {got.val_top1_pct:.2f}%")
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
        if times:
            epochs = proxy_cfg.total_steps(len(task.train)) / max(1, len(task.train) // proxy_cfg.batch_size)
            rec.scalar("proxy_epoch_s", float(np.mean(times)) / epochs)
            rec.scalar("proxy_act_mib", float(np.mean(acts)))
        if peaks:
            rec.scalar("proxy_peak_alloc_mib", float(np.mean(peaks)))
        correlations(proxy_acc, reference, rec, "", cfg, task.seed)
        top = np.argsort(reference)[::-1][: min(cfg.top_k, len(archs))]
        rec.scalar("topk_archs_count", len(top))
        correlations([proxy_acc[t] for t in top], [reference[t] for t in top], rec, "topk", cfg, task.seed)
        best = max((k for k in range(len(archs)) if k not in diverged), key=lambda k: proxy_acc[k])
        rec.note("proxy_best_arch", format_arch(archs[best]))
        rec.scalar("proxy_best_reference_top1_pct", reference[best])
        model = (
            best_model
            if best_model is not None
            else builder.net(archs[best], seed=role_seed("proxy-init", task.seed, best))
        )
        rec.scalar("trainable_params", sum(p.numel() for p in model.parameters() if p.requires_grad))
        return Fitted(model, format_arch(archs[best]), info={"proxy": cfg.transfer.label()})

    def _reference(
        self, task: Task, archs: list[Arch], builder: Builder, table: NatsTable | None, rec: Recorder
    ) -> list[float]:
        """Reference accuracy of every architecture (table, or cached harness training)."""
        cfg = self.config
        if table is not None:
            return [table.accuracy(a, "200", "test-accuracy") for a in archs]
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
