"""Planning from counted step costs: NASOA's budgets, plans, search spend and NSGA objective do not
move with the wall clock (``bench.models.cost``), and "no plan fits" is a recorded outcome."""

from __future__ import annotations

import pytest
import torch

from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from bench.models.cost import CostModel, StepCount, count_train_step, model_step_count
from bench.models.net import build_model
from tests.conftest import tiny_spec

COUNTED = {"cost.kind": "counted"}


def test_cost_model_arithmetic_and_validation():
    c = CostModel(kind="counted", gflops=50.0, op_us=20.0)
    assert c.step_ms(StepCount(flops=100_000_000, ops=500)) == pytest.approx(2.0 + 10.0)
    assert c.deterministic and not CostModel().deterministic
    for bad in ({"kind": "guess"}, {"gflops": 0.0}, {"op_us": -1.0}):
        with pytest.raises(InvalidConfig, match="cost"):
            CostModel(**bad)


def test_counting_is_deterministic_and_leaves_the_random_stream_alone():
    state = torch.random.get_rng_state()
    a = count_train_step(lambda: build_model("resnet18", 10, width=0.125), batch=8, size=16, num_classes=10)
    assert torch.equal(state, torch.random.get_rng_state())
    b = model_step_count.__wrapped__("resnet18", 0.125, 16, 8, 10)
    assert a == b and a.flops > 0 and a.ops > 50
    bigger = model_step_count.__wrapped__("resnet18", 0.125, 16, 16, 10)
    assert bigger.flops == pytest.approx(2 * a.flops, rel=0.01)  # FLOPs scale with the batch, operators do not
    assert bigger.ops == a.ops


def _nasoa(search: str, **config):
    return tiny_spec("nasoa", dataset="uci-digits", config={"search": search, **COUNTED, **config})


@pytest.mark.parametrize("search", ["generator", "random"])
def test_counted_plans_ignore_the_measured_step_times(monkeypatch, search):
    """The same cell with the measured table scaled 1x and 7x (an idle and a loaded machine) plans,
    spends and chooses identically; the measured figures are still recorded beside."""
    from methods.nasoa import steptime

    real = steptime.step_table
    results = []
    for factor in (1.0, 7.0):
        monkeypatch.setattr(
            steptime, "step_table", lambda *a, f=factor, **k: {m: v * f for m, v in real(*a, **k).items()}
        )
        results.append(run_cell(_nasoa(search, max_trials=3)))
    idle, busy = results
    assert idle.ok and busy.ok, (idle.error, busy.error)
    for name in (
        "budget_s",
        "chosen_iters",
        "chosen_planned_s",
        "search_cost_s",
        "resnet18_planned_step_ms",
        "test_top1_pct",
        "plan_feasible_bool",
    ):
        assert idle.metrics[name] == busy.metrics[name], name
    assert busy.metrics["resnet18_measured_step_ms"] == pytest.approx(
        7 * idle.metrics["resnet18_measured_step_ms"], rel=0.5
    )
    assert idle.info["cost_model"] == "counted"


def test_measured_plans_follow_the_measured_step_times(monkeypatch):
    from methods.nasoa import steptime

    monkeypatch.setattr(steptime, "step_table", lambda models, **k: {m: 5.0 for m in models})
    fast = run_cell(tiny_spec("nasoa", dataset="uci-digits"))
    monkeypatch.setattr(steptime, "step_table", lambda models, **k: {m: 10.0 for m in models})
    slow = run_cell(tiny_spec("nasoa", dataset="uci-digits"))
    assert fast.ok and slow.ok
    assert slow.metrics["budget_s"] == pytest.approx(2 * fast.metrics["budget_s"])
    assert fast.metrics["resnet18_planned_step_ms"] == 5.0 == fast.metrics["resnet18_measured_step_ms"]
    for r in (fast, slow):  # the plan's promise is checked against the chosen plan's measured training
        m = r.metrics
        assert m["train_s_actual"] == m["chosen_train_s"] > 0
        assert m["train_actual_to_budget_ratio"] == pytest.approx(m["train_s_actual"] / m["budget_s"])
        assert m["train_actual_to_planned_ratio"] == pytest.approx(m["train_s_actual"] / m["chosen_planned_s"])
        assert m["budget_overrun_bool"] == float(m["train_s_actual"] > m["budget_s"])


