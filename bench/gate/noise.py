"""The gate's noise model: how much a cell's metric moves when nothing but the circumstances change.

Two runs of the same code differ for reasons that are not regressions:

- **same arithmetic** (equal ``bench.env.arithmetic()``: same CPU, torch, threads, ISA pins):
  machine load, xdist scheduling order, cold or warm caches. On CPU these leave every
  accuracy bit-identical once nothing planned from the wall clock (``bench.models.cost``); the
  calibration checks that instead of assuming it.
- **cross arithmetic** (another CPU model, thread count or ISA): floating-point sums in
  another order. Training at smoke size is chaotic, so a last-bit difference grows into a
  different trajectory; and cells that fine-tune one shared source checkpoint move
  *together*, so the seed mean does not average the difference away. Measured on this
  project's smoke grid: up to 38 points on one proxyless seed, 5.6 points on a
  two_stage cell mean.

**Calibration** (``calibrate``; ``make reference`` runs it): the reference run is repeated
under perturbations of both classes; for every cell and gated metric the delta of the
cell's mean over the seeds it shares with the reference is taken per calibration run, and
the reference file stores, per class, ``sd`` = the root mean square of those deltas
(their expectation is 0), ``runs`` = how many there were and ``max_abs`` = the largest.

**Threshold** (``threshold``) for a calibrated cell, in the class the two gated sides fall
in (their ``arithmetic()`` equal or not)::

    upper(s)  = s.sd * sqrt(s.runs / chi2.ppf(1 - confidence, s.runs))   # one-sided upper bound
    threshold = max(abs_tol, z * max(upper(cell), upper(family)) * sqrt(n_ref / n_paired))

``abs_tol`` is the per-metric floor of the gate config (a couple of test images), ``z``
(default 3) sets the false-alarm rate, ``confidence`` (0.95) guards against a spread that
few runs under-measured, and the last factor widens the threshold when the candidate
shares fewer seeds with the reference than the calibration did. ``family`` pools the
deltas of every cell of the same suite, dataset and metric (``family_spreads``): chaotic
cells move rarely but far (a cell that stayed within 0.6 points in three cross reruns fell
6.5 in the fourth), so four samples of one cell under-measure it, while its family, trained
the same way, shows how far such cells go. Leaving each cross rerun out in turn and gating
it against the others measured this (``benchmarks/gate_noise.py``).

**Power.** A threshold that a fall to chance level would not cross (``threshold >=
reference - chance``: accuracy at 100/classes, rank correlations at 0) cannot detect any
regression of that cell: the cell and metric are reported ``not gated`` with the reason,
never silently passed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.gate.settings import MEMORY_METRICS

CLASSES = ("same", "cross")


@dataclass(frozen=True)
class Spread:
    """Observed spread of one cell mean in one noise class: RMS delta, run count, largest |delta|."""

    sd: float
    runs: int
    max_abs: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class CellNoise:
    """What the calibration measured for one cell and metric (``n_seeds`` of the reference behind each delta)."""

    metric: str
    n_seeds: int
    chance: float | None = None
    spreads: dict[str, Spread] = field(default_factory=dict)
    deltas: dict[str, list[float]] = field(default_factory=dict)  # per class, in calibration-run order


def noise_class(ref_arith: dict[str, Any] | None, cand_arith: dict[str, Any] | None) -> str:
    """``"same"`` when both sides ran with one known arithmetic, else ``"cross"``."""
    return "same" if ref_arith and cand_arith and ref_arith == cand_arith else "cross"


def ucb_factor(runs: int, confidence: float) -> float:
    """sqrt(runs / chi2.ppf(1 - confidence, runs)): an upper confidence bound on an RMS over ``runs`` samples."""
    from scipy.stats import chi2

    if runs < 1:
        return math.inf
    return math.sqrt(runs / float(chi2.ppf(1.0 - confidence, runs)))


def upper(spread: Spread | None, confidence: float) -> float:
    """The one-sided upper confidence bound of a spread's sd (0 for none or a zero spread)."""
    if spread is None or spread.sd == 0.0:
        return 0.0
    return spread.sd * ucb_factor(spread.runs, confidence)


