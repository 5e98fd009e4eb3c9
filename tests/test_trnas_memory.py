"""Tr-NAS memory as the paper measures it: the average-allocated sampler, the ``trnas_memory``
cells' figures and sizing (fp32 NCHW, 64 architectures at paper tier), and the memory claims
(GPU figures inconclusive without CUDA, saved activations judged on their own row)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import methods  # noqa: F401 - registers the methods and their claim checks
from bench import engine
from bench.contract.config import make_config
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from bench.measure import AllocatedSampler
from bench.results.claims import CHECKS
from methods.trnas.memory import MemoryConfig, ratio_ci, sampling_hooks
from tests.conftest import tiny_spec

ROOT = Path(__file__).resolve().parent.parent


def _suite():
    loaded = importlib.util.spec_from_file_location("trnas_suite", ROOT / "suites" / "test_trnas.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the sampler


def test_sampler_averages_readings_after_the_warmup():
    readings = iter([100 << 20, 10 << 20, 20 << 20, 30 << 20])
    sampler = AllocatedSampler("cuda", warmup=1, read=lambda: next(readings))
    assert sampler.active and sampler.result() == {}
    for _ in range(4):
        sampler.sample()
    assert sampler.result() == {"avg_alloc_mib": 20.0, "samples_count": 3.0}  # the first reading is left out
    one = AllocatedSampler("cuda", warmup=1, read=lambda: 8 << 20)
    one.sample()
    assert one.result() == {"avg_alloc_mib": 8.0, "samples_count": 1.0}  # at least one reading is kept


def test_sampler_reads_the_cuda_allocator_and_nothing_on_cpu(monkeypatch):
    asked = []

    def fake_allocated(device):
        asked.append(device)
        return 6 << 20

    monkeypatch.setattr(torch.cuda, "memory_allocated", fake_allocated)
    cuda = AllocatedSampler(torch.device("cuda", 0), warmup=0)
    cuda.sample()
    cuda.sample()
    assert cuda.result()["avg_alloc_mib"] == 6.0 and asked == [torch.device("cuda", 0)] * 2
    cpu = AllocatedSampler("cpu")
    cpu.sample()
    assert not cpu.active and cpu.samples == [] and cpu.result() == {}


def test_hooks_sample_after_each_forward_and_after_each_step():
    """The forward reading is taken while the step holds its graph; the other after the optimiser."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    split = Split("train", torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,)), 4, 8)
    log: list[tuple[str, bool]] = []

    def reader(tag: str):
        def read() -> int:
            log.append((tag, model[1].weight.grad is not None))
            return len(log)

        return read

    fwd, end = AllocatedSampler("cpu", read=reader("forward")), AllocatedSampler("cpu", read=reader("end"))
    cfg = engine.TrainConfig(lr=0.1, batch_size=8, steps=3, log_every=1000)
    engine.fit(model, split, cfg, Recorder("cpu", progress=lambda _m: None), hooks=sampling_hooks(fwd, end, 0.0))
    assert [t for t, _ in log] == ["forward", "end"] * 3
    # the first forward comes before any backward; every step end holds the step's gradients
    assert log[0] == ("forward", False) and all(g for t, g in log if t == "end")
    assert len(fwd.samples) == len(end.samples) == 3


# ----------------------------------------------------------------------------- the cells


def test_memory_config_refuses_bf16_and_channels_last():
    for key in ("train.bf16", "train.channels_last"):
        with pytest.raises(InvalidConfig, match="fp32 NCHW"):
            make_config(MemoryConfig, {key: True})
    assert MemoryConfig().archs >= 64 and not MemoryConfig().train.bf16


@pytest.mark.parametrize("tier", ["smoke", "short", "paper"])
def test_suite_memory_cells_are_fp32_nchw_at_the_papers_batches(tier):
    suite = _suite()
    plan = suite.GRID.tiers[tier]
    labels = [label for label in suite.GRID.methods if label.startswith("trnas_memory:")]
    assert len(labels) == 4
    for label in labels:
        cfg = make_config(MemoryConfig, {**suite.GRID.methods[label], **plan.methods.get(label, {})})
        assert not cfg.train.bf16 and not cfg.train.channels_last, label
        assert cfg.train.batch_size == (128 if "supernet" in label else 256), label
        assert cfg.pair_original
        if tier == "paper" and "net_" in label:
            assert cfg.archs >= 64, label


def test_memory_cell_pairs_each_architecture_with_its_original():
    cfg = {"transfer.enabled": True, "transfer.i": 1, "transfer.j": 3, "archs": 3, "bootstrap": 200}
    result = run_cell(tiny_spec("trnas_memory", model="resnet20", config=cfg))
    assert result.ok, result.error
    m, series = result.metrics, result.series
    ours = [v for _, v in series["mem_act_mib"]]
    base = [v for _, v in series["mem_base_act_mib"]]
    assert len(ours) == len(base) == 3 and all(b > o > 0 for b, o in zip(base, ours))
    assert m["mem_act_mib"] == pytest.approx(np.mean(ours))
    assert m["mem_act_ratio"] == pytest.approx(sum(base) / sum(ours))
    assert m["mem_act_lo_ratio"] <= m["mem_act_ratio"] <= m["mem_act_hi_ratio"]
    # no CUDA allocator on CPU: no allocated figure, never a stand-in
    assert not {k for k in m if "alloc" in k} and "mem_base_avg_alloc_mib" not in series


