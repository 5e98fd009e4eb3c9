"""``bench gate`` and ``bench reference export`` on databases built directly through the Store.

Each test writes small runs (no training), runs the command through ``bench.cli.dispatch.main``
and checks the exit status, the verdict of each cell and what was written.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.gate.reference_file import FORMAT, read_reference
from bench.gate.settings import GateSettings, load_config
from bench.results.stats import bh_adjust, paired_one_sided_p
from bench.results.store import Store

ROOT = Path(__file__).resolve().parent.parent
FLAGS = {"deterministic_algorithms": True, "cudnn_benchmark": False}
RUN = {
    "tier": "smoke",
    "mode": "accuracy",
    "torch": "2.14.1+cpu",
    "cuda": None,
    "gpu_name": None,
    "flags_json": FLAGS,
    "git_sha": "a1b2c3d4e5f6",
    "host": "ci-1",
    "started_at": "2026-01-01T00:00:00+00:00",
}
# (variant, dataset) -> accuracy per seed 0, 1, 2
BASE = {
    ("full_ft", "uci-digits"): [96.0, 95.5, 95.0],
    ("full_ft", "lfw-faces"): [97.5, 95.0, 100.0],
    ("last_k", "uci-digits"): [90.0, 91.0, 89.0],
    ("last_k", "lfw-faces"): [92.5, 90.0, 95.0],
}


def spec(
    variant: str = "full_ft",
    dataset: str = "uci-digits",
    seed: int = 0,
    *,
    model: str = "resnet20",
    tier: str = "smoke",
    mode: str = "accuracy",
    config: str = "{}",
) -> CellSpec:
    return CellSpec(
        suite="s",
        method=variant,
        variant=variant,
        dataset=dataset,
        model=model,
        seed=seed,
        tier=tier,
        mode=mode,
        config_json=config,
    )


def cell(
    variant: str,
    dataset: str,
    seed: int,
    acc: float | None = None,
    *,
    status: str = "ok",
    metrics: dict | None = None,
    **kw,
) -> CellResult:
    values = (
        {
            "test_top1_pct": acc,
            "val_top1_pct": (acc or 0) - 1,
            "step_ms_median": 10.0,
            "peak_mem_mib": 100.0,
            "fit_s": 3.0,
        }
        if acc is not None
        else {}
    )
    values.update(metrics or {})
    return CellResult(
        spec=spec(variant, dataset, seed, **kw),
        status=status,
        metrics=values,
        error="boom" if status != "ok" else "",
        error_type="RuntimeError" if status != "ok" else "",
    )


def grid(shift: dict | None = None, seeds: tuple[int, ...] = (0, 1, 2), **kw) -> list[CellResult]:
    """The BASE grid with ``shift[(variant, dataset)]`` points added to every seed."""
    shift = shift or {}
    return [cell(v, d, s, BASE[(v, d)][s % 3] + shift.get((v, d), 0.0), **kw) for (v, d) in BASE for s in seeds]


def write(db: Path, results: list[CellResult], run_id: str | None = None, **info) -> str:
    with Store(db) as store:
        run = store.start_run({**RUN, **info})
        if run_id is not None:
            store.db.execute("UPDATE runs SET run_id = ? WHERE run_id = ?", [run_id, run])
            run = run_id
        for r in results:
            store.write_result(run, r)
        store.finish_run(run)
    return run


def gate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["gate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def verdicts(out: str) -> dict[tuple[str, str], str]:
    """(cell, metric) -> verdict from the markdown table."""
    rows = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) == 7 and parts[0] not in ("cell", "---"):
            rows[(parts[0].split(" (")[0], parts[1])] = parts[5].strip("*")
    return rows


def two_dbs(tmp_path: Path, ref: list[CellResult], cand: list[CellResult], **cand_info) -> tuple[str, str]:
    a, b = tmp_path / "ref.db", tmp_path / "cand.db"
    write(a, ref)
    write(b, cand, **{"started_at": "2026-01-02T00:00:00+00:00", **cand_info})
    return str(a), str(b)


# --- the headline behaviour ----------------------------------------------------------------------


def test_identical_candidate_passes(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), grid())
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    v = verdicts(out)
    assert {v[(f"s/{x}/{d}/resnet20", "test_top1_pct")] for x, d in BASE} == {"pass"}
    assert out.rstrip().splitlines()[-1].startswith("bench gate: PASS: 0 regression")


def test_degraded_cell_is_a_regression_and_only_that_cell(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), grid({("last_k", "uci-digits"): -5.0}))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 1
    v = verdicts(out)
    assert v[("s/last_k/uci-digits/resnet20", "test_top1_pct")] == "regression"
    others = [v[(f"s/{x}/{d}/resnet20", "test_top1_pct")] for x, d in BASE if (x, d) != ("last_k", "uci-digits")]
    assert others == ["pass"] * 3
    assert "bench gate: FAIL: 1 regression" in out.splitlines()[-1]


def test_threshold_uses_k_times_reference_std(tmp_path, capsys):
    # last_k/uci-digits has ref std 1.0: with k=2 the threshold is 2.0, so a 1.5 drop passes;
    # with k=1 and abs_tol 1 the threshold is 1.0 and the same drop fails.
    a, b = two_dbs(tmp_path, grid(), grid({("last_k", "uci-digits"): -1.5}))
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")[0] == 0
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--k", "1")[0] == 1
    code, out, _ = gate(
        capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--k", "0", "--abs-tol", "test_top1_pct=1.6"
    )
    assert code == 0 and "max(abs_tol 1.6, 0 x ref std 1)" in out


def test_improvement_reported(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), grid({("full_ft", "uci-digits"): 3.0}))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "improved"


# --- n >= 5: one-sided test and Benjamini-Hochberg -------------------------------------------------


def test_n5_paired_test_and_bh(tmp_path, capsys):
    seeds = (0, 1, 2, 3, 4)
    ref = grid(seeds=seeds)
    # full_ft/uci: a consistent 3-point drop with a little noise -> significant;
    # last_k/uci: mean drop 2.2 (over the threshold 2 x std) but one seed carries it -> not significant.
    noisy = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: -11.0}
    steady = {0: -3.0, 1: -2.5, 2: -3.5, 3: -3.0, 4: -2.9}
    cand = []
    for r in ref:
        v, d, s = r.spec.variant, r.spec.dataset, r.spec.seed
        bump = (
            steady[s] if (v, d) == ("full_ft", "uci-digits") else noisy[s] if (v, d) == ("last_k", "uci-digits") else 0
        )
        cand.append(cell(v, d, s, r.metrics["test_top1_pct"] + bump))
    a, b = two_dbs(tmp_path, ref, cand)
    report = tmp_path / "gate.json"
    code, _, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--json", str(report))
    assert code == 1
    data = json.loads(report.read_text())
    acc = {(d["variant"], d["dataset"]): d for d in data["decisions"] if d["metric"] == "test_top1_pct"}
    steady_d, noisy_d = acc[("full_ft", "uci-digits")], acc[("last_k", "uci-digits")]
    assert steady_d["verdict"] == "regression" and steady_d["test"] == "paired t"
    assert noisy_d["verdict"] == "suspect" and "not significant" in noisy_d["reason"]
    # every cell tested (4 cells x 5 pairs) enters one BH family
    tested = [d for d in data["decisions"] if d["p_value"] is not None]
    assert len(tested) == 4
    assert [d["p_adjusted"] for d in tested] == pytest.approx(bh_adjust([d["p_value"] for d in tested]), rel=1e-12)
    ref_vals = [
        r.metrics["test_top1_pct"] for r in ref if (r.spec.variant, r.spec.dataset) == ("full_ft", "uci-digits")
    ]
    cand_vals = [
        c.metrics["test_top1_pct"] for c in cand if (c.spec.variant, c.spec.dataset) == ("full_ft", "uci-digits")
    ]
    assert steady_d["p_value"] == pytest.approx(paired_one_sided_p(ref_vals, cand_vals), rel=1e-12)
    assert steady_d["p_adjusted"] < 0.05 <= noisy_d["p_adjusted"]


def test_n5_unpaired_uses_welch(tmp_path, capsys):
    ref = grid(seeds=(0, 1, 2, 3, 4))
    cand = grid({("full_ft", "uci-digits"): -4.0}, seeds=(5, 6, 7, 8, 9))
    a, b = two_dbs(tmp_path, ref, cand)
    code, _, _ = gate(
        capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--json", str(tmp_path / "g.json")
    )
    data = json.loads((tmp_path / "g.json").read_text())
    d = next(
        x
        for x in data["decisions"]
        if (x["variant"], x["dataset"], x["metric"]) == ("full_ft", "uci-digits", "test_top1_pct")
    )
    assert d["test"] == "Welch t" and "unpaired" in d["reason"] and d["verdict"] == "regression"
    assert code == 1


def test_few_seeds_over_threshold_is_suspect(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(seeds=(0, 1)), grid({("full_ft", "uci-digits"): -5.0}, seeds=(0, 1)))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "suspect"
    assert "only 2 seed(s) (min_seeds 3)" in out
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--min-seeds", "2")[0] == 1


# --- missing, new and failed cells ----------------------------------------------------------------


def test_missing_and_new_cells(tmp_path, capsys):
    ref = grid() + [cell("scratch", "uci-digits", s, 80.0) for s in range(3)]
    cand = grid() + [cell("linear_probe", "uci-digits", s, 70.0) for s in range(3)]
    a, b = two_dbs(tmp_path, ref, cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    v = verdicts(out)
    assert code == 1
    assert v[("s/scratch/uci-digits/resnet20", "status")] == "missing"
    assert v[("s/linear_probe/uci-digits/resnet20", "status")] == "new"
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--allow-missing")
    assert code == 0 and "allowed by --allow-missing" in out


@pytest.mark.parametrize("status", ["failed", "oom", "diverged"])
def test_not_ok_candidate_rows_are_a_regression(tmp_path, capsys, status):
    cand = [
        c for c in grid() if not (c.spec.variant == "full_ft" and c.spec.dataset == "uci-digits" and c.spec.seed == 1)
    ]
    cand.append(cell("full_ft", "uci-digits", 1, status=status))
    a, b = two_dbs(tmp_path, grid(), cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 1
    line = next(l for l in out.splitlines() if "s/full_ft/uci-digits" in l and "| status |" in l)
    assert "regression" in line and f"seed 1 {status} (RuntimeError: boom)" in line
    # the two ok seeds are still compared
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "pass"


def test_failed_in_both_is_not_gated(tmp_path, capsys):
    ref = grid() + [cell("scratch", "uci-digits", 0, status="failed")]
    cand = grid() + [cell("scratch", "uci-digits", 0, status="failed")]
    a, b = two_dbs(tmp_path, ref, cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    assert verdicts(out)[("s/scratch/uci-digits/resnet20", "status")] == "not gated"


# --- step time and memory ----------------------------------------------------------------------------


def _with(results: list[CellResult], **metrics: float) -> list[CellResult]:
    for r in results:
        r.metrics.update(metrics)
    return results


def test_step_time_not_gated_in_accuracy_mode(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), _with(grid(), step_ms_median=25.0))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    line = next(l for l in out.splitlines() if "s/full_ft/uci-digits" in l and "step_ms_median" in l)
    assert "| not gated |" in line and "gated only on speed-mode runs" in line


@pytest.mark.parametrize(
    "cand_ms, verdict, code", [(11.5, "regression", 1), (11.0, "pass", 0), (10.9, "pass", 0), (8.0, "improved", 0)]
)
def test_step_time_gated_in_speed_mode(tmp_path, capsys, cand_ms, verdict, code):
    a, b = two_dbs(tmp_path, grid(mode="speed"), _with(grid(mode="speed"), step_ms_median=cand_ms), mode="speed")
    got, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    v = verdicts(out)
    assert v[("s/full_ft/uci-digits/resnet20", "step_ms_median")] == verdict
    assert got == code
    if verdict == "regression":
        assert f"x{cand_ms / 10:.3f} > time_tol 1.1" in out


@pytest.mark.parametrize(
    "ref_mib, cand_mib, verdict",
    [
        (1000.0, 1033.0, "regression"),
        (1000.0, 1032.0, "pass"),  # the 32 MiB side
        (2000.0, 2041.0, "regression"),
        (2000.0, 2040.0, "pass"),  # the 2% side
        (100.0, 130.0, "pass"),
        (1000.0, 900.0, "improved"),
    ],
)
def test_memory_rule(tmp_path, capsys, ref_mib, cand_mib, verdict):
    a, b = two_dbs(tmp_path, _with(grid(), peak_mem_mib=ref_mib), _with(grid(), peak_mem_mib=cand_mib))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert verdicts(out)[("s/last_k/lfw-faces/resnet20", "peak_mem_mib")] == verdict
    assert code == (1 if verdict == "regression" else 0)


def test_counted_memory_is_gated_and_rss_is_not(tmp_path, capsys):
    """``counted_mem_mib`` (every device) is gated like the CUDA peak; the CPU's RSS never is."""
    a, b = two_dbs(
        tmp_path,
        _with(grid(), counted_mem_mib=1000.0, peak_rss_mib=500.0),
        _with(grid(), counted_mem_mib=1100.0, peak_rss_mib=5000.0),
    )
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    found = verdicts(out)
    assert found[("s/last_k/lfw-faces/resnet20", "counted_mem_mib")] == "regression" and code == 1
    assert not any(metric == "peak_rss_mib" for _, metric in found)


