"""The gate's blind spots (exit codes and messages) and its calibrated noise model.

Databases are built through the Store (no training), as in test_gate.py, whose helpers
this module reuses.
"""

from __future__ import annotations

import json
import math

import pytest

from bench.cli import main
from bench.gate import noise
from bench.gate.noise import Spread
from bench.results.store import Store
from tests.test_gate import cell, gate, grid, verdicts, write

SAME = {"torch": "2.14.1+cpu", "device": "cpu", "cpu_id": "aaa", "threads": 1, "cpu_capability": "AVX2"}
CROSS = {**SAME, "threads": 2}


def export(tmp_path, db, *calibrate: str, name: str = "smoke.json", config: str | None = None) -> str:
    out = tmp_path / name
    args = ["reference", "export", "--db", str(db), "-o", str(out)]
    for spec in calibrate:
        args += ["--calibrate", spec]
    if config:
        args += ["--config", config]
    assert main(args) == 0
    return str(out)


def reference_file(tmp_path, cells: list[dict], **extra) -> str:
    path = tmp_path / "ref.json"
    path.write_text(
        json.dumps(
            {"format": "archbench-reference/2", "cells": cells, "run": {"tier": "smoke", "mode": "accuracy"}, **extra}
        )
    )
    return str(path)


def ref_cell(seed=0, value=90.0, **kw) -> dict:
    return {
        "suite": "s",
        "variant": "full_ft",
        "dataset": "uci-digits",
        "model": "resnet20",
        "tier": "smoke",
        "mode": "accuracy",
        "seed": seed,
        "status": "ok",
        "metrics": {"test_top1_pct": value},
        **kw,
    }


# --- blind spots: a reference that holds nothing, or holds garbage -----------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ({"cells": []}, "has no cells ('cells' is [])"),
        ({}, "has no cells ('cells' is None)"),
    ],
)
def test_empty_or_cell_less_reference_is_a_usage_error(tmp_path, capsys, body, message):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"format": "archbench-reference/2", "run": {}, **body}))
    cand = tmp_path / "c.db"
    write(cand, grid())
    code, _, err = gate(capsys, "--baseline", str(path), "--candidate", f"{cand}:latest")
    assert code == 2 and message in err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": "zero"}, "field 'seed' must be an integer, got 'zero'"),
        ({"seed": 1.5}, "field 'seed' must be an integer, got 1.5"),
        ({"metrics": {"test_top1_pct": "high"}}, "metric 'test_top1_pct' must be a finite number, got 'high'"),
        ({"metrics": {"test_top1_pct": True}}, "metric 'test_top1_pct' must be a finite number, got True"),
        ({"metrics": {"test_top1_pct": math.nan}}, "metric 'test_top1_pct' must be a finite number, got nan"),
        ({"metrics": {"test_top1_pct": math.inf}}, "metric 'test_top1_pct' must be a finite number, got inf"),
        ({"status": "great"}, "field 'status' must be one of"),
        ({"model": 7}, "field 'model' must be a non-empty string, got 7"),
        ({"metrics": [1, 2]}, "field 'metrics' must be an object"),
    ],
)
def test_malformed_reference_values_exit_2_naming_the_field(tmp_path, capsys, change, message):
    path = reference_file(tmp_path, [ref_cell(0), {**ref_cell(1), **change}])
    cand = tmp_path / "c.db"
    write(cand, grid())
    code, _, err = gate(capsys, "--baseline", path, "--candidate", f"{cand}:latest")
    assert code == 2, err
    assert "cell 1 (s/full_ft/uci-digits/" in err and message in err


