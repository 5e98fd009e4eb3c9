"""What the gate decides: one ``Decision`` per cell and metric, gathered in a ``GateReport``
whose exit code is the gate's (0 pass, 1 regression, 2 not comparable). The rules that fill
them in are in ``bench.gate.rules``."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.gate.reference import KEY_FIELDS, CellKey, Side
from bench.gate.settings import GateSettings

VERDICTS = ("regression", "missing", "suspect", "improved", "pass", "new", "not gated")


@dataclass
class Decision:
    """One verdict on one cell and metric (``metric == "status"`` for cell-level verdicts)."""

    key: CellKey
    metric: str
    verdict: str = "pass"
    reason: str = ""
    reference: float | None = None
    candidate: float | None = None
    delta: float | None = None  # candidate - reference
    ratio: float | None = None  # candidate / reference (step time)
    reference_std: float | None = None
    candidate_std: float | None = None
    threshold: float | None = None
    n_reference: int = 0
    n_candidate: int = 0
    n_used: int = 0  # seeds behind the verdict: pairs, or the smaller side when unpaired
    test: str = ""
    p_value: float | None = None
    p_adjusted: float | None = None
    noise: str = ""  # the calibrated noise class behind the threshold ("same", "cross"), "" if none

    @property
    def cell(self) -> str:
        suite, variant, dataset, model, tier, mode = self.key
        return f"{suite}/{variant}/{dataset}/{model} ({tier}, {mode})"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: value for name, value in zip(KEY_FIELDS, self.key)}
        for name in (
            "metric",
            "verdict",
            "reason",
            "reference",
            "candidate",
            "delta",
            "ratio",
            "reference_std",
            "candidate_std",
            "threshold",
            "n_reference",
            "n_candidate",
            "n_used",
            "test",
            "p_value",
            "p_adjusted",
            "noise",
        ):
            value = getattr(self, name)
            data[name] = None if isinstance(value, float) and not math.isfinite(value) else value
        return data


@dataclass
class GateReport:
    """Everything one gate reached: the sides, settings, decisions and notes."""

    baseline: Side
    candidate: Side
    settings: GateSettings
    decisions: list[Decision]
    notes: list[str]
    gate_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = ""

    def failing(self, d: Decision) -> bool:
        return d.verdict == "regression" or (d.verdict == "missing" and not self.settings.allow_missing)

    @property
    def failures(self) -> list[Decision]:
        return [d for d in self.decisions if self.failing(d)]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def counts(self) -> dict[str, int]:
        return {v: sum(d.verdict == v for d in self.decisions) for v in VERDICTS}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        cells = len({d.key for d in self.decisions})
        head = "FAIL" if self.exit_code else "PASS"
        return (
            f"bench gate: {head}: {counts} ({cells} cells over {len(self.baseline.rows)} reference and "
            f"{len(self.candidate.rows)} candidate seed rows; reference {self.baseline.label}, "
            f"candidate {self.candidate.label})"
        )
