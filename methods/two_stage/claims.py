"""Executable checks of the two-stage paper's claims (data in ``methods/paper_claims.json``).

Suites label entries ``two_stage:<scope>`` and ``last_k:<scope>`` (the vanilla
baseline with the same scope), so checks select by those labels.
"""

from __future__ import annotations

import pandas as pd

from bench.models.net import SCOPES
from bench.results.claims import Compare, Custom, Outcome, Select, register_check

ACC = "test_top1_pct"


def _means(frame: pd.DataFrame, method: str, model: str, metric: str = ACC) -> dict[str, float]:
    """Seed-mean ``metric`` per scope for ``<method>:<scope>`` rows of ``model``."""
    out = {}
    for scope in SCOPES:
        rows = Select(metric, variant=f"{method}:{scope}", model=model).rows(frame)
        if not rows.empty:
            out[scope] = float(rows[metric].mean())
    return out


def _beats_at_every_scope(model: str, strict: bool) -> Custom:
    def check(frame: pd.DataFrame) -> Outcome:
        ours, base = _means(frame, "two_stage", model), _means(frame, "last_k", model)
        scopes = [s for s in SCOPES if s in ours and s in base]
        if not scopes:
            return Outcome(None, detail=f"no two_stage/last_k pairs for {model}")
        gains = {s: ours[s] - base[s] for s in scopes}
        holds = all(g > 0 if strict else g >= 0 for g in gains.values())
        detail = "; ".join(f"{s}: {ours[s]:.2f} vs {base[s]:.2f}" for s in scopes)
        return Outcome(holds, max(gains.values()), None, 0, detail + f" (largest gain {max(gains.values()):.2f})")

    return Custom(check, f"two_stage {'>' if strict else '>='} last_k at every scope ({model})")


def _scope_order(frame: pd.DataFrame, tolerance: float = 1.0) -> Outcome:
    """small > medium > large ~ full (within ``tolerance`` points) for every model with all four."""
    details, verdicts = [], []
    for model in ("resnet18", "resnet50"):
        means = _means(frame, "two_stage", model)
        if len(means) < len(SCOPES):
            continue
        ok = means["small"] > means["medium"] > means["large"] and abs(means["large"] - means["full"]) <= tolerance
        verdicts.append(ok)
        details.append(f"{model}: " + " / ".join(f"{s} {means[s]:.2f}" for s in SCOPES))
    if not verdicts:
        return Outcome(None, detail="needs two_stage at all four scopes for a model")
    return Outcome(all(verdicts), None, None, 0, "; ".join(details))


def _early_stop(frame: pd.DataFrame) -> Outcome:
    rows = Select("search_saved_frac", method="two_stage").rows(frame)
    if rows.empty:
        return Outcome(None, detail="no cell measured both stopping points")
    saved = float(rows["search_saved_frac"].mean())
    no_later = bool((rows["search_saved_frac"] >= 0).all())
    return Outcome(
        no_later and saved > 0,
        saved,
        None,
        len(rows),
        f"mean saving {saved:.3f} over {len(rows)} cells; action stop no later than reward stop: {no_later}",
    )


register_check(
    "ts-r18-small-final",
    Compare(
        Select(ACC, variant="two_stage:small", model="resnet18"),
        Select(ACC, variant="last_k:small", model="resnet18"),
        op=">",
    ),
)
register_check(
    "ts-r18-iters-to-target",
    Compare(
        Select("target_reached_steps", variant="two_stage:small", model="resnet18"),
        Select("target_reached_steps", variant="last_k:small", model="resnet18"),
        op="<",
    ),
)
register_check("ts-early-stop-saving", Custom(_early_stop, "action stop no later than reward stop, saving > 0"))
register_check("ts-all-scopes", _beats_at_every_scope("resnet18", strict=False))
register_check("ts-scope-order", Custom(_scope_order, "small > medium > large ~ full"))
register_check("ts-r50-gain", _beats_at_every_scope("resnet50", strict=True))