def test_memory_metrics_only_one_side_reports(tmp_path, capsys):
    """A metric new in the candidate (``counted_mem_mib`` before ``make reference`` reran) is
    ``new`` and passes; one the candidate stopped reporting (CPU ``peak_mem_mib``) is ``missing``."""
    a, b = two_dbs(tmp_path, grid(), _with(grid(), counted_mem_mib=10.0))
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert verdicts(out)[("s/last_k/lfw-faces/resnet20", "counted_mem_mib")] == "new" and code == 0
    cand = grid()
    for r in cand:
        r.metrics.pop("peak_mem_mib")
    (tmp_path / "lost").mkdir()
    a, b = two_dbs(tmp_path / "lost", grid(), cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert verdicts(out)[("s/last_k/lfw-faces/resnet20", "peak_mem_mib")] == "missing" and code == 1


def test_rank_correlations_are_gated(tmp_path, capsys):
    ref = _with(grid(), search_kendall_tau=0.60)
    cand = _with(grid(), search_kendall_tau=0.50)
    a, b = two_dbs(tmp_path, ref, cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 1
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "search_kendall_tau")] == "regression"
    assert "abs_tol 0.05" in out


# --- comparability -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, ref_value, cand_value, shown",
    [
        (
            "gpu_name",
            "NVIDIA H100",
            "NVIDIA A100",
            "gpu_name differs: reference 'NVIDIA H100', candidate 'NVIDIA A100'",
        ),
        ("torch", "2.14.1+cpu", "2.15.0+cpu", "torch differs: reference '2.14.1+cpu', candidate '2.15.0+cpu'"),
        ("cuda", "12.4", "13.0", "cuda differs: reference '12.4', candidate '13.0'"),
        (
            "flags_json",
            FLAGS,
            {**FLAGS, "cudnn_benchmark": True},
            "determinism flag cudnn_benchmark (flags_json) differs: reference False, candidate True",
        ),
    ],
)
def test_refuses_incomparable_runs_naming_the_field(tmp_path, capsys, field, ref_value, cand_value, shown):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write(a, grid(), **{field: ref_value})
    write(b, grid(), **{field: cand_value})
    code, out, err = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 2 and out == ""
    assert shown in err and "--force" in err
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--force")
    assert code == 0 and f"forced comparison: {shown}" in out


