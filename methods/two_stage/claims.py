"""Executable checks of the two-stage paper's claims (data in ``methods/paper_claims.json``).

Suites label entries ``two_stage:<scope>`` and ``last_k:<scope>`` (the vanilla
baseline with the same scope), so checks select by those labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.models.net import SCOPES
from bench.results.claims import AllOf, Compare, Select, Threshold, register_check

ACC = "test_top1_pct"


def _pair(model: str, scope: str, op: str, metric: str = ACC, **kw: Any) -> Compare:
    """two_stage:<scope> vs last_k:<scope> on ``model``, paired by seed."""
    return Compare(
        Select(metric, variant=f"two_stage:{scope}", model=model, **kw),
        Select(metric, variant=f"last_k:{scope}", model=model, **kw),
        op=op,
    )


def _at_every_scope(model: str, op: str) -> AllOf:
    return AllOf(tuple((scope, _pair(model, scope, op)) for scope in SCOPES))


def _scope_order(tolerance: float = 1.0) -> AllOf:
    """small > medium > large ~ full (equivalent within ``tolerance`` points), per model."""
    parts = []
    for model in ("resnet18", "resnet50"):

        def sel(scope: str, model: str = model) -> Select:
            return Select(ACC, variant=f"two_stage:{scope}", model=model)

        parts += [
            (f"{model} small > medium", Compare(sel("small"), sel("medium"), op=">", every=("dataset",))),
            (f"{model} medium > large", Compare(sel("medium"), sel("large"), op=">", every=("dataset",))),
            (
                f"{model} large ~ full",
                Compare(sel("large"), sel("full"), op="~=", tol=tolerance, every=("dataset",)),
            ),
        ]
    return AllOf(tuple(parts))


FULL_SEARCH = "two_stage:full-search-"  # variant prefix of the runs that search until both rules fired


def search_saving(row: Mapping[str, Any]) -> tuple[float, bool] | None:
    """Share of the search time the action stop saves over the reward stop, censored where one never fired.

    ``(t_reward - t_action) / t_reward`` in measured search-stage seconds (``search_action_stop_s``,
    ``search_reward_stop_s``) of a run that searched until both rules fired (``stop_search`` off).
    A stop that never fired counts at the whole search (``search_s``): an action stop that never
    fired gives a saving of at most 0, a reward stop that never fired a saving measured against the
    budget. Either is a censored value, never a dropped cell.
    """
    total = row.get("search_s")
    if total is None or _missing(total):
        return None
    action, reward = (row.get(k) for k in ("search_action_stop_s", "search_reward_stop_s"))
    action_c, reward_c = _missing(action), _missing(reward)
    a = float(total) if action_c else float(action)  # type: ignore[arg-type]  # checked above
    r = float(total) if reward_c else float(reward)  # type: ignore[arg-type]  # checked above
    return (r - a) / r if r else 0.0, action_c or reward_c


def _missing(value: Any) -> bool:
    return value is None or math.isnan(float(value))


register_check("ts-r18-small-final", _pair("resnet18", "small", ">"))
# Iterations to the target: a seed that never reached it counts as reaching it at its budget.
register_check(
    "ts-r18-iters-to-target",
    _pair("resnet18", "small", "<", metric="target_reached_steps", censor_at="target_budget_steps"),
)
register_check(
    "ts-early-stop-saving",
    Threshold(Select("search_saved_frac", variant_prefix=FULL_SEARCH, derive=search_saving), ">", 0.0),
)
register_check("ts-all-scopes", _at_every_scope("resnet18", ">="))
register_check("ts-scope-order", _scope_order())
register_check("ts-r50-gain", _at_every_scope("resnet50", ">"))
