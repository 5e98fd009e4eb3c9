"""The schedule generator G(D, T) (Algorithm 3, ONLINEPREDICTION) and its search baselines.

``plan``: for every candidate model the largest whole number of epochs whose planned
time (iterations x measured step ms) fits the budget T; a model whose single epoch
does not fit is left out, so no plan is ever over budget.

``Generator``: scores (model, lr, frozen stages) combinations with the predictor (all of
them, or ``num_configs`` random ones as Algorithm 3 samples H), trains the argmax and, if
online, updates the predictor with the accuracy reached.

Step times come from a ``bench.models.cost.CostModel``: measured on the device (the paper), or
counted (FLOPs and operators at nominal rates: deterministic, what the smoke tier uses).
A trial is *charged* its planned cost, iterations run x planned step ms, under a counted
model and its measured training seconds under a measured one, so with a counted model a
search's spend, trial count and choice never depend on machine load.

Baselines spend ``cost_factor`` x T charged seconds (the paper: 40 device-seconds):
- random search: random (model, lr, frozen) each trained with the largest plan that fits;
- BOHB: Optuna's TPE sampler (the model-based half of BOHB: a Parzen-estimator density
  ratio, as BOHB's KDE) with Optuna's ``HyperbandPruner`` (successive halving on the
  intermediate val accuracy reported at 25/50/75/100 % of a trial's iterations; min
  budget 25 %, eta 3 as the paper's HpBandSter setting). Why Optuna: it is maintained,
  installed, and its ask/tell interface lets the harness's one training engine run the
  trials; HpBandSter is unmaintained and Syne Tune / SMAC3 are not installed.
Selection always uses the val split; the test split is only read by the runner.

A search trial (or a ranking run) whose training diverges is an inner run
(``bench.engine.inner``): it is kept as a trial with ``diverged=True`` at chance accuracy, is
charged what it spent, is told to BOHB's sampler as that bad value (seen as bad, not absent),
and is never the trial a search returns. ``best_trial`` raises ``InnerRunsDiverged`` when every
trial diverged. The chosen plan's final training is the cell's own: its divergence ends the cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import Diverged, InnerRunsDiverged
from bench.measure import Stopwatch
from bench.models.net import MappedNet
from methods.nasoa.metadata import FROZEN, LRS, MetaConfig, SourceFeatures, ZooSpec, features, finetune


@dataclass(frozen=True)
class Plan:
    """One candidate schedule: model, lr, frozen stages and the iterations that fit T."""

    model: str
    lr: float
    frozen: int
    epochs: int
    iters: int
    planned_s: float


def max_epochs(budget_s: float, step_ms: float, steps_per_epoch: int) -> int:
    """Largest whole number of epochs with epochs * steps_per_epoch * step_ms <= budget."""
    return max(0, math.floor(budget_s * 1000.0 / (step_ms * steps_per_epoch) + 1e-9))


def plan(
    models: Sequence[str],
    step_ms: Mapping[str, float],
    budget_s: float,
    train_size: int,
    batch: int,
    frozen_ms: Mapping[tuple[str, int], float] | None = None,
) -> list[Plan]:
    """Every feasible (model, lr, frozen) with the largest epoch count within ``budget_s``.

    ``step_ms[model]`` is the step time with nothing frozen; ``frozen_ms[(model, k)]``, where
    given, the step time with ``k`` frozen stages (a frozen prefix runs no backward, so the same
    budget buys more epochs), as measured through the engine's step (``steptime.step_table``).
    If no model fits one whole epoch (e.g. a slow series at the shortest budget), the fastest
    model is planned with the largest number of iterations that fits (``epochs`` 0), so a budget
    that fits one step always has a plan and no plan is ever over budget.
    """
    per_epoch = max(1, math.ceil(train_size / batch))

    def ms(m: str, k: int) -> float:
        return frozen_ms.get((m, k), step_ms[m]) if frozen_ms else step_ms[m]

    out = []
    for m in models:
        for k in FROZEN:
            e = max_epochs(budget_s, ms(m, k), per_epoch)
            if e < 1:
                continue
            iters = e * per_epoch
            out += [Plan(m, lr, k, e, iters, iters * ms(m, k) / 1000.0) for lr in LRS]
    if not out and models:
        m = min(models, key=lambda name: step_ms[name])
        for k in FROZEN:
            iters = max_epochs(budget_s, ms(m, k), 1)
            if iters >= 1:
                out += [Plan(m, lr, k, 0, iters, iters * ms(m, k) / 1000.0) for lr in LRS]
    return sorted(out, key=lambda q: (models.index(q.model), LRS.index(q.lr), FROZEN.index(q.frozen)))


def budget_seconds(index: int, low_s: float, high_s: float, count: int = 4) -> float:
    """t_x = t_0 (t_3 / t_0)^{x/3}: ``count`` budgets log-uniform between ``low_s`` and ``high_s``."""
    return low_s * (high_s / low_s) ** (index / max(1, count - 1))


@dataclass
class DatasetInfo:
    """Meta-features of the target dataset (the parts that do not depend on the plan)."""

    num_classes: int
    mean_ipc: float
    std_ipc: float
    similarity: float


def dataset_info(zoo: ZooSpec, meta: MetaConfig, train: Split, device: torch.device) -> DatasetInfo:
    counts = np.bincount(train.y.cpu().numpy(), minlength=train.num_classes)
    counts = counts[counts > 0]
    sim = SourceFeatures(zoo, meta, device).similarity(train, meta.emd_gamma)
    return DatasetInfo(len(counts), float(counts.mean()), float(counts.std()), sim)


def plan_features(p: Plan, info: DatasetInfo, source_acc: dict[str, float], models: Sequence[str]) -> list[float]:
    return features(
        {
            "model": p.model,
            "lr": p.lr,
            "frozen": p.frozen,
            "iters": p.iters,
            "num_classes": info.num_classes,
            "mean_ipc": info.mean_ipc,
            "std_ipc": info.std_ipc,
            "similarity": info.similarity,
            "source_top1_pct": source_acc[p.model],
        },
        models,
    )


@dataclass
class Trial:
    """One trained configuration of a search: measured ``train_s``, ``cost_s`` charged to the search.

    ``diverged``: its training diverged; ``val_top1_pct`` is then chance and ``net`` None."""

    plan: Plan
    val_top1_pct: float
    train_s: float
    net: MappedNet | None
    complete: bool = True
    cost_s: float = 0.0
    diverged: bool = False


def charge(t: Trial, iters_run: int, planned: bool) -> Trial:
    """Set what ``t`` costs its search: planned step ms x ``iters_run``, or its measured seconds."""
    per_step_s = t.plan.planned_s / max(1, t.plan.iters)
    t.cost_s = iters_run * per_step_s if planned else t.train_s
    return t


def train_plan(
    zoo: ZooSpec,
    p: Plan,
    train: Split,
    val: Split,
    device: torch.device,
    seed: int,
    rec: Recorder,
    stage: str,
    hooks: engine.StepHooks | None = None,
) -> Trial:
    """Fine-tune plan ``p`` from its source weights and score it on ``val``: one search trial, the
    final run of the chosen plan (``stage="final"``, into the cell's recorder) or a ranking run.

    A trial or ranking run is an inner run: when it diverges the trial says so (module docstring).
    """
    # Search trials train under their own recorder (their curves would collide in the cell's series).
    own = rec if stage == "final" else Recorder(device)
    watch = Stopwatch(device)
    run = partial(
        finetune,
        zoo,
        p.model,
        train,
        val,
        lr=p.lr,
        frozen=p.frozen,
        iters=p.iters,
        device=device,
        seed=seed,
        rec=own,
        stage=stage,
        hooks=hooks,
        watch=watch,
    )
    if stage == "final":
        net, acc, secs = run()
        return Trial(p, acc, secs, net)
    got = engine.inner_run(run, rec, stage=stage, what=f"{stage} trial {p.model} lr {p.lr:g} frozen {p.frozen}")
    if isinstance(got, Diverged):
        return Trial(p, engine.chance_pct(val.num_classes), watch.total_s, None, diverged=True)
    net, acc, secs = got
    return Trial(p, acc, secs, net)


def random_search(
    zoo: ZooSpec,
    plans: list[Plan],
    budget_s: float,
    cost_factor: float,
    train: Split,
    val: Split,
    device: torch.device,
    seed: int,
    rec: Recorder,
    max_trials: int = 0,
    planned: bool = False,
) -> list[Trial]:
    """Random configurations until ``cost_factor * budget_s`` charged seconds are spent (``planned``: counted)."""
    rng = np.random.default_rng(seed)
    by_model: dict[str, list[Plan]] = {}
    for p in plans:
        by_model.setdefault(p.model, []).append(p)
    trials: list[Trial] = []
    spent = 0.0
    while spent < cost_factor * budget_s and (not max_trials or len(trials) < max_trials):
        model = str(rng.choice(sorted(by_model)))
        p = by_model[model][int(rng.integers(len(by_model[model])))]
        t = charge(train_plan(zoo, p, train, val, device, seed + len(trials), rec, "search"), p.iters, planned)
        spent += t.cost_s
        trials.append(t)
        rec.point("search_val_top1_pct", len(trials), t.val_top1_pct)
        best = _pick(trials)
        for tr in trials[:-1]:
            if tr is not best:
                tr.net = None
    return trials


def bohb_search(
    zoo: ZooSpec,
    plans: list[Plan],
    budget_s: float,
    cost_factor: float,
    train: Split,
    val: Split,
    device: torch.device,
    seed: int,
    rec: Recorder,
    min_frac: float = 0.25,
    eta: int = 3,
    max_trials: int = 0,
    planned: bool = False,
) -> list[Trial]:
    """Optuna TPE + HyperbandPruner over (model, lr, frozen) until the cost is spent (see module docstring)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rungs = max(1, round(1 / min_frac))
    # A fixed study name: HyperbandPruner assigns each trial to a bracket by a hash of the study
    # name, and Optuna's default name is a random UUID, which made BOHB's pruning, and so its
    # result, differ from run to run of the same seed.
    study = optuna.create_study(
        study_name=f"bohb-seed{seed}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=rungs, reduction_factor=eta),
    )
    index = {(p.model, p.lr, p.frozen): p for p in plans}
    models = sorted({p.model for p in plans})
    trials: list[Trial] = []
    spent = 0.0
    while spent < cost_factor * budget_s and (not max_trials or len(trials) < max_trials):
        trial = study.ask()
        p = index[
            (
                trial.suggest_categorical("model", models),
                trial.suggest_categorical("lr", list(LRS)),
                trial.suggest_categorical("frozen", list(FROZEN)),
            )
        ]
        every = max(1, p.iters // rungs)
        state = {"pruned": False, "done": p.iters}
        holder: dict[str, MappedNet] = {}

        def report(done: int, trial=trial, holder=holder, state=state, every=every, p=p) -> bool:
            acc = engine.evaluate(holder["net"], val)["top1_pct"]
            trial.report(acc, min(rungs, done // every))
            if done < p.iters and trial.should_prune():
                state["pruned"], state["done"] = True, done
                return True
            return False

        hooks = engine.StepHooks(periodic=((every, report),))
        net_box = _NetCapture(holder)
        t = _train_captured(zoo, p, train, val, device, seed + len(trials), rec, hooks, net_box)
        t.complete = not state["pruned"]
        spent += charge(t, int(state["done"]), planned).cost_s
        if t.complete or t.diverged:  # a diverged trial is told as its chance value: bad, not absent
            study.tell(trial, t.val_top1_pct)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        trials.append(t)
        rec.point("search_val_top1_pct", len(trials), t.val_top1_pct)
        best = _pick(trials)  # the trial best_trial will return: its network is kept
        for tr in trials:
            if tr is not best:
                tr.net = None
    return trials


class _NetCapture:
    def __init__(self, holder: dict[str, MappedNet]) -> None:
        self.holder = holder


def _train_captured(
    zoo: ZooSpec,
    p: Plan,
    train: Split,
    val: Split,
    device: torch.device,
    seed: int,
    rec: Recorder,
    hooks: engine.StepHooks,
    box: _NetCapture,
) -> Trial:
    """Like ``train_plan`` but exposes the network to the periodic callback before training starts."""
    from methods.nasoa.builder import freeze_stages

    net = zoo.build(p.model, train.num_classes, device)
    freeze_stages(net, p.frozen)
    box.holder["net"] = net
    cfg = engine.TrainConfig(
        steps=max(1, p.iters),
        lr=p.lr,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=min(zoo.batch_size, len(train)),
        log_every=max(1, p.iters),
    )
    watch = Stopwatch(device)

    def run() -> None:
        with watch:
            engine.fit(net, train, cfg, Recorder(device), stage="search", seed=seed, hooks=hooks)

    what = f"search trial {p.model} lr {p.lr:g} frozen {p.frozen}"
    if isinstance(engine.inner_run(run, rec, stage="search", what=what), Diverged):
        return Trial(p, engine.chance_pct(val.num_classes), watch.total_s, None, diverged=True)
    return Trial(p, engine.evaluate(net, val)["top1_pct"], watch.total_s, net)


def _pick(trials: list[Trial]) -> Trial | None:
    """The trial a search returns: the most accurate complete one, else (every trial pruned) the
    most accurate pruned one; never a diverged one (None when every trial diverged)."""
    alive = [t for t in trials if not t.diverged]
    done = [t for t in alive if t.complete] or alive
    return max(done, key=lambda t: t.val_top1_pct) if done else None


def best_trial(trials: list[Trial]) -> Trial:
    """The search's result (``_pick``); ``InnerRunsDiverged`` when every trial diverged."""
    if not trials:
        raise ValueError("the search ran no trial (its spend, cost_factor x budget_s, is 0)")
    best = _pick(trials)
    if best is None:
        raise InnerRunsDiverged(
            f"every one of the {len(trials)} search trials diverged (recorded at chance); "
            "the search has no configuration to train"
        )
    return best


def choose(predict: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor) -> tuple[int, np.ndarray]:
    """(argmax index, every prediction) of the predictor over candidate rows."""
    with torch.no_grad():
        scores = predict(rows).double().numpy()
    return int(np.argmax(scores)), scores