def threshold(
    spread: Spread, abs_tol: float, z: float, confidence: float, n_ref: int, n_paired: int, family: Spread | None = None
) -> float:
    """The calibrated threshold of the module docstring."""
    bound = max(upper(spread, confidence), upper(family, confidence))
    if bound == 0.0:
        return abs_tol
    widen = math.sqrt(max(1, n_ref) / max(1, n_paired))
    return max(abs_tol, z * bound * widen)


def family_of(key: Sequence[str], metric: str) -> tuple[str, str, str]:
    """The family a cell's metric is pooled in: (suite, dataset, metric)."""
    return key[0], key[2], metric


def family_spreads(noise: dict[tuple[Any, str], CellNoise]) -> dict[tuple[tuple[str, str, str], str], Spread]:
    """(family, class) -> the spread of every delta of the family's cells in that class."""
    pooled: dict[tuple[tuple[str, str, str], str], list[float]] = {}
    for (key, metric), entry in noise.items():
        for cls, deltas in entry.deltas.items():
            pooled.setdefault((family_of(key, metric), cls), []).extend(deltas)
    return {k: spread_of(v) for k, v in pooled.items()}


def chance_level(metric: str, num_classes: int | None) -> float | None:
    """The value a metric takes by chance: 100/classes for top-1 %, 0 for rank correlations, else None."""
    if metric.endswith(("_tau", "_rho")):
        return 0.0
    if metric.endswith("top1_pct") and num_classes:
        return 100.0 / num_classes
    return None


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def statistic(metric: str) -> Callable[[Sequence[float]], float]:
    """What the gate compares for a metric: the median for memory, the mean otherwise."""
    return median if metric in MEMORY_METRICS else mean


def cell_delta(
    ref: dict[int, float], cand: dict[int, float], stat: Callable[[Sequence[float]], float] = mean
) -> tuple[float, int] | None:
    """(stat over shared seeds of cand - that of ref, seeds shared), or None without a shared seed."""
    shared = sorted(set(ref) & set(cand))
    if not shared:
        return None
    return stat([cand[s] for s in shared]) - stat([ref[s] for s in shared]), len(shared)


def side_values(rows: Iterable[Any], keep: Callable[[str, Any], bool]) -> dict[tuple[Any, str], dict[int, float]]:
    """(cell key, metric) -> {seed: value} over the ok rows' finite metrics that ``keep(name, row)``."""
    out: dict[tuple[Any, str], dict[int, float]] = {}
    for row in rows:
        if row.status != "ok":
            continue
        for name, value in row.metrics.items():
            if math.isfinite(value) and keep(name, row):
                out.setdefault((tuple(row.key), name), {})[row.seed] = value
    return out


def spread_of(deltas: Iterable[float]) -> Spread:
    values = [float(d) for d in deltas]
    return Spread(
        math.sqrt(mean([d * d for d in values])) if values else 0.0,
        len(values),
        max((abs(d) for d in values), default=0.0),
    )


def calibrate(
    ref_values: dict[tuple[Any, str], dict[int, float]],
    runs: Sequence[tuple[str, dict[tuple[Any, str], dict[int, float]]]],
    chance: Callable[[Any, str], float | None],
) -> dict[tuple[Any, str], CellNoise]:
    """Per (cell key, metric): the deltas of every calibration run, grouped by class, and their spreads.

    ``ref_values`` and each run's values map (cell key, metric) to {seed: value} over ok
    rows; ``runs`` pairs each run's values with its class (``CLASSES``). A cell or metric a
    run lacks contributes no delta for that run (the gate's missing-cell rule covers it).
    """
    out: dict[tuple[Any, str], CellNoise] = {}
    for (key, metric), ref in ref_values.items():
        entry = CellNoise(metric, len(ref), chance(key, metric))
        for cls, values in runs:
            got = values.get((key, metric))
            delta = cell_delta(ref, got, statistic(metric)) if got else None
            if delta is not None and math.isfinite(delta[0]):
                entry.deltas.setdefault(cls, []).append(delta[0])
        entry.spreads = {cls: spread_of(d) for cls, d in entry.deltas.items()}
        out[(key, metric)] = entry
    return out