def test_reference_with_only_skipped_rows_is_a_usage_error(tmp_path, capsys):
    ref, cand = tmp_path / "r.db", tmp_path / "c.db"
    write(ref, [cell("full_ft", "uci-digits", s, status="skipped") for s in range(3)])
    write(cand, grid())
    code, _, err = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{cand}:latest")
    assert code == 2 and "holds no rows to gate against (only skipped ones)" in err


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_candidate_is_a_regression(tmp_path, capsys, bad):
    ref = tmp_path / "r.db"
    write(ref, grid())
    path = export(tmp_path, ref)
    data = json.loads(open(path).read())
    target = next(c for c in data["cells"] if (c["variant"], c["dataset"], c["seed"]) == ("last_k", "uci-digits", 1))
    target["metrics"]["test_top1_pct"] = bad
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps(data))  # json writes NaN / Infinity literals
    from bench.errors import ReferenceFileError
    from bench.gate.reference_file import read_reference

    with pytest.raises(ReferenceFileError):  # as a reference the same file is refused ...
        read_reference(cand)
    # ... and as a candidate database a non-finite metric (stored NULL) fails its cell
    cdb = tmp_path / "c.db"
    write(cdb, grid())
    with Store(cdb) as store:
        store.db.execute(
            "UPDATE metrics SET value = NULL WHERE name = 'test_top1_pct' AND result_id IN "
            "(SELECT result_id FROM results WHERE variant = 'last_k' AND dataset = 'uci-digits' "
            "AND seed = 1)"
        )
        store.db.conn.commit()
    code, out, _ = gate(capsys, "--baseline", path, "--candidate", f"{cdb}:latest")
    assert code == 1
    v = verdicts(out)
    assert v[("s/last_k/uci-digits/resnet20", "test_top1_pct")] == "regression"
    assert "non-finite value(s) in the candidate: seed 1 nan" in out
    assert list(v.values()).count("regression") == 1


def test_non_finite_reference_database_value_is_a_usage_error(tmp_path, capsys):
    ref, cand = tmp_path / "r.db", tmp_path / "c.db"
    write(ref, grid())
    write(cand, grid())
    with Store(ref) as store:
        store.db.execute(
            "UPDATE metrics SET value = NULL WHERE name = 'test_top1_pct' AND result_id IN "
            "(SELECT result_id FROM results WHERE variant = 'full_ft' AND seed = 2 AND dataset = 'lfw-faces')"
        )
        store.db.conn.commit()
    code, _, err = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{cand}:latest")
    assert code == 2 and "holds a non-finite test_top1_pct for s/full_ft/lfw-faces/resnet20" in err and "seed 2" in err


def test_a_lost_seed_counts_as_missing(tmp_path, capsys):
    """2 of 3 seeds lost with a 40-point drop on the third: never a pass."""
    ref, cand = tmp_path / "r.db", tmp_path / "c.db"
    write(ref, grid())
    kept = [
        c
        for c in grid({("full_ft", "uci-digits"): -40.0})
        if not (c.spec.variant == "full_ft" and c.spec.dataset == "uci-digits" and c.spec.seed > 0)
    ]
    write(cand, kept)
    code, out, _ = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{cand}:latest")
    assert code == 1
    v = verdicts(out)
    assert v[("s/full_ft/uci-digits/resnet20", "status")] == "missing"
    assert "seed(s) [1, 2] of the reference are not in the candidate" in out
    code, out, _ = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{cand}:latest", "--allow-missing")
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "status")] == "missing" and code == 0


def test_cells_selector_sees_every_cell_after_resume(tmp_path, capsys):
    """A resumed run holds only what it re-ran: ``latest`` misses cells, ``cells`` does not."""
    db = tmp_path / "ci.db"
    results = grid()
    first = [r for r in results if r.spec.variant == "full_ft"]
    resumed = [r for r in results if r.spec.variant != "full_ft"]
    write(db, first + [cell("last_k", "uci-digits", 0, status="skipped")])
    write(db, resumed, started_at="2026-01-02T00:00:00+00:00")
    ref = tmp_path / "r.db"
    write(ref, grid())
    code, out, _ = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{db}:latest")
    assert code == 1 and "2 missing" in out.splitlines()[-1]
    code, out, _ = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{db}:cells")
    assert code == 0, out
    assert "0 missing" in out.splitlines()[-1] and "12 candidate seed rows" in out.splitlines()[-1]


def test_cells_selector_refuses_to_mix_incomparable_runs(tmp_path, capsys):
    db = tmp_path / "ci.db"
    write(db, grid()[:6])
    write(db, grid()[6:], torch="2.15.0", started_at="2026-01-02T00:00:00+00:00")
    code, _, err = gate(capsys, "--baseline", f"{db}:cells", "--candidate", f"{db}:cells")
    assert code == 2 and "would mix runs that are not comparable" in err and "differ in torch" in err


