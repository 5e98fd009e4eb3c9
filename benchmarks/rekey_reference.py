"""Carry a gate reference across a change that only adds config or task fields at their old behaviour.

A reference cell is gated only against a candidate with the same ``config_key``, the hash of the
cell's resolved method config and task settings (``bench.gate.reference.config_key``). A change
that adds a field (say ``TaskSettings.split``, whose default ``"harness"`` is the old behaviour)
changes every key, so every cell reads "config differs" and the gate compares nothing until the
reference is recalibrated (``make reference``, about an hour on 2 cores). This script re-keys the
reference instead, and only where that is sound: for each reference cell it finds the cell's
resolved config at the old revision *and* at the new one, checks that the old key is the key the
reference holds (so the reference really was made from that config), and that the two configs
differ only by added fields holding the values named by ``--added``; anything else (a changed
value, a removed field, an added field with another value) keeps its old key and is listed, so
those cells stay "config differs" until they are recalibrated.

    # 1. in a checkout of the revision the reference was made at, and in the new one:
    python benchmarks/rekey_reference.py keys --out /tmp/old.json     # (old checkout)
    python benchmarks/rekey_reference.py keys --out /tmp/new.json     # (new checkout)
    # 2. re-key (writes the reference in place; --dry-run prints the counts only):
    python benchmarks/rekey_reference.py rekey --old /tmp/old.json --new /tmp/new.json \\
        --reference suites/reference/smoke.json --added task.split=harness
    # a suite whose configs really changed is recalibrated alone and merged in:
    make reference SUITES=suites/test_trnas.py REFERENCE=/tmp/trnas.json
    python benchmarks/rekey_reference.py merge --reference suites/reference/smoke.json \\
        --fresh /tmp/trnas.json --suite trnas

``--added`` names a field and the value it was added with; it is the caller's claim that the value
reproduces the old behaviour bit for bit (as ``TrainConfig.optimizer_impl="auto"`` does on CPU), so
name only fields whose docstring says so.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gate.reference import config_key, flatten  # noqa: E402
from bench.gate.reference_file import _render  # noqa: E402

CELL_FIELDS = ("suite", "variant", "dataset", "model", "tier", "mode")


def grid_keys(suites: Path, tier: str, mode: str) -> dict[str, dict[str, Any]]:
    """``{cell id: {"config_key", "config", "task"}}`` for every cell of every suite's ``GRID`` at ``tier``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(suites.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_rekey_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        grid = getattr(module, "GRID", None)
        if grid is None or (grid.tiers and tier not in grid.tiers):
            continue
        for cell in grid.cells(tier, device="cpu", mode=mode):
            ident = cell_id(
                {
                    "suite": cell.suite,
                    "variant": cell.variant,
                    "dataset": cell.dataset,
                    "model": cell.model,
                    "tier": tier,
                    "mode": mode,
                }
            )
            out[ident] = {
                "config_key": config_key(cell.config_json, cell.task_json),
                "config": json.loads(cell.config_json),
                "task": json.loads(cell.task_json),
            }
    return out


def cell_id(cell: dict[str, Any]) -> str:
    return "/".join(str(cell[f]) for f in CELL_FIELDS)


def only_added(old: dict[str, Any], new: dict[str, Any], added: dict[str, Any]) -> list[str]:
    """The differences between two cells' ``{"config", "task"}`` that ``added`` does not allow; [] when sound.

    ``added`` maps a dotted field name or an ``fnmatch`` pattern (``*.compile``: that field of every
    nested training config) to the one value the field may have been added with."""
    a = flatten({"config": old["config"], "task": old["task"]})
    b = flatten({"config": new["config"], "task": new["task"]})
    bad = []
    for key in sorted(set(a) | set(b)):
        if key in a and key in b:
            if a[key] != b[key]:
                bad.append(f"{key} {a[key]!r} -> {b[key]!r}")
        elif key in a:
            bad.append(f"{key} removed")
        else:
            allowed = [v for pattern, v in added.items() if fnmatch.fnmatchcase(key, pattern)]
            if not allowed or allowed[0] != b[key]:
                bad.append(f"{key} added as {b[key]!r}" + (f" (allowed: {allowed[0]!r})" if allowed else ""))
    return bad


