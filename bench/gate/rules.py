"""``bench gate``: decide whether a candidate run regressed against a reference.

    bench gate --baseline REF --candidate CAND [--db results.db] [--config gate.toml]
               [--metric NAME ...] [--abs-tol METRIC[@DATASET]=VALUE ...] [--k K] [--alpha A]
               [--min-seeds N] [--time-tol R] [--mem-pct P] [--mem-mib M] [--allow-missing]
               [--force] [--json PATH] [--decisions-db PATH] [--no-write]

Each side is a run in a database or a reference file (selectors: ``bench.gate.reference``).
Exit status: 0 pass, 1 regression (or a missing cell or seed), 2 usage error, an empty or
malformed reference, or incomparable runs; 3 an internal error of the gate (traceback printed).

**Comparability.** The sides must agree on tier, GPU model (``gpu_name``), torch and
CUDA versions and the determinism flags (``flags_json``); otherwise the gate refuses
(exit 2) and names each field that differs with both values. ``--force`` compares
anyway and records each difference as a note. Host, CPU threads and platform may
differ (that is what a CI runner is); they are noted, and so is a CPU candidate gated against
a reference file that was exported on another CPU model or ISA (CPU accuracies are
bit-reproducible only on the same ISA).

**Pairing.** Rows pair by cell (suite, variant, dataset, model, tier, mode) and by seed.
``skipped`` rows are dropped. A cell only in the reference is ``missing`` (a failure
unless ``--allow-missing``), one only in the candidate ``new`` (informational); so is a
seed of a shared cell that the candidate lost. Cells whose resolved config or task
settings differ are compared, with a note saying what differs. A candidate seed that is
not ``ok`` (failed, oom, diverged) makes the cell's ``status`` a ``regression`` with the
error (``not gated`` when that seed was not ok in the reference either); the remaining ok
seeds are still compared. A candidate value that is NaN or infinite is a ``regression``; a
reference that holds one in a gated metric, or holds no rows at all, is a usage error.

**Noise model** (``bench.gate.noise``). A reference file made by ``make reference`` carries, per
cell and gated metric, the spread its mean showed when the reference run was repeated
under perturbations: of the *same* arithmetic (load, xdist order, cold caches) and of
*cross* arithmetic (another thread count, CPU ISA or CPU model). The gate picks the class
from the two sides' ``arithmetic()`` (equal or not; noted) and gates a calibrated cell at
``max(abs_tol, z x upper bound of the spread)``; a cell whose threshold would not even
catch a fall to chance level is ``not gated``, with that reason. Cells without a noise
entry (a database as the reference, a new cell) fall back to the rules below.

**Accuracy** (``--metric``, default ``test_top1_pct``) and **rank correlations** (every
metric ending in ``_tau`` or ``_rho``); higher is better. Over the seeds present on both
sides (all seeds of each side when none is shared: unpaired):
``drop = mean(ref) - mean(cand)`` and ``threshold = max(abs_tol, k * std(ref))``
(sample std, ddof=1). Where both sides have n >= 5 values, a one-sided test of
"candidate lower" (paired t on the seed pairs, Welch when unpaired) is run for every
such cell and metric, and all their p-values are adjusted together by Benjamini-Hochberg.

- ``drop > threshold`` with n < ``min_seeds`` (default 3): ``suspect`` (not a failure);
- ``drop > threshold`` and, where tested, adjusted p < ``alpha`` (0.05): ``regression``;
- ``drop > threshold`` but tested and not significant: ``suspect``;
- ``-drop > threshold``: ``improved``; otherwise ``pass``.

Default ``abs_tol``: 1.0 for ``_pct`` metrics, 0.05 for ``_tau``/``_rho``, else 0;
default ``k`` 2. Calibrated cells use ``abs_tol`` as the floor of the calibrated threshold and
no test or ``min_seeds`` rule (the calibration measured their noise; seed-to-seed spread,
which a shared source checkpoint correlates, does not).

**Step time** (``step_ms_median``): gated only on speed-mode rows (``mode == 'speed'``,
``--bench-mode speed``): ``median(cand) / median(ref) > time_tol`` (1.10) is a
``regression``, below ``1 / time_tol`` ``improved``. Accuracy-mode rows run
deterministic kernels, so their step time is reported ``not gated``.

**Memory** (``peak_mem_mib``: the CUDA allocator's peak over the fit's baseline, GPU rows only;
``counted_mem_mib``: the training memory the engine counts, every device; medians over the
seeds): a ``regression`` when the candidate exceeds the reference by more than ``mem_pct`` % (2)
AND more than ``mem_mib`` MiB (32); ``improved`` when it is smaller by both margins. A CPU's RSS
(``peak_rss_mib``) is not gated: it depends on what the worker process ran before.

Time and memory verdicts over their tolerance with n < ``min_seeds`` are ``suspect``.

**Config file** (``--config``, TOML or JSON, read by ``bench.cli.gate.load_config``;
command-line options override it; unknown keys are errors that list the valid ones)::

    [gate]
    metrics = ["test_top1_pct"]   # accuracy metrics (tau/rho metrics are always gated)
    k = 2.0
    alpha = 0.05
    min_seeds = 3
    time_tol = 1.10
    mem_pct = 2.0
    mem_mib = 32.0
    allow_missing = false
    z = 3.0                       # calibrated threshold: z x the spread's upper confidence bound
    confidence = 0.95             # ... at this one-sided confidence

    [metrics.test_top1_pct]       # per metric: abs_tol, k
    abs_tol = 1.0
    [metrics.test_top1_pct.datasets.lfw-faces]   # per metric and dataset: abs_tol, k
    abs_tol = 5.0

**Output.** A markdown table (cell, metric, reference, candidate, delta, verdict,
reason), notes, then a one-line summary. ``--json PATH`` writes the same as JSON.
Every decision goes to the ``gate_decisions`` table of the candidate database (or
``--decisions-db``) unless ``--no-write``.
"""

