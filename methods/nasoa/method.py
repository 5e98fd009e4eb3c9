"""Registered NASOA methods.

- ``nasoa``: fine-tune under a time budget. ``search="generator"`` is NASOA's schedule
  generator (predictor trained prequentially on the meta-data stream, argmax of its
  scores trained, then one online update); ``"random"`` and ``"bohb"`` are the search
  baselines at ``cost_factor`` x the budget. ``predictor.adaptive=False, online=False``
  with depth 10 is the paper's "fixed MLP"; a series in ``zoo.models`` gives "OA only" /
  "HPO + series"; a single model gives "HPO only". Every cell also records the
  prequential Table 3 errors of every predictor on the same meta-data stream.
- ``nasoa_meta``: one meta-data shard (random fine-tuning runs on random subsets of the
  cell's dataset), recorded run by run and cached for the ``nasoa`` cells.
- ``nasoa_steptime``: training-step / inference ms (the engine's step, speed mode) and training
  memory (counted; on CUDA also the allocator's peak) per model.
- ``nasoa_nsga``: the modified NSGA-II block-then-macro search at proxy scale.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench import engine
from bench.contract.interface import Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InnerRunsDiverged, InvalidConfig
from bench.models.cost import CostModel
from bench.registry import register_method
from bench.results.analysis import kendall_tau
from methods.nasoa import generator as gen
from methods.nasoa.metadata import (
    SHARD_TASK,
    MetaConfig,
    MetaRun,
    Standardizer,
    ZooConfig,
    features,
    finetune,
    generate,
    save_shard,
    shard,
    shard_path,
)
from methods.nasoa.predictor import HedgeMLP, PredictorConfig, prequential, table3

if TYPE_CHECKING:
    from bench.models.net import MappedNet

SEARCHES = ("generator", "random", "bohb")


@dataclass(frozen=True)
class NasoaConfig:
    """NASOA and its baselines under a time budget (see the module docstring)."""

    search: str = "generator"
    zoo: ZooConfig = field(default_factory=ZooConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    meta_datasets: tuple[str, ...] = ("uci-digits",)
    meta_shards: tuple[int, ...] = (0,)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    online: bool = True
    num_configs: int = 0  # H of Algorithm 3; 0 scores every combination
    table3_depths: tuple[int, ...] = (3, 6, 10, 14)  # () skips Table 3 (and, for RS/BOHB, the meta stream)
    budget_index: int = 1
    budget_count: int = 4
    budget_low: tuple[str, float] = ("etnas_a", 10.0)  # (model, epochs): t0 (paper: ResNet-18, 10 epochs)
    budget_high: tuple[str, float] = ("etnas_d", 50.0)  # t3 (paper: ResNet-101, 50 epochs)
    step_steps: int = 5
    cost: CostModel = field(default_factory=CostModel)  # measured step times (paper) or counted (smoke)
    cost_factor: float = 40.0
    max_trials: int = 0
    rank_candidates: int = 0  # extra scored candidates trained only to rank-check the predictor

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise InvalidConfig(f"search must be one of {SEARCHES}, got {self.search!r}")
        if not 0 <= self.budget_index < self.budget_count:
            raise InvalidConfig(f"budget_index must be in 0..{self.budget_count - 1}, got {self.budget_index}")


def meta_stream(cfg: NasoaConfig, zoo, task: Task, rec: Recorder) -> list[dict]:
    """Every meta-train record (cached shards; generated on a miss)."""
    if task.dataset in cfg.meta_datasets:
        raise InvalidConfig(
            f"dataset '{task.dataset}' is a meta-train dataset ({', '.join(cfg.meta_datasets)}); "
            "a meta-test cell must use another dataset"
        )
    records, generated = [], 0
    with rec.stage("meta"):
        for d in cfg.meta_datasets:
            for s in cfg.meta_shards:
                part, new = shard(zoo, cfg.meta, d, s, task.device, rec=rec)
                records.extend(part)
                generated += int(new)
    rec.scalar("meta_records_count", len(records))
    rec.scalar("meta_generated_count", generated)
    rec.scalar("meta_diverged_count", sum(bool(r.get("diverged", False)) for r in records))
    return records


def _record_table3(x: torch.Tensor, y: torch.Tensor, cfg: NasoaConfig, rec: Recorder) -> None:
    results = table3(x, y, cfg.table3_depths, cfg.predictor.depth, cfg.predictor)
    for name, r in results.items():
        for seg in r.mae:
            rec.scalar(f"t3_{name}_{seg}_mae", r.mae[seg])
            rec.scalar(f"t3_{name}_{seg}_mse", r.mse[seg])


@register_method("nasoa")
class Nasoa(BaseMethod[NasoaConfig]):
    """NASOA's online schedule generator and the RS / BOHB baselines under a time budget."""

    Config = NasoaConfig

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        zoo = cfg.zoo.resolve(task)
        dev = task.device
        x = y = std = None
        if cfg.search == "generator" or cfg.table3_depths:
            records = meta_stream(cfg, zoo, task, rec)
            raw = np.array([features(r, zoo.models) for r in records])
            std = Standardizer(raw, len(zoo.models))
            x, y = std(raw), torch.tensor([r["top1_pct"] / 100.0 for r in records], dtype=torch.float32)
            if cfg.table3_depths:
                _record_table3(x, y, cfg, rec)
        steps = self._step_costs(cfg, zoo, task, rec)
        per_epoch = max(1, -(-len(task.train) // zoo.batch_size))
        low = steps[cfg.budget_low[0]] * per_epoch * cfg.budget_low[1] / 1000.0
        high = steps[cfg.budget_high[0]] * per_epoch * cfg.budget_high[1] / 1000.0
        budget = gen.budget_seconds(cfg.budget_index, low, high, cfg.budget_count)
        rec.scalar("budget_s", budget)
        frozen_ms = None if cfg.cost.deterministic else self._frozen_step_costs(cfg, zoo, task, rec)
        plans = gen.plan(zoo.models, steps, budget, len(task.train), zoo.batch_size, frozen_ms)
        rec.scalar("plan_feasible_bool", float(bool(plans)))
        rec.note("zoo_models", list(zoo.models))
        if not plans:
            return self._no_plan(zoo, task, rec, steps, budget)
        rec.scalar("fitting_models_count", len({p.model for p in plans}))
        if cfg.search == "generator":
            assert std is not None  # search == "generator" built the meta stream and its Standardizer above
            trial, cost = self._generate(cfg, zoo, task, rec, x, y, std, plans)
        else:
            search = gen.random_search if cfg.search == "random" else gen.bohb_search
            with rec.stage("search"):
                trials = search(
                    zoo,
                    plans,
                    budget,
                    cfg.cost_factor,
                    task.train,
                    task.val,
                    dev,
                    task.seed,
                    rec,
                    max_trials=cfg.max_trials,
                    planned=cfg.cost.deterministic,
                )
            trial = gen.best_trial(trials)
            cost = sum(t.cost_s for t in trials)
            rec.scalar("search_trials_count", len(trials))
            rec.scalar("search_pruned_count", sum(not t.complete for t in trials))
            rec.scalar("search_diverged_count", sum(t.diverged for t in trials))
            rec.scalar("search_measured_train_s", sum(t.train_s for t in trials))
        rec.scalar("search_cost_s", cost)
        rec.scalar("search_cost_ratio", cost / budget)
        p = trial.plan
        rec.note("chosen", {"model": p.model, "lr": p.lr, "frozen": p.frozen, "epochs": p.epochs, "iters": p.iters})
        rec.scalar("chosen_lr", p.lr)
        rec.scalar("chosen_frozen_count", p.frozen)
        rec.scalar("chosen_iters", p.iters)
        rec.scalar("chosen_planned_s", p.planned_s)
        rec.scalar("chosen_train_s", trial.train_s)
        self._check_budget(rec, budget, p.planned_s, trial.train_s, cfg.cost.kind)
        rec.scalar("chosen_val_top1_pct", trial.val_top1_pct)
        assert trial.net is not None  # best_trial picks the trial whose network the search kept (or _generate trained)
        rec.scalar("trainable_params", sum(q.numel() for q in trial.net.parameters() if q.requires_grad))
        return Fitted(
            trial.net, f"{p.model}(lr={p.lr:g},frozen={p.frozen},iters={p.iters})", info={"chosen_model": p.model}
        )

    @staticmethod
    def _check_budget(rec: Recorder, budget: float, planned: float, actual: float, cost_kind: str) -> None:
        """The plan's promise against what its training took: ``train_s_actual`` beside ``budget_s``.

        ``train_actual_to_budget_ratio`` above 1 means the chosen plan overran the budget it was
        planned for (``budget_overrun_bool``, and a progress line says so); the ratio to the plan's
        own ``chosen_planned_s`` says how good the step-time table was. With a counted cost model
        (nominal rates, ``cost.kind="counted"``) the plan is in nominal seconds, so the ratio
        measures the nominal rates, not the planner.
        """
        rec.scalar("train_s_actual", actual)
        rec.scalar("train_actual_to_budget_ratio", actual / budget if budget > 0 else float("nan"))
        rec.scalar("train_actual_to_planned_ratio", actual / planned if planned > 0 else float("nan"))
        over = budget > 0 and actual > budget
        rec.scalar("budget_overrun_bool", float(over))
        if over:
            rec.progress(
                f"chosen plan trained {actual:.3g} s against a budget of {budget:.3g} s "
                f"(x{actual / budget:.2f}; cost model {cost_kind})"
            )

    @staticmethod
    def _step_costs(cfg: NasoaConfig, zoo, task: Task, rec: Recorder) -> dict[str, float]:
        """Planned ms per training step of every zoo and budget-reference model; the measured ms beside.

        The measured table is always taken and recorded (``<model>_measured_step_ms``); with a
        counted cost model (``cost.kind="counted"``) the plan uses the counted figures instead,
        so budgets, plans and search spend are the same on every run (``bench.models.cost``).
        """
        from bench.models.cost import model_step_count
        from methods.nasoa.steptime import step_table

        refs = sorted({cfg.budget_low[0], cfg.budget_high[0], *zoo.models})
        with rec.stage("steptime"):
            measured = step_table(
                refs,
                width=zoo.width,
                size=zoo.input_size,
                batch=zoo.batch_size,
                device=task.device,
                steps=cfg.step_steps,
            )
        if cfg.cost.deterministic:
            planned = {
                m: cfg.cost.step_ms(model_step_count(m, zoo.width, zoo.input_size, zoo.batch_size, 10)) for m in refs
            }
        else:
            planned = measured
        for m in refs:
            rec.scalar(f"{metric_label(m)}_planned_step_ms", planned[m])
            rec.scalar(f"{metric_label(m)}_measured_step_ms", measured[m])
        rec.note("cost_model", cfg.cost.kind)
        return planned

    @staticmethod
    def _frozen_step_costs(cfg: NasoaConfig, zoo, task: Task, rec: Recorder) -> dict[tuple[str, int], float]:
        """Measured ms per step of every zoo model with each count of frozen stages (measured plans only).

        A plan trains in its frozen state, so its iterations come from that state's step time, not
        the unfrozen one's (``<model>_frozen<k>_measured_step_ms``). A counted cost model plans from
        counts, so it skips this measurement.
        """
        from methods.nasoa.metadata import FROZEN
        from methods.nasoa.steptime import step_table

        out: dict[tuple[str, int], float] = {}
        with rec.stage("steptime_frozen"):
            for k in (k for k in FROZEN if k >= 0):
                table = step_table(
                    list(zoo.models),
                    width=zoo.width,
                    size=zoo.input_size,
                    batch=zoo.batch_size,
                    device=task.device,
                    steps=cfg.step_steps,
                    frozen=k,
                )
                for m, ms in table.items():
                    out[(m, k)] = ms
                    rec.scalar(f"{metric_label(m)}_frozen{k}_measured_step_ms", ms)
        return out

    @staticmethod
    def _no_plan(zoo, task: Task, rec: Recorder, steps: dict[str, float], budget: float) -> Fitted:
        """No model fits one training step in the budget: the recorded outcome is no training at all.

        What a user could deploy within such a budget is the source model with an untrained
        head, so that is what is evaluated; ``plan_feasible_bool`` is 0 and ``chosen_iters`` 0,
        and the row is ``ok``: an infeasible budget is a result of the method, not an error.
        """
        fastest = min(zoo.models, key=lambda m: steps[m])
        rec.note(
            "no_plan",
            f"no model of {list(zoo.models)} fits one training step in {budget:.3g} s "
            f"(fastest: {fastest}, {steps[fastest]:.3g} ms per step)",
        )
        for name in ("search_cost_s", "chosen_iters", "chosen_planned_s", "chosen_train_s", "train_s_actual"):
            rec.scalar(name, 0.0)
        net = zoo.build(fastest, task.num_classes, task.device)
        rec.note("chosen", {"model": fastest, "lr": 0.0, "frozen": -1, "epochs": 0, "iters": 0})
        rec.scalar("trainable_params", sum(q.numel() for q in net.parameters() if q.requires_grad))
        return Fitted(net, f"{fastest}(untrained head: no plan fits)", info={"chosen_model": fastest})

    def _generate(
        self,
        cfg: NasoaConfig,
        zoo,
        task: Task,
        rec: Recorder,
        x: torch.Tensor,
        y: torch.Tensor,
        std: Standardizer,
        plans: list[gen.Plan],
    ) -> tuple[gen.Trial, float]:
        pcfg = cfg.predictor
        predictor = HedgeMLP(x.shape[1], pcfg)
        with rec.stage("predictor"):
            pre = prequential(predictor, x, y)
        rec.scalar("predictor_all_mae", pre.mae["all"])
        rec.scalar("predictor_80_100_mae", pre.mae["80_100"])
        with rec.stage("scoring") as scoring:
            info = gen.dataset_info(zoo, cfg.meta, task.train, task.device)
            source_acc = {m: float(zoo.source_weights(m, task.device)[1]["source_test_top1_pct"]) for m in zoo.models}
            rng = np.random.default_rng(task.seed)
            if cfg.num_configs and cfg.num_configs < len(plans):
                plans = [plans[i] for i in sorted(rng.choice(len(plans), cfg.num_configs, replace=False))]
            rows = std(np.array([gen.plan_features(p, info, source_acc, zoo.models) for p in plans]))
            best, scores = gen.choose(predictor.predict, rows)
        score_s = scoring.total_s
        rec.scalar("similarity_ratio", info.similarity)
        rec.scalar("scored_count", len(plans))
        rec.scalar("predicted_top1_pct", 100 * scores[best])
        with rec.stage("final"):
            trial = gen.train_plan(zoo, plans[best], task.train, task.val, task.device, task.seed, rec, "final")
        rec.scalar("predictor_abs_err_pct", abs(100 * scores[best] - trial.val_top1_pct))
        if cfg.online:
            predictor.update(rows[best : best + 1], torch.tensor([trial.val_top1_pct / 100.0]))
        if cfg.rank_candidates:
            self._rank_check(cfg, zoo, task, rec, plans, scores, best, trial, rng)
        if cfg.cost.deterministic:  # charged as planned; scoring trains nothing
            return trial, gen.charge(trial, trial.plan.iters, True).cost_s
        return trial, score_s + trial.train_s

    def _rank_check(
        self,
        cfg: NasoaConfig,
        zoo,
        task: Task,
        rec: Recorder,
        plans: list[gen.Plan],
        scores: np.ndarray,
        best: int,
        trial: gen.Trial,
        rng: np.random.Generator,
    ) -> None:
        """Train a few more scored candidates (not search cost) to rank-correlate predicted vs achieved."""
        others = [i for i in range(len(plans)) if i != best]
        pick = rng.choice(others, size=min(cfg.rank_candidates, len(others)), replace=False)
        pred, got = [scores[best]], [trial.val_top1_pct]
        with rec.stage("rank_check"):
            for j, i in enumerate(pick):
                t = gen.train_plan(
                    zoo, plans[int(i)], task.train, task.val, task.device, task.seed + 1 + j, rec, "rank"
                )
                pred.append(scores[int(i)])
                got.append(t.val_top1_pct)
        rec.scalar("predicted_vs_achieved_tau", kendall_tau(pred, got) if len(set(got)) > 1 else 0.0)


@dataclass(frozen=True)
class NasoaMetaConfig:
    """One meta-data shard (seed = shard) on ``dataset`` ("" = the cell's own dataset)."""

    zoo: ZooConfig = field(default_factory=ZooConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    dataset: str = ""


SERIES = {
    "top1_pct": "meta_top1_pct",
    "similarity": "meta_similarity_ratio",
    "iters": "meta_iters",
    "lr": "meta_lr",
    "frozen": "meta_frozen_count",
    "num_classes": "meta_classes_count",
    "mean_ipc": "meta_mean_ipc_images",
    "std_ipc": "meta_std_ipc_images",
    "source_top1_pct": "meta_source_top1_pct",
    "train_s": "meta_train_s",
    "diverged": "meta_diverged_bool",
}


@register_method("nasoa_meta")
class NasoaMeta(BaseMethod[NasoaMetaConfig]):
    """Generate (and cache) one meta-data shard; the last run uses the whole split and is the cell's model."""

    Config = NasoaMetaConfig

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        zoo = cfg.zoo.resolve(task)
        last: MappedNet | None  # the shard's full-split model; generate() types it optional
        if cfg.dataset and cfg.dataset != task.dataset:
            records, _ = shard(zoo, cfg.meta, cfg.dataset, task.seed, task.device, rec=rec)
            runs = [MetaRun(**r) for r in records]
            last_cfg = runs[-1]
            # The row needs a classifier of the cell's data: the shard's last regime, on it.
            last, _, _ = finetune(
                zoo,
                last_cfg.model,
                task.train,
                task.val,
                lr=last_cfg.lr,
                frozen=last_cfg.frozen,
                iters=last_cfg.iters,
                device=task.device,
                seed=task.seed,
                rec=rec,
                stage="final",
            )
        else:
            meta = dataclasses.replace(cfg.meta, full_last=True)
            runs, last = generate(
                zoo, meta, task.train, task.val, dataset=task.dataset, seed=task.seed, device=task.device, rec=rec
            )
            s = task.settings
            if s.val_frac == 0.2 and s.test_frac == 0.2 and s.train_limit == 0 and cfg.meta == meta:
                save_shard(
                    [dataclasses.asdict(r) for r in runs],
                    shard_path(zoo, cfg.meta, task.dataset, task.seed, SHARD_TASK, task.device),
                )
        for i, r in enumerate(runs):
            d = dataclasses.asdict(r)
            for key, name in SERIES.items():
                rec.point(name, i, float(d[key]))
            rec.point("meta_model_count", i, float(zoo.models.index(r.model)))
        rec.note("meta_dataset", cfg.dataset or task.dataset)
        rec.note("meta_runs", [dataclasses.asdict(r) for r in runs])
        rec.note("meta_models", list(zoo.models))
        rec.scalar("meta_records_count", len(runs))
        rec.scalar("meta_diverged_count", sum(r.diverged for r in runs))
        rec.scalar("meta_mean_top1_pct", float(np.mean([r.top1_pct for r in runs])))
        if last is None:  # the shard (saved above) keeps the run; the cell has no model without it
            raise InnerRunsDiverged(
                f"the shard's last meta run ({runs[-1].model} lr {runs[-1].lr:g}, on the whole split) diverged; "
                "it is the cell's model, so the cell has none (the shard's records are kept)"
            )
        rec.scalar("trainable_params", sum(q.numel() for q in last.parameters() if q.requires_grad))
        return Fitted(last, f"{runs[-1].model}(lr={runs[-1].lr:g},frozen={runs[-1].frozen},iters={runs[-1].iters})")


@dataclass(frozen=True)
class SteptimeConfig:
    """Models to time (registered names, or ``tv:<torchvision builder>``) and the measurement shape."""

    models: tuple[str, ...] = ("etnas_a", "etnas_b")
    width: float = 1.0
    size: int = 224
    batch: int = 64
    steps: int = 20
    warmup: int = 5
    bf16: bool = False
    train: engine.TrainConfig = field(default_factory=lambda: engine.TrainConfig(steps=20, log_every=20))


def metric_label(model: str) -> str:
    """``tv:regnet_y_16gf`` -> ``tv_regnet_y_16gf`` (a metric-name prefix)."""
    return re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")


def build_timed(model: str, width: float) -> torch.nn.Module:
    if model.startswith("tv:"):
        import torchvision

        return torchvision.models.get_model(model[3:], weights=None, num_classes=1000)
    from bench.models.net import build_model

    return build_model(model, 1000, width=width)


@register_method("nasoa_steptime")
class NasoaSteptime(BaseMethod[SteptimeConfig]):
    """Table 2 columns for a list of models on the cell's device; the cell's model is then fine-tuned briefly
    (``train``) so the row carries an accuracy like every other row."""

    target_train_fields = ("train",)  # trains on the whole train split (checked at collection)

    Config = SteptimeConfig

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        from methods.nasoa.steptime import FINETUNE, device_name, measure

        cfg = self.config
        rec.note("steptime_device", device_name(task.device))
        timed = dataclasses.replace(FINETUNE, bf16=cfg.bf16)  # the fine-tuning step, in the table's dtype
        with rec.stage("steptime"):
            for i, m in enumerate(cfg.models):
                torch.manual_seed(0)
                net = build_timed(m, cfg.width)
                t = measure(
                    net,
                    batch=cfg.batch,
                    size=cfg.size,
                    device=task.device,
                    train=timed,
                    steps=cfg.steps,
                    warmup=cfg.warmup,
                )
                label = metric_label(m)
                rec.scalar(f"{label}_train_step_ms", t.step_ms)
                rec.scalar(f"{label}_infer_ms", t.infer_ms)
                rec.scalar(f"{label}_train_counted_mem_mib", t.counted_mem_mib)
                if task.device.type == "cuda":  # the allocator's peak; CPU has no measured figure
                    rec.scalar(f"{label}_train_peak_mib", t.peak_mem_mib)
                rec.scalar(f"{label}_params", sum(p.numel() for p in net.parameters()))
                rec.point("table_train_step_ms", i, t.step_ms)
                del net
        net = task.build_model()
        engine.fit(net, task.train, cfg.train, rec, seed=task.seed)
        return Fitted(net, net.arch_string())
