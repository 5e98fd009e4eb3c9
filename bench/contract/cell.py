"""What one grid cell is (``CellSpec``) and what running it produced (``CellResult``).

Both are plain data with no torch objects, so they pickle for cluster executors and
travel as JSON from pytest-xdist workers to the controller, the only process that
writes the database. ``cell_key`` identifies a cell independently of the run that
produced it: the same (suite, method, variant, resolved config, dataset, model, seed,
tier, task settings, mode) always hashes to the same key, which is what resume and
run-to-run comparisons pair on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "failed", "oom", "diverged", "skipped")
TIERS = ("smoke", "cpu", "short", "paper")
"""The budget tiers, smallest first (DESIGN.md "Budget tiers"): ``smoke`` gates the code on CPU,
``cpu`` is real data sized for two CPU cores (the evidence tier), ``short`` one GPU, ``paper`` the
papers' protocols. A suite may define a subset; asking a suite for a tier it lacks is an error."""

GROUP_KEYS = ("suite", "variant", "dataset", "model", "tier", "mode")
"""A cell group: every seed of one method entry on one dataset x model at one tier and mode.

The one grid key: reports aggregate over seeds within it, the gate pairs reference and candidate
cells on it, exports summarise by it. ``mode`` belongs to it because accuracy-mode and speed-mode
rows of one cell measure different things (deterministic kernels vs ``cudnn.benchmark``)."""


def short_hash(*parts: str, n: int = 16) -> str:
    """Hex prefix of sha256 over the parts joined by a separator that cannot occur in JSON."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class CellSpec:
    """One cell of a grid: everything needed to run it anywhere.

    ``config`` holds the method's override dict as given by the suite; ``config_json``
    is the fully resolved config (defaults included) as canonical JSON, filled in by
    ``bench.execute.grid`` when the cell is validated. ``task_json`` likewise holds the resolved
    task settings (input size, width, source, split fractions, pretraining recipe).
    """

    suite: str
    method: str
    dataset: str
    model: str
    seed: int
    tier: str = "smoke"
    variant: str = ""
    config_json: str = "{}"
    task_json: str = "{}"
    device: str = "auto"
    mode: str = "accuracy"
    data_root: str | None = None
    download: bool = False
    threads: int = 0

    @property
    def label(self) -> str:
        """The grid label of the method entry (the variant, or the method name)."""
        return self.variant or self.method

    @property
    def cell_key(self) -> str:
        return short_hash(
            self.suite,
            self.method,
            self.label,
            self.config_json,
            self.dataset,
            self.model,
            str(self.seed),
            self.tier,
            self.task_json,
            self.mode,
        )

    @property
    def test_id(self) -> str:
        """Readable pytest id, e.g. ``last_k-uci-digits-resnet18-s0``."""
        return f"{self.label}-{self.dataset}-{self.model}-s{self.seed}"

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def task_settings(self) -> dict[str, Any]:
        return json.loads(self.task_json)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellSpec:
        return cls(**data)


@dataclass
class CellResult:
    """The outcome of ``run_cell``: status, metrics, curves and timings of one cell.

    ``metrics`` maps unit-suffixed names (``test_top1_pct``, ``step_ms_median``) to
    floats. ``series`` maps a curve name to a list of (step, value) points, or
    (step, value, position) for curves over a second axis. A cell that
    failed still carries whatever metrics were measured before the failure.
    """

    spec: CellSpec
    status: str
    error_type: str = ""
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[tuple]] = field(default_factory=dict)
    arch: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    worker: str = ""
    started_at: str = ""
    ended_at: str = ""
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        return json.dumps(data, separators=(",", ":"), default=str, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> CellResult:
        data = json.loads(text)
        data["spec"] = CellSpec.from_dict(data["spec"])
        data["series"] = {k: [_point(p) for p in pts] for k, pts in data["series"].items()}
        return cls(**data)


def _point(p: list) -> tuple:
    """A series point from JSON: (step, value) or (step, value, position)."""
    return (int(p[0]), float(p[1])) if len(p) == 2 else (int(p[0]), float(p[1]), int(p[2]))