from __future__ import annotations

import math

from bench.errors import Incomparable, InvalidReference
from bench.gate import noise as noise_model
from bench.gate.decision import Decision, GateReport
from bench.gate.reference import CellKey, Row, Side, comparability, config_differences
from bench.gate.settings import (
    MEMORY_METRICS,
    STATUS_METRIC,
    TIME_METRIC,
    GateSettings,
    is_rank_metric,
)
from bench.results.stats import (
    bh_adjust,
    gate_threshold,
    mean_std_n,
    median,
    memory_regressed,
    paired_one_sided_p,
    ratio_of_medians,
    welch_one_sided_p,
)

TEST_MIN_N = 5  # a one-sided test only where both sides have at least this many values
# a cell's noise entry, the class that applies and its family's pooled spread in that class
Calibrated = tuple["noise_model.CellNoise", str, "noise_model.Spread | None"]


def evaluate(ref: Side, cand: Side, settings: GateSettings) -> GateReport:
    """Compare ``cand`` with ``ref`` under ``settings`` (rules in the module docstring).

    Raises ``Incomparable`` when a comparability field differs and ``settings.force``
    is False.
    """
    from bench.env import utc_now

    problems = comparability(ref, cand)
    if problems and not settings.force:
        raise Incomparable("refusing to compare: " + "; ".join(problems) + " (use --force to compare anyway)")
    notes = [f"forced comparison: {p}" for p in problems] + _provenance_notes(ref, cand)
    ref_cells, cand_cells = _cells(ref, "reference", notes), _cells(cand, "candidate", notes)
    _check_reference(ref, ref_cells, settings)
    klass = noise_model.noise_class(ref.run.get("arith"), cand.run.get("arith"))
    families = noise_model.family_spreads(ref.noise)
    notes.extend(_noise_notes(ref, cand, klass))
    decisions: list[Decision] = []
    for key in sorted(set(ref_cells) | set(cand_cells)):
        if key not in cand_cells:
            n = len(ref_cells[key])
            decisions.append(
                Decision(
                    key,
                    STATUS_METRIC,
                    "missing",
                    n_reference=n,
                    reason=(
                        f"in the reference ({n} seed(s)), not in the candidate"
                        + ("; allowed by --allow-missing" if settings.allow_missing else "")
                    ),
                )
            )
        elif key not in ref_cells:
            n = len(cand_cells[key])
            bad = sorted(f"seed {s} {r.status}" for s, r in cand_cells[key].items() if r.status != "ok")
            decisions.append(
                Decision(
                    key,
                    STATUS_METRIC,
                    "new",
                    n_candidate=n,
                    reason=(f"only in the candidate ({n} seed(s))" + (f"; not ok: {', '.join(bad)}" if bad else "")),
                )
            )
        else:
            decisions.extend(
                _compare_cell(
                    key, ref_cells[key], cand_cells[key], settings, notes, _CellNoise(ref, key, klass, families)
                )
            )
    _finish(decisions, settings)
    return GateReport(ref, cand, settings, decisions, notes, created_at=utc_now())