def test_refuses_different_tier(tmp_path, capsys):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write(a, grid())
    write(b, grid(tier="short"), tier="short")
    code, _, err = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 2 and "tier differs: reference 'smoke', candidate 'short'" in err
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--force")
    assert code == 1 and "missing" in out  # forced: but no cell pairs across tiers


def test_config_difference_is_a_note(tmp_path, capsys):
    ref = [cell(v, d, s, BASE[(v, d)][s], config='{"train": {"steps": 30}}') for (v, d) in BASE for s in range(3)]
    cand = [cell(v, d, s, BASE[(v, d)][s], config='{"train": {"steps": 60}}') for (v, d) in BASE for s in range(3)]
    a, b = two_dbs(tmp_path, ref, cand)
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest")
    assert code == 0
    assert "config or task settings differ from the reference: config.train.steps 30 -> 60" in out
    assert "config differs (see notes)" in out


# --- selectors ---------------------------------------------------------------------------------------


@pytest.fixture
def history(tmp_path):
    """One database with three runs: old (tag main, sha aaa111), bad (sha aaa222), newest (tag pr)."""
    db = tmp_path / "h.db"
    write(db, grid(), run_id="1111aaaa0000", tag="main", git_sha="aaa111", started_at="2026-01-01T00:00:00+00:00")
    write(
        db,
        grid({("full_ft", "uci-digits"): -6.0}),
        run_id="1111bbbb0000",
        git_sha="aaa222",
        started_at="2026-01-02T00:00:00+00:00",
    )
    write(db, grid(), run_id="2222cccc0000", tag="pr", git_sha="bbb333", started_at="2026-01-03T00:00:00+00:00")
    return db


