"""Executable checks of the Tr-NAS claims (data in ``methods/paper_claims.json``).

The suite labels cells ``<method>:<proxy>`` (``original``, ``tr_5_5``, ``tr_10_10``,
``tr_5_5_w0`` for the no-warmup point, ``<kind>_<proxy>`` for memory). The paper's memory
figures are GPU figures: ``tr-memory`` (Table 2) and the memory half of ``tr-dartspt-cost``
(Fig. 6) read the ``trnas_memory`` cells' average allocated memory (``mem_avg_alloc_mib``, fp32
NCHW, CUDA only: networks at batch 256, supernets at batch 128, never the DARTS+PT search rows,
which run at the search's batch and precision with the projection included). Rows that ran
without CUDA carry no such figure: the claim is then ``inconclusive (not a GPU figure)``, never
judged from a CPU stand-in. The saved-activation bytes (``mem_act_mib``, an exact count on any
device) are their own claim, ``tr-memory-saved-act``. The detail of a GPU memory verdict adds the
per-architecture ratio the Tr-Net cell measured against the same architectures without transfer,
with its bootstrap CI over the architectures, and the peak's ratio.
Rank correlations are floored on ``proxy_best_reference_top1_pct``: when even the best
reference network is near chance, its ranking is noise and the verdict is inconclusive.
Timing (``search_s``) is read from speed-mode rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from bench.results.claims import (
    AllOf,
    Check,
    Compare,
    Each,
    FirstOf,
    Outcome,
    Ratio,
    Select,
    inconclusive,
    register_check,
)

RANK = "trnas_rank"
RANK_FLOOR = "proxy_best_reference_top1_pct"


def _rank(metric: str, variant: str) -> Select:
    return Select(metric, variant=f"{RANK}:{variant}", floor_on=RANK_FLOOR)


def _rank_gain(ours: str, base: str, metrics: tuple[str, ...], op: str = ">=") -> AllOf:
    """``ours op base`` on every metric, per dataset and model, paired by seed."""
    return AllOf(tuple((m, Compare(_rank(m, ours), _rank(m, base), op=op)) for m in metrics))


MEMORY = "trnas_memory"
NOT_GPU = "not a GPU figure"


@dataclass(frozen=True)
class GpuFigure(FirstOf):
    """``FirstOf(checks)`` on CUDA-only metrics that says why a CPU tier has no value.

    When no check has data but every selection in ``cells`` has ``ok`` rows (the cells ran, on a
    device without the CUDA allocator), the outcome is ``inconclusive (not a GPU figure)`` instead
    of no data. With data, ``note(frame)`` is appended to the verdict's detail.
    """

    cells: tuple[Select, ...] = ()
    note: Callable[[pd.DataFrame], str] | None = None

    def __call__(self, frame: pd.DataFrame) -> Outcome:
        out = FirstOf.__call__(self, frame)
        if out.verdict is None:
            ran = [sel.matching(frame) for sel in self.cells]
            ran = [rows[rows["status"] == "ok"] for rows in ran]
            if self.cells and all(not rows.empty for rows in ran):
                devices = sorted({str(d) for rows in ran for d in rows.get("device", pd.Series(["?"]))})
                return inconclusive(
                    NOT_GPU,
                    f"{', '.join(s.describe() for s in self.cells)}: no value on {', '.join(devices)} rows "
                    "(the CUDA allocator's figure; saved activations are claim tr-memory-saved-act)",
                )
            return out
        extra = self.note(frame) if self.note is not None else ""
        return replace(out, detail="; ".join(t for t in (out.detail, extra) if t)) if extra else out


def _paired_note(variant: str) -> Callable[[pd.DataFrame], str]:
    """The Tr cell's own Original / Tr ratios over the same architectures, with bootstrap CIs."""

    def note(frame: pd.DataFrame) -> str:
        rows = frame[(frame["variant"] == variant) & (frame["status"] == "ok")] if "variant" in frame else frame
        parts = []
        for fig in ("avg_alloc", "peak_alloc"):
            col = f"mem_{fig}_ratio"
            if col not in rows or rows[col].dropna().empty:
                continue
            have = rows[rows[col].notna()]
            text = f"{fig} {have[col].mean():.3g}"
            lo, hi = f"mem_{fig}_lo_ratio", f"mem_{fig}_hi_ratio"
            if lo in have and hi in have and have[lo].notna().all():
                text += f" [{have[lo].mean():.3g}, {have[hi].mean():.3g}]"
            parts.append(text)
        if not parts:
            return ""
        return (
            f"per-architecture Original / Tr ratio in {variant} (bootstrap 95% CI over architectures, mean over "
            f"{len(rows)} cell(s)): " + ", ".join(parts)
        )

    return note