def _cells(side: Side, name: str, notes: list[str]) -> dict[CellKey, dict[int, Row]]:
    cells: dict[CellKey, dict[int, Row]] = {}
    skipped = 0
    for row in side.rows:
        if row.status == "skipped":
            skipped += 1
            continue
        cells.setdefault(row.key, {})[row.seed] = row
    if skipped:
        notes.append(f"{skipped} skipped row(s) in the {name} left out")
    return cells


def _check_reference(ref: Side, cells: dict[CellKey, dict[int, Row]], settings: GateSettings) -> None:
    """A reference must hold rows, and finite values in every metric the gate reads."""
    if not cells:
        raise InvalidReference(
            f"the reference {ref.label} holds no rows to gate against" + (" (only skipped ones)" if ref.rows else "")
        )
    for key, seeds in cells.items():
        for seed, row in seeds.items():
            bad = [m for m, v in row.metrics.items() if not math.isfinite(v) and settings.gated(m, row)]
            if row.status == "ok" and bad:
                raise InvalidReference(
                    f"the reference {ref.label} holds a non-finite {bad[0]} for "
                    f"{Decision(key, '').cell} seed {seed}: a reference needs finite values "
                    "(re-run or re-export it)"
                )


class _CellNoise:
    """The calibrated noise of one cell's metrics in the class this comparison falls in."""

    def __init__(
        self, ref: Side, key: CellKey, klass: str, families: dict[tuple[tuple[str, str, str], str], noise_model.Spread]
    ) -> None:
        self.ref, self.key, self.klass, self.families = ref, key, klass, families

    def get(self, metric: str) -> Calibrated | None:
        entry = self.ref.noise.get((tuple(self.key), metric))
        if entry is None or self.klass not in entry.spreads:
            return None
        return entry, self.klass, self.families.get((noise_model.family_of(self.key, metric), self.klass))


def _noise_notes(ref: Side, cand: Side, klass: str) -> list[str]:
    """Which noise class applies, and why."""
    from bench.env import arithmetic_differences

    if not ref.noise:
        return []
    runs = ref.calibration.get("runs", [])
    counts = {c: sum(r.get("class") == c for r in runs) for c in noise_model.CLASSES}
    if klass == "same":
        why = "the two sides ran with the same arithmetic (bench.env.arithmetic)"
    else:
        why = "the arithmetic differs: " + "; ".join(
            arithmetic_differences(ref.run.get("arith"), cand.run.get("arith"))
        )
    return [
        f"noise model: {klass} ({why}); calibrated from {counts.get(klass, 0)} {klass}-arithmetic "
        f"run(s) of the reference ({', '.join(r.get('label', '?') for r in runs if r.get('class') == klass)})"
    ]


