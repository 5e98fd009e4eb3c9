"""Measurement sanity: known sleeps, known allocations, exact parameter and FLOP counts."""

import time

import numpy as np
import psutil
import pytest
import torch
from torch import nn

from bench.contract.recorder import Recorder
from bench.measure import MemoryMeter, StepTimer, count_flops, count_params, percentiles_ms


def test_step_timer_measures_known_sleep():
    timer = StepTimer("cpu", warmup=2)
    for _ in range(7):
        timer.start()
        time.sleep(0.02)
        timer.stop()
    times = timer.times_ms()
    assert len(times) == 5
    assert all(t >= 19.9 for t in times), times  # a sleep never returns early
    assert percentiles_ms(times)["median"] < 60  # generous: shared CI machines are noisy


def test_warmup_excluded():
    timer = StepTimer("cpu", warmup=1)
    for delay in (0.05, 0.0, 0.0):
        timer.start()
        time.sleep(delay)
        timer.stop()
    everything = timer.all_times_ms()
    assert len(everything) == 3 and everything[0] >= 49.9
    assert timer.times_ms() == everything[1:]


def test_percentiles_exact():
    stats = percentiles_ms([float(i) for i in range(1, 12)])
    assert stats == {"median": 6.0, "p10": 2.0, "p90": 10.0}
    assert percentiles_ms([]) == {}


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / (1 << 20)


def test_rss_of_known_allocation():
    """On CPU the meter reports the absolute peak RSS only (RSS growth is no memory figure)."""
    size_mib = 256
    with MemoryMeter("cpu", interval_s=0.002) as meter:
        start = _rss_mib()
        block = torch.ones(size_mib * (1 << 20) // 4, dtype=torch.float32)
        time.sleep(0.05)
        del block
    assert set(meter.result()) == {"peak_rss_mib"}
    peak = meter.result()["peak_rss_mib"]
    assert start + size_mib * 0.9 <= peak <= start + size_mib * 1.25, (start, peak)


def test_rss_peak_of_freed_allocation_is_seen():
    """A transient allocation freed before the region ends still counts (kernel peak)."""
    with MemoryMeter("cpu") as meter:
        start = _rss_mib()
        block = torch.ones(128 * (1 << 20) // 4, dtype=torch.float32)
        del block
    assert start + 128 * 0.9 <= meter.result()["peak_rss_mib"] <= start + 128 * 1.25


def test_sampling_fallback(monkeypatch):
    import bench.measure as measure

    monkeypatch.setattr(measure, "reset_peak_rss", lambda: False)
    with MemoryMeter("cpu", interval_s=0.002) as meter:
        start = _rss_mib()
        block = torch.ones(128 * (1 << 20) // 4, dtype=torch.float32)
        time.sleep(0.05)
        del block
    assert meter._thread is not None
    assert start + 128 * 0.9 <= meter.result()["peak_rss_mib"] <= start + 128 * 1.25


def test_count_params_shared_once():
    lin = nn.Linear(4, 3)
    model = nn.Sequential(lin, lin, nn.Linear(3, 2))
    model[2].weight.requires_grad_(False)
    assert count_params(model) == (4 * 3 + 3 + 2, 4 * 3 + 3 + 3 * 2 + 2)


def test_count_flops_linear_and_conv():
    lin = nn.Linear(10, 20, bias=False)
    assert count_flops(lambda: lin(torch.randn(8, 10))) == 2 * 8 * 10 * 20
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_flops(lambda: conv(torch.randn(1, 3, 5, 5))) == 2 * 4 * 3 * 9 * 25


def test_recorder_rejects_unitless_names_and_folds_timers():
    rec = Recorder("cpu", timing_warmup=0)
    with pytest.raises(ValueError, match="has no unit token"):
        rec.scalar("accuracy", 1.0)
    with pytest.raises(ValueError, match="has no unit token"):
        rec.point("loss", 0, 1.0)
    timer = rec.step_timer("search")
    for ms in (1, 2, 3):
        timer._ns.append(ms * 1_000_000)
    rec.step_timer("train")._ns.extend([10_000_000, 20_000_000])
    with rec.stage("fit"):
        time.sleep(0.01)
    m = rec.finalize()
    assert m["search_step_ms_median"] == 2.0 and m["train_step_ms_median"] == 15.0
    assert m["step_ms_median"] == 3.0 and m["timed_steps"] == 5
    assert np.isclose(m["step_ms_p90"], np.percentile([1, 2, 3, 10, 20], 90))
    assert 0.009 <= m["fit_s"] < 1.0


def test_collect_garbage_collects_cycles_and_freezes_the_first_survivors():
    import gc
    import weakref

    from bench.measure import collect_garbage

    collect_garbage()
    assert gc.get_freeze_count() > 0  # import-time objects are out of the collector's view

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle created after the freeze is still collected
    ref = weakref.ref(a)
    del a, b
    collect_garbage()
    assert ref() is None


def test_an_outer_memory_meter_keeps_the_peak_a_nested_meter_resets():
    """The runner meters fit while methods meter candidates inside it; entering the inner meter
    resets the kernel's peak counter, which used to leave the outer meter with the peak since
    that reset instead of the peak of its whole region."""
    import numpy as np

    from bench.measure import MemoryMeter, reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("needs the kernel's resettable peak-RSS counter (Linux procfs)")
    with MemoryMeter("cpu") as outer:
        start = _rss_mib()
        block = np.ones(300 * 2**20 // 8)  # ~300 MiB, touched
        block.sum()
        del block
        with MemoryMeter("cpu") as inner:
            np.ones(1024).sum()
    assert inner.result()["peak_rss_mib"] < start + 100
    assert outer.result()["peak_rss_mib"] > start + 250, (start, outer.result())


# -- counted memory --------------------------------------------------------------------------------


def test_saved_bytes_of_known_ops():
    """A Linear saves its input (its weight is a parameter: model state, excluded); a ReLU saves
    its output; ``x * x`` saves ``x`` twice, which counts once; a ``no_grad`` block saves nothing."""
    from bench.measure import SavedBytes

    lin = nn.Linear(10, 20)
    x = torch.randn(8, 10)
    with SavedBytes(exclude=list(lin.parameters())) as saved:
        out = lin(x).sum()
    assert saved.nbytes == 8 * 10 * 4
    with SavedBytes(exclude=list(lin.parameters())) as saved:
        hidden = lin(x).relu()
        out = hidden.sum()
    assert saved.nbytes == 8 * 10 * 4 + 8 * 20 * 4
    leaf = torch.randn(16, 16, requires_grad=True)
    with SavedBytes() as saved:
        out = (leaf * leaf).sum()
    assert saved.nbytes == 16 * 16 * 4
    with SavedBytes() as saved, torch.no_grad():
        out = lin(x).relu().sum()
    assert saved.nbytes == 0
    del out, hidden


def test_saved_bytes_ignores_saves_freed_before_the_block_ends():
    from bench.measure import SavedBytes

    leaf = torch.randn(64, 64, requires_grad=True)
    with SavedBytes() as saved:
        dead = (leaf * 2.0).relu()  # relu saves its output; the graph dies on the next line
        del dead
        kept = (leaf * 3.0).sum()
    assert saved.nbytes == 0  # a multiply by a constant and a sum save no tensor
    del kept


def test_storage_bytes_counts_each_storage_once():
    from bench.measure import storage_bytes

    a = torch.zeros(100)
    assert storage_bytes([a, a[10:], a.view(10, 10)]) == 400
    assert storage_bytes([a, torch.zeros(3, dtype=torch.float64), torch.zeros(0)]) == 400 + 24
