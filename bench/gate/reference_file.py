"""Reference files: the committed side of ``bench gate``, with the noise model measured for it.

``bench reference export`` writes a small, text-diffable JSON file: keys sorted, one line
per cell row and per noise entry, in a stable order::

    {
      "calibration": {"confidence": 0.95, "runs": [{"class": "cross", "label": "threads2", ...}, ...]},
      "cells": [
        {"config_key": "...", "dataset": "lfw-faces", "method": "full_ft", "metrics": {...},
         "mode": "accuracy", "model": "resnet18", "seed": 0, "status": "ok", "suite": "baselines",
         "tier": "smoke", "variant": "full_ft"},
        ...
      ],
      "format": "archbench-reference/2",
      "noise": [
        {"chance": 10.0, "dataset": "uci-digits", "metric": "test_top1_pct", "model": "resnet20",
         "n_seeds": 3, "spread": {"cross": {"max_abs": 1.3, "runs": 3, "sd": 0.9}, "same": {...}}, ...},
        ...
      ],
      "run": {"arith": {...}, "cpu_model": "...", "flags": {...}, "git_sha": "...", "tier": "smoke", ...}
    }

``run`` carries the comparability fields (tier, mode, gpu_name, torch, cuda, flags), the
arithmetic of the reference run (``arith``: the gate compares it with the candidate's to pick
the noise class), where the numbers came from and the exporting machine's CPU. Each cell
carries its grid key, seed, status, a ``config_key`` and only the metrics the gate reads.
``noise`` and ``calibration`` are what ``bench.gate.noise.calibrate`` measured (absent in files
exported without calibration runs, and in format 1 files, which are still read).

Reading is strict, because a reference that silently holds nothing gates nothing: a
missing file, another format, no cells, a cell without its key fields, a seed that is not
an integer, a status that is not a status, or a metric value that is not a finite number
raises ``ReferenceFileError`` naming the cell and the field (``bench gate`` exits 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.errors import ReferenceFileError
from bench.gate.noise import CLASSES, CellNoise, Spread
from bench.gate.reference import KEY_FIELDS, RUN_INFO_FIELDS, Row, Side

FORMAT = "archbench-reference/2"
FORMATS = ("archbench-reference/1", FORMAT)
STATUSES = ("ok", "failed", "oom", "diverged", "skipped")
NoiseMap = dict[tuple[tuple[str, ...], str], CellNoise]


# --- writing ------------------------------------------------------------------------------------


def export_reference(
    side: Side,
    keep: Callable[[str, Row], bool],
    cpu: dict[str, Any] | None = None,
    noise: NoiseMap | None = None,
    calibration: dict[str, Any] | None = None,
) -> str:
    """The reference-file text of a side, keeping the metrics for which ``keep(name, row)``.

    ``cpu`` (default: ``bench.env.machine_cpu()``) records the exporting machine's CPU;
    ``noise`` and ``calibration`` come from ``bench.gate.noise.calibrate``.
    """
    from bench.env import machine_cpu

    if not side.rows:
        raise ReferenceFileError(f"{side.label} has no rows to export")
    run = {name: side.run.get(name) for name in ("tier", "mode", "gpu_name", "torch", "cuda", "flags", "arith")}
    run.update({name: side.run.get(name) for name in RUN_INFO_FIELDS})
    run.update(machine_cpu() if cpu is None else cpu)
    cells = []
    for row in sorted(side.rows, key=lambda r: (r.key, r.seed)):
        cell: dict[str, Any] = {
            name: getattr(row, name) for name in (*KEY_FIELDS, "method", "seed", "status", "config_key")
        }
        cell["metrics"] = {k: v for k, v in sorted(row.metrics.items()) if math.isfinite(v) and keep(k, row)}
        if row.status != "ok" and row.error:
            cell["error"] = row.error
        cells.append(cell)
    parts = {"cells": cells, "format": FORMAT, "run": run}
    if noise is not None:
        parts["noise"] = [_noise_entry(key, entry) for (key, _), entry in sorted(noise.items())]
        parts["calibration"] = calibration or {}
    return _render(parts)


def _noise_entry(key: tuple[str, ...], entry: CellNoise) -> dict[str, Any]:
    out: dict[str, Any] = dict(zip(KEY_FIELDS, key))
    out.update(
        metric=entry.metric,
        n_seeds=entry.n_seeds,
        chance=entry.chance,
        spread={cls: s.as_dict() for cls, s in sorted(entry.spreads.items())},
        deltas={cls: [round(d, 4) for d in ds] for cls, ds in sorted(entry.deltas.items())},
    )
    return out


def _render(parts: dict[str, Any]) -> str:
    """Sorted keys; lists of objects one element per line, so a diff shows which cell changed."""
    chunks = []
    for name in sorted(parts):
        value = parts[name]
        if isinstance(value, list):
            body = ",\n".join("    " + json.dumps(v, sort_keys=True) for v in value)
            chunks.append(f"  {json.dumps(name)}: [\n{body}\n  ]")
        else:
            chunks.append(f"  {json.dumps(name)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(chunks) + "\n}\n"


# --- reading ------------------------------------------------------------------------------------


def read_reference(path: str | Path, *, selector: str | None = None) -> Side:
    """A reference file as a Side (with its noise model); raises ReferenceFileError (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ReferenceFileError(f"no reference file at {p} (write one with: bench reference export --db DB -o {p})")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ReferenceFileError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        found = data.get("format") if isinstance(data, dict) else None
        raise ReferenceFileError(
            f"{p} is not an {FORMAT} file (its 'format' is {found!r}; readable: {', '.join(FORMATS)})"
        )
    cells = data.get("cells")
    if not isinstance(cells, list) or not cells:
        raise ReferenceFileError(
            f"{p} has no cells ('cells' is {cells!r}): a reference that holds nothing "
            "would pass every candidate; export one from a run with bench reference export"
        )
    run = data.get("run", {})
    if not isinstance(run, dict):
        raise ReferenceFileError(f"{p}: 'run' must be an object, got {type(run).__name__}")
    rows = [_row(p, i, cell) for i, cell in enumerate(cells)]
    side = Side(selector=selector or str(p), source=str(p), kind="json", run=dict(run), rows=rows)
    side.noise = _noise(p, data.get("noise", []))
    side.calibration = data.get("calibration") or {}
    return side


def _row(p: Path, i: int, cell: Any) -> Row:
    if not isinstance(cell, dict):
        raise ReferenceFileError(f"{p}: cell {i} must be an object, got {type(cell).__name__}")
    required = (*KEY_FIELDS, "seed", "status")
    missing = [k for k in required if k not in cell]
    if missing:
        raise ReferenceFileError(f"{p}: cell {i} lacks {missing}; every cell needs {list(required)}")
    where = f"{p}: cell {i} ({'/'.join(str(cell[k]) for k in KEY_FIELDS[:4])}, seed {cell['seed']!r})"
    for name in (*KEY_FIELDS, "status"):
        if not isinstance(cell[name], str) or not cell[name]:
            raise ReferenceFileError(f"{where}: field '{name}' must be a non-empty string, got {cell[name]!r}")
    seed = cell["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ReferenceFileError(f"{where}: field 'seed' must be an integer, got {seed!r}")
    if cell["status"] not in STATUSES:
        raise ReferenceFileError(f"{where}: field 'status' must be one of {STATUSES}, got {cell['status']!r}")
    metrics = cell.get("metrics", {})
    if not isinstance(metrics, dict):
        raise ReferenceFileError(f"{where}: field 'metrics' must be an object, got {type(metrics).__name__}")
    values = {}
    for name, value in metrics.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ReferenceFileError(f"{where}: metric '{name}' must be a finite number, got {value!r}")
        values[name] = float(value)
    return Row(
        suite=cell["suite"],
        variant=cell["variant"],
        method=cell["method"] if "method" in cell else cell["variant"],
        dataset=cell["dataset"],
        model=cell["model"],
        tier=cell["tier"],
        mode=cell["mode"],
        seed=seed,
        status=cell["status"],
        config_key=str(cell.get("config_key", "")),
        metrics=values,
        error=str(cell.get("error", "")),
    )


def _noise(p: Path, entries: Any) -> NoiseMap:
    if not isinstance(entries, list):
        raise ReferenceFileError(f"{p}: 'noise' must be a list, got {type(entries).__name__}")
    out: NoiseMap = {}
    for i, e in enumerate(entries):
        where = f"{p}: noise entry {i}"
        try:
            key = tuple(str(e[k]) for k in KEY_FIELDS)
            spreads = {}
            for cls, s in e["spread"].items():
                if cls not in CLASSES:
                    raise ReferenceFileError(f"{where}: unknown noise class {cls!r}; valid: {', '.join(CLASSES)}")
                spread = Spread(float(s["sd"]), int(s["runs"]), float(s["max_abs"]))
                if not (math.isfinite(spread.sd) and spread.sd >= 0 and spread.runs >= 1):
                    raise ReferenceFileError(
                        f"{where}: spread {cls} must have a finite sd >= 0 and runs >= 1, got {s!r}"
                    )
                spreads[cls] = spread
            chance = e.get("chance")
            out[(key, str(e["metric"]))] = CellNoise(
                str(e["metric"]),
                int(e["n_seeds"]),
                None if chance is None else float(chance),
                spreads,
                {c: [float(d) for d in ds] for c, ds in e.get("deltas", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ReferenceFileError):
                raise
            raise ReferenceFileError(
                f"{where} is malformed ({type(exc).__name__}: {exc}); each entry needs "
                f"{list(KEY_FIELDS)}, metric, n_seeds and spread"
            ) from exc
    return out