def _provenance_notes(ref: Side, cand: Side) -> list[str]:
    notes = []
    for name in ("host", "cpu_threads", "platform"):
        a, b = ref.run.get(name), cand.run.get(name)
        if a is not None and b is not None and a != b:
            notes.append(f"{name} differs (not a refusal): reference {a!r}, candidate {b!r}")
    for side, name in ((ref, "reference"), (cand, "candidate")):
        status = side.run.get("status")
        if status not in (None, "finished"):
            notes.append(f"the {name} run's status is {status!r}")
    modes = sorted({r.mode for r in ref.rows}), sorted({r.mode for r in cand.rows})
    if modes[0] != modes[1]:
        notes.append(f"modes differ: reference {modes[0]}, candidate {modes[1]}; cells pair only within a mode")
    return notes


def _compare_cell(
    key: CellKey, ref: dict[int, Row], cand: dict[int, Row], settings: GateSettings, notes: list[str], noise: _CellNoise
) -> list[Decision]:
    out: list[Decision] = []
    lost = sorted(set(ref) - set(cand))
    if lost:
        out.append(
            Decision(
                key,
                STATUS_METRIC,
                "missing",
                n_reference=len(ref),
                n_candidate=len(cand),
                reason=(
                    f"seed(s) {lost} of the reference are not in the candidate"
                    + ("; allowed by --allow-missing" if settings.allow_missing else "")
                ),
            )
        )
    bad = {s: r for s, r in cand.items() if r.status != "ok"}
    if bad:
        new = [s for s in bad if s not in ref or ref[s].status == "ok"]
        why = "; ".join(f"seed {s} {r.status}" + (f" ({r.error})" if r.error else "") for s, r in sorted(bad.items()))
        out.append(
            Decision(
                key,
                STATUS_METRIC,
                "regression" if new else "not gated",
                n_reference=len(ref),
                n_candidate=len(cand),
                reason=why if new else why + "; not ok in the reference either",
            )
        )
    cell_note = _config_note(key, ref, cand, notes)
    ref_ok = {s: r for s, r in ref.items() if r.status == "ok"}
    cand_ok = {s: r for s, r in cand.items() if r.status == "ok"}
    if not cand_ok:
        return out
    present = {m for r in (*ref_ok.values(), *cand_ok.values()) for m in r.metrics}
    metrics = [
        *settings.metrics,
        *sorted(m for m in present if is_rank_metric(m) and m not in settings.metrics),
        TIME_METRIC,
        *MEMORY_METRICS,
    ]
    for metric in metrics:
        decision = _compare_metric(key, metric, ref_ok, cand_ok, settings, noise.get(metric))
        if decision is not None:
            if cell_note:
                decision.reason = f"{decision.reason}; {cell_note}" if decision.reason else cell_note
            out.append(decision)
    return out


def _config_note(key: CellKey, ref: dict[int, Row], cand: dict[int, Row], notes: list[str]) -> str:
    ref_keys = {r.config_key for r in ref.values() if r.config_key}
    cand_keys = {r.config_key for r in cand.values() if r.config_key}
    if not ref_keys or not cand_keys or ref_keys == cand_keys:
        return ""
    detail = config_differences(next(iter(ref.values())).config, next(iter(cand.values())).config)
    label = Decision(key, "").cell
    notes.append(
        f"{label}: config or task settings differ from the reference: "
        + (detail or f"config_key {sorted(ref_keys)} vs {sorted(cand_keys)}")
    )
    return "config differs (see notes)"


