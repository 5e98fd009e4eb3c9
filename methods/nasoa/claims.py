"""Executable checks of the NASOA paper's claims (data in ``methods/paper_claims.json``).

Suite labels: ``nasoa:<search>-t<k>`` (search gen / fixed_mlp / rs / bohb over the zoo, and
Table 4's rs_hpo / bohb_hpo / rs_regnet / bohb_regnet / oa_regnet; budget index k) and
``nasoa_steptime:table2`` (Table 2 columns as ``<model>_train_step_ms``).
"""

from __future__ import annotations

import pandas as pd

from bench.results.claims import AllOf, Check, Compare, Each, Ratio, Select, register_check

ACC = "test_top1_pct"
BUDGETS = range(4)


def _step_ratio(baseline: str, ours: str, at_least: float) -> Ratio:
    """Table 2: step time of ``baseline`` / ``ours`` >= ``at_least``, from speed-mode rows only."""
    return Ratio(
        Select(f"{baseline}_train_step_ms", method="nasoa_steptime", mode="speed"),
        Select(f"{ours}_train_step_ms", method="nasoa_steptime", mode="speed"),
        bound=at_least,
    )


def _table3(segment: str) -> Each:
    """Table 3: the adaptive MLP's MAE below every fixed depth's, on the same stream (paired by seed)."""

    def parts(frame: pd.DataFrame) -> list[tuple[str, Check]]:
        suffix = f"_{segment}_mae"
        names = sorted(c for c in frame.columns if c.startswith("t3_") and c.endswith(suffix))
        ours = f"t3_adaptive{suffix}"
        if ours not in names:
            return []
        # Every zoo cell of a seed records the same Table 3 (its stream), so the seeds pair.
        sel = lambda m: Select(m, variant_prefix="nasoa:gen-")  # noqa: E731 - one-line selector
        return [(n[3 : -len(suffix)], Compare(sel(ours), sel(n), op="<", every=())) for n in names if n != ours]

    return Each(parts, f"adaptive MLP has the lowest {segment} MAE")


def _budgets(frame: pd.DataFrame, a: str, b: str) -> list[int]:
    labels = set(frame["variant"].dropna().astype(str)) if "variant" in frame else set()
    return [k for k in BUDGETS if f"nasoa:{a}-t{k}" in labels and f"nasoa:{b}-t{k}" in labels]


def _per_budget(baseline: str, op: str, tol: float | None = None) -> Each:
    """``nasoa:gen-t<k> op nasoa:<baseline>-t<k>`` at every budget k with both sides."""

    def parts(frame: pd.DataFrame) -> list[tuple[str, Check]]:
        return [
            (
                f"t{k}",
                Compare(
                    Select(ACC, variant=f"nasoa:gen-t{k}"),
                    Select(ACC, variant=f"nasoa:{baseline}-t{k}"),
                    op=op,
                    tol=tol,
                ),
            )
            for k in _budgets(frame, "gen", baseline)
        ]

    return Each(parts, f"nasoa:gen vs nasoa:{baseline} per budget")


def _search_cost(baseline: str, at_least: float) -> Each:
    """Search cost (device-seconds, speed-mode rows) of ``baseline`` / nasoa >= ``at_least`` at every budget."""

    def parts(frame: pd.DataFrame) -> list[tuple[str, Check]]:
        return [
            (
                f"t{k} cost",
                Ratio(
                    Select("search_cost_s", variant=f"nasoa:{baseline}-t{k}", mode="speed"),
                    Select("search_cost_s", variant=f"nasoa:gen-t{k}", mode="speed"),
                    bound=at_least,
                ),
            )
            for k in _budgets(frame, "gen", baseline)
        ]

    return Each(parts, f"search cost {baseline} / nasoa")


register_check("nasoa-step-G-vs-regnety16gf", _step_ratio("tv_regnet_y_16gf", "etnas_g", 4.0))
register_check("nasoa-step-I-vs-effb3", _step_ratio("tv_efficientnet_b3", "etnas_i", 1.4))
register_check("nasoa-hedge-mae-all", _table3("all"))
register_check("nasoa-hedge-mae-late", _table3("80_100"))
# "within 1 point of BOHB at 1/40 of its cost": accuracy no worse than BOHB's by more than one
# point at every budget, and BOHB's search cost at least 40x NASOA's.
register_check(
    "nasoa-vs-bohb-cost",
    AllOf((("accuracy", _per_budget("bohb", ">=", tol=1.0)), ("cost", _search_cost("bohb", 40.0)))),
)
register_check("nasoa-online-vs-offline", _per_budget("fixed_mlp", ">"))
# Fig. 6: the zoo against the RegNetY series under the same budget and search (oa_regnet), at every budget.
register_check("nasoa-zoo-vs-regnet", _per_budget("oa_regnet", ">="))
