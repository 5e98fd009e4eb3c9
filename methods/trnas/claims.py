"""Executable checks of the Tr-NAS claims (data in ``methods/paper_claims.json``).

The suite labels cells ``<method>:<proxy>`` (``original``, ``tr_5_5``, ``tr_10_10``,
``tr_5_5_w0`` for the no-warmup point, ``<kind>_<proxy>`` for memory). Memory checks read
the CUDA allocator's peak (``*_peak_alloc_mib``) where a tier has it, else the saved
activation bytes of one training batch (``*_act_mib``, the CPU tiers' measure).
"""

from __future__ import annotations

import pandas as pd

from bench.results.claims import Compare, Custom, Outcome, Select, register_check

RANK = "trnas_rank"


def _all(*checks: Compare) -> Custom:
    """Every one of ``checks`` holds (unmeasured when any is unmeasured)."""

    def check(frame: pd.DataFrame) -> Outcome:
        outs = [c(frame) for c in checks]
        if any(o.holds is None for o in outs):
            return Outcome(None, detail="; ".join(o.detail for o in outs if o.holds is None))
        detail = " | ".join(f"{c.ours.metric}: {o.detail}" for c, o in zip(checks, outs))
        return Outcome(all(o.holds for o in outs), outs[0].ours, outs[0].baseline, min(o.n_seeds for o in outs), detail)

    return Custom(check, " and ".join(f"{c.ours.variant}.{c.ours.metric} {c.op} {c.baseline.variant}" for c in checks))


def _rank_gain(ours: str, base: str, metrics: tuple[str, ...], op: str = ">=") -> Custom:
    return _all(
        *[Compare(Select(m, variant=f"{RANK}:{ours}"), Select(m, variant=f"{RANK}:{base}"), op=op) for m in metrics]
    )


def _memory_ratio(num: str, den: str, metric: str, at_least: float) -> Custom:
    """mean(num) / mean(den) of ``<metric>_peak_alloc_mib`` (CUDA) or else ``<metric>_act_mib``."""

    def check(frame: pd.DataFrame) -> Outcome:
        for name in (f"{metric}_peak_alloc_mib", f"{metric}_act_mib"):
            a, b = Select(name, variant=num).rows(frame), Select(name, variant=den).rows(frame)
            if not a.empty and not b.empty:
                ratio = float(a[name].mean()) / float(b[name].mean())
                return Outcome(
                    ratio >= at_least,
                    ratio,
                    None,
                    min(len(a), len(b)),
                    f"{name}: {float(a[name].mean()):.4g} / {float(b[name].mean()):.4g} = {ratio:.2f} "
                    f"(needs >= {at_least:g})",
                )
        return Outcome(None, detail=f"no {metric} memory rows for {num} and {den}")

    return Custom(check, f"{num} / {den} memory >= {at_least:g}")


def _dartspt_cost(frame: pd.DataFrame) -> Outcome:
    """Transfer search faster (search_s) and >= 2x less supernet memory."""
    num, den = "trnas_dartspt:original", "trnas_dartspt:tr_5_5"
    a, b = Select("search_s", variant=num).rows(frame), Select("search_s", variant=den).rows(frame)
    if a.empty or b.empty:
        return Outcome(None, detail="no DARTS+PT rows for original and tr_5_5")
    speedup = float(a["search_s"].mean()) / float(b["search_s"].mean())
    mem = _memory_ratio(num, den, "search", 2.0)(frame)
    holds = None if mem.holds is None else (speedup > 1.0 and mem.holds)
    return Outcome(holds, speedup, None, mem.n_seeds, f"search speed-up {speedup:.2f}x (paper 1.98x); {mem.detail}")


def _warmup(frame: pd.DataFrame) -> Outcome:
    """No warmup is below Original, 13 epochs (the plain ``tr_5_5`` cell) above it, and where the
    tier ran the rest of Fig. 7's axis (``tr_5_5_w<n>``), 13 is its peak."""
    m = "krocc_tau"
    rows = {v: Select(m, variant=f"{RANK}:{v}").rows(frame) for v in ("original", "tr_5_5_w0", "tr_5_5")}
    if any(r.empty for r in rows.values()):
        return Outcome(None, detail="needs trnas_rank original, tr_5_5_w0 and tr_5_5")
    o, w0, w = (float(rows[v][m].mean()) for v in ("original", "tr_5_5_w0", "tr_5_5"))
    axis = {13: w}
    for variant in frame["variant"].dropna().unique():
        head, _, n = str(variant).rpartition("_w")
        if head == f"{RANK}:tr_5_5" and n.isdigit():
            axis[int(n)] = float(Select(m, variant=variant).rows(frame)[m].mean())
    peak = max(axis, key=axis.get)  # type: ignore[arg-type]  # dict.get may return None; every key is present
    holds = w0 < o < w and (len(axis) <= 2 or peak == 13)
    curve = ", ".join(f"n={n}: {axis[n]:.3f}" for n in sorted(axis))
    return Outcome(
        holds,
        w,
        o,
        min(len(r) for r in rows.values()),
        f"KROCC original {o:.3f}; Tr-5-5 by warmup epochs {curve} (peak at n={peak})",
    )


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
register_check("tr-dartspt-cost", Custom(_dartspt_cost, "transfer search faster and >= 2x less supernet memory"))
register_check("tr-10-10-worse", _rank_gain("tr_10_10", "original", ("krocc_tau",), op="<"))
register_check("tr-warmup-peak", Custom(_warmup, "no warmup below original; 13-epoch warmup above it"))