def _compare_metric(
    key: CellKey,
    metric: str,
    ref: dict[int, Row],
    cand: dict[int, Row],
    settings: GateSettings,
    calibrated: Calibrated | None,
) -> Decision | None:
    r_vals = {s: r.metrics[metric] for s, r in ref.items() if metric in r.metrics}
    c_vals = {s: r.metrics[metric] for s, r in cand.items() if metric in r.metrics}
    if not r_vals and not c_vals:
        return None
    mode = key[5]
    d = Decision(key, metric, n_reference=len(r_vals), n_candidate=len(c_vals))
    if metric == TIME_METRIC and mode != "speed":
        d.reference = median(list(r_vals.values())) if r_vals else None
        d.candidate = median(list(c_vals.values())) if c_vals else None
        d.verdict, d.reason = (
            "not gated",
            (
                f"{mode}-mode rows: step time is gated only on speed-mode runs "
                "(--bench-mode speed); accuracy mode runs deterministic kernels"
            ),
        )
        return d
    if not c_vals:
        d.verdict = "missing"
        d.reason = "the candidate's ok rows do not report it" + (
            "; allowed by --allow-missing" if settings.allow_missing else ""
        )
        return d
    if not r_vals:
        d.verdict, d.reason = "new", "the reference does not report it"
        return d
    common = sorted(set(r_vals) & set(c_vals))
    paired = bool(common)
    rv = [r_vals[s] for s in common] if paired else list(r_vals.values())
    cv = [c_vals[s] for s in common] if paired else list(c_vals.values())
    d.n_used = len(common) if paired else min(len(rv), len(cv))
    seeds_note = _seeds_note(r_vals, c_vals, paired)
    broken = sorted(s for s, v in c_vals.items() if not math.isfinite(v))
    if broken:
        d.reference = mean_std_n(rv)[0]
        d.verdict = "regression"
        d.reason = "non-finite value(s) in the candidate: " + ", ".join(f"seed {s} {c_vals[s]}" for s in broken)
        return d
    if metric == TIME_METRIC:
        _time(d, rv, cv, settings)
    elif metric in MEMORY_METRICS:
        _memory(d, rv, cv, settings, calibrated)
    else:
        _accuracy(d, rv, cv, paired, settings, calibrated)
    if seeds_note:
        d.reason = f"{d.reason}; {seeds_note}" if d.reason else seeds_note
    return d


def _seeds_note(r_vals: dict[int, float], c_vals: dict[int, float], paired: bool) -> str:
    if not paired:
        return "no seed in common: unpaired comparison"
    only_r, only_c = sorted(set(r_vals) - set(c_vals)), sorted(set(c_vals) - set(r_vals))
    parts = ([f"seeds only in the reference: {only_r}"] if only_r else []) + (
        [f"seeds only in the candidate: {only_c}"] if only_c else []
    )
    return ", ".join(parts)


def _calibrated_threshold(d: Decision, calibrated: Calibrated, abs_tol: float, settings: GateSettings) -> str:
    """Set ``d.threshold`` and ``d.noise`` from the noise model; return the reason's wording."""
    entry, d.noise, family = calibrated
    spread = entry.spreads[d.noise]
    d.threshold = noise_model.threshold(
        spread, abs_tol, settings.z, settings.confidence, entry.n_seeds, d.n_used, family
    )
    fam = f", family {family.sd:.3g} over {family.runs}" if family is not None and family.sd else ""
    return (
        f"threshold {d.threshold:.3g} = max(abs_tol {abs_tol:g}, {settings.z:g} x upper bound of the "
        f"{d.noise}-arithmetic spread {spread.sd:.3g} over {spread.runs} run(s){fam})"
    )


def _accuracy(
    d: Decision,
    rv: list[float],
    cv: list[float],
    paired: bool,
    settings: GateSettings,
    calibrated: Calibrated | None = None,
) -> None:
    """Threshold now; the one-sided test's p-value now, its verdict after BH (``_finish``)."""
    d.reference, d.reference_std, _ = mean_std_n(rv)
    d.candidate, d.candidate_std, _ = mean_std_n(cv)
    d.delta = d.candidate - d.reference
    abs_tol, k = settings.tolerance(d.metric, d.key[2])
    if calibrated is not None:
        d.reason = _calibrated_threshold(d, calibrated, abs_tol, settings)
        chance = calibrated[0].chance
        if chance is not None and d.threshold is not None and d.threshold >= d.reference - chance:
            d.verdict = "not gated"
            d.reason = (
                f"noise: {d.reason} reaches the chance level {chance:.3g} from the reference "
                f"{d.reference:.3g}, so not even a fall to chance could be detected at this size"
            )
            d.threshold = None
        return
    d.threshold = gate_threshold(d.reference_std, abs_tol, k)
    d.reason = f"threshold {d.threshold:.3g} = max(abs_tol {abs_tol:g}, {k:g} x ref std {d.reference_std:.3g})"
    if len(rv) >= TEST_MIN_N and len(cv) >= TEST_MIN_N:
        d.test = "paired t" if paired else "Welch t"
        d.p_value = paired_one_sided_p(rv, cv) if paired else welch_one_sided_p(rv, cv)


