"""``bench gate`` and ``bench reference export``: regression gates against a reference.

    bench gate --baseline REF --candidate CAND [--db results.db] [--config gate.toml] [options]
    bench reference export --db DB [--run SELECTOR] [--config gate.toml] [--calibrate [LABEL=]DB[:SEL] ...]
                           -o suites/reference/smoke.json

``REF`` and ``CAND`` are selectors (``latest``, ``tag:NAME``, ``sha:PREFIX``, ``run:PREFIX``,
a bare prefix, ``PATH.db:SELECTOR``, or a reference ``PATH.json``; see
``bench.gate.reference``). The decision rules, tolerances and config format are in
``bench.gate.rules``. Exit status: 0 pass, 1 regression, 2 usage error, bad reference or
incomparable runs, 3 internal error.

This module holds the command side: options, handlers and the calibration sides of
``reference export``. The config file (``bench.gate.settings.load_config``; the command line
overrides it) and the outputs (``bench.gate.output``: markdown table, JSON report,
``gate_decisions`` rows) live in the gate package.

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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cache import atomic_write_text
from bench.errors import BenchError, GateError
from bench.gate.output import decision_rows, render_markdown, report_dict
from bench.gate.settings import load_config, with_abs_tol

if TYPE_CHECKING:  # bench.gate.rules imports scipy/pandas-backed stats: only handlers import it
    from bench.gate.reference import Side
    from bench.gate.rules import GateReport
    from bench.gate.settings import GateSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate",
        help="compare a candidate run with a reference; exit 1 on a regression",
        description="Compare a candidate run with a reference (rules: python -m pydoc bench.gate.rules).",
    )
    p.add_argument("--baseline", required=True, help="reference: selector or reference .json file")
    p.add_argument("--candidate", required=True, help="candidate: selector or reference .json file")
    p.add_argument("--db", default="results.db", help="database for selectors without PATH.db: (default results.db)")
    p.add_argument("--config", default=None, help="gate config, TOML or JSON ([gate] and [metrics.NAME] tables)")
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="accuracy metric to gate (repeatable; default test_top1_pct); *_tau/*_rho always",
    )
    p.add_argument(
        "--abs-tol",
        action="append",
        default=[],
        metavar="METRIC[@DATASET]=VALUE",
        help="absolute tolerance of a metric (optionally on one dataset), e.g. test_top1_pct=1.5",
    )
    p.add_argument("--k", type=float, default=None, help="threshold = max(abs_tol, k x reference std); default 2")
    p.add_argument("--alpha", type=float, default=None, help="one-sided test level after BH (n >= 5); default 0.05")
    p.add_argument(
        "--min-seeds",
        type=int,
        default=None,
        help="fewer seeds than this over a threshold -> suspect, not failed; default 3",
    )
    p.add_argument(
        "--time-tol",
        type=float,
        default=None,
        help="step-time ratio of medians tolerated (speed mode only); default 1.10",
    )
    p.add_argument("--mem-pct", type=float, default=None, help="memory growth tolerated in percent; default 2")
    p.add_argument("--mem-mib", type=float, default=None, help="memory growth tolerated in MiB; default 32")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        default=None,
        help="cells, seeds or metrics only in the reference do not fail the gate",
    )
    p.add_argument(
        "--z",
        type=float,
        default=None,
        help="calibrated threshold = z x upper bound of the measured spread (bench.gate.noise); default 3",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="one-sided confidence of that upper bound, in (0, 1); default 0.95",
    )
    p.add_argument("--force", action="store_true", help="compare even when tier/GPU/torch/CUDA/flags differ")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")
    p.add_argument(
        "--decisions-db",
        default=None,
        metavar="PATH",
        help="database for the gate_decisions rows (default: the candidate database)",
    )
    p.add_argument("--no-write", action="store_true", help="do not write gate_decisions rows")
    p.set_defaults(func=run_gate)

    ref = sub.add_parser("reference", help="reference files for bench gate")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    e = ref_sub.add_parser("export", help="write one run's gated metrics as a text-diffable JSON reference")
    e.add_argument("--db", default="results.db")
    e.add_argument("--run", default="latest", help="run selector (default latest)")
    e.add_argument("--config", default=None, help="gate config whose [gate] metrics are exported")
    e.add_argument("--metric", action="append", default=None, help="accuracy metric to keep (repeatable)")
    e.add_argument(
        "--calibrate",
        action="append",
        default=[],
        metavar="[LABEL=]PATH.db[:SELECTOR]",
        help="a rerun of the reference under a perturbation (repeatable): its deltas per cell become "
        "the noise model (bench.gate.noise); LABEL defaults to the run's tag",
    )
    e.add_argument("-o", "--out", required=True, help="output .json file")
    e.set_defaults(func=run_export)


# --- handlers -----------------------------------------------------------------------------------


def run_gate(args: argparse.Namespace) -> int:
    from bench.gate.reference import load_side
    from bench.gate.rules import evaluate

    try:
        settings = build_settings(args)
        ref = load_side(args.baseline, args.db)
        # The same selector twice (a self-check: false alerts on identical rows) is read once.
        cand = (
            dataclasses.replace(ref, selector=args.candidate)
            if args.candidate == args.baseline
            else load_side(args.candidate, args.db)
        )
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
        atomic_write_text(json.dumps(report_dict(report), indent=2, sort_keys=True) + "\n", path)
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
    atomic_write_text(text, out)
    print(
        f"wrote {len(side.rows)} cell rows of run {side.run['run_id']} ({side.source}) to {out} "
        f"({len(text.encode())} bytes)"
    )
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


def calibrate_sides(
    ref: Side, runs: Sequence[tuple[str, Side]], settings: GateSettings
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
    from bench.errors import Incomparable, UnknownName
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
        unstable = sorted(
            f"{'/'.join(r.key[:4])} seed {r.seed}: {r.status}"
            for r in rows
            if (r.key, r.seed) in ok_ref and r.status != "ok"
        )
        labelled.append((klass, side_values(rows, settings.gated)))
        info.append(
            {
                "label": label,
                "class": klass,
                "source": side.selector,
                "run_id": side.run.get("run_id"),
                "arith": side.run.get("arith"),
                "git_sha": side.run.get("git_sha"),
                "started_at": side.run.get("started_at"),
                "cpu_model": side.run.get("cpu_model") or (side.run.get("arith") or {}).get("cpu"),
                "rows": len(rows),
                "other_config_rows": other_config,
                "unstable": unstable,
            }
        )
        summary.append(
            f"calibration {label}: {klass} arithmetic, {len(rows)} rows"
            + (f" ({other_config} with another config left out)" if other_config else "")
            + (f", {len(unstable)} unstable: {'; '.join(unstable[:5])}" if unstable else "")
        )
    noise = calibrate(ref_values, labelled, chance)
    calibration = {"runs": info, "z": settings.z, "confidence": settings.confidence}
    return noise, calibration, summary


def build_settings(args: argparse.Namespace) -> GateSettings:
    """Defaults, then ``--config``, then the command-line options (which win)."""
    from bench.gate.settings import GateSettings

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


def write_decisions(report: GateReport, db_path: str | Path) -> int:
    """Insert every decision into ``gate_decisions`` of ``db_path`` in one transaction."""
    from bench.results.store import Store

    with Store(db_path) as store:
        return store.write_gate_decisions(decision_rows(report))
