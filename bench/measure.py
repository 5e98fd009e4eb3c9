"""Measurement: step time, stage time, peak memory, parameter and FLOP counts.

Rules (DESIGN.md, "Measurement rules"):
- Step time: CUDA events around each step on GPU, read after one synchronise at the
  end (never a synchronise per step); ``perf_counter_ns`` on CPU. The first
  ``warmup`` steps are excluded; summaries are median, p10 and p90 in milliseconds.
- Stage time (a search, a candidate's training): ``Stopwatch``, synchronised on CUDA.
- Memory: on GPU the allocator's peak allocated/reserved bytes after a reset, absolute
  and over the starting baseline; on CPU the peak resident set size over the starting
  RSS (tracemalloc cannot see torch allocations). On Linux the kernel's own peak
  (``VmHWM``) is reset through ``/proc/self/clear_refs`` and read back at the end: exact
  and free. Elsewhere a background thread samples RSS, which costs step time and can
  miss short peaks, so it is only the fallback.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2).
- Garbage: meters start from a collected heap (``collect_garbage``). The objects alive at
  the first collection of a process (imported modules, the test session) are frozen out
  of the collector's view (``gc.freeze``), because a full collection over the ~400k
  objects torch and friends create at import costs ~0.27 s, and a cell enters a meter
  several times (a search enters one per candidate).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import psutil
import torch
from torch import nn

MIB = float(1 << 20)
_frozen = False


def collect_garbage() -> None:
    """A full ``gc.collect()``; the first call in a process also freezes the survivors.

    Survivors of the first collection are import-time and session-lifetime objects; a
    cycle among them that dies later is never collected, a bounded one-time cost traded
    for collections that no longer walk the whole heap.
    """
    global _frozen
    gc.collect()
    if not _frozen:
        gc.freeze()
        _frozen = True


def percentiles_ms(times_ms: list[float]) -> dict[str, float]:
    """Median, p10 and p90 of a list of step times (empty list -> empty dict)."""
    if not times_ms:
        return {}
    arr = np.asarray(times_ms, dtype=np.float64)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90)}


class StepTimer:
    """Wall time of individual training steps, without a per-step synchronisation.

    Call ``start()``/``stop()`` around each step. On CUDA each pair records two events;
    the elapsed times are read once, in ``times_ms``, after a single synchronise.
    """

    def __init__(self, device: torch.device | str, warmup: int = 5) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.warmup = max(0, int(warmup))
        self._events: list[tuple[Any, Any]] = []
        self._ns: list[int] = []
        self._t0 = 0
        self._start_event: Any = None

    def start(self) -> None:
        if self.cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._t0 = time.perf_counter_ns()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start_event, end))
        else:
            self._ns.append(time.perf_counter_ns() - self._t0)

    def __len__(self) -> int:
        return len(self._events) if self.cuda else len(self._ns)

    def all_times_ms(self) -> list[float]:
        """Every recorded step time in ms, warm-up included (synchronises once on CUDA)."""
        if self.cuda:
            if self._events:
                self._events[-1][1].synchronize()
            return [float(a.elapsed_time(b)) for a, b in self._events]
        return [ns / 1e6 for ns in self._ns]

    def times_ms(self) -> list[float]:
        """Step times in ms with the warm-up steps dropped (at least one step is kept)."""
        times = self.all_times_ms()
        skip = min(self.warmup, max(0, len(times) - 1))
        return times[skip:]


class Stopwatch:
    """Wall-clock seconds of a stage longer than a step (a search, one candidate's training).

    The one way methods time stages (``StepTimer`` times steps). On CUDA it synchronises the
    device at start and at stop, so kernels a stage queued count toward that stage and not the
    next. It accumulates over several start/stop spans (``seconds`` includes a running span)::

        with Stopwatch(device) as sw:
            engine.fit(...)
        rec.scalar("search_wall_s", sw.seconds)
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.total_s = 0.0
        self._t0: float | None = None

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> Stopwatch:
        """Begin a span (an error if one is running)."""
        if self._t0 is not None:
            raise RuntimeError("Stopwatch.start() while a span is running; call stop() first")
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> float:
        """End the running span; the seconds it lasted (added to ``total_s``)."""
        if self._t0 is None:
            raise RuntimeError("Stopwatch.stop() without start()")
        self._sync()
        span = time.perf_counter() - self._t0
        self._t0 = None
        self.total_s += span
        return span

    @property
    def seconds(self) -> float:
        """Seconds of all finished spans plus the running one."""
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.total_s + running

    def __enter__(self) -> Stopwatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None where procfs is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class MemoryMeter:
    """Peak memory of a code region, as a context manager.

    ``result()`` returns ``peak_mem_mib`` (peak over the starting baseline, on whichever
    device is in use) plus the device-specific absolutes: ``peak_alloc_mib`` and
    ``peak_reserved_mib`` on CUDA, ``peak_rss_mib`` on CPU.

    Meters nest: the runner meters a whole ``fit`` while a method meters each candidate inside
    it. Entering a meter resets the device's peak counters (CUDA allocator stats, the kernel's
    VmHWM), so before it does, every meter already open folds the peak so far into its own
    (``_carry``); an outer meter's result is the peak of its whole region whatever ran inside.
    Methods meter through this class, never by resetting the counters themselves.
    """

    _open: ClassVar[list[MemoryMeter]] = []  # the meters entered and not yet exited, outermost first

    def __init__(self, device: torch.device | str, interval_s: float = 0.01) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._result: dict[str, float] = {}
        self._kernel_peak = False
        self._carried_alloc = 0
        self._carried_reserved = 0

    def _carry(self) -> None:
        """Fold the peak so far into this meter, before a nested meter resets the counters."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._carried_alloc = max(self._carried_alloc, torch.cuda.max_memory_allocated(self.device))
            self._carried_reserved = max(self._carried_reserved, torch.cuda.max_memory_reserved(self.device))
        elif self._kernel_peak:
            self._peak = max(self._peak, (_status_kib("VmHWM") or 0) * 1024)

    def __enter__(self) -> MemoryMeter:
        for outer in MemoryMeter._open:
            outer._carry()
        MemoryMeter._open.append(self)
        collect_garbage()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._kernel_peak = reset_peak_rss()
            self._baseline = self._peak = self._process.memory_info().rss
            if not self._kernel_peak:
                self._stop.clear()
                self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
                self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._process.memory_info().rss
            if rss > self._peak:
                self._peak = rss

    def __exit__(self, *exc: object) -> None:
        if self in MemoryMeter._open:
            MemoryMeter._open.remove(self)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            alloc = max(self._carried_alloc, torch.cuda.max_memory_allocated(self.device))
            reserved = max(self._carried_reserved, torch.cuda.max_memory_reserved(self.device))
            self._result = {
                "peak_mem_mib": (alloc - self._baseline) / MIB,
                "peak_alloc_mib": alloc / MIB,
                "peak_reserved_mib": reserved / MIB,
            }
        else:
            if self._kernel_peak:
                self._peak = max(self._peak, (_status_kib("VmHWM") or 0) * 1024)
            else:
                self._stop.set()
                if self._thread is not None:
                    self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._result = {
                "peak_mem_mib": max(0, self._peak - self._baseline) / MIB,
                "peak_rss_mib": self._peak / MIB,
            }

    def result(self) -> dict[str, float]:
        return dict(self._result)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter element counts, shared tensors counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def flop_counter() -> Any:
    """A context manager counting FLOPs of what runs inside it (``.get_total_flops()``)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations executed by ``fn()`` (forward and, if run, backward)."""
    counter = flop_counter()
    with counter:
        fn()
    return int(counter.get_total_flops())


def inference_flops_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs of ``model`` in eval mode for one sample shaped like ``example[0]``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return count_flops(lambda: model(example[:1]))
    finally:
        model.train(was_training)