def test_an_internal_error_exits_3_not_1(tmp_path, capsys, monkeypatch):
    from bench.gate import rules as gate_module

    ref = tmp_path / "r.db"
    write(ref, grid())
    monkeypatch.setattr(gate_module, "_compare_cell", lambda *a, **k: 1 / 0)
    code, _, err = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{ref}:latest")
    assert code == 3 and "ZeroDivisionError" in err and "internal error" in err


# --- the noise model ----------------------------------------------------------------------------------


def test_threshold_and_upper_bound_arithmetic():
    assert noise.ucb_factor(4, 0.95) == pytest.approx(math.sqrt(4 / 0.710723), rel=1e-5)
    assert noise.threshold(Spread(0.0, 3, 0.0), 2.0, 3.0, 0.95, 3, 3) == 2.0
    t = noise.threshold(Spread(1.0, 4, 1.5), 2.0, 3.0, 0.95, 3, 3)
    assert t == pytest.approx(3.0 * math.sqrt(4 / 0.710723), rel=1e-5)
    assert noise.threshold(Spread(1.0, 4, 1.5), 2.0, 3.0, 0.95, 4, 1) == pytest.approx(2 * t, rel=1e-9)
    assert noise.threshold(Spread(0.1, 4, 0.1), 2.0, 3.0, 0.95, 3, 3) == 2.0
    assert noise.chance_level("test_top1_pct", 10) == 10.0 and noise.chance_level("x_tau", None) == 0.0
    assert noise.chance_level("peak_mem_mib", 10) is None
    assert noise.noise_class(SAME, dict(SAME)) == "same" and noise.noise_class(SAME, CROSS) == "cross"
    assert noise.noise_class(None, None) == "cross"
    family = Spread(2.0, 8, 3.0)
    assert noise.threshold(Spread(0.0, 4, 0.0), 2.0, 3.0, 0.95, 3, 3, family) == pytest.approx(
        3.0 * 2.0 * noise.ucb_factor(8, 0.95)
    )
    assert noise.threshold(Spread(0.0, 4, 0.0), 2.0, 3.0, 0.95, 3, 3, Spread(0.0, 8, 0.0)) == 2.0


def test_calibrate_pairs_seeds_and_groups_by_class():
    key = ("s", "v", "d", "m", "smoke", "accuracy")
    ref = {(key, "test_top1_pct"): {0: 90.0, 1: 80.0, 2: 70.0}}
    runs = [
        ("same", {(key, "test_top1_pct"): {0: 90.0, 1: 80.0, 2: 70.0}}),
        ("cross", {(key, "test_top1_pct"): {0: 93.0, 1: 80.0, 2: 70.0}}),  # mean +1
        ("cross", {(key, "test_top1_pct"): {0: 90.0, 1: 74.0}}),  # seeds 0, 1: mean -3
        ("cross", {}),
    ]  # the run lacks the cell
    got = noise.calibrate(ref, runs, lambda k, m: 10.0)[(key, "test_top1_pct")]
    assert got.deltas == {"same": [0.0], "cross": [pytest.approx(1.0), pytest.approx(-3.0)]}
    assert got.spreads["same"] == Spread(0.0, 1, 0.0)
    assert got.spreads["cross"].sd == pytest.approx(math.sqrt(5.0)) and got.spreads["cross"].runs == 2
    assert got.spreads["cross"].max_abs == pytest.approx(3.0) and got.n_seeds == 3 and got.chance == 10.0


def _noisy_reference(tmp_path) -> tuple[str, str]:
    """A reference run (SAME arithmetic) calibrated by one same and two cross reruns."""
    ref = tmp_path / "ref.db"
    write(ref, grid(), tag="reference", arith_json=SAME)
    same = tmp_path / "same.db"
    write(same, grid(), tag="busy", arith_json=SAME)
    c1, c2 = tmp_path / "c1.db", tmp_path / "c2.db"
    # cross reruns move last_k/uci-digits by -1 and +1 (its mean), the rest not at all
    write(c1, grid({("last_k", "uci-digits"): -1.0}), tag="threads2", arith_json=CROSS)
    write(c2, grid({("last_k", "uci-digits"): 1.0}), tag="isa", arith_json=CROSS)
    return export(tmp_path, ref, f"busy={same}", f"{c1}:tag:threads2", f"isa={c2}"), str(ref)


