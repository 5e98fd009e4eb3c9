"""The two sides of a gate: selectors, rows read from a database, comparability.

A *side* is the set of result rows one side of ``bench gate`` compares, with the
provenance of the run that produced them. It comes from a selector:

======================  ===============================================================
``cells``               the newest non-skipped row of every cell and seed, over all runs
                        (what a database holds after ``--bench-resume`` or several runs)
``latest``              the newest run (by start time) that has results
``tag:NAME``            the newest run stored with ``--bench-tag NAME``
``sha:PREFIX``          the newest run whose ``git_sha`` starts with PREFIX (one sha)
``run:PREFIX``          the run whose ``run_id`` starts with PREFIX (exactly one)
``PREFIX``              tried as a run-id prefix, then as a git-sha prefix
``PATH.db:SELECTOR``    any of the above in another database (default: ``--db``)
``PATH.db``             a database file alone means ``PATH.db:latest``
``PATH.json``           a reference file (``bench.gate.reference_file``)
======================  ===============================================================

An unknown or ambiguous selector raises ``SelectorError`` (exit 2) whose message lists
the candidates (runs, tags or shas). A run's rows are its ``results`` rows, the newest
row per (cell, seed) within the run, with every metric (a metric stored as NULL, i.e. a
non-finite value, is read as NaN so the gate can fail it); ``skipped`` rows are dropped
by the gate. ``cells`` takes rows from several runs only when they agree on every
comparability field and on the arithmetic (``arith_json``); otherwise it names the runs
that differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contract.cell import GROUP_KEYS, short_hash
from bench.errors import SelectorError
from bench.results.queries import result_records, runs_by_id, runs_with_results

DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# Fields that must agree between the two sides unless ``--force`` (see ``comparability``).
COMPARABILITY_FIELDS = ("tier", "gpu_name", "torch", "cuda", "flags")
# Run fields a reference file keeps besides the comparability fields.
RUN_INFO_FIELDS = (
    "run_id",
    "runs",
    "tag",
    "git_sha",
    "git_dirty",
    "started_at",
    "status",
    "host",
    "platform",
    "cpu_threads",
    "bench_version",
    "python",
)
CellKey = tuple[str, str, str, str, str, str]  # suite, variant, dataset, model, tier, mode
KEY_FIELDS = GROUP_KEYS


@dataclass
class Row:
    """One cell and seed of one side: grid key, status and metrics."""

    suite: str
    variant: str
    method: str
    dataset: str
    model: str
    tier: str
    mode: str
    seed: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    config_key: str = ""
    error: str = ""
    config: dict[str, Any] | None = None  # resolved method config and task settings (databases only)
    run_id: str = ""  # the run the row came from (databases only)

    @property
    def key(self) -> CellKey:
        return (self.suite, self.variant, self.dataset, self.model, self.tier, self.mode)


@dataclass
class Side:
    """The rows of one side and the run they came from (``run``: provenance, ``flags`` a dict)."""

    selector: str
    source: str
    kind: str  # "db" or "json"
    run: dict[str, Any]  # provenance; "flags" and "arith" as dicts
    rows: list[Row]
    noise: dict[Any, Any] = field(default_factory=dict)  # (cell key, metric) -> bench.gate.noise.CellNoise (files)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short description for tables and the decisions table: where the rows came from."""
        run_id = self.run.get("run_id") or "?"
        if self.kind == "json":
            return f"{self.source} (run {run_id[:12]})"
        return f"{self.source}:run:{run_id[:12]}"

    @property
    def db_path(self) -> Path | None:
        return Path(self.source) if self.kind == "db" else None


def split_selector(selector: str, default_db: str | Path) -> tuple[str, str, str]:
    """``(kind, path, run_selector)`` of a selector; kind is ``"json"`` or ``"db"``."""
    text = selector.strip()
    if not text:
        raise SelectorError(
            "empty selector; use latest, tag:NAME, sha:PREFIX, run:PREFIX, PATH.db:SELECTOR or a reference PATH.json"
        )
    if text.lower().endswith(".json"):
        return "json", text, ""
    for suffix in DB_SUFFIXES:
        marker = suffix + ":"
        if marker in text:
            path, _, rest = text.partition(marker)
            return "db", path + suffix, rest.strip() or "latest"
        if text.endswith(suffix):
            return "db", text, "latest"
    return "db", str(default_db), text


def load_side(selector: str, default_db: str | Path) -> Side:
    """The rows and run named by ``selector`` (see the module docstring)."""
    kind, path, run_selector = split_selector(selector, default_db)
    if kind == "json":
        from bench.gate.reference_file import read_reference

        return read_reference(path, selector=selector)
    from bench.results.store import SchemaMismatch, Store

    if not Path(path).is_file():
        raise SelectorError(f"selector {selector!r}: no database at {path}")
    try:
        store = Store(path, readonly=True)
    except SchemaMismatch as err:
        raise SchemaMismatch(
            f"{err}. The gate opens databases read-only; `bench merge {path} -o NEW.db` "
            "writes a copy with the current schema"
        ) from err
    with store:
        if run_selector.strip() == "cells":
            run, rows = read_cell_rows(store.db, path)
        else:
            run = resolve_run(store.db, run_selector, path)
            rows = read_run_rows(store.db, run["run_id"])
    return Side(selector=selector, source=path, kind="db", run=run, rows=rows)


