"""Claims: checks decide verdicts from the latest rows; bench claims prints and stores them."""

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.errors import UnknownName
from bench.results import claims
from bench.results.claims import AllOf, Claim, Compare, Each, FirstOf, Ratio, Select, Threshold
from bench.results.store import Store


def frame(rows):
    base = {"suite": "s", "method": None, "status": "ok", "tier": "smoke", "model": "resnet20"}
    out = pd.DataFrame([{**base, **r} for r in rows])
    out["method"] = out["method"].fillna(out["variant"])
    return out


ROWS = (
    [
        {"variant": "two_stage", "dataset": "a", "seed": s, "test_top1_pct": v, "peak_mem_mib": 50.0}
        for s, v in enumerate((90.0, 92.0, 94.0))
    ]
    + [
        {"variant": "last_k", "dataset": "a", "seed": s, "test_top1_pct": v, "peak_mem_mib": 110.0}
        for s, v in enumerate((89.0, 90.0, 91.0))
    ]
    + [
        {"variant": "two_stage", "dataset": "b", "seed": 0, "test_top1_pct": 70.0, "peak_mem_mib": 50.0},
        {"variant": "last_k", "dataset": "b", "seed": 0, "test_top1_pct": 75.0, "peak_mem_mib": 100.0},
    ]
)
CLAIM = Claim(
    id="x",
    paper="p.txt",
    method="two_stage",
    metric="test_top1_pct",
    baseline="last_k",
    paper_value=87.4,
    paper_baseline_value=86.4,
    where="Fig. 3",
)


def test_compare_pairs_by_seed_in_every_group():
    check = Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"), op=">")
    only_a = check(frame([r for r in ROWS if r["dataset"] == "a"]))
    assert only_a.verdict == "reproduced" and only_a.test == "paired t" and only_a.n == 3
    assert (only_a.ours, only_a.baseline, only_a.effect) == (92.0, 90.0, 2.0)
    both = check(frame(ROWS))  # dataset b has one seed: the whole cannot be shown to hold
    assert both.verdict == "inconclusive" and "b, resnet20: n=1 < 3" in both.reason
    with_margin = Compare(check.ours, check.baseline, op=">", margin=2.5)(
        frame([r for r in ROWS if r["dataset"] == "a"])
    )
    assert with_margin.verdict != "reproduced"


def test_compare_on_a_metric_no_row_has_is_no_data():
    out = Compare(
        Select("target_reached_steps", variant="two_stage"), Select("target_reached_steps", variant="last_k"), op="<"
    )(frame(ROWS))
    assert out.verdict is None and "no rows for two_stage.target_reached_steps" in out.detail


def test_ratio_threshold_and_missing_rows():
    f = frame(ROWS)
    ratio = Ratio(Select("peak_mem_mib", variant="last_k"), Select("peak_mem_mib", variant="two_stage"), 2.0)(f)
    assert (
        ratio.verdict == "reproduced" and ratio.test == "paired t" and ratio.effect == pytest.approx(2.166, rel=0.01)
    )  # seed-paired, geometric
    assert Threshold(Select("test_top1_pct", variant="two_stage", dataset="a"), ">=", 99.0)(f).verdict == (
        "not reproduced"
    )
    missing = Threshold(Select("test_top1_pct", variant="nope"), ">", 0)(f)
    assert missing.verdict is None and "no rows for nope.test_top1_pct" in missing.detail


def test_chance_level_cells_are_below_the_floor():
    low = [{**r, "test_top1_pct": r["test_top1_pct"] - 70.0} for r in ROWS if r["dataset"] == "a"]
    out = Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"), op=">")(
        frame(low).assign(chance_pct=10.0)
    )
    assert out.verdict == "inconclusive" and out.reason == "below floor"
    assert "two_stage on a/resnet20 test_top1_pct 22.0 < 30.0 (chance 10.0)" in out.detail