def _over(d: Decision, settings: GateSettings, what: str) -> None:
    """Verdict for a value over its tolerance: regression, or suspect with too few seeds (uncalibrated)."""
    if d.n_used < settings.min_seeds and not d.noise:
        d.verdict = "suspect"
        d.reason = f"{what}, but only {d.n_used} seed(s) (min_seeds {settings.min_seeds})"
    else:
        d.verdict, d.reason = "regression", what


def _time(d: Decision, rv: list[float], cv: list[float], settings: GateSettings) -> None:
    d.reference, d.candidate = median(rv), median(cv)
    d.delta = d.candidate - d.reference
    d.ratio = ratio_of_medians(rv, cv)
    if math.isnan(d.ratio):
        d.verdict, d.reason = "not gated", "reference median step time is not positive"
    elif d.ratio > settings.time_tol:
        _over(d, settings, f"median step time x{d.ratio:.3f} > time_tol {settings.time_tol:g}")
    elif d.ratio < 1 / settings.time_tol:
        d.verdict, d.reason = "improved", f"median step time x{d.ratio:.3f} < 1/{settings.time_tol:g}"
    else:
        d.reason = f"median step time x{d.ratio:.3f} within time_tol {settings.time_tol:g}"


def _memory(
    d: Decision, rv: list[float], cv: list[float], settings: GateSettings, calibrated: Calibrated | None = None
) -> None:
    d.reference, d.candidate = median(rv), median(cv)
    d.delta = d.candidate - d.reference
    mib = settings.mem_mib
    if calibrated is not None:
        _calibrated_threshold(d, calibrated, settings.mem_mib, settings)
        assert d.threshold is not None  # set by _calibrated_threshold
        mib, d.threshold = d.threshold, None
    rule = f"{settings.mem_pct:g}% and {mib:.3g} MiB" + (f" ({d.noise}-arithmetic noise model)" if d.noise else "")
    if memory_regressed(d.reference, d.candidate, settings.mem_pct, mib):
        _over(d, settings, f"peak memory +{d.delta:.1f} MiB exceeds both {rule}")
    elif memory_regressed(d.candidate, d.reference, settings.mem_pct, mib):
        d.verdict, d.reason = "improved", f"peak memory {d.delta:.1f} MiB, below by more than {rule}"
    else:
        d.reason = f"{d.delta:+.1f} MiB: not over both {rule}"


def _finish(decisions: list[Decision], settings: GateSettings) -> None:
    """Benjamini-Hochberg over every tested cell and metric, then the accuracy verdicts."""
    tested = [d for d in decisions if d.p_value is not None]
    for d, p_adj in zip(tested, bh_adjust([d.p_value for d in tested if d.p_value is not None])):
        d.p_adjusted = p_adj
    for d in decisions:
        if d.threshold is None or d.delta is None or d.verdict != "pass":
            continue
        drop = -d.delta
        if drop > d.threshold:
            what = f"drop {drop:.3g} > {d.reason}"
            if d.p_adjusted is not None and not d.p_adjusted < settings.alpha:
                d.verdict = "suspect"
                d.reason = (
                    f"{what}, but not significant: one-sided {d.test} p={d.p_value:.3g}, "
                    f"BH-adjusted {d.p_adjusted:.3g} >= alpha {settings.alpha:g}"
                )
            else:
                _over(
                    d,
                    settings,
                    what
                    + (f"; one-sided {d.test} BH-adjusted p={d.p_adjusted:.3g}" if d.p_adjusted is not None else ""),
                )
        elif -drop > d.threshold:
            d.verdict, d.reason = "improved", f"gain {-drop:.3g} > {d.reason}"
        else:
            d.reason = f"change {-drop:+.3g} within {d.reason}"