@pytest.mark.parametrize(
    "cand, code",
    [
        ("latest", 0),
        ("tag:pr", 0),
        ("tag:main", 0),
        ("sha:aaa2", 1),
        ("sha:bbb", 0),
        ("run:1111b", 1),
        ("1111bb", 1),
        ("aaa222", 1),
        ("2222", 0),
    ],
)
def test_selectors_in_one_database(history, capsys, cand, code):
    got, _, err = gate(capsys, "--db", str(history), "--baseline", "tag:main", "--candidate", cand, "--no-write")
    assert got == code, err


def test_other_database_selector(history, tmp_path, capsys):
    other = tmp_path / "other.db"
    write(other, grid({("full_ft", "uci-digits"): -6.0}), tag="pr")
    code, out, _ = gate(capsys, "--db", str(history), "--baseline", "tag:main", "--candidate", f"{other}:tag:pr")
    assert code == 1 and f"{other}:run:" in out.splitlines()[-1]
    code, *_ = gate(capsys, "--baseline", f"{history}:run:1111aaaa", "--candidate", str(other))  # bare PATH.db
    assert code == 1


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("sha:aaa", ["ambiguous", "aaa111", "aaa222"]),
        ("run:1111", ["ambiguous", "run:1111aaaa0000", "run:1111bbbb0000"]),
        ("1111", ["ambiguous", "run:1111aaaa0000", "run:1111bbbb0000"]),
        ("tag:nightly", ["no run tagged 'nightly'", "tags there: main, pr"]),
        ("run:9999", ["no run id starts with '9999'", "run:2222cccc0000", "tag:pr"]),
        ("zzz", ["matches no run id or git sha", "run:1111aaaa0000", "sha:aaa111"]),
        ("nope.db:latest", ["no database at nope.db"]),
        ("missing.json", ["no reference file at missing.json"]),
    ],
)
def test_bad_selectors_exit_2_listing_candidates(history, capsys, monkeypatch, tmp_path, selector, expected):
    monkeypatch.chdir(tmp_path)
    code, out, err = gate(capsys, "--db", str(history), "--baseline", "tag:main", "--candidate", selector)
    assert code == 2 and out == ""
    for text in expected:
        assert text in err