# --- selecting a run ----------------------------------------------------------------------


def _describe(run: dict[str, Any]) -> str:
    parts = [f"run:{run['run_id'][:12]}", str(run.get("started_at") or "")[:19]]
    if run.get("tag"):
        parts.append(f"tag:{run['tag']}")
    if run.get("git_sha"):
        parts.append(f"sha:{run['git_sha'][:10]}")
    parts.append(f"tier {run.get('tier')}, mode {run.get('mode')}")
    return "  " + "  ".join(parts)


def _candidates(runs: list[dict[str, Any]], limit: int = 10) -> str:
    more = f"\n  ... and {len(runs) - limit} more" if len(runs) > limit else ""
    return "\n".join(_describe(r) for r in runs[:limit]) + more


def resolve_run(db: Any, selector: str, path: str | Path = "") -> dict[str, Any]:
    """The ``runs`` row a run selector names (``flags`` and ``arith`` added as dicts); raises SelectorError."""
    return _decoded(_resolve(db, selector.strip(), str(path)))


def _decoded(run: dict[str, Any]) -> dict[str, Any]:
    run["flags"] = json.loads(run["flags_json"]) if run.get("flags_json") else None
    run["arith"] = json.loads(run["arith_json"]) if run.get("arith_json") else None
    return run


def _resolve(db: Any, sel: str, path: str) -> dict[str, Any]:
    everything = runs_with_results(db.conn)
    if not everything:
        raise SelectorError(f"{path} has no runs with results")
    forms = "use cells, latest, tag:NAME, sha:PREFIX, run:PREFIX or a run-id / git-sha prefix"
    if sel == "latest":
        return everything[0]
    if sel.startswith("tag:"):
        name = sel[4:]
        runs = [r for r in everything if r.get("tag") == name]
        if not runs:
            tags = sorted({r["tag"] for r in everything if r.get("tag")})
            raise SelectorError(
                f"no run tagged {name!r} in {path}; tags there: "
                + (", ".join(tags) if tags else "none (run suites with --bench-tag NAME)")
            )
        return runs[0]
    if sel.startswith("sha:"):
        return _by_sha(everything, sel[4:], path, sel)
    if sel.startswith("run:"):
        run = _by_run_id(everything, sel[4:], path, sel, strict=True)
        assert run is not None  # strict: no match raised
        return run
    found = _by_run_id(everything, sel, path, sel, strict=False)
    if found is not None:
        return found
    if any((r.get("git_sha") or "").startswith(sel) for r in everything):
        return _by_sha(everything, sel, path, sel)
    raise SelectorError(
        f"selector {sel!r} matches no run id or git sha in {path}; {forms}. "
        f"Runs there, newest first:\n{_candidates(everything)}"
    )


def _by_run_id(runs: list[dict[str, Any]], prefix: str, path: str, sel: str, *, strict: bool) -> dict[str, Any] | None:
    if not prefix:
        raise SelectorError(f"selector {sel!r} has an empty run-id prefix")
    hits = [r for r in runs if r["run_id"].startswith(prefix)]
    if len(hits) > 1:
        raise SelectorError(
            f"selector {sel!r} is ambiguous in {path}: {len(hits)} runs match; "
            f"give more of the run id:\n{_candidates(hits)}"
        )
    if not hits and strict:
        raise SelectorError(
            f"no run id starts with {prefix!r} in {path}. Runs there, newest first:\n{_candidates(runs)}"
        )
    return hits[0] if hits else None


def _by_sha(runs: list[dict[str, Any]], prefix: str, path: str, sel: str) -> dict[str, Any]:
    if not prefix:
        raise SelectorError(f"selector {sel!r} has an empty git-sha prefix")
    hits = [r for r in runs if (r.get("git_sha") or "").startswith(prefix)]
    shas = sorted({r["git_sha"] for r in hits})
    if len(shas) > 1:
        raise SelectorError(
            f"selector {sel!r} is ambiguous in {path}: git shas " + ", ".join(shas) + "; give more of the sha"
        )
    if not hits:
        known = sorted({r["git_sha"] for r in runs if r.get("git_sha")})
        raise SelectorError(
            f"no run with a git sha starting {prefix!r} in {path}; shas there: "
            + (", ".join(known) if known else "none (runs outside a git checkout)")
        )
    return hits[0]


# --- reading rows -------------------------------------------------------------------------


def read_run_rows(db: Any, run_id: str) -> list[Row]:
    """The run's rows, newest per (cell, seed), with every metric (NULL metrics read as NaN)."""
    return _rows(db, run_id=run_id)