def test_failed_cells_are_counted_and_diverged_ones_count_at_chance():
    rows = [r for r in ROWS if r["dataset"] == "a"]
    failed = frame([{**rows[0], "status": "failed", "test_top1_pct": None}, *rows[1:]]).assign(chance_pct=10.0)
    check = Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"), op=">")
    out = check(failed)
    assert out.verdict == "inconclusive" and out.reason == "cells not ok" and "1 failed" in out.detail
    # a diverged seed of two_stage counts as chance accuracy: the method now loses on average
    diverged = frame([{**rows[0], "status": "diverged", "test_top1_pct": None}, *rows[1:]]).assign(chance_pct=10.0)
    out = check(diverged)
    assert out.n == 3 and out.ours == pytest.approx((10.0 + 92.0 + 94.0) / 3)
    skipped = frame([*rows, {**rows[0], "seed": 9, "status": "skipped", "test_top1_pct": None}])
    assert check(skipped).n == 3


def test_censored_iterations_to_target_count_at_the_budget():
    rows = [
        *({"variant": "two_stage", "dataset": "a", "seed": s, "target_budget_steps": 100.0} for s in range(3)),
        *(
            {"variant": "last_k", "dataset": "a", "seed": s, "target_reached_steps": v, "target_budget_steps": 100.0}
            for s, v in enumerate((40.0, 50.0, 45.0))
        ),
    ]
    check = Compare(
        Select("target_reached_steps", variant="two_stage", censor_at="target_budget_steps"),
        Select("target_reached_steps", variant="last_k", censor_at="target_budget_steps"),
        op="<",
    )
    out = check(frame(rows))
    assert out.verdict == "not reproduced" and out.n_censored == 3 and out.ours == 100.0


def test_speed_claims_say_they_need_speed_mode_rows():
    f = frame(ROWS).assign(mode="accuracy")
    out = Ratio(
        Select("peak_mem_mib", variant="last_k", mode="speed"),
        Select("peak_mem_mib", variant="two_stage", mode="speed"),
        1.0,
    )(f)
    assert out.verdict is None and "timing claims read speed-mode rows only: run with --bench-mode speed" in out.detail


def test_all_of_and_first_of():
    # two_stage beats last_k by ~5 points on every seed: significant even after Bonferroni over two parts
    f = frame([{**r, "test_top1_pct": r["test_top1_pct"] + (5 if r["variant"] == "two_stage" else 0)} for r in ROWS])
    f = f[f["dataset"] == "a"]
    good = Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"), op=">")
    bad = Compare(Select("test_top1_pct", variant="last_k"), Select("test_top1_pct", variant="two_stage"), op=">")
    assert AllOf((("good", good), ("bad", bad)))(f).verdict == "not reproduced"
    nothing = Compare(Select("nope_pct", variant="x"), Select("nope_pct", variant="y"))
    assert AllOf((("good", good), ("none", nothing)))(f).reason == "no data for none"
    assert FirstOf((nothing, good))(f).verdict == "reproduced"
    assert Each(lambda fr: [], "nothing here")(f).verdict is None


def test_evaluate_per_tier_and_not_yet_measured():
    f = pd.concat([frame(ROWS), frame(ROWS).assign(tier="short")])
    check = Compare(
        Select("test_top1_pct", variant="two_stage", dataset="a"),
        Select("test_top1_pct", variant="last_k", dataset="a"),
    )
    rows = claims.evaluate(f, [CLAIM, Claim(id="y", paper="p", method="m", metric="q")], {"x": check})
    got = {(r.claim.id, r.tier): (r.verdict, r.reason) for r in rows}
    assert got == {
        ("x", "short"): ("reproduced", ""),
        ("x", "smoke"): ("reproduced", ""),
        ("y", "any"): ("inconclusive", "no data"),
    }
    tiered = Claim(**{**CLAIM.__dict__, "tier": "paper"})
    rows = claims.evaluate(f, [tiered], {"x": check})
    assert [(r.tier, r.verdict, r.reason) for r in rows] == [("paper", "inconclusive", "no data")]
    assert "no matching results" in rows[0].outcome.detail


