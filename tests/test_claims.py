"""Claims: checks decide verdicts from the latest rows; bench claims prints and stores them."""

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.results import claims
from bench.results.claims import Claim, Compare, Custom, Outcome, Ratio, Select, Threshold
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


def test_compare_every_group_must_hold():
    check = Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"))
    out = check(frame(ROWS))
    assert (
        out.holds is False and "b, resnet20: 70 vs 75 FAILS" in out.detail and "a, resnet20: 92 vs 90 ok" in out.detail
    )
    only_a = check(frame([r for r in ROWS if r["dataset"] == "a"]))
    assert only_a.holds is True and only_a.ours == 92.0 and only_a.baseline == 90.0 and only_a.n_seeds == 3
    with_margin = Compare(check.ours, check.baseline, op=">", margin=2.5)(
        frame([r for r in ROWS if r["dataset"] == "a"])
    )
    assert with_margin.holds is False


def test_compare_on_a_metric_no_row_has_is_not_measured():
    out = Compare(
        Select("target_reached_steps", variant="two_stage"), Select("target_reached_steps", variant="last_k"), op="<"
    )(frame(ROWS))
    assert out.holds is None and "no rows for two_stage.target_reached_steps" in out.detail


def test_ratio_threshold_custom_and_missing_rows():
    f = frame(ROWS)
    ratio = Ratio(Select("peak_mem_mib", variant="last_k"), Select("peak_mem_mib", variant="two_stage"), 2.0)(f)
    assert ratio.holds is True and ratio.ours == pytest.approx(107.5 / 50.0)
    assert Threshold(Select("test_top1_pct", variant="two_stage", dataset="a"), ">=", 92.5)(f).holds is False
    assert Custom(lambda fr: Outcome(True, 1.0, detail="custom"))(f).detail == "custom"
    missing = Threshold(Select("test_top1_pct", variant="nope"), ">", 0)(f)
    assert missing.holds is None and "no rows for nope.test_top1_pct" in missing.detail
    failed = frame([{**ROWS[0], "status": "failed"}])
    assert Threshold(Select("test_top1_pct", variant="two_stage"), ">", 0)(failed).holds is None


def test_evaluate_per_tier_and_not_yet_measured():
    f = pd.concat([frame(ROWS), frame(ROWS).assign(tier="short")])
    check = Compare(
        Select("test_top1_pct", variant="two_stage", dataset="a"),
        Select("test_top1_pct", variant="last_k", dataset="a"),
    )
    rows = claims.evaluate(f, [CLAIM, Claim(id="y", paper="p", method="m", metric="q")], {"x": check})
    got = {(r.claim.id, r.tier): r.verdict for r in rows}
    assert got == {("x", "short"): "reproduced", ("x", "smoke"): "reproduced", ("y", "any"): "not yet measured"}
    tiered = Claim(**{**CLAIM.__dict__, "tier": "paper"})
    rows = claims.evaluate(f, [tiered], {"x": check})
    assert [(r.tier, r.verdict) for r in rows] == [("paper", "not yet measured")]
    assert "no matching results" in rows[0].outcome.detail


def test_a_raising_check_is_reported_not_fatal():
    def broken(rows):
        raise KeyError("target_reached_steps")

    with pytest.warns(RuntimeWarning, match="claim check x failed at tier smoke"):
        rows = claims.evaluate(frame(ROWS), [CLAIM], {"x": broken})
    assert [(r.tier, r.verdict) for r in rows] == [("any", "not yet measured")]
    assert "check raised x@smoke: KeyError" in rows[0].outcome.detail


def test_paper_claims_are_registered_as_data():
    ids = claims.CLAIMS.names()
    data = json.loads((Path(__file__).resolve().parent.parent / "methods" / "paper_claims.json").read_text())
    assert len(data["claims"]) == 26 and set(ids) >= {c["id"] for c in data["claims"]}
    c = claims.CLAIMS.get("ts-r18-small-final")
    assert (c.paper_value, c.paper_baseline_value, c.baseline, c.metric) == (87.4, 86.4, "last_k", "test_top1_pct")
    assert claims.CLAIMS.get("tr-rank-random").paper_value["cifar10"] == [0.7883, 0.9381]


def test_register_check_refuses_a_second_check():
    claims.register_check("zz-test-only", Custom(lambda f: Outcome(None)))
    try:
        with pytest.raises(ValueError, match="already has a check"):
            claims.register_check("zz-test-only", Custom(lambda f: Outcome(None)))
    finally:
        claims.CHECKS.pop("zz-test-only")


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
        "zz-demo", Compare(Select("test_top1_pct", variant="two_stage"), Select("test_top1_pct", variant="last_k"))
    )
    try:
        assert main(["claims", "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert "1 reproduced" in out and "zz-demo" in out and "87.4 vs 86.4" in out
        con = sqlite3.connect(db)
        row = con.execute(
            "SELECT verdict, ours_value, ours_baseline_value, tier, paper_value, n_seeds "
            "FROM claims WHERE claim_id = 'zz-demo'"
        ).fetchone()
        assert row == ("reproduced", 92.0, 90.0, "smoke", "87.4", 3)
        assert con.execute("SELECT count(*) FROM claims WHERE verdict = 'not yet measured'").fetchone()[0] == 26
        assert main(["claims", "--db", str(db)]) == 0  # upsert: no duplicates on re-evaluation
        assert con.execute("SELECT count(*) FROM claims").fetchone()[0] == 27
    finally:
        claims.CHECKS.pop("zz-demo")
        claims.CLAIMS.unregister("zz-demo")
