"""``bench gate`` and ``bench reference export``: regression gates against a reference.

    bench gate --baseline REF --candidate CAND [--db results.db] [--config gate.toml] [options]
    bench reference export --db DB [--run SELECTOR] [--config gate.toml] [--calibrate [LABEL=]DB[:SEL] ...]
                           -o suites/reference/smoke.json

``REF`` and ``CAND`` are selectors (``latest``, ``tag:NAME``, ``sha:PREFIX``, ``run:PREFIX``,
a bare prefix, ``PATH.db:SELECTOR``, or a reference ``PATH.json``; see
``bench.gate.reference``). The decision rules, tolerances and config format are in
``bench.gate.rules``. Exit status: 0 pass, 1 regression, 2 usage error, bad reference or
incomparable runs, 3 internal error.

This module holds the command side: options, config files (``load_config``; the
command line overrides the file), the printed markdown table (``render_markdown``), the
JSON report (``report_dict``) and the ``gate_decisions`` rows (``write_decisions``).

``bench reference export`` writes one run's cells (grid key, seed, status and only the
metrics the gate reads, as chosen by ``--metric``/``--config``) with the run's
comparability fields to a small, sorted JSON file that ``bench gate`` takes as either
side (``bench.gate.reference_file``). With ``--calibrate`` runs (reruns of the reference under
perturbations) it also stores the noise model ``bench.gate.noise.calibrate`` measures from them.
``make reference`` refreshes the committed ``suites/reference/smoke.json`` that way.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, GateError

if TYPE_CHECKING:  # bench.gate.rules imports scipy/pandas-backed stats: only handlers import it
    from bench.gate.rules import Decision, GateReport, GateSettings
    from bench.gate.reference import Side


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="compare a candidate run with a reference; exit 1 on a regression",
                       description="Compare a candidate run with a reference (rules: python -m pydoc bench.gate.rules).")
    p.add_argument("--baseline", required=True, help="reference: selector or reference .json file")
    p.add_argument("--candidate", required=True, help="candidate: selector or reference .json file")
    p.add_argument("--db", default="results.db", help="database for selectors without PATH.db: (default results.db)")
    p.add_argument("--config", default=None, help="gate config, TOML or JSON ([gate] and [metrics.NAME] tables)")
    p.add_argument("--metric", action="append", default=None,
                   help="accuracy metric to gate (repeatable; default test_top1_pct); *_tau/*_rho always")
    p.add_argument("--abs-tol", action="append", default=[], metavar="METRIC[@DATASET]=VALUE",
                   help="absolute tolerance of a metric (optionally on one dataset), e.g. test_top1_pct=1.5")
    p.add_argument("--k", type=float, default=None, help="threshold = max(abs_tol, k x reference std); default 2")
    p.add_argument("--alpha", type=float, default=None, help="one-sided test level after BH (n >= 5); default 0.05")
    p.add_argument("--min-seeds", type=int, default=None,
                   help="fewer seeds than this over a threshold -> suspect, not failed; default 3")
    p.add_argument("--time-tol", type=float, default=None,
                   help="step-time ratio of medians tolerated (speed mode only); default 1.10")
    p.add_argument("--mem-pct", type=float, default=None, help="memory growth tolerated in percent; default 2")
    p.add_argument("--mem-mib", type=float, default=None, help="memory growth tolerated in MiB; default 32")
    p.add_argument("--allow-missing", action="store_true", default=None,
                   help="cells, seeds or metrics only in the reference do not fail the gate")
    p.add_argument("--z", type=float, default=None,
                   help="calibrated threshold = z x upper bound of the measured spread (bench.gate.noise); default 3")
    p.add_argument("--confidence", type=float, default=None,
                   help="one-sided confidence of that upper bound, in (0, 1); default 0.95")
    p.add_argument("--force", action="store_true", help="compare even when tier/GPU/torch/CUDA/flags differ")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    p.add_argument("--decisions-db", default=None, metavar="PATH",
                   help="database for the gate_decisions rows (default: the candidate database)")
    p.add_argument("--no-write", action="store_true", help="do not write gate_decisions rows")
    p.set_defaults(func=run_gate)

    ref = sub.add_parser("reference", help="reference files for bench gate")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    e = ref_sub.add_parser("export", help="write one run's gated metrics as a text-diffable JSON reference")
    e.add_argument("--db", default="results.db")
    e.add_argument("--run", default="latest", help="run selector (default latest)")
    e.add_argument("--config", default=None, help="gate config whose [gate] metrics are exported")
    e.add_argument("--metric", action="append", default=None, help="accuracy metric to keep (repeatable)")
    e.add_argument("--calibrate", action="append", default=[], metavar="[LABEL=]PATH.db[:SELECTOR]",
                   help="a rerun of the reference under a perturbation (repeatable): its deltas per cell become "
                        "the noise model (bench.gate.noise); LABEL defaults to the run's tag")
    e.add_argument("-o", "--out", required=True, help="output .json file")
    e.set_defaults(func=run_export)


# --- handlers -----------------------------------------------------------------------------------

def run_gate(args: argparse.Namespace) -> int:
    from bench.gate.rules import evaluate
    from bench.gate.reference import load_side

    try:
        settings = build_settings(args)
        ref = load_side(args.baseline, args.db)
        cand = load_side(args.candidate, args.db)
        report = evaluate(ref, cand, settings)
    except BenchError as err:
        print(f"bench gate: {err}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - exit 1 means "regression"; a crash must not look like one
        import traceback

        traceback.print_exc()
        print("bench gate: internal error (the traceback above); exit 3, not a verdict", file=sys.stderr)
        return 3
    print(render_markdown(report))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report_dict(report), indent=2, sort_keys=True) + "\n")
    target = args.decisions_db or (cand.source if cand.kind == "db" else None)
    if target and not args.no_write:
        write_decisions(report, target)
    return report.exit_code


def run_export(args: argparse.Namespace) -> int:
    from bench.gate.reference import load_side
    from bench.gate.reference_file import export_reference

    try:
        settings = build_settings(args)
        if args.run.lower().endswith(".json"):
            raise GateError(f"--run takes a run selector in --db, not a file ({args.run})")
        side = load_side(args.run, args.db)
        runs = [_calibration_side(spec, args.db) for spec in args.calibrate]
        noise, calibration, summary = calibrate_sides(side, runs, settings) if runs else (None, None, [])
        text = export_reference(side, settings.gated, noise=noise, calibration=calibration)
    except BenchError as err:
        print(f"bench reference export: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {len(side.rows)} cell rows of run {side.run['run_id']} ({side.source}) to {out} "
          f"({len(text.encode())} bytes)")
    for line in summary:
        print(line)
    return 0


def _calibration_side(spec: str, default_db: str) -> tuple[str, Side]:
    from bench.gate.reference import load_side

    label, sep, selector = spec.partition("=")
    if not sep:
        label, selector = "", spec
    side = load_side(selector, default_db)
    return label or side.run.get("tag") or side.run["run_id"][:12], side


def calibrate_sides(ref: Side, runs: Sequence[tuple[str, Side]], settings: GateSettings
                    ) -> tuple[dict, dict[str, Any], list[str]]:
    """The noise model of ``ref`` from calibration runs: (noise map, calibration info, summary lines).

    Each run's class is ``same`` when its arithmetic equals the reference run's, else
    ``cross``; a run that is not comparable (tier, torch, flags) is refused. A run may be a
    reference file of the same code made elsewhere (its arithmetic is then unknown: cross).
    Rows whose config differs from the reference's (``config_key``) are left out: they are
    another cell, not a rerun. A cell that is ok in the reference but not in a run is listed
    as unstable in the summary and the info.
    """
    from bench.data.registry import dataset_info
    from bench.errors import UnknownName
    from bench.gate.rules import Incomparable
    from bench.gate.noise import calibrate, chance_level, noise_class, side_values
    from bench.gate.reference import comparability

    def chance(key: tuple, metric: str) -> float | None:
        try:
            classes = dataset_info(key[2]).num_classes
        except (UnknownName, KeyError, ValueError):
            classes = None
        return chance_level(metric, classes)

    ref_values = side_values(ref.rows, settings.gated)
    ok_ref = {(r.key, r.seed) for r in ref.rows if r.status == "ok"}
    config_of = {(r.key, r.seed): r.config_key for r in ref.rows if r.config_key}
    labelled, info, summary = [], [], []
    for label, side in runs:
        problems = comparability(ref, side)
        if problems:
            raise Incomparable(f"calibration run {label} is not comparable with the reference: " + "; ".join(problems))
        klass = noise_class(ref.run.get("arith"), side.run.get("arith"))
        rows = [r for r in side.rows if config_of.get((r.key, r.seed), r.config_key) == r.config_key]
        other_config = len(side.rows) - len(rows)
        unstable = sorted(f"{'/'.join(r.key[:4])} seed {r.seed}: {r.status}" for r in rows
                          if (r.key, r.seed) in ok_ref and r.status != "ok")
        labelled.append((klass, side_values(rows, settings.gated)))
        info.append({"label": label, "class": klass, "source": side.selector, "run_id": side.run.get("run_id"),
                     "arith": side.run.get("arith"),
                     "git_sha": side.run.get("git_sha"), "started_at": side.run.get("started_at"),
                     "cpu_model": side.run.get("cpu_model") or (side.run.get("arith") or {}).get("cpu"),
                     "rows": len(rows), "other_config_rows": other_config, "unstable": unstable})
        summary.append(f"calibration {label}: {klass} arithmetic, {len(rows)} rows"
                       + (f" ({other_config} with another config left out)" if other_config else "")
                       + (f", {len(unstable)} unstable: {'; '.join(unstable[:5])}" if unstable else ""))
    noise = calibrate(ref_values, labelled, chance)
    calibration = {"runs": info, "z": settings.z, "confidence": settings.confidence}
    return noise, calibration, summary


def build_settings(args: argparse.Namespace) -> GateSettings:
    """Defaults, then ``--config``, then the command-line options (which win)."""
    from bench.gate.rules import GateSettings

    settings = load_config(args.config) if getattr(args, "config", None) else GateSettings()
    if args.metric:
        settings = dataclasses.replace(settings, metrics=tuple(args.metric))
    for spec in getattr(args, "abs_tol", []) or []:
        settings = with_abs_tol(settings, spec)
    changes: dict[str, Any] = {}
    for name in ("k", "alpha", "min_seeds", "time_tol", "mem_pct", "mem_mib", "allow_missing", "z", "confidence"):
        value = getattr(args, name, None)
        if value is not None:
            if not isinstance(value, bool) and value < 0:
                raise GateError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
            changes[name] = value
    if not 0 < changes.get("confidence", settings.confidence) < 1:
        raise GateError(f"confidence must lie strictly between 0 and 1, got {changes.get('confidence')}")
    if "k" in changes:
        changes["metric_k"], changes["dataset_k"] = {}, {}  # --k overrides every per-metric k
    if getattr(args, "force", False):
        changes["force"] = True
    return dataclasses.replace(settings, **changes)


# --- configuration ----------------------------------------------------------------------------

_GLOBAL_TYPES: dict[str, type] = {"metrics": list, "k": float, "alpha": float, "min_seeds": int,
                                  "time_tol": float, "mem_pct": float, "mem_mib": float, "allow_missing": bool,
                                  "z": float, "confidence": float}
_TOL_KEYS = ("abs_tol", "k")


def _unknown(keys: Sequence[str], valid: Sequence[str], where: str) -> None:
    bad = sorted(set(keys) - set(valid))
    if bad:
        raise GateError(f"{where}: unknown key(s) {bad}; valid: {', '.join(valid)}")


def _number(value: Any, where: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GateError(f"{where} must be a finite number, got {value!r}")
    if value < 0:
        raise GateError(f"{where} must be >= 0, got {value!r}")
    return kind(value)


def load_config(path: str | Path, base: GateSettings | None = None) -> GateSettings:
    """Settings from a TOML (``.toml``) or JSON file on top of ``base`` (the defaults)."""
    from bench.gate.rules import GateSettings

    p = Path(path)
    if not p.is_file():
        raise GateError(f"no gate config file at {p}")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(p.read_text())
        else:
            data = json.loads(p.read_text())
    except ValueError as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise GateError(f"cannot parse gate config {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise GateError(f"gate config {p} must hold a table/object, got {type(data).__name__}")
    return settings_from_dict(data, base or GateSettings(), where=str(p))


def settings_from_dict(data: dict[str, Any], base: GateSettings, where: str = "config") -> GateSettings:
    """Apply a parsed config (``[gate]`` and ``[metrics.NAME]`` tables) to ``base``."""
    _unknown(list(data), ("gate", "metrics"), where)
    changes: dict[str, Any] = {}
    gate = data.get("gate", {})
    _unknown(list(gate), list(_GLOBAL_TYPES), f"{where} [gate]")
    for key, value in gate.items():
        kind = _GLOBAL_TYPES[key]
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise GateError(f"{where} [gate] metrics must be a list of metric names, got {value!r}")
            changes["metrics"] = tuple(value)
        elif kind is bool:
            if not isinstance(value, bool):
                raise GateError(f"{where} [gate] {key} must be true or false, got {value!r}")
            changes[key] = value
        else:
            changes[key] = _number(value, f"{where} [gate] {key}", kind)
    abs_tol, metric_k = dict(base.abs_tol), dict(base.metric_k)
    ds_tol, ds_k = dict(base.dataset_abs_tol), dict(base.dataset_k)
    for metric, spec in data.get("metrics", {}).items():
        here = f"{where} [metrics.{metric}]"
        _unknown(list(spec), (*_TOL_KEYS, "datasets"), here)
        if "abs_tol" in spec:
            abs_tol[metric] = _number(spec["abs_tol"], f"{here} abs_tol")
        if "k" in spec:
            metric_k[metric] = _number(spec["k"], f"{here} k")
        for dataset, dspec in spec.get("datasets", {}).items():
            _unknown(list(dspec), _TOL_KEYS, f"{here} datasets.{dataset}")
            if "abs_tol" in dspec:
                ds_tol[(metric, dataset)] = _number(dspec["abs_tol"], f"{here} datasets.{dataset} abs_tol")
            if "k" in dspec:
                ds_k[(metric, dataset)] = _number(dspec["k"], f"{here} datasets.{dataset} k")
    return dataclasses.replace(base, **changes, abs_tol=abs_tol, metric_k=metric_k,
                               dataset_abs_tol=ds_tol, dataset_k=ds_k)


def with_abs_tol(settings: GateSettings, spec: str) -> GateSettings:
    """Apply ``METRIC=VALUE`` (the metric everywhere) or ``METRIC@DATASET=VALUE``."""
    target, sep, value = spec.partition("=")
    if not sep or not target:
        raise GateError(f"--abs-tol expects METRIC=VALUE or METRIC@DATASET=VALUE, got {spec!r}")
    try:
        number = _number(float(value), f"--abs-tol {target}")
    except ValueError:
        raise GateError(f"--abs-tol {target}: {value!r} is not a number") from None
    metric, _, dataset = target.partition("@")
    if dataset:
        return dataclasses.replace(settings, dataset_abs_tol={**settings.dataset_abs_tol, (metric, dataset): number})
    kept = {key: v for key, v in settings.dataset_abs_tol.items() if key[0] != metric}
    return dataclasses.replace(settings, abs_tol={**settings.abs_tol, metric: number}, dataset_abs_tol=kept)


# --- output -------------------------------------------------------------------------------------

def _fmt(value: float | None, std: float | None, n: int) -> str:
    from bench.results.stats import format_mean_std

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if std is not None:
        return format_mean_std(value, std, n)
    return f"{value:.2f} ({n})"


def _delta(d: Decision) -> str:
    if d.delta is None:
        return "-"
    ratio = f" (x{d.ratio:.3f})" if d.ratio is not None and math.isfinite(d.ratio) else ""
    return f"{d.delta:+.2f}{ratio}"


def render_markdown(report: GateReport) -> str:
    """The table, the notes, and the one-line summary last (what ``bench gate`` prints)."""
    lines = ["| cell | metric | reference | candidate | delta | verdict | reason |",
             "|---|---|---:|---:|---:|---|---|"]
    for d in report.decisions:
        verdict = f"**{d.verdict}**" if report.failing(d) else d.verdict
        lines.append(f"| {d.cell} | {d.metric} | {_fmt(d.reference, d.reference_std, d.n_reference)} | "
                     f"{_fmt(d.candidate, d.candidate_std, d.n_candidate)} | {_delta(d)} | {verdict} | "
                     f"{d.reason.replace('|', '/')} |")
    if report.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in report.notes]
    lines += ["", report.summary()]
    return "\n".join(lines)


def _side(s: Side) -> dict[str, Any]:
    return {"selector": s.selector, "source": s.source, "kind": s.kind, "label": s.label,
            "run": {k: v for k, v in s.run.items() if k != "flags_json"}, "rows": len(s.rows)}


def report_dict(report: GateReport) -> dict[str, Any]:
    """The machine-readable report (``--json``): summary, counts, sides, settings, notes, decisions."""
    return {"gate_id": report.gate_id, "created_at": report.created_at, "exit_code": report.exit_code,
            "passed": report.exit_code == 0, "summary": report.summary(), "counts": report.counts(),
            "baseline": _side(report.baseline), "candidate": _side(report.candidate),
            "settings": report.settings.as_dict(), "notes": report.notes,
            "decisions": [d.as_dict() for d in report.decisions]}


def decision_rows(report: GateReport) -> list[dict[str, Any]]:
    """``gate_decisions`` rows (columns in ``bench.results.schema``), one per decision."""
    from bench.contract.cell import short_hash
    from bench.gate.reference import KEY_FIELDS

    rows = []
    for d in report.decisions:
        data = d.as_dict()
        rows.append({"decision_id": short_hash(report.gate_id, *d.key, d.metric), "gate_id": report.gate_id,
                     "created_at": report.created_at, "baseline": report.baseline.label,
                     "candidate": report.candidate.label, **{k: data[k] for k in KEY_FIELDS},
                     "metric": d.metric, "reference": data["reference"], "candidate_value": data["candidate"],
                     "delta": data["delta"], "n_reference": d.n_reference, "n_candidate": d.n_candidate,
                     "p_value": data["p_value"], "p_adjusted": data["p_adjusted"], "verdict": d.verdict,
                     "reason": d.reason})
    return rows


def write_decisions(report: GateReport, db_path: str | Path) -> int:
    """Insert every decision into ``gate_decisions`` of ``db_path`` in one transaction."""
    from bench.results.store import Store

    rows = decision_rows(report)
    with Store(db_path) as store, store.db.atomic():
        store.db["gate_decisions"].insert_all(rows)
    return len(rows)