def read_cell_rows(db: Any, path: str | Path = "") -> tuple[dict[str, Any], list[Row]]:
    """``cells``: the newest non-skipped row of every (cell, seed) over all runs, and the run they came from.

    The returned run is the newest contributing run, with ``runs`` listing every
    contributing run id; raises SelectorError when the database has no such rows or the
    contributing runs differ in a comparability field or in their arithmetic.
    """
    rows = _rows(db, exclude_skipped=True, latest_only=True)  # latest_ids: a skipped row never counts
    if not rows:
        raise SelectorError(f"{path} has no result rows other than skipped ones")
    ids = sorted({r.run_id for r in rows})
    runs = [_decoded(r) for r in runs_by_id(db.conn, ids)]
    newest = runs[0]
    for other in runs[1:]:
        diffs = [f for f in ("tier", "gpu_name", "torch", "cuda", "flags", "arith") if other.get(f) != newest.get(f)]
        if diffs:
            raise SelectorError(
                f"selector 'cells' in {path} would mix runs that are not comparable: run {other['run_id'][:12]} "
                f"and run {newest['run_id'][:12]} differ in {', '.join(diffs)}; select one run (run:PREFIX) instead"
            )
    return {**newest, "runs": [r["run_id"] for r in runs]}, rows


def _rows(db: Any, *, run_id: str | None = None, exclude_skipped: bool = False, latest_only: bool = False) -> list[Row]:
    records, values = result_records(db.conn, run_id=run_id, exclude_skipped=exclude_skipped, latest_only=latest_only)
    metrics: dict[str, dict[str, float]] = {}
    for rid, name, value in values:
        metrics.setdefault(rid, {})[name] = math.nan if value is None else float(value)
    newest: dict[tuple, Row] = {}
    # Rows of a sweep share a few configs: parse and hash each distinct pair once (read-only dicts).
    parsed: dict[tuple[str | None, str | None], tuple[str, dict[str, Any]]] = {}
    for rec in records:  # ordered by start time: a later row of the same cell and seed wins
        pair = (rec["config_json"], rec["task_json"])
        if pair not in parsed:
            parsed[pair] = (config_key(*pair), {"config": _loads(pair[0]), "task": _loads(pair[1])})
        key, config = parsed[pair]
        first_line = rec["error"].splitlines()[0] if rec["error"] else ""
        error = ": ".join(x for x in (rec["error_type"], first_line) if x)
        row = Row(
            suite=rec["suite"],
            variant=rec["variant"] or rec["method"],
            method=rec["method"],
            dataset=rec["dataset"],
            model=rec["model"],
            tier=rec["tier"],
            mode=rec["mode"],
            seed=int(rec["seed"]),
            status=rec["status"],
            metrics=metrics.get(rec["result_id"], {}),
            config_key=key,
            error=error[:200],
            config=config,
            run_id=rec["run_id"],
        )
        newest[(row.key, row.seed)] = row
    return sorted(newest.values(), key=lambda r: (r.key, r.seed))


def _loads(text: str | None) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_unparsed": text}


def config_key(config_json: str | None, task_json: str | None) -> str:
    """Hash of a cell's resolved method config and task settings (seed excluded)."""
    return short_hash(config_json or "{}", task_json or "{}", n=12)


def config_differences(ref: dict[str, Any] | None, cand: dict[str, Any] | None, limit: int = 4) -> str:
    """``"config.train.steps 30 -> 60, ..."`` for two resolved configs; ``""`` when unknown."""
    if not ref or not cand:
        return ""
    a, b = flatten(ref), flatten(cand)
    diffs = [
        f"{k} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    return ", ".join(diffs[:limit]) + (f", ... ({len(diffs)} in all)" if len(diffs) > limit else "")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"train.lr": 0.1, ...}``: the dotted names the gate's notes and the re-keying compare."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


# --- comparability ------------------------------------------------------------------------


def side_fields(side: Side) -> dict[str, Any]:
    """The comparability fields of a side: tiers of its rows, GPU, torch, CUDA and flags."""
    tiers: list[Any] = sorted({r.tier for r in side.rows}) or [side.run.get("tier")]
    return {
        "tier": ", ".join(str(t) for t in tiers),
        "gpu_name": side.run.get("gpu_name"),
        "torch": side.run.get("torch"),
        "cuda": side.run.get("cuda"),
        "flags": side.run.get("flags"),
    }


def comparability(ref: Side, cand: Side) -> list[str]:
    """One message per comparability field that differs, naming the field and both values."""
    a, b = side_fields(ref), side_fields(cand)
    problems = []
    for name in COMPARABILITY_FIELDS:
        if name == "flags":
            problems.extend(_flag_differences(a["flags"], b["flags"]))
        elif a[name] != b[name]:
            problems.append(f"{name} differs: reference {a[name]!r}, candidate {b[name]!r}")
    return problems


def _flag_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    if a == b:
        return []
    if a is None or b is None:
        return [f"determinism flags (flags_json) differ: reference {a!r}, candidate {b!r}"]
    return [
        f"determinism flag {k} (flags_json) differs: reference {a.get(k, '(unset)')!r}, "
        f"candidate {b.get(k, '(unset)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