def test_a_raising_check_is_reported_not_fatal():
    def broken(rows):
        raise KeyError("target_reached_steps")

    with pytest.warns(RuntimeWarning, match="claim check x failed at tier smoke"):
        rows = claims.evaluate(frame(ROWS), [CLAIM], {"x": broken})
    assert [(r.tier, r.verdict, r.reason) for r in rows] == [("any", "inconclusive", "check raised")]
    assert "check raised x@smoke: KeyError" in rows[0].outcome.detail


def test_paper_claims_are_registered_as_data():
    ids = claims.CLAIMS.names()
    data = json.loads((Path(__file__).resolve().parent.parent / "methods" / "paper_claims.json").read_text())
    assert len(data["claims"]) == 27 and set(ids) >= {c["id"] for c in data["claims"]}
    c = claims.CLAIMS.get("ts-r18-small-final")
    assert (c.paper_value, c.paper_baseline_value, c.baseline, c.metric) == (87.4, 86.4, "last_k", "test_top1_pct")
    assert claims.CLAIMS.get("tr-rank-random").paper_value["cifar10"] == [0.7883, 0.9381]


def test_register_check_refuses_a_second_check_and_an_unknown_claim():
    claims.CLAIMS.register("zz-test-only", CLAIM)
    check = Threshold(Select("x_pct", variant="v"), ">", 0)
    claims.register_check("zz-test-only", check)
    try:
        with pytest.raises(ValueError, match="already has a check"):
            claims.register_check("zz-test-only", check)
    finally:
        claims.CHECKS.pop("zz-test-only")
        claims.CLAIMS.unregister("zz-test-only")
    with pytest.raises(UnknownName, match="unknown claim 'ts-r18-smal-final'. Did you mean 'ts-r18-small-final'"):
        claims.register_check("ts-r18-smal-final", check)


def test_bench_claims_writes_the_table(tmp_path, capsys):
    db = tmp_path / "r.db"
    with Store(db) as store:
        run = store.start_run({"tier": "smoke"})
        for r in ROWS[:6]:
            spec = CellSpec(
                suite="s",
                method=r["variant"],
                variant=r["variant"],
                dataset=r["dataset"],
                model="resnet20",
                seed=r["seed"],
            )
            store.write_result(run, CellResult(spec=spec, status="ok", metrics={"test_top1_pct": r["test_top1_pct"]}))
    claims.CLAIMS.register("zz-demo", CLAIM.__class__(**{**CLAIM.__dict__, "id": "zz-demo"}))
    claims.register_check(
        "zz-demo",
        Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"), op=">"),
    )
    try:
        assert main(["claims", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "1 reproduced" in out and "zz-demo" in out and "87.4 vs 86.4" in out
        con = sqlite3.connect(db)
        row = con.execute(
            "SELECT verdict, ours_value, ours_baseline_value, tier, paper_value, n_seeds, effect, test, reason "
            "FROM claims WHERE claim_id = 'zz-demo'"
        ).fetchone()
        assert row == ("reproduced", 92.0, 90.0, "smoke", "87.4", 3, 2.0, "paired t", "")
        lo, hi, p = con.execute("SELECT ci_low, ci_high, p_value FROM claims WHERE claim_id = 'zz-demo'").fetchone()
        assert lo < 2.0 < hi and p < 0.05
        n = len(claims.CLAIMS.names())  # the registered claims, zz-demo among them
        assert con.execute("SELECT count(*) FROM claims WHERE reason = 'no data'").fetchone()[0] == n - 1
        assert main(["claims", "--db", str(db)]) == 0  # replaced: no duplicates on re-evaluation
        assert con.execute("SELECT count(*) FROM claims").fetchone()[0] == n
    finally:
        claims.CHECKS.pop("zz-demo")
        claims.CLAIMS.unregister("zz-demo")