def rekey(reference: dict[str, Any], olds: list[dict], new: dict, added: dict[str, Any]) -> tuple[int, list[str]]:
    """Re-key ``reference['cells']`` in place; returns (cells re-keyed, reasons for the cells left).

    ``olds`` are the cells of the revisions the reference's parts were made at (a reference whose
    suites were recalibrated at different times has several); a cell's old config is the one whose
    key is the key the reference holds."""
    done, left = 0, []
    for cell in reference["cells"]:
        ident = cell_id(cell)
        if ident not in new:
            left.append(f"{ident}: not a cell of the new grid")
            continue
        if new[ident]["config_key"] == cell["config_key"]:
            continue
        old = next((o[ident] for o in olds if ident in o and o[ident]["config_key"] == cell["config_key"]), None)
        if old is None:
            left.append(f"{ident}: no old revision given has the reference's key (made from another config)")
            continue
        bad = only_added(old, new[ident], added)
        if bad:
            left.append(f"{ident}: {', '.join(bad[:3])}")
            continue
        cell["config_key"] = new[ident]["config_key"]
        done += 1
    return done, left


def merge_suite(reference: dict[str, Any], fresh: dict[str, Any], suite: str) -> dict[str, tuple[int, int]]:
    """Replace ``suite``'s cells, noise entries and calibration runs in ``reference`` by ``fresh``'s.

    ``fresh`` is a reference file made by a calibration of that suite alone (``make reference
    SUITES=suites/test_<suite>.py REFERENCE=F``). Its rows go where the suite's old rows were, the
    other suites' rows stay as they are, and its calibration runs are appended with ``suites:
    [suite]`` and the label prefixed by the suite (the gate's notes list them), so the file says
    which cells were calibrated when and at which commit. Returns ``{part: (before, after)}``."""
    other = {r["suite"] for part in ("cells", "noise") for r in fresh.get(part, [])} - {suite}
    if other:
        raise ValueError(f"the fresh file holds suites other than {suite!r}: {sorted(other)}")
    counts = {}
    for part in ("cells", "noise"):
        rows = reference.get(part, [])
        at = next((i for i, r in enumerate(rows) if r["suite"] == suite), len(rows))
        before = [r for r in rows[:at] if r["suite"] != suite]
        after = [r for r in rows[at:] if r["suite"] != suite]
        reference[part] = before + list(fresh.get(part, [])) + after
        counts[part] = (len(rows), len(reference[part]))
    calibration = reference.setdefault("calibration", {})
    runs = [r for r in calibration.get("runs", []) if r.get("suites") != [suite]]
    for run in fresh.get("calibration", {}).get("runs", []):
        runs.append({**run, "label": f"{suite}-{run['label']}", "suites": [suite]})
    calibration["runs"] = runs
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    keys = sub.add_parser("keys", help="write every suite cell's resolved config and key at this checkout")
    keys.add_argument("--out", required=True)
    keys.add_argument("--tier", default="smoke")
    keys.add_argument("--mode", default="accuracy")
    keys.add_argument("--suites", default=str(ROOT / "suites"))
    rk = sub.add_parser("rekey", help="re-key a reference where the configs differ only by --added fields")
    rk.add_argument("--old", required=True, action="append", help="keys file of a revision the reference was made at")
    rk.add_argument("--new", required=True)
    rk.add_argument("--reference", required=True)
    rk.add_argument(
        "--added",
        action="append",
        default=[],
        help="FIELD=JSON_VALUE, FIELD a dotted name or pattern: task.split=harness, '*.compile=false'",
    )
    rk.add_argument("--dry-run", action="store_true")
    mg = sub.add_parser("merge", help="replace one suite's cells, noise and calibration runs by a fresh calibration's")
    mg.add_argument("--reference", required=True)
    mg.add_argument("--fresh", required=True, help="reference file of a calibration of that suite alone")
    mg.add_argument("--suite", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "merge":
        reference = json.loads(Path(args.reference).read_text())
        counts = merge_suite(reference, json.loads(Path(args.fresh).read_text()), args.suite)
        for part, (a, b) in counts.items():
            print(f"{part}: {a} -> {b}")
        Path(args.reference).write_text(_render(reference))
        return 0
    if args.cmd == "keys":
        data = grid_keys(Path(args.suites), args.tier, args.mode)
        Path(args.out).write_text(json.dumps(data, sort_keys=True))
        print(f"{len(data)} cells -> {args.out}")
        return 0
    added = {}
    for item in args.added:
        name, _, value = item.partition("=")
        try:
            added[name] = json.loads(value)
        except ValueError:
            added[name] = value
    reference = json.loads(Path(args.reference).read_text())
    done, left = rekey(
        reference, [json.loads(Path(p).read_text()) for p in args.old], json.loads(Path(args.new).read_text()), added
    )
    print(f"re-keyed {done} of {len(reference['cells'])} reference cells; {len(left)} left with their old key")
    for line in left:
        print("  left:", line)
    if not args.dry_run:
        Path(args.reference).write_text(_render(reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
