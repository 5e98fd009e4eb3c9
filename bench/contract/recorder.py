"""The ``Recorder``: the only channel through which a method reports.

Methods never touch the store, pytest or the clock directly. They call:
- ``scalar(name, value)`` for a metric of the cell (the name carries its unit);
- ``point(name, step, value, position=None)`` for a curve or search telemetry (goes to
  ``series``; ``position`` makes it a (step, position) grid such as a heatmap);
- ``note(key, value)`` for non-numeric facts (stored in the row's ``info_json``);
- ``stage(name)`` around a phase, which records ``<name>_s`` wall seconds (it yields its
  ``Stopwatch``: the one timer of that phase);
- ``step_timer(stage)`` (used by the training engine) for per-step times;
- ``progress(message)`` for human-readable progress on long runs.
``finalize()`` turns the step timers into ``<stage>_step_ms_*`` and overall
``step_ms_*`` metrics.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bench.contract.units import check_metric_name
from bench.measure import StepTimer, Stopwatch, percentiles_ms

log = logging.getLogger("bench")


class Recorder:
    """Collects one cell's metrics, curves, notes and timings."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        *,
        timing_warmup: int = 5,
        progress: Callable[[str], None] | None = None,
        label: str = "",
    ) -> None:
        self.device = torch.device(device)
        self.timing_warmup = timing_warmup
        self.metrics: dict[str, float] = {}
        self.series: dict[str, list[tuple[int, float] | tuple[int, float, int]]] = defaultdict(list)
        self.info: dict[str, Any] = {}
        self.timers: dict[str, StepTimer] = {}
        self.label = label
        self._progress = progress

    def scalar(self, name: str, value: float) -> None:
        """Record (or overwrite) metric ``name``."""
        self.metrics[check_metric_name(name)] = float(value)

    def scalars(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.scalar(name, value)

    def point(self, name: str, step: int, value: float, *, position: int | None = None) -> None:
        """Append one point to curve ``name``; ``position`` indexes a second axis.

        With ``position`` the curve is a (step, position) grid, e.g. the probability of
        the 5x5 kernel for every mutable layer at every controller update (a heatmap).
        """
        key = check_metric_name(name)
        if position is None:
            self.series[key].append((int(step), float(value)))
        else:
            self.series[key].append((int(step), float(value), int(position)))

    def curve(self, name: str) -> list[tuple[int, float]]:
        """The ``(step, value)`` points recorded so far on curve ``name`` (a copy; empty if none).

        How a method reads back what it (or the engine) recorded, e.g. the test accuracy per
        evaluation to find the first step that reaches a target. A grid curve (``position``)
        drops its position here."""
        return [(int(pt[0]), float(pt[1])) for pt in self.series.get(name, ())]

    def note(self, key: str, value: Any) -> None:
        """Record a non-numeric fact (architecture choice, stopping reason, ...)."""
        self.info[key] = value

    @contextmanager
    def stage(self, name: str) -> Iterator[Stopwatch]:
        """Time a phase; repeated stages of the same name accumulate into ``<name>_s``.

        It yields its ``Stopwatch`` (synchronised on CUDA), so a method that needs this span's
        seconds under another name (``search_cost_s``) reads ``watch.total_s`` after the block
        instead of timing the same phase a second time."""
        key = check_metric_name(f"{name}_s")
        watch = Stopwatch(self.device).start()
        try:
            yield watch
        finally:
            self.metrics[key] = self.metrics.get(key, 0.0) + watch.stop()

    def step_timer(self, stage: str) -> StepTimer:
        """The step timer of ``stage`` (created on first use, shared by later calls)."""
        if stage not in self.timers:
            self.timers[stage] = StepTimer(self.device, warmup=self.timing_warmup)
        return self.timers[stage]

    def progress(self, message: str) -> None:
        text = f"[{self.label}] {message}" if self.label else message
        if self._progress is not None:
            self._progress(text)
        else:
            log.info(text)

    def finalize(self) -> dict[str, float]:
        """Fold step timers into metrics and return a copy of all metrics."""
        everything: list[float] = []
        for stage, timer in self.timers.items():
            times = timer.times_ms()
            everything.extend(times)
            for stat, value in percentiles_ms(times).items():
                self.scalar(f"{stage}_step_ms_{stat}", value)
            self.scalar(f"{stage}_timed_steps", len(times))
        for stat, value in percentiles_ms(everything).items():
            self.scalar(f"step_ms_{stat}", value)
        if everything:
            self.scalar("timed_steps", len(everything))
        return dict(self.metrics)
