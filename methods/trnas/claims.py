"""Executable checks of the Tr-NAS claims (data in ``methods/paper_claims.json``).

The suite labels cells ``<method>:<proxy>`` (``original``, ``tr_5_5``, ``tr_10_10``,
``tr_5_5_w0`` for the no-warmup point, ``<kind>_<proxy>`` for memory). Memory checks read
the CUDA allocator's peak (``*_peak_alloc_mib``) where a tier has it, else the saved
activation bytes of one training batch (``*_act_mib``, the CPU tiers' measure, an exact count).
Rank correlations are floored on ``proxy_best_reference_top1_pct``: when even the best
reference network is near chance, its ranking is noise and the verdict is inconclusive.
Timing (``search_s``) is read from speed-mode rows only.
"""

from __future__ import annotations

import pandas as pd

from bench.results.claims import AllOf, Check, Compare, Each, FirstOf, Ratio, Select, register_check

RANK = "trnas_rank"
RANK_FLOOR = "proxy_best_reference_top1_pct"


def _rank(metric: str, variant: str) -> Select:
    return Select(metric, variant=f"{RANK}:{variant}", floor_on=RANK_FLOOR)


def _rank_gain(ours: str, base: str, metrics: tuple[str, ...], op: str = ">=") -> AllOf:
    """``ours op base`` on every metric, per dataset and model, paired by seed."""
    return AllOf(tuple((m, Compare(_rank(m, ours), _rank(m, base), op=op)) for m in metrics))


def _memory_ratio(num: str, den: str, metric: str, at_least: float) -> FirstOf:
    """``<metric>_peak_alloc_mib`` (CUDA) ratio where a tier has it, else the exact ``<metric>_act_mib``."""
    return FirstOf(
        (
            Ratio(
                Select(f"{metric}_peak_alloc_mib", variant=num),
                Select(f"{metric}_peak_alloc_mib", variant=den),
                at_least,
            ),
            Ratio(
                Select(f"{metric}_act_mib", variant=num), Select(f"{metric}_act_mib", variant=den), at_least, exact=True
            ),
        )
    )


def _warmup_axis(frame: pd.DataFrame) -> list[tuple[str, Check]]:
    """Fig. 7: no warmup below Original, 13 epochs (``tr_5_5``) above it, and 13 the peak of the axis run."""
    m = "krocc_tau"
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
register_check("tr-memory", _memory_ratio("trnas_memory:net_original", "trnas_memory:net_tr_5_5", "mem", 2.0))
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
            ("memory >= 2x", _memory_ratio("trnas_dartspt:original", "trnas_dartspt:tr_5_5", "search", 2.0)),
        )
    ),
)
register_check("tr-10-10-worse", _rank_gain("tr_10_10", "original", ("krocc_tau",), op="<"))
register_check("tr-warmup-peak", Each(_warmup_axis, "no warmup below original; 13-epoch warmup above it"))
