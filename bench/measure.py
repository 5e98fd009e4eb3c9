"""Measurement: step time, stage time, peak memory, parameter and FLOP counts.

Rules (DESIGN.md, "Measurement rules"):
- Step time: CUDA events around each step on GPU, read after one synchronise at the
  end (never a synchronise per step); ``perf_counter_ns`` on CPU. The first
  ``warmup`` steps are excluded; summaries are median, p10 and p90 in milliseconds.
- Stage time (a search, a candidate's training): ``Stopwatch``, synchronised on CUDA.
- Memory, measured (``MemoryMeter``): on GPU the allocator's peak allocated/reserved bytes
  after a reset, absolute and over the starting baseline (``peak_mem_mib``); on CPU only the
  absolute peak resident set size (``peak_rss_mib``, never gated): RSS growth over a region
  depends on what the process ran before (freed pages the allocator keeps), so it is not a
  figure of the region. On Linux the kernel's own peak (``VmHWM``) is reset through
  ``/proc/self/clear_refs`` and read back at the end: exact and free. Elsewhere a background
  thread samples RSS, which costs step time and can miss short peaks, so it is only the fallback.
- Memory, sampled (``AllocatedSampler``): on GPU the allocator's allocated bytes read at points
  a training step chooses (a step hook calls ``sample()``), averaged over the steps: an average
  allocated memory, which a peak is not. The read is the allocator's host-side counter (no
  synchronise) and resets nothing, so it nests with any meter; off CUDA it records nothing.
- Memory, counted (``SavedBytes``, ``storage_bytes``): the bytes of tensors a training step
  holds (parameters, gradients, optimiser state, what autograd saves for backward), summed
  over distinct storages. Exact and the same on any device and in any process history; the
  engine records it as ``counted_mem_mib`` (``bench.engine.train``).
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
import weakref
from collections.abc import Callable, Iterable
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

    ``result()`` returns, on CUDA, ``peak_mem_mib`` (the allocator's peak allocated bytes over
    the starting baseline), ``peak_alloc_mib`` and ``peak_reserved_mib`` (absolute peaks); on
    CPU only ``peak_rss_mib``, the process's absolute peak resident set. RSS growth over the
    region is not reported on CPU: the same region reads 0 or 121 MiB depending on what the
    process ran before, so it is no memory figure of the region. The CPU figure of training
    memory is counted, not measured (``counted_mem_mib``, ``bench.engine.train``).

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
            self._result = {"peak_rss_mib": self._peak / MIB}

    def result(self) -> dict[str, float]:
        return dict(self._result)


class AllocatedSampler:
    """Allocated bytes of a device, read at the points the caller picks, and their mean.

    ``sample()`` appends one reading; a training samples once per step from a step hook (e.g. as
    the step's forward ends, when it holds its saved activations, or after the optimiser step),
    so ``result()`` is an average over the training steps where ``MemoryMeter`` gives the peak.
    On CUDA a reading is ``torch.cuda.memory_allocated``: the caching allocator's own count of
    the bytes held by live tensors, kept on the host, so reading it costs no synchronise and no
    step time worth timing, and it resets no counter (meters around it are unaffected). Off
    CUDA there is no allocator count: the sampler is inactive, ``sample()`` does nothing and
    ``result()`` is empty. ``read`` replaces the reading (a fake allocator in CPU tests).

    The first ``warmup`` readings are left out of the mean (at least one is kept): the first
    step of a training holds no gradients or optimiser state yet, and runs the engine's counting.
    """

    def __init__(self, device: torch.device | str, warmup: int = 1, read: Callable[[], int] | None = None) -> None:
        self.device = torch.device(device)
        self.warmup = max(0, int(warmup))
        if read is None and self.device.type == "cuda":
            read = self._cuda_allocated
        self._read = read
        self.samples: list[int] = []

    def _cuda_allocated(self) -> int:
        return int(torch.cuda.memory_allocated(self.device))

    @property
    def active(self) -> bool:
        """Whether readings are taken (CUDA, or a ``read`` given)."""
        return self._read is not None

    def sample(self) -> None:
        """Take one reading (nothing off CUDA)."""
        if self._read is not None:
            self.samples.append(int(self._read()))

    def result(self) -> dict[str, float]:
        """``avg_alloc_mib`` (mean of the readings after the warm-up), ``samples_count`` (the
        readings averaged); empty when nothing was read."""
        if not self.samples:
            return {}
        kept = self.samples[min(self.warmup, len(self.samples) - 1) :]
        return {"avg_alloc_mib": float(np.mean(kept)) / MIB, "samples_count": float(len(kept))}


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a storage shared by views counts once).

    Tensors without a storage of their own (e.g. some tensor subclasses) count 0."""
    return sum(_storages(tensors).values())


def _storages(tensors: Iterable[torch.Tensor]) -> dict[int, int]:
    """Data pointer -> bytes of each distinct storage behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError, TypeError):
            continue
        ptr = storage.data_ptr()
        if ptr:  # empty storages (and those without data) hold nothing
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
    return seen


class SavedBytes:
    """Bytes autograd saves for backward in a block, counted through ``saved_tensors_hooks``.

    ``nbytes`` (set when the block exits) is the size of the distinct storages of the tensors
    saved inside the block and still held when it exits, less those of ``exclude`` (pass the
    parameters and buffers: they are model state, counted on their own). This is the
    activation memory of a training forward, the same on any device: parts run under
    ``no_grad`` (a frozen prefix) save nothing, a tensor saved by several ops (the input of a
    conv and of its shortcut) counts once, and saves freed before the block ends (a branch whose
    graph died) do not count, so the figure never depends on the allocator reusing an address.
    Keep the output (the loss) alive until the block exits::

        with SavedBytes(exclude=[*model.parameters(), *model.buffers()]) as saved:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        saved.nbytes

    The hooks keep each saved tensor as a detached alias (no copy, no extra memory, the same
    values and gradients); they cost a weak reference per save, so count one step, not every step.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.exclude = list(exclude)
        self.nbytes = 0
        self._refs: list[weakref.ref[torch.Tensor]] = []
        self._hooks: Any = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        # A detached alias (same storage and version counter, no copy): packing ``t`` itself
        # would make a saved output hold its own grad_fn, a cycle the collector cannot free,
        # so a graph that died before backward would leak its saves. Unpacking gets the graph
        # back from autograd (double backward included).
        alias = t.detach()
        self._refs.append(weakref.ref(alias))
        return alias

    def __enter__(self) -> SavedBytes:
        self._refs = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None
        saved = _storages(t for t in (ref() for ref in self._refs) if t is not None)
        self._refs = []
        excluded = _storages(self.exclude)
        self.nbytes = sum(n for ptr, n in saved.items() if ptr not in excluded)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


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
