"""Two-stage architectural fine-tuning (``two_stage``): search kernels, then fine-tune last-k.

Stage 1 (``search``): the source model's search scope becomes a supernet of 3x3/5x5
choices (``space``); the training split is divided into a supernet part and a
held-out reward part (never the test set). Every supernet step trains a freshly
sampled subnet on one batch through the shared engine; every ``steps_per_update``
steps the controller is updated by REINFORCE on ``samples_per_update`` subnets, each
scored on one reward batch, and P(5x5) per layer is estimated from rollouts (series
``search_p5x5_prob`` at (update, layer): the action heatmap) together with the reward,
its moving average and the controller entropy. Both stopping rules are tracked; the
search runs until reward convergence (or its budget) so both points are measured, or
stops at the action-distribution rule with ``early_stop.stop_search``. The final
architecture is the argmax when the action rule fired (else at the end).

Weight-sharing check (``rank``): for all subnets of a small space (else a seeded
sample), Kendall tau and Spearman rho between each subnet's accuracy with supernet
weights and after stand-alone fine-tuning at the same tier, both on the held-out split.

Stage 2 (``train``): the argmax architecture built from the source weights (mutated
layers zero-padded; ``init="supernet"`` inherits the supernet's candidates instead),
only the scope plus the head trained (last-k = scope), accuracy against iteration on
the test split recorded for the paper's Fig. 3, and ``target_reached_steps``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.models.net import freeze_all_but_last_blocks, scope_blocks
from bench.registry import register_method
from bench.results.analysis import DegenerateRanking, rank_correlation
from methods.baselines import record_target
from methods.two_stage.controller import Controller, EarlyStop, EnasReinforce
from methods.two_stage.space import MutablePoint, arch_string, derive_child, make_supernet, set_choices


@dataclass(frozen=True)
class ControllerConfig:
    """Controller and REINFORCE settings (paper: Adam 3.5e-4)."""

    hidden: int = 64
    lr: float = 3.5e-4
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    tanh_c: float = 0.0
    samples_per_update: int = 10
    reward_batch: int = 64

    def __post_init__(self) -> None:
        require(
            self.hidden >= 1 and self.samples_per_update >= 1 and self.reward_batch >= 1,
            "hidden, samples_per_update and reward_batch must be >= 1",
        )
        require(0.0 <= self.baseline_decay < 1.0, "baseline_decay must be in [0, 1)")


@dataclass(frozen=True)
class EarlyStopConfig:
    """Action-distribution stop (window, threshold, rollouts) and the reward comparator."""

    window: int = 10
    threshold: float = 0.95
    rollouts: int = 100
    reward_window: int = 10
    reward_tol: float = 0.01
    stop_search: bool = False

    def __post_init__(self) -> None:
        require(
            self.window >= 1 and self.reward_window >= 1 and self.rollouts >= 1,
            "window, reward_window and rollouts must be >= 1",
        )
        require(0.5 < self.threshold <= 1.0, "threshold must be in (0.5, 1]")


def _search_default() -> engine.TrainConfig:
    return engine.TrainConfig(
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=2.5e-4,
        batch_size=64,
        steps=100_000,
        final_lr_frac=0.01,
        log_every=391,
    )


def _finetune_default() -> engine.TrainConfig:
    return engine.TrainConfig(
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        batch_size=64,
        steps=100_000,
        eval_every=1_000,
        log_every=1_000,
    )


@dataclass(frozen=True)
class TwoStageConfig:
    """Paper settings by default (Table 2: 1e5 iterations, 391 per epoch, batch 64)."""

    scope: Literal["small", "medium", "large", "full"] = "small"
    search: engine.TrainConfig = field(default_factory=_search_default)
    steps_per_update: int = 391
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    finetune: engine.TrainConfig = field(default_factory=_finetune_default)
    init: Literal["source", "supernet"] = "source"
    reward_frac: float = 0.5
    rank_subnets: int = 16
    rank_steps: int = 1_000
    target_top1_pct: float = 85.0

    def __post_init__(self) -> None:
        require(self.steps_per_update >= 1, "steps_per_update must be >= 1")
        require(0.0 < self.reward_frac < 1.0, "reward_frac must be in (0, 1)")
        require(self.rank_subnets == 0 or self.rank_subnets >= 3, "rank_subnets must be 0 (off) or >= 3")
        require(self.rank_steps >= 1, "rank_steps must be >= 1")


def hold_out(train: Split, frac: float, seed: int) -> tuple[Split, Split]:
    """(supernet split, reward split): a seeded random ``frac`` of ``train`` held out for rewards."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=gen).to(train.device)
    n_reward = max(1, int(round(frac * len(train))))
    return train.subset(perm[n_reward:], "search"), train.subset(perm[:n_reward], "reward")