# --- outputs -----------------------------------------------------------------------------------------


def test_json_report_and_decisions_written(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), grid({("last_k", "lfw-faces"): -7.5}))
    report = tmp_path / "out" / "gate.json"
    code, out, _ = gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--json", str(report))
    assert code == 1
    data = json.loads(report.read_text())
    assert data["exit_code"] == 1 and data["passed"] is False
    assert data["summary"] == out.rstrip().splitlines()[-1]
    assert data["counts"]["regression"] == 1 and data["counts"]["not gated"] == 4
    assert data["baseline"]["kind"] == "db" and data["candidate"]["run"]["flags"] == FLAGS
    assert data["settings"]["k"] == 2.0 and data["settings"]["metrics"] == ["test_top1_pct"]
    bad = [d for d in data["decisions"] if d["verdict"] == "regression"]
    assert [(d["variant"], d["dataset"], d["metric"]) for d in bad] == [("last_k", "lfw-faces", "test_top1_pct")]
    assert bad[0]["reference"] == pytest.approx(92.5) and bad[0]["delta"] == pytest.approx(-7.5)
    rows = (
        sqlite3.connect(b)
        .execute(
            "SELECT gate_id, metric, verdict, reference, candidate_value, delta, n_reference, n_candidate"
            " FROM gate_decisions"
        )
        .fetchall()
    )
    assert len(rows) == len(data["decisions"]) == 12
    assert {r[0] for r in rows} == {data["gate_id"]}
    reg = [r for r in rows if r[2] == "regression"]
    assert reg == [(data["gate_id"], "test_top1_pct", "regression", 92.5, 85.0, -7.5, 3, 3)]
    assert sqlite3.connect(a).execute("SELECT count(*) FROM gate_decisions").fetchone() == (0,)


def test_decisions_db_option_and_no_write(tmp_path, capsys):
    a, b = two_dbs(tmp_path, grid(), grid())
    elsewhere = tmp_path / "decisions.db"
    assert (
        gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--decisions-db", str(elsewhere))[0]
        == 0
    )
    assert sqlite3.connect(elsewhere).execute("SELECT count(*) FROM gate_decisions").fetchone() == (12,)
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--no-write")[0] == 0
    assert sqlite3.connect(b).execute("SELECT count(*) FROM gate_decisions").fetchone() == (0,)