def _gpu_memory_ratio(kind: str, at_least: float) -> GpuFigure:
    """Original / Tr-5-5 average allocated memory of the ``trnas_memory`` ``kind`` cells, per dataset."""
    num, den = f"{MEMORY}:{kind}_original", f"{MEMORY}:{kind}_tr_5_5"
    metric = "mem_avg_alloc_mib"
    ratio = Ratio(Select(metric, variant=num), Select(metric, variant=den), at_least, every=("dataset",))
    return GpuFigure((ratio,), cells=(Select(metric, variant=num), Select(metric, variant=den)), note=_paired_note(den))


def _saved_act_ratio(kind: str, at_least: float) -> Ratio:
    """Original / Tr-5-5 saved-activation bytes (exact counts, any device) of the ``kind`` cells."""
    sel = lambda v: Select("mem_act_mib", variant=f"{MEMORY}:{kind}_{v}")  # noqa: E731
    return Ratio(sel("original"), sel("tr_5_5"), at_least, every=("dataset",), exact=True)


def _warmup_axis(frame: pd.DataFrame) -> list[tuple[str, Check]]:
    """Fig. 7: no warmup below Original, 13 epochs (``tr_5_5``) above it, and 13 the peak of the axis run.

    Only where the axis was run (a ``tr_5_5_w0`` row): without it ``tr_5_5`` vs Original is Table 1's
    comparison (``tr-rank-random``), not evidence about warmup, so the claim has no data there."""
    m = "krocc_tau"
    variants = set(frame["variant"].dropna().astype(str)) if "variant" in frame else set()
    if f"{RANK}:tr_5_5_w0" not in variants:
        return []
    parts: list[tuple[str, Check]] = [
        ("w0 < original", Compare(_rank(m, "tr_5_5_w0"), _rank(m, "original"), op="<")),
        ("w13 > original", Compare(_rank(m, "tr_5_5"), _rank(m, "original"), op=">")),
    ]
    for variant in sorted(frame["variant"].dropna().astype(str).unique()) if "variant" in frame else []:
        head, _, n = variant.rpartition("_w")
        if head == f"{RANK}:tr_5_5" and n.isdigit() and n != "0":
            parts.append((f"w13 >= w{n}", Compare(_rank(m, "tr_5_5"), _rank(m, f"tr_5_5_w{n}"), op=">=")))
    return parts


register_check("tr-rank-random", _rank_gain("tr_5_5", "original", ("krocc_tau", "srocc_rho")))
register_check("tr-rank-topk", _rank_gain("tr_5_5", "original", ("krocc_topk_tau", "srocc_topk_rho")))
register_check("tr-memory", _gpu_memory_ratio("net", 2.0))
register_check(
    "tr-memory-saved-act",
    AllOf((("networks", _saved_act_ratio("net", 2.0)), ("supernets", _saved_act_ratio("supernet", 2.0)))),
)
register_check(
    "tr-dartspt-accuracy",
    Compare(
        Select("test_top1_pct", variant="trnas_dartspt:tr_5_5"),
        Select("test_top1_pct", variant="trnas_dartspt:original"),
        op=">=",
    ),
)
register_check(
    "tr-dartspt-cost",
    AllOf(
        (
            (
                "search faster",
                Ratio(
                    Select("search_s", variant="trnas_dartspt:original", mode="speed"),
                    Select("search_s", variant="trnas_dartspt:tr_5_5", mode="speed"),
                    1.0,
                    op=">",
                ),
            ),
            ("supernet memory >= 2x", _gpu_memory_ratio("supernet", 2.0)),
        )
    ),
)
register_check("tr-10-10-worse", _rank_gain("tr_10_10", "original", ("krocc_tau",), op="<"))
register_check("tr-warmup-peak", Each(_warmup_axis, "no warmup below original; 13-epoch warmup above it"))