@register_method("two_stage")
class TwoStage(BaseMethod[TwoStageConfig]):
    """Two-stage architectural fine-tuning; see the module docstring."""

    target_train_fields = ("finetune",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = TwoStageConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        search_split, reward_split = hold_out(task.train, cfg.reward_frac, task.seed)
        supernet, points = make_supernet(task.build_model(), cfg.scope)
        freeze_all_but_last_blocks(supernet, len(scope_blocks(supernet.structure, cfg.scope)))
        rec.scalar("mutable_layers_count", len(points))
        with rec.stage("search"):
            search = Search(cfg, supernet, points, search_split, reward_split, rec, task.seed)
            actions = search.run()
        rec.note("architecture", "".join("5" if a else "3" for a in actions))
        if cfg.rank_subnets:
            with rec.stage("rank"):
                rank_weight_sharing(cfg, task, supernet, points, search_split, reward_split, rec)
        child = derive_child(task.build_model(), points, actions, supernet if cfg.init == "supernet" else None)
        freeze_all_but_last_blocks(child, len(scope_blocks(child.structure, cfg.scope)))
        with rec.stage("train"):
            engine.fit(
                child, task.train, cfg.finetune, rec, stage="train", val=task.val, curves=(task.test,), seed=task.seed
            )
        record_target(rec, "train", cfg.target_top1_pct)
        base = task.build_model(pretrained=False).arch_string()
        return Fitted(child, arch_string(base, cfg.scope, actions), info={"actions": actions, "scope": cfg.scope})


class Search:
    """Stage 1: alternate supernet steps (one sampled subnet each) and controller updates."""

    def __init__(
        self,
        cfg: TwoStageConfig,
        supernet: torch.nn.Module,
        points: list[MutablePoint],
        train: Split,
        reward: Split,
        rec: Recorder,
        seed: int,
    ) -> None:
        self.cfg, self.supernet, self.points, self.train, self.reward, self.rec = (
            cfg,
            supernet,
            points,
            train,
            reward,
            rec,
        )
        c = cfg.controller
        self.controller = Controller(len(points), c.hidden, c.tanh_c)
        self.policy = EnasReinforce(self.controller, c.lr, c.entropy_weight, c.baseline_decay)
        self.gen = torch.Generator().manual_seed(seed + 1)
        e = cfg.early_stop
        self.stop = EarlyStop(e.window, e.threshold, e.reward_window, e.reward_tol)
        self.updates = 0

    def run(self) -> list[int]:
        hooks = engine.StepHooks(
            before_step=self._sample_subnet, periodic=((self.cfg.steps_per_update, self._update_controller),)
        )
        engine.fit(
            self.supernet,
            self.train,
            self.cfg.search,
            self.rec,
            stage="search",
            hooks=hooks,
            seed=int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)),
        )
        self._record_stops()
        return self.stop.action_stop_arch or self.controller.argmax()

    def _sample_subnet(self, step: int) -> None:
        with torch.no_grad():
            actions, _, _ = self.controller.rollout(1, generator=self.gen)
        set_choices(self.supernet, self.points, actions[0].tolist())

    def _update_controller(self, step: int) -> bool:
        c, e = self.cfg.controller, self.cfg.early_stop
        actions, log_probs, entropies = self.controller.rollout(c.samples_per_update, generator=self.gen)
        rewards = torch.tensor([self._reward(a.tolist()) for a in actions])
        stats = self.policy.step(log_probs, entropies, rewards)
        self.updates += 1
        probs = self.controller.estimate_probs(e.rollouts, generator=self.gen)
        for k, p in enumerate(probs):
            self.rec.point("search_p5x5_prob", self.updates, float(p), position=k)
        self.rec.point("search_reward_frac", self.updates, stats["reward"])
        self.rec.point("search_reward_ema_frac", self.updates, stats["baseline"])
        self.rec.point("search_entropy_nat", self.updates, stats["entropy"])
        self.stop.update(self.updates, probs, stats["reward"])
        if e.stop_search:
            return self.stop.action_stop is not None
        return self.stop.action_stop is not None and self.stop.reward_stop is not None

    @torch.no_grad()
    def _reward(self, actions: list[int]) -> float:
        """Accuracy (fraction) of subnet ``actions`` on one random reward batch."""
        set_choices(self.supernet, self.points, actions)
        n = len(self.reward)
        idx = torch.randperm(n, generator=self.gen)[: self.cfg.controller.reward_batch].to(self.reward.device)
        was_training = self.supernet.training
        self.supernet.eval()
        x, y = self.reward.batch(idx)
        correct = (self.supernet(x).argmax(1) == y).float().mean()
        self.supernet.train(was_training)
        return float(correct)

    def _record_stops(self) -> None:
        rec, stop = self.rec, self.stop
        rec.scalar("search_updates", self.updates)
        for name, value in (("action_stop_updates", stop.action_stop), ("reward_stop_updates", stop.reward_stop)):
            if value is not None:
                rec.scalar(name, value)
        if stop.saved_frac is not None:
            rec.scalar("search_saved_frac", stop.saved_frac)
        rec.note("stopped_by", "actions" if stop.action_stop is not None else "budget")