def test_export_with_calibration_writes_the_noise_model(tmp_path, capsys):
    path, _ = _noisy_reference(tmp_path)
    out = capsys.readouterr().out
    assert "calibration busy: same arithmetic" in out and "calibration threads2: cross arithmetic" in out
    data = json.loads(open(path).read())
    assert data["format"] == "archbench-reference/2" and data["run"]["arith"] == SAME
    assert [(r["label"], r["class"]) for r in data["calibration"]["runs"]] == [
        ("busy", "same"),
        ("threads2", "cross"),
        ("isa", "cross"),
    ]
    entry = next(
        e
        for e in data["noise"]
        if (e["variant"], e["dataset"], e["metric"]) == ("last_k", "uci-digits", "test_top1_pct")
    )
    assert entry["spread"]["cross"] == {"max_abs": 1.0, "runs": 2, "sd": 1.0}
    assert entry["spread"]["same"] == {"max_abs": 0.0, "runs": 1, "sd": 0.0}
    assert entry["chance"] == 10.0 and entry["n_seeds"] == 3
    # one line per cell row (12) and per noise entry (4 cells x {test_top1_pct, peak_mem_mib}), 9 more lines
    assert len(data["noise"]) == 8 and len(open(path).read().splitlines()) == 12 + 8 + 9


def test_same_arithmetic_gates_at_the_floor(tmp_path, capsys):
    path, _ = _noisy_reference(tmp_path)
    cand = tmp_path / "cand.db"
    write(cand, grid({("last_k", "uci-digits"): -2.5}), arith_json=SAME)
    code, out, _ = gate(capsys, "--baseline", path, "--candidate", f"{cand}:latest", "--abs-tol", "test_top1_pct=2")
    assert code == 1
    assert verdicts(out)[("s/last_k/uci-digits/resnet20", "test_top1_pct")] == "regression"
    assert "noise model: same (the two sides ran with the same arithmetic" in out
    assert "calibrated from 1 same-arithmetic run(s) of the reference (busy)" in out


