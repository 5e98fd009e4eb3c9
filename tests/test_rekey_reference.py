"""``benchmarks/rekey_reference.py``: a reference is re-keyed only where the configs differ by added
fields at the named values, and the keys it computes are the ones the gate computes from rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench.contract.config import canonical_json
from bench.gate.reference import config_key

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rekey_reference", ROOT / "benchmarks" / "rekey_reference.py")
assert _spec is not None and _spec.loader is not None
rekey_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rekey_reference)

ID = {"suite": "s", "variant": "m", "dataset": "d", "model": "net", "tier": "smoke", "mode": "accuracy"}


def entry(config: dict, task: dict) -> dict:
    return {"config_key": config_key(canonical_json(config), canonical_json(task)), "config": config, "task": task}


def reference_with(key: str) -> dict:
    return {"cells": [{**ID, "seed": 0, "status": "ok", "config_key": key, "metrics": {"test_top1_pct": 90.0}}]}


OLD = entry({"train": {"lr": 0.1}}, {"width": 0.5})
ADDED = entry({"train": {"lr": 0.1, "compile": False}}, {"width": 0.5, "split": "harness"})
ADDED_KEYS = {"*.compile": False, "task.split": "harness"}


def test_an_added_field_at_its_named_value_is_rekeyed():
    ref = reference_with(OLD["config_key"])
    done, left = rekey_reference.rekey(
        ref, [{rekey_reference.cell_id(ID): OLD}], {rekey_reference.cell_id(ID): ADDED}, ADDED_KEYS
    )
    assert (done, left) == (1, [])
    assert ref["cells"][0]["config_key"] == ADDED["config_key"] != OLD["config_key"]


@pytest.mark.parametrize(
    "new, why",
    [
        (
            entry({"train": {"lr": 0.2, "compile": False}}, {"width": 0.5, "split": "harness"}),
            "config.train.lr 0.1 -> 0.2",
        ),
        (
            entry({"train": {"lr": 0.1, "compile": True}}, {"width": 0.5, "split": "harness"}),
            "config.train.compile added as True",
        ),
        (entry({"train": {"lr": 0.1}}, {"width": 0.5, "split": "nb201"}), "task.split added as 'nb201'"),
        (entry({"train": {}}, {"width": 0.5}), "config.train.lr removed"),
        (entry({"train": {"lr": 0.1, "steps": 3}}, {"width": 0.5}), "config.train.steps added as 3"),
    ],
)
def test_any_other_difference_keeps_the_old_key_and_says_why(new, why):
    ref = reference_with(OLD["config_key"])
    done, left = rekey_reference.rekey(
        ref, [{rekey_reference.cell_id(ID): OLD}], {rekey_reference.cell_id(ID): new}, ADDED_KEYS
    )
    assert done == 0 and ref["cells"][0]["config_key"] == OLD["config_key"]
    assert len(left) == 1 and why in left[0]


def test_a_reference_key_no_old_revision_has_is_left():
    ref = reference_with("0123456789ab")
    done, left = rekey_reference.rekey(
        ref, [{rekey_reference.cell_id(ID): OLD}], {rekey_reference.cell_id(ID): ADDED}, ADDED_KEYS
    )
    assert done == 0 and "no old revision" in left[0]


def test_the_keys_of_this_checkout_are_the_committed_references_keys(tmp_path):
    """Every cell of the committed smoke reference has this checkout's key: the grid's
    configs are the ones the reference was measured with (a config change shows up here first)."""
    out = tmp_path / "keys.json"
    assert rekey_reference.main(["keys", "--out", str(out)]) == 0
    keys = json.loads(out.read_text())
    ref = json.loads((ROOT / "suites" / "reference" / "smoke.json").read_text())
    stale = sorted(
        {
            rekey_reference.cell_id(c)
            for c in ref["cells"]
            if keys.get(rekey_reference.cell_id(c), {}).get("config_key") != c["config_key"]
        }
    )
    assert stale == []


def test_merging_one_suites_calibration_replaces_only_that_suites_rows():
    def cell(suite: str, value: float) -> dict:
        return {**ID, "suite": suite, "seed": 0, "config_key": "k", "metrics": {"test_top1_pct": value}}

    reference = {
        "cells": [cell("a", 1.0), cell("t", 2.0), cell("t", 3.0), cell("z", 4.0)],
        "noise": [{"suite": "a"}, {"suite": "t", "old": True}, {"suite": "z"}],
        "calibration": {"runs": [{"label": "busy", "class": "same"}, {"label": "t-busy", "suites": ["t"]}]},
    }
    fresh = {
        "cells": [cell("t", 9.0)],
        "noise": [{"suite": "t", "new": True}],
        "calibration": {"runs": [{"label": "busy", "class": "same", "git_sha": "new"}]},
    }
    counts = rekey_reference.merge_suite(reference, fresh, "t")
    assert [(c["suite"], c["metrics"]["test_top1_pct"]) for c in reference["cells"]] == [
        ("a", 1.0),
        ("t", 9.0),
        ("z", 4.0),
    ]
    assert reference["noise"] == [{"suite": "a"}, {"suite": "t", "new": True}, {"suite": "z"}]
    assert reference["calibration"]["runs"] == [
        {"label": "busy", "class": "same"},
        {"label": "t-busy", "class": "same", "git_sha": "new", "suites": ["t"]},
    ]
    assert counts == {"cells": (4, 3), "noise": (3, 3)}
    with pytest.raises(ValueError, match="other than 't'"):
        rekey_reference.merge_suite(reference, {"cells": [cell("a", 0.0)]}, "t")