def rank_weight_sharing(
    cfg: TwoStageConfig,
    task: Task,
    supernet: torch.nn.Module,
    points: list[MutablePoint],
    train: Split,
    held_out: Split,
    rec: Recorder,
) -> None:
    """Kendall/Spearman between supernet-weight and stand-alone accuracy of sampled subnets."""
    space = 2 ** len(points)
    rng = np.random.default_rng(task.seed)
    if space <= cfg.rank_subnets:
        codes = list(range(space))
    else:
        codes = sorted(rng.choice(space, size=cfg.rank_subnets, replace=False).tolist())
    subnets = [[(code >> k) & 1 for k in range(len(points))] for code in codes]
    shared, alone = [], []
    quiet = Recorder(task.device, progress=lambda _msg: None)
    finetune = dataclasses.replace(cfg.finetune, steps=cfg.rank_steps, eval_every=0)
    for actions in subnets:
        set_choices(supernet, points, actions)
        shared.append(engine.evaluate(supernet, held_out)["top1_pct"])
        child = derive_child(task.build_model(), points, actions)
        freeze_all_but_last_blocks(child, len(scope_blocks(child.structure, cfg.scope)))
        engine.fit(child, train, finetune, quiet, stage="rank", seed=task.seed)
        alone.append(engine.evaluate(child, held_out)["top1_pct"])
    rec.scalar("rank_subnets_count", len(subnets))
    rec.note(
        "rank_pairs",
        [
            {"kernels": "".join("5" if a else "3" for a in s), "shared_pct": x, "alone_pct": y}
            for s, x, y in zip(subnets, shared, alone)
        ],
    )
    try:
        tau, rho = rank_correlation(shared, alone)
    except DegenerateRanking as err:
        rec.note("rank_degenerate", str(err))
        return
    if math.isfinite(tau) and math.isfinite(rho):
        rec.scalar("rank_kendall_tau", tau)
        rec.scalar("rank_spearman_rho", rho)