def test_cross_arithmetic_widens_the_noisy_cells_family_only(tmp_path, capsys):
    path, _ = _noisy_reference(tmp_path)
    cand = tmp_path / "cand.db"
    write(
        cand,
        grid({("last_k", "uci-digits"): -2.5, ("full_ft", "uci-digits"): -2.5, ("full_ft", "lfw-faces"): -2.5}),
        arith_json=CROSS,
    )
    code, out, _ = gate(capsys, "--baseline", path, "--candidate", f"{cand}:latest", "--abs-tol", "test_top1_pct=2")
    v = verdicts(out)
    # sd 1 over 2 runs -> 3 x 1 x sqrt(2 / chi2.ppf(0.05, 2)) = 13.2 points: a 2.5 drop is within the noise
    assert v[("s/last_k/uci-digits/resnet20", "test_top1_pct")] == "pass"
    assert "3 x upper bound of the cross-arithmetic spread 1 over 2 run(s)" in out
    # its sibling on the same dataset never moved, but the family's pooled deltas (sd 0.71 over 4) widen it too
    assert v[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "pass"
    assert "spread 0 over 2 run(s), family 0.707 over 4)" in out
    # another dataset is another family: it keeps its floor
    assert v[("s/full_ft/lfw-faces/resnet20", "test_top1_pct")] == "regression" and code == 1
    assert "the arithmetic differs: threads 1 -> 2" in out


def test_a_threshold_that_reaches_chance_is_not_gated(tmp_path, capsys):
    path, _ = _noisy_reference(tmp_path)
    data = json.loads(open(path).read())
    for e in data["noise"]:
        if (e["variant"], e["dataset"], e["metric"]) == ("last_k", "uci-digits", "test_top1_pct"):
            e["spread"]["cross"]["sd"] = 30.0
    open(path, "w").write(json.dumps(data))
    cand = tmp_path / "cand.db"
    write(cand, grid({("last_k", "uci-digits"): -60.0}), arith_json=CROSS)
    code, out, _ = gate(capsys, "--baseline", path, "--candidate", f"{cand}:latest")
    assert verdicts(out)[("s/last_k/uci-digits/resnet20", "test_top1_pct")] == "not gated"
    assert "reaches the chance level 10 from the reference 90" in out and code == 0


def test_calibrated_single_seed_cells_are_gated_not_suspect(tmp_path, capsys):
    one = [c for c in grid() if c.spec.seed == 0]
    ref, same = tmp_path / "r.db", tmp_path / "s.db"
    write(ref, one, arith_json=SAME)
    write(same, one, tag="busy", arith_json=SAME)
    path = export(tmp_path, ref, f"{same}")
    cand = tmp_path / "c.db"
    write(
        cand,
        [
            cell(
                c.spec.variant,
                c.spec.dataset,
                0,
                c.metrics["test_top1_pct"] - (5.0 if c.spec.variant == "full_ft" else 0.0),
            )
            for c in one
        ],
        arith_json=SAME,
    )
    code, out, _ = gate(capsys, "--baseline", path, "--candidate", f"{cand}:latest", "--abs-tol", "test_top1_pct=2")
    v = verdicts(out)
    assert v[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "regression" and code == 1
    # uncalibrated (a database as reference): one seed over the threshold is only suspect
    code, out, _ = gate(
        capsys, "--baseline", f"{ref}:latest", "--candidate", f"{cand}:latest", "--abs-tol", "test_top1_pct=2"
    )
    assert verdicts(out)[("s/full_ft/uci-digits/resnet20", "test_top1_pct")] == "suspect" and code == 0


def test_calibration_lists_unstable_cells_and_refuses_incomparable_runs(tmp_path, capsys):
    ref, flaky, other = tmp_path / "r.db", tmp_path / "f.db", tmp_path / "o.db"
    write(ref, grid(), arith_json=SAME)
    results = [
        c for c in grid() if not (c.spec.variant == "full_ft" and c.spec.dataset == "lfw-faces" and c.spec.seed == 2)
    ]
    write(flaky, results + [cell("full_ft", "lfw-faces", 2, status="failed")], tag="busy", arith_json=SAME)
    export(tmp_path, ref, str(flaky))
    assert "1 unstable: s/full_ft/lfw-faces/resnet20 seed 2: failed" in capsys.readouterr().out
    write(other, grid(), torch="2.15.0", arith_json=SAME)
    code = main(["reference", "export", "--db", str(ref), "--calibrate", str(other), "-o", str(tmp_path / "x.json")])
    assert code == 2 and "calibration run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [("[gate]\nz = -1\n", "z must be >= 0"), ("[gate]\nconfidence = 1.5\n", "confidence must lie strictly between")],
)
def test_noise_settings_are_validated(tmp_path, capsys, text, message):
    config = tmp_path / "gate.toml"
    config.write_text(text)
    ref = tmp_path / "r.db"
    write(ref, grid())
    code, _, err = gate(capsys, "--baseline", f"{ref}:latest", "--candidate", f"{ref}:latest", "--config", str(config))
    assert code == 2 and message in err


# --- benchmarks/gate_noise.py: the catch-rate logic on synthetic runs --------------------------------


def _gate_noise_module():
    import importlib.util
    import sys

    from tests.test_gate import ROOT

    spec = importlib.util.spec_from_file_location("gate_noise", ROOT / "benchmarks" / "gate_noise.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gate_noise"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_injections_count_what_the_gate_catches(tmp_path, capsys):
    from bench.gate.reference import load_side
    from bench.gate.settings import load_config

    gn = _gate_noise_module()
    path, _ = _noisy_reference(tmp_path)
    cand_db = tmp_path / "cand.db"
    write(cand_db, grid(), arith_json=SAME)
    config = tmp_path / "gate.toml"
    config.write_text(
        "[gate]\nk = 0.0\n[metrics.test_top1_pct]\nabs_tol = 2.0\n"
        "[metrics.test_top1_pct.datasets.lfw-faces]\nabs_tol = 5.5\n"
    )
    settings = load_config(config)
    ref, cand = load_side(path, "x.db"), load_side(f"{cand_db}:cells", "x.db")
    got = gn.injections(ref, cand, settings)
    assert got["drop 5 points (uci-digits)"] == {"injected": 2, "caught": 2, "not_gated": 0, "missed": []}
    assert got["drop 10 points (lfw-faces)"]["caught"] == 2
    assert got["one seed failed"] == {"injected": 4, "caught": 4, "not_gated": 0, "missed": []}
    assert got["one seed lost"]["caught"] == 4
    # under the cross noise model the noisy family (sd 1 over 2 runs: threshold 13 points) misses a 5-point drop
    cross_db = tmp_path / "cross.db"
    write(cross_db, grid(), arith_json=CROSS)
    got = gn.injections(ref, load_side(f"{cross_db}:cells", "x.db"), settings)
    assert got["drop 5 points (uci-digits)"]["missed"] == [
        "s/full_ft/uci-digits/resnet20",
        "s/last_k/uci-digits/resnet20",
    ]
    text = gn.render(
        [{"run": "busy", "class": "same", "decisions": 9, "false_alarms": [], "not_gated": 1, "wall_s": 60.0}],
        {"cross": got},
    )
    assert "| busy | same | 1.0 | 9 | 1 | 0 |" in text and "false alarms: 0 in 1 perturbed gate runs" in text
    assert "| drop 5 points (uci-digits) | 2 | 0 | 0% | 0 |" in text


# --- the committed reference and gate.toml ------------------------------------------------------------


def _committed():
    from bench.gate.reference_file import read_reference
    from bench.gate.settings import load_config
    from tests.test_gate import ROOT

    return (
        read_reference(ROOT / "suites" / "reference" / "smoke.json"),
        load_config(ROOT / "suites" / "reference" / "gate.toml"),
    )


def test_committed_reference_is_calibrated_in_both_classes():
    ref, settings = _committed()
    runs = ref.calibration["runs"]
    classes = [r["class"] for r in runs]
    assert classes.count("same") >= 2 and classes.count("cross") >= 3, classes
    assert ref.run["arith"] and ref.run["arith"]["threads"] == 1 and ref.run["arith"]["cpu_capability"] == "AVX2"
    gated = {(r.key, m) for r in ref.rows if r.status == "ok" for m in r.metrics if settings.gated(m, r)}
    assert gated and gated <= set((tuple(k), m) for k, m in ref.noise), "every gated metric has a noise entry"
    for entry in ref.noise.values():
        assert set(entry.spreads) == {"same", "cross"}


def test_committed_reference_catches_a_five_point_drop_in_every_gated_uci_digits_cell():
    """A 5-point drop of any one uci-digits cell fails under the same arithmetic (and nothing else
    does); a cell may only escape the gate when its reference sits within the threshold of chance."""
    import dataclasses

    from bench.gate.rules import evaluate

    ref, settings = _committed()
    cand = dataclasses.replace(ref, noise={}, calibration={})
    base = evaluate(ref, cand, settings)
    assert base.exit_code == 0 and not base.failures
    verdict = {(d.key, d.metric): d for d in base.decisions}
    keys = sorted({r.key for r in ref.rows if r.dataset == "uci-digits" and r.status == "ok"})
    caught = escaped = 0
    for key in keys:
        d = verdict[(key, "test_top1_pct")]
        if d.verdict == "not gated":
            assert "chance" in d.reason, d.reason
            escaped += 1
            continue
        rows = [
            dataclasses.replace(r, metrics={**r.metrics, "test_top1_pct": r.metrics["test_top1_pct"] - 5.0})
            if r.key == key
            else r
            for r in cand.rows
        ]
        report = evaluate(ref, dataclasses.replace(cand, rows=rows), settings)
        assert [(f.key, f.metric) for f in report.failures] == [(key, "test_top1_pct")], key
        caught += 1
    assert caught >= 40 and caught + escaped == len(keys)