def test_a_plan_that_overruns_its_budget_is_flagged():
    import torch

    from bench.contract.recorder import Recorder
    from methods.nasoa.method import Nasoa

    lines: list[str] = []
    rec = Recorder(torch.device("cpu"), progress=lines.append)
    Nasoa._check_budget(rec, budget=2.0, planned=1.5, actual=3.0, cost_kind="measured")
    assert rec.metrics["budget_overrun_bool"] == 1.0 and rec.metrics["train_actual_to_budget_ratio"] == 1.5
    assert rec.metrics["train_actual_to_planned_ratio"] == 2.0 and "against a budget of 2 s" in lines[-1]
    rec = Recorder(torch.device("cpu"), progress=lines.append)
    Nasoa._check_budget(rec, budget=2.0, planned=1.5, actual=1.0, cost_kind="measured")
    assert rec.metrics["budget_overrun_bool"] == 0.0


def test_no_plan_fits_is_a_recorded_outcome_not_a_failure():
    """A budget shorter than one step of any candidate: the row is ok, nothing was trained."""
    spec = _nasoa("random", **{"budget_low": ["resnet18", 0.001], "budget_high": ["resnet18", 0.002]})
    result = run_cell(spec)
    assert result.ok, result.error
    assert result.metrics["plan_feasible_bool"] == 0.0 and result.metrics["chosen_iters"] == 0.0
    assert result.metrics["search_cost_s"] == 0.0 and 0.0 <= result.metrics["test_top1_pct"] <= 100.0
    assert "fits one training step" in result.info["no_plan"]


def test_charge_prices_the_iterations_run():
    from methods.nasoa.generator import Plan, Trial, charge

    p = Plan("m", 0.1, 0, 1, iters=40, planned_s=0.8)
    assert charge(Trial(p, 50.0, train_s=3.0, net=None), 10, planned=True).cost_s == pytest.approx(0.2)
    assert charge(Trial(p, 50.0, train_s=3.0, net=None), 10, planned=False).cost_s == 3.0


def test_nsga_step_objective_is_counted_and_the_measured_ms_kept():
    from bench.data.registry import load_splits
    from methods.nasoa.encoding import parse
    from methods.nasoa.nsga import ProxyConfig, ProxyEvaluator

    tr, va, _ = load_splits("uci-digits", seed=0, input_size=16)
    cfg = ProxyConfig(
        time_width=0.125, time_size=16, time_batch=4, time_steps=1, time_warmup=0, cost=CostModel(kind="counted")
    )
    ev = ProxyEvaluator(cfg, tr, va, torch.device("cpu"), 0)
    arch = parse("020-_64_11-21-21-21")
    first, second = ev.step_ms(arch), ev.step_ms(arch)
    assert first == second and first > 0
    assert set(ev.measured_ms) == {"020-_64_11-21-21-21"} and ev.measured_ms["020-_64_11-21-21-21"] > 0


def test_a_meta_shard_does_not_depend_on_who_generates_it():
    """Generated inside a nasoa cell or by the nasoa_meta cell, after any other work: the same records."""
    from bench.data.registry import load_splits
    from methods.nasoa.metadata import MetaConfig, ZooConfig, generate
    from tests.conftest import TINY_TASK

    class _Task:
        from bench.contract.config import make_config
        from bench.contract.interface import TaskSettings

        settings = make_config(TaskSettings, TINY_TASK)
        download = False

    zoo = ZooConfig(models=("resnet18",), batch_size=16).resolve(_Task)
    meta = MetaConfig(runs=2, min_iters=2, max_iters=3, min_source_images=1)
    tr, va, _ = load_splits("uci-digits", seed=0, input_size=16, train_limit=128)
    records = []
    for state in (0, 99):
        torch.manual_seed(state)
        runs, _ = generate(zoo, meta, tr, va, dataset="uci-digits", seed=0, device=torch.device("cpu"))
        records.append([(r.model, r.lr, r.iters, r.top1_pct) for r in runs])
    assert records[0] == records[1]


def test_bohb_is_the_same_on_every_run_of_a_seed():
    """HyperbandPruner brackets hash the study name; a random default name made pruning differ per run."""
    spec = _nasoa("bohb", max_trials=8, cost_factor=40.0)
    first, second = run_cell(spec), run_cell(spec)
    assert first.ok and second.ok, (first.error, second.error)
    assert first.series["search_val_top1_pct"] == second.series["search_val_top1_pct"]
    for name in ("search_trials_count", "search_pruned_count", "search_cost_s", "test_top1_pct", "chosen_iters"):
        assert first.metrics[name] == second.metrics[name], name