# --- reference files ----------------------------------------------------------------------------------


def test_reference_export_round_trip(tmp_path, capsys):
    db = tmp_path / "r.db"
    run = write(db, grid() + [cell("scratch", "uci-digits", 0, status="oom")], tag="main")
    out = tmp_path / "ref" / "smoke.json"
    assert main(["reference", "export", "--db", str(db), "--run", "tag:main", "-o", str(out)]) == 0
    assert f"wrote 13 cell rows of run {run}" in capsys.readouterr().out
    text = out.read_text()
    data = json.loads(text)
    assert list(data) == ["cells", "format", "run"] and data["format"] == FORMAT
    lines = text.splitlines()
    assert len(lines) == 13 + 6 and all(line.startswith("    {") for line in lines[2:15])  # one cell per line
    assert data["run"]["run_id"] == run and data["run"]["flags"] == FLAGS and data["run"]["tier"] == "smoke"
    first = data["cells"][0]
    assert list(first) == sorted(first)
    # only what the gate reads: no val accuracy, no wall time, no step time on accuracy-mode rows
    assert set(first["metrics"]) == {"test_top1_pct", "peak_mem_mib"}
    oom = next(c for c in data["cells"] if c["status"] != "ok")
    assert oom["status"] == "oom" and oom["metrics"] == {} and "RuntimeError" in oom["error"]
    # stable: a second export is byte-identical
    again = tmp_path / "again.json"
    main(["reference", "export", "--db", str(db), "-o", str(again)])
    assert again.read_text() == text
    # the file is a side of the gate either way round, and identical to its run
    code, gout, _ = gate(capsys, "--baseline", str(out), "--candidate", f"{db}:latest")
    assert code == 0 and "0 regression" in gout.splitlines()[-1]
    code, gout, _ = gate(capsys, "--baseline", f"{db}:latest", "--candidate", str(out))
    assert code == 0
    code, gout, _ = gate(capsys, "--baseline", str(out), "--candidate", str(out))
    assert code == 0


def test_reference_file_catches_degraded_db(tmp_path, capsys):
    db, out = tmp_path / "r.db", tmp_path / "smoke.json"
    write(db, grid())
    main(["reference", "export", "--db", str(db), "-o", str(out)])
    worse = tmp_path / "w.db"
    write(worse, grid({("full_ft", "lfw-faces"): -6.0}))
    code, gout, _ = gate(capsys, "--baseline", str(out), "--candidate", f"{worse}:latest")
    assert code == 1
    assert verdicts(gout)[("s/full_ft/lfw-faces/resnet20", "test_top1_pct")] == "regression"
    comparable = tmp_path / "t.db"
    write(comparable, grid(), torch="2.15.0")
    code, _, err = gate(capsys, "--baseline", str(out), "--candidate", f"{comparable}:latest")
    assert code == 2 and "torch differs: reference '2.14.1+cpu', candidate '2.15.0'" in err


def test_malformed_reference_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else", "cells": []}))
    code, _, err = gate(capsys, "--baseline", str(bad), "--candidate", str(bad))
    assert code == 2 and "not an archbench-reference/2 file (its 'format' is 'something-else'" in err


# --- configuration ------------------------------------------------------------------------------------


