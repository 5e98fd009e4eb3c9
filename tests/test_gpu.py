"""CUDA code paths (marked ``gpu``: skipped cleanly where CUDA is absent).

Run on a GPU machine with ``pytest tests/test_gpu.py``; CI has no GPU and skips them.
"""

import dataclasses

import pytest
import torch

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.execute.runner import run_cell
from bench.measure import MemoryMeter, StepTimer
from bench.models.net import build_model, head_only
from tests.conftest import tiny_spec

pytestmark = pytest.mark.gpu


def test_cell_on_cuda_records_allocator_peaks():
    r = run_cell(dataclasses.replace(tiny_spec("last_k", config={"k": 1}), device="cuda"))
    assert r.status == "ok", r.error
    assert r.device == "cuda:0" and r.metrics["peak_alloc_mib"] > 0
    assert r.metrics["peak_reserved_mib"] >= r.metrics["peak_alloc_mib"] >= r.metrics["peak_mem_mib"] >= 0
    assert r.metrics["step_ms_median"] > 0 and 0 <= r.metrics["test_top1_pct"] <= 100


def test_cuda_event_timer_counts_steps():
    timer = StepTimer("cuda", warmup=1)
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(4):
        timer.start()
        x = x @ x
        x = x / x.norm()
        timer.stop()
    times = timer.times_ms()
    assert len(times) == 3 and all(t > 0 for t in times)


def test_cuda_memory_meter_sees_known_allocation():
    with MemoryMeter("cuda") as meter:
        block = torch.empty(256 * (1 << 20), dtype=torch.uint8, device="cuda")
        del block
    assert 255 <= meter.result()["peak_mem_mib"] <= 260


def test_an_outer_cuda_meter_keeps_the_peak_a_nested_meter_resets():
    """A method meters a phase inside the runner's meter: the outer peak is still the whole fit's."""
    with MemoryMeter("cuda") as outer:
        block = torch.empty(256 * (1 << 20), dtype=torch.uint8, device="cuda")
        del block
        with MemoryMeter("cuda") as inner:
            small = torch.empty(8 * (1 << 20), dtype=torch.uint8, device="cuda")
            del small
    assert inner.result()["peak_mem_mib"] < 16
    assert outer.result()["peak_mem_mib"] >= 255, outer.result()


def test_frozen_prefix_costs_no_activation_memory_on_gpu():
    def peak(freeze: bool) -> float:
        torch.manual_seed(0)
        model = build_model("resnet18", num_classes=10, width=1.0).cuda()
        if freeze:
            head_only(model)
        split = Split(
            "train",
            torch.randn(256, 3, 64, 64, device="cuda"),
            torch.randint(0, 10, (256,), device="cuda"),
            num_classes=10,
            input_size=64,
        )
        with MemoryMeter("cuda") as meter:
            engine.fit(model, split, engine.TrainConfig(steps=3, batch_size=128), Recorder("cuda"))
        return meter.result()["peak_mem_mib"]

    assert peak(True) < 0.5 * peak(False)
