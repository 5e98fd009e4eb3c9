"""The gate's settings: which metrics it reads, its tolerances, and the config file that sets them.

``GateSettings`` holds the tolerances (global, per metric, per metric and dataset) and switches;
``load_config`` reads them from a TOML or JSON file (``suites/reference/gate.toml``) with strict
keys, and ``with_abs_tol`` applies a command-line ``METRIC[@DATASET]=VALUE``. How the rules use
them is in ``bench.gate.rules``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract.units import unit_of
from bench.errors import GateError

if TYPE_CHECKING:
    from bench.gate.reference import Row

DEFAULT_ACCURACY_METRICS = ("test_top1_pct",)
TIME_METRIC = "step_ms_median"
MEMORY_METRICS = ("peak_mem_mib", "counted_mem_mib")
"""Memory the gate reads: the CUDA allocator's peak over the fit's baseline (GPU rows only) and the
training memory the engine counts (every device). A CPU's RSS (``peak_rss_mib``) is never gated:
it depends on what the worker process ran before."""
STATUS_METRIC = "status"  # cell-level decisions: missing, new, rows not ok
DEFAULT_ABS_TOL_BY_UNIT = {"pct": 1.0, "tau": 0.05, "rho": 0.05}


def is_rank_metric(name: str) -> bool:
    """Rank correlations (Kendall tau, Spearman rho) are gated like accuracy."""
    return name.endswith(("_tau", "_rho"))


@dataclass(frozen=True)
class GateSettings:
    """Tolerances and switches; per-metric and per-(metric, dataset) values override the global ones."""

    metrics: tuple[str, ...] = DEFAULT_ACCURACY_METRICS
    k: float = 2.0
    alpha: float = 0.05
    min_seeds: int = 3
    time_tol: float = 1.10
    mem_pct: float = 2.0
    mem_mib: float = 32.0
    allow_missing: bool = False
    z: float = 3.0
    confidence: float = 0.95
    force: bool = False
    abs_tol: dict[str, float] = field(default_factory=dict)
    metric_k: dict[str, float] = field(default_factory=dict)
    dataset_abs_tol: dict[tuple[str, str], float] = field(default_factory=dict)
    dataset_k: dict[tuple[str, str], float] = field(default_factory=dict)

    def tolerance(self, metric: str, dataset: str) -> tuple[float, float]:
        """``(abs_tol, k)`` for a metric on a dataset."""
        default = DEFAULT_ABS_TOL_BY_UNIT.get(unit_of(metric) or "", 0.0)
        abs_tol = self.dataset_abs_tol.get((metric, dataset), self.abs_tol.get(metric, default))
        k = self.dataset_k.get((metric, dataset), self.metric_k.get(metric, self.k))
        return float(abs_tol), float(k)

    def gated(self, name: str, row: Row) -> bool:
        """Whether the gate reads metric ``name`` of ``row`` (what a reference file keeps)."""
        return (
            name in self.metrics
            or is_rank_metric(name)
            or name in MEMORY_METRICS
            or (name == TIME_METRIC and row.mode == "speed")
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("dataset_abs_tol", "dataset_k"):
            data[name] = {f"{m}@{d}": v for (m, d), v in data[name].items()}
        data["metrics"] = list(self.metrics)
        return data


_GLOBAL_TYPES: dict[str, type] = {
    "metrics": list,
    "k": float,
    "alpha": float,
    "min_seeds": int,
    "time_tol": float,
    "mem_pct": float,
    "mem_mib": float,
    "allow_missing": bool,
    "z": float,
    "confidence": float,
}
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
    return dataclasses.replace(
        base, **changes, abs_tol=abs_tol, metric_k=metric_k, dataset_abs_tol=ds_tol, dataset_k=ds_k
    )


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