def test_config_file_per_metric_and_dataset_and_cli_override(tmp_path, capsys):
    config = tmp_path / "gate.toml"
    config.write_text(
        "[gate]\nk = 0.0\nmin_seeds = 3\n\n[metrics.test_top1_pct]\nabs_tol = 2.0\n\n"
        "[metrics.test_top1_pct.datasets.lfw-faces]\nabs_tol = 5.5\n"
    )
    settings = load_config(config)
    assert settings.tolerance("test_top1_pct", "lfw-faces") == (5.5, 0.0)
    assert settings.tolerance("test_top1_pct", "uci-digits") == (2.0, 0.0)
    assert GateSettings().tolerance("val_top1_pct", "x") == (1.0, 2.0)
    # a 5-point drop on lfw-faces (two images of 40 per seed) passes at 5.5; 2.5 on uci-digits fails at 2.0
    a, b = two_dbs(tmp_path, grid(), grid({("full_ft", "lfw-faces"): -5.0}))
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{b}:latest", "--config", str(config))[0] == 0
    c = tmp_path / "c.db"
    write(c, grid({("full_ft", "uci-digits"): -2.5}))
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{c}:latest", "--config", str(config))[0] == 1
    # CLI wins over the file: METRIC=VALUE everywhere, METRIC@DATASET=VALUE on one dataset
    assert (
        gate(
            capsys,
            "--baseline",
            f"{a}:latest",
            "--candidate",
            f"{b}:latest",
            "--config",
            str(config),
            "--abs-tol",
            "test_top1_pct=3",
        )[0]
        == 1
    )
    assert (
        gate(
            capsys,
            "--baseline",
            f"{a}:latest",
            "--candidate",
            f"{c}:latest",
            "--config",
            str(config),
            "--abs-tol",
            "test_top1_pct@uci-digits=3",
        )[0]
        == 0
    )
    json_config = tmp_path / "gate.json"
    json_config.write_text(json.dumps({"gate": {"k": 0.0}, "metrics": {"test_top1_pct": {"abs_tol": 3.0}}}))
    assert gate(capsys, "--baseline", f"{a}:latest", "--candidate", f"{c}:latest", "--config", str(json_config))[0] == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ("[gate]\nkk = 1\n", "unknown key(s) ['kk']; valid: metrics, k, alpha"),
        ("[metrics.test_top1_pct]\nabs = 1\n", "unknown key(s) ['abs']; valid: abs_tol, k, datasets"),
        ("[gate]\nk = -1\n", "k must be >= 0"),
        ("[gate]\nallow_missing = 1\n", "allow_missing must be true or false"),
        ("[gate\n", "cannot parse gate config"),
    ],
)
def test_bad_config_exits_2(tmp_path, capsys, text, message):
    config = tmp_path / "gate.toml"
    config.write_text(text)
    code, _, err = gate(capsys, "--baseline", "x.json", "--candidate", "y.json", "--config", str(config))
    assert code == 2 and message in err


def test_bad_abs_tol_option(capsys):
    code, _, err = gate(capsys, "--baseline", "x.json", "--candidate", "y.json", "--abs-tol", "test_top1_pct")
    assert code == 2 and "METRIC=VALUE" in err


# --- the committed reference -------------------------------------------------------------------------


def test_committed_smoke_reference_covers_the_baselines_smoke_grid():
    path = ROOT / "suites" / "reference" / "smoke.json"
    side = read_reference(path)
    loaded = importlib.util.spec_from_file_location("baselines_suite", ROOT / "suites" / "test_baselines.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    expected = {(s.suite, s.variant, s.dataset, s.model, s.tier, s.mode, s.seed) for s in module.GRID.cells("smoke")}
    have = {(*r.key, r.seed) for r in side.rows}
    assert expected <= have, f"{path} lacks {sorted(expected - have)}; refresh it with: make reference"
    assert all(r.status == "ok" and "test_top1_pct" in r.metrics for r in side.rows if (*r.key, r.seed) in expected)
    assert side.run["tier"] == "smoke" and side.run["mode"] == "accuracy" and side.run["flags"]
    settings = load_config(ROOT / "suites" / "reference" / "gate.toml")
    assert settings.metrics == ("test_top1_pct",)


@pytest.mark.parametrize("drop, code", [(0.0, 0), (5.0, 1)])
def test_committed_reference_and_tolerances_catch_a_five_point_drop(tmp_path, capsys, drop, code):
    """The CI gate's own files: a 5-point drop of one uci-digits cell fails, no drop passes."""
    ref_path, config = ROOT / "suites" / "reference" / "smoke.json", ROOT / "suites" / "reference" / "gate.toml"
    data = json.loads(ref_path.read_text())
    target = ("baselines", "full_ft", "uci-digits", "resnet20")
    hit = [c for c in data["cells"] if (c["suite"], c["variant"], c["dataset"], c["model"]) == target]
    assert len(hit) == 3
    for cell in hit:
        cell["metrics"]["test_top1_pct"] -= drop
    cand = tmp_path / "candidate.json"
    cand.write_text(json.dumps(data))
    got, out, _ = gate(capsys, "--baseline", str(ref_path), "--candidate", str(cand), "--config", str(config))
    assert got == code
    expected = "regression" if drop else "pass"
    assert verdicts(out)[("baselines/full_ft/uci-digits/resnet20", "test_top1_pct")] == expected
    assert list(verdicts(out).values()).count("regression") == (1 if drop else 0)
