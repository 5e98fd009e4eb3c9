"""Inner failures are data (``bench.engine.inner``): a diverged search trial, meta-data run or
proxy evaluation is recorded at chance with a flag and counted, the search never returns it, and
the cell goes on; the cell fails only when every inner run it needed diverged."""

from __future__ import annotations

import math

import pytest
import torch

from bench import engine
from bench.contract.recorder import Recorder
from bench.errors import Diverged, InnerRunsDiverged
from bench.execute.runner import run_cell
from tests.conftest import tiny_spec

CHANCE = 100.0 / 10  # uci-digits: 10 classes


def diverge_fit(monkeypatch: pytest.MonkeyPatch, stage: str, calls: set[int] | None) -> list[int]:
    """Make ``engine.fit`` raise ``Diverged`` on the ``calls``-th (0-based; None: every) fit of
    ``stage``; other fits train as usual. Returns the running list of that stage's call numbers."""
    real = engine.fit
    seen: list[int] = []

    def fit(model, split, cfg, rec, **kwargs):
        name = kwargs.get("stage", "train")
        if name == stage:
            seen.append(len(seen))
            if calls is None or seen[-1] in calls:
                raise Diverged(0, float("nan"), name)
        return real(model, split, cfg, rec, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    return seen


# -- the helper ---------------------------------------------------------------------------------


def test_inner_run_counts_a_divergence_of_its_own_stage_and_passes_everything_else():
    rec = Recorder("cpu")
    assert engine.inner_run(lambda: 3, rec, stage="proxy", what="a") == 3
    assert rec.metrics == {"inner_runs_count": 1.0, "inner_diverged_count": 0.0}

    def blow_up(stage: str):
        def run() -> None:
            raise Diverged(4, float("nan"), stage)

        return run

    got = engine.inner_run(blow_up("proxy"), rec, stage="proxy", what="b")
    assert isinstance(got, Diverged) and got.step == 4
    assert rec.metrics == {"inner_runs_count": 2.0, "inner_diverged_count": 1.0}
    with pytest.raises(Diverged, match="pretrain"):  # not the run's own training: the cell's problem
        engine.inner_run(blow_up("pretrain"), rec, stage="proxy", what="c")

    def bug() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        engine.inner_run(bug, rec, stage="proxy", what="d")
    assert rec.metrics["inner_diverged_count"] == 1.0
    assert engine.chance_pct(10) == 10.0 and engine.chance_pct(4) == 25.0
    with pytest.raises(ValueError, match="num_classes"):
        engine.chance_pct(0)


def test_inner_runs_diverged_is_a_diverged_so_the_cell_is_recorded_diverged():
    err = InnerRunsDiverged("every one of the 3 search trials diverged")
    assert isinstance(err, Diverged) and str(err) == "every one of the 3 search trials diverged"
    assert err.step == -1 and math.isnan(err.value)


# -- NASOA: search trials -------------------------------------------------------------------------


def test_best_trial_never_returns_a_diverged_trial_and_falls_back_to_pruned_ones():
    from methods.nasoa.generator import Plan, Trial, best_trial

    p = Plan("m", 0.1, 0, 1, iters=4, planned_s=0.1)
    net = torch.nn.Linear(1, 1)
    diverged = Trial(p, 100.0, 1.0, None, diverged=True)  # even scored above every other trial
    pruned = [Trial(p, 30.0, 1.0, net, complete=False), Trial(p, 40.0, 1.0, net, complete=False)]
    assert best_trial([diverged, *pruned]) is pruned[1]  # every trial pruned: the best pruned one
    done = Trial(p, 20.0, 1.0, net)
    assert best_trial([diverged, *pruned, done]) is done  # a complete trial beats the pruned ones
    with pytest.raises(InnerRunsDiverged, match="every one of the 2 search trials diverged"):
        best_trial([diverged, Trial(p, 5.0, 1.0, None, diverged=True)])


def _random(**config):
    # table3_depths=() skips the meta stream, so no meta shard is generated into the session cache.
    base = {"search": "random", "cost.kind": "counted", "table3_depths": [], "max_trials": 3}
    return tiny_spec("nasoa", dataset="uci-digits", config={**base, **config})


def test_a_diverged_random_search_trial_is_a_chance_trial_and_the_cell_goes_on(monkeypatch):
    diverge_fit(monkeypatch, "search", {0})
    result = run_cell(_random())
    assert result.ok, result.error
    m = result.metrics
    assert m["inner_diverged_count"] == 1 and m["search_diverged_count"] == 1
    assert m["inner_runs_count"] == 3 and m["search_trials_count"] == 3
    curve = sorted(result.series["search_val_top1_pct"])
    assert curve[0] == (1, CHANCE)  # the diverged trial is in the search's record, at chance
    assert m["chosen_val_top1_pct"] == max(v for _, v in curve[1:])  # chosen among the others
    assert m["search_cost_s"] > 0  # the diverged trial is charged too


def test_bohb_tells_a_diverged_trial_and_survives_every_trial_pruned(monkeypatch):
    """Every trial pruned used to leave no network (AssertionError); a diverged one is told, not dropped."""
    import optuna

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    told: list[float | None] = []
    real_tell = optuna.study.Study.tell

    def tell(self, trial, values=None, state=None, **kw):
        told.append(values)
        return real_tell(self, trial, values, state, **kw)

    monkeypatch.setattr(optuna.study.Study, "tell", tell)
    diverge_fit(monkeypatch, "search", {1})
    result = run_cell(_random(search="bohb"))
    assert result.ok, result.error
    m = result.metrics
    assert m["search_trials_count"] == 3 and m["search_pruned_count"] == 2  # the diverged one never reached a rung
    assert m["search_diverged_count"] == 1 == m["inner_diverged_count"]
    assert told == [None, CHANCE, None]  # pruned, the diverged trial's chance value, pruned


def test_every_search_trial_diverged_fails_the_cell_as_diverged(monkeypatch):
    diverge_fit(monkeypatch, "search", None)
    result = run_cell(_random())
    assert result.status == "diverged"
    assert "every one of the 3 search trials diverged" in result.error
    assert result.metrics["inner_diverged_count"] == 3


# -- NASOA: meta-data runs ----------------------------------------------------------------------


def test_a_diverged_meta_run_is_kept_in_the_shard_with_its_flag(monkeypatch):
    diverge_fit(monkeypatch, "meta", {0})
    result = run_cell(tiny_spec("nasoa_meta", dataset="uci-digits"))
    assert result.ok, result.error
    runs = result.info["meta_runs"]
    assert [r["diverged"] for r in runs] == [True, False, False]
    assert runs[0]["top1_pct"] == pytest.approx(100.0 / runs[0]["num_classes"])
    assert result.metrics["inner_diverged_count"] == 1 and result.metrics["meta_diverged_count"] == 1
    assert [v for _, v in sorted(result.series["meta_diverged_bool"])] == [1.0, 0.0, 0.0]


def test_the_meta_cells_own_last_run_diverging_fails_it(monkeypatch):
    diverge_fit(monkeypatch, "meta", {2})
    result = run_cell(tiny_spec("nasoa_meta", dataset="uci-digits"))
    assert result.status == "diverged" and "last meta run" in result.error


# -- NASOA: NSGA proxy evaluations ----------------------------------------------------------------


def test_a_diverged_nsga_proxy_scores_chance_and_is_remembered(monkeypatch):
    from bench.data.registry import load_splits
    from methods.nasoa.encoding import parse
    from methods.nasoa.nsga import ProxyConfig, ProxyEvaluator

    tr, va, _ = load_splits("uci-digits", seed=0, input_size=16, train_limit=64)
    rec = Recorder("cpu")
    ev = ProxyEvaluator(ProxyConfig(input_size=16, width=0.125), tr, va, torch.device("cpu"), 0, rec=rec)
    diverge_fit(monkeypatch, "proxy", {0})
    arch = parse("020-_64_11-21-21-21")
    assert ev.accuracy(arch, 0) == CHANCE
    assert ev.diverged == {"020-_64_11-21-21-21"} and rec.metrics["inner_diverged_count"] == 1
    assert ev.train_s >= 0


# -- Tr-NAS: rank-correlation proxies and REA evaluations ----------------------------------------


def test_a_diverged_rank_proxy_scores_chance_and_is_not_the_best(monkeypatch):
    """The proxy's best architecture diverges on a rerun: chance in the ranking, another one returned."""
    base = run_cell(tiny_spec("trnas_rank"))
    assert base.ok, base.error
    proxy = [v for _, v in sorted(base.series["rank_proxy_val_top1_pct"])]
    k = proxy.index(max(proxy))
    diverge_fit(monkeypatch, "proxy", {k})
    result = run_cell(tiny_spec("trnas_rank"))
    assert result.ok, result.error
    got = [v for _, v in sorted(result.series["rank_proxy_val_top1_pct"])]
    assert got[k] == CHANCE and got[:k] + got[k + 1 :] == proxy[:k] + proxy[k + 1 :]
    assert result.metrics["proxy_diverged_count"] == 1 == result.metrics["inner_diverged_count"]
    assert result.info["proxy_diverged_archs"] == [result.info["archs"][k]]
    assert result.info["proxy_best_arch"] != result.info["archs"][k]


def test_a_diverged_rea_evaluation_is_never_the_architecture_found(monkeypatch):
    """Tournament 1 picks parents regardless of fitness, so the rerun evaluates the same architectures."""
    base = run_cell(tiny_spec("trnas_rea"))
    assert base.ok, base.error
    assert base.metrics["search_trained_count"] == 3
    fitness = [v for _, v in sorted(base.series["rea_fitness_val_top1_pct"])]
    k = fitness.index(max(fitness))
    diverge_fit(monkeypatch, "proxy", {k})
    result = run_cell(tiny_spec("trnas_rea"))
    assert result.ok, result.error
    assert [v for _, v in sorted(result.series["rea_fitness_val_top1_pct"])][k] == CHANCE
    assert result.metrics["search_diverged_count"] == 1 == result.metrics["inner_diverged_count"]
    assert result.arch != base.arch


def test_every_rea_evaluation_diverged_fails_the_cell_as_diverged(monkeypatch):
    diverge_fit(monkeypatch, "proxy", None)
    result = run_cell(tiny_spec("trnas_rea"))
    assert result.status == "diverged" and "every one of the 3 REA proxy trainings diverged" in result.error