def test_memory_cell_without_transfer_measures_only_itself():
    result = run_cell(tiny_spec("trnas_memory", config={"archs": 2}))
    assert result.ok, result.error
    assert "mem_act_ratio" not in result.metrics and "mem_base_act_mib" not in result.series
    assert len(result.series["mem_act_mib"]) == 2


def test_ratio_ci_resamples_architectures():
    lo, hi = ratio_ci([4.0, 8.0, 2.0, 6.0], [2.0, 4.0, 1.0, 3.0], resamples=100, level=0.95, seed=0)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # every architecture saves exactly 2x
    lo, hi = ratio_ci([4.0, 9.0, 2.0, 5.0], [2.0, 3.0, 1.5, 3.0], resamples=500, level=0.95, seed=0)
    assert lo < 20.0 / 9.5 < hi


# ----------------------------------------------------------------------------- the claims


def _rows(kind: str, figures: dict[str, dict[str, float]], device: str = "cpu", seeds=range(1)) -> list[dict]:
    """One row per side and seed: ``figures[side]`` are its metrics."""
    return [
        {
            "suite": "trnas",
            "variant": f"trnas_memory:{kind}_{side}",
            "method": "trnas_memory",
            "dataset": "uci-digits",
            "model": "resnet32",
            "seed": seed,
            "tier": "smoke",
            "mode": "accuracy",
            "status": "ok",
            "device": device,
            "chance_pct": 10.0,
            **{k: v * (1 + 0.01 * seed) for k, v in metrics.items()},
        }
        for side, metrics in figures.items()
        for seed in seeds
    ]


CPU_FIGURES = {"original": {"mem_act_mib": 30.0}, "tr_5_5": {"mem_act_mib": 12.0, "mem_act_ratio": 2.5}}


def test_gpu_memory_claims_on_cpu_rows_are_not_a_gpu_figure():
    frame = pd.DataFrame(_rows("net", CPU_FIGURES) + _rows("supernet", CPU_FIGURES))
    out = CHECKS["tr-memory"](frame)
    assert (out.verdict, out.reason) == ("inconclusive", "not a GPU figure")
    assert "cpu" in out.detail and "tr-memory-saved-act" in out.detail
    cost = CHECKS["tr-dartspt-cost"](frame)
    assert cost.verdict == "inconclusive" and "not a GPU figure" in cost.reason
    assert CHECKS["tr-memory"](pd.DataFrame(_rows("net", {"original": CPU_FIGURES["original"]}))).verdict is None


def test_saved_activation_claim_reads_mem_act_mib():
    frame = pd.DataFrame(_rows("net", CPU_FIGURES) + _rows("supernet", CPU_FIGURES))
    out = CHECKS["tr-memory-saved-act"](frame)
    assert out.verdict == "reproduced" and out.test.startswith("exact") and out.effect == pytest.approx(2.5)
    worse = {"original": {"mem_act_mib": 18.0}, "tr_5_5": {"mem_act_mib": 12.0}}
    frame = pd.DataFrame(_rows("net", worse) + _rows("supernet", CPU_FIGURES))
    assert CHECKS["tr-memory-saved-act"](frame).verdict == "not reproduced"


def test_gpu_memory_claim_reads_average_allocated_and_reports_the_paired_ci():
    figures = {
        "original": {"mem_avg_alloc_mib": 1100.0, "mem_peak_alloc_mib": 1400.0, "mem_act_mib": 900.0},
        "tr_5_5": {
            "mem_avg_alloc_mib": 500.0,
            "mem_peak_alloc_mib": 700.0,
            "mem_act_mib": 400.0,
            "mem_avg_alloc_ratio": 2.2,
            "mem_avg_alloc_lo_ratio": 2.1,
            "mem_avg_alloc_hi_ratio": 2.3,
            "mem_peak_alloc_ratio": 2.0,
        },
    }
    frame = pd.DataFrame(_rows("net", figures, device="cuda:0", seeds=range(4)))
    out = CHECKS["tr-memory"](frame)
    assert out.verdict == "reproduced" and out.effect == pytest.approx(2.2, rel=0.01) and out.n == 4
    assert "avg_alloc 2.2" in out.detail and "[2.1" in out.detail and "peak_alloc 2" in out.detail
    # the peak is not what the paper reports: an average below 2x fails however large the peak
    figures["original"]["mem_avg_alloc_mib"] = 700.0
    assert CHECKS["tr-memory"](pd.DataFrame(_rows("net", figures, device="cuda:0", seeds=range(4)))).verdict == (
        "not reproduced"
    )


# ----------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_memory_cell_on_cuda_records_average_and_peak_allocated():
    import dataclasses

    cfg = {
        "transfer.enabled": True,
        "transfer.i": 1,
        "transfer.j": 3,
        "archs": 2,
        "input_size": 32,
        "train.batch_size": 64,
        "train.steps": 3,
    }
    result = run_cell(dataclasses.replace(tiny_spec("trnas_memory", model="resnet20", config=cfg), device="cuda"))
    assert result.ok, result.error
    m = result.metrics
    assert 0 < m["mem_step_end_alloc_mib"] < m["mem_avg_alloc_mib"] <= m["mem_peak_alloc_mib"]
    assert m["mem_avg_alloc_ratio"] > 1.0 and m["mem_avg_alloc_lo_ratio"] <= m["mem_avg_alloc_hi_ratio"]
