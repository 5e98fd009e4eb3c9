"""Two-stage architectural fine-tuning (``two_stage``): search kernels, then fine-tune last-k.

Stage 1 (``search``): the source model's search scope becomes a supernet of 3x3/5x5
choices (``space``); the training split is divided into a supernet part and a
held-out reward part (never the test set). Every supernet step trains a freshly
sampled subnet on one batch through the shared engine; after every epoch of the
supernet split (``steps_per_update`` 0; or every ``steps_per_update`` steps) the
controller runs a round of ``train_steps`` REINFORCE steps on ``samples_per_update``
subnets each, every subnet scored on one reward batch; then P(5x5) per layer is
estimated from rollouts (series ``search_p5x5_prob`` at (round, layer): the action
heatmap) and logged with the reward, its moving average, the controller entropy and
the greedy architecture's least decided choice, and both stopping rules
(``controller.ActionStop``, ``controller.RewardStop``) are fed. With
``early_stop.stop_search`` (the default, the paper's method) the search stops at the
action rule and the architecture is the greedy one there; off, it runs until both rules
fired (or its budget), the wall time at each is measured, and the architecture is the
one at the reward stop (the comparator's answer).

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
from bench.contract.interface import CellFacts, Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InvalidConfig
from bench.measure import Stopwatch
from bench.models.net import freeze_all_but_last_blocks, scope_blocks
from bench.registry import register_method
from bench.results.analysis import DegenerateRanking, rank_correlation
from methods.baselines import record_target
from methods.two_stage.controller import ActionStop, Controller, EarlyStop, EnasReinforce, RewardStop
from methods.two_stage.space import MutablePoint, arch_string, derive_child, make_supernet, set_choices


@dataclass(frozen=True)
class ControllerConfig:
    """Controller and REINFORCE settings.

    The paper gives the optimiser and lr (Table 2: Adam 3.5e-4), stacked LSTM cells and a
    discounted return (Eq. 4-5) without a discount value. Its lr is ENAS's, and so is the rest
    by default: after every supernet epoch one controller round of ``train_steps`` Adam steps
    (ENAS: 50), each on ``samples_per_update`` sampled subnets (ENAS: 20), each scored on one
    ``reward_batch`` of held-out images. ``discount`` 1.0 is the ENAS code's (Eq. 4 with
    gamma = 1); ``benchmarks/two_stage_calibration.py`` shows the schedule at work.
    """

    hidden: int = 64
    lstm_layers: int = 2
    lr: float = 3.5e-4
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    discount: float = 1.0
    tanh_c: float = 0.0
    train_steps: int = 50
    samples_per_update: int = 20
    reward_batch: int = 64

    def __post_init__(self) -> None:
        require(
            min(self.hidden, self.lstm_layers, self.train_steps, self.samples_per_update, self.reward_batch) >= 1,
            "hidden, lstm_layers, train_steps, samples_per_update and reward_batch must be >= 1",
        )
        require(0.0 <= self.baseline_decay < 1.0, "baseline_decay must be in [0, 1)")
        require(0.0 < self.discount <= 1.0, "discount must be in (0, 1]")


@dataclass(frozen=True)
class EarlyStopConfig:
    """The action-distribution stop and its comparator (``controller.ActionStop`` / ``RewardStop``).

    Action rule: the greedy architecture unchanged for ``window`` rounds and each of its choices
    at probability >= ``threshold``. Reward rule: the ``reward_confidence`` upper bound of the
    mean reward's rise over the last ``reward_window`` rounds (OLS) at most ``reward_tol``.
    ``rollouts`` only estimates the logged P(5x5) heatmap. ``stop_search`` stops the search at
    the action rule (the paper's method); off, the search runs until both rules fired (or its
    budget), so both stopping points and their wall times are measured in one run.
    """

    window: int = 10
    threshold: float = 0.95
    rollouts: int = 100
    reward_window: int = 10
    reward_tol: float = 0.01
    reward_confidence: float = 0.95
    stop_search: bool = True

    def __post_init__(self) -> None:
        require(self.window >= 1 and self.rollouts >= 1, "window and rollouts must be >= 1")
        require(self.reward_window >= 3, "reward_window must be >= 3 (a line and its error need 3 points)")
        require(0.5 < self.threshold <= 1.0, "threshold must be in (0.5, 1]")
        require(0.5 <= self.reward_confidence < 1.0, "reward_confidence must be in [0.5, 1)")


def _search_default() -> engine.TrainConfig:
    return engine.TrainConfig(
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=2.5e-4,
        batch_size=64,
        steps=100_000,
        final_lr_frac=0.01,
        log_every=1_000,
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
    """Paper settings by default (Table 2: 1e5 iterations, batch 64).

    ``steps_per_update`` 0: one controller round per epoch of the supernet split, its length
    derived from that split and the batch (recorded as ``search_steps_per_epoch_count``).
    Table 2's 391 iterations per epoch are ``ceil(25,000 / 64)``: a 25k supernet split, which
    ``search_split_images`` sets exactly (0: the split is ``1 - reward_frac`` of the train split).
    """

    scope: Literal["small", "medium", "large", "full"] = "small"
    search: engine.TrainConfig = field(default_factory=_search_default)
    steps_per_update: int = 0
    search_split_images: int = 0
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    finetune: engine.TrainConfig = field(default_factory=_finetune_default)
    init: Literal["source", "supernet"] = "source"
    reward_frac: float = 0.5
    rank_subnets: int = 16
    rank_steps: int = 1_000
    target_top1_pct: float = 85.0

    def __post_init__(self) -> None:
        require(self.steps_per_update >= 0, "steps_per_update must be >= 0 (0: one epoch of the supernet split)")
        require(self.search_split_images >= 0, "search_split_images must be >= 0 (0: from reward_frac)")
        require(0.0 < self.reward_frac < 1.0, "reward_frac must be in (0, 1)")
        require(self.rank_subnets == 0 or self.rank_subnets >= 3, "rank_subnets must be 0 (off) or >= 3")
        require(self.rank_steps >= 1, "rank_steps must be >= 1")


def hold_out(train: Split, frac: float, seed: int, search_images: int = 0) -> tuple[Split, Split]:
    """(supernet split, reward split): a seeded random ``frac`` of ``train`` (or all but
    ``search_images`` of it) held out for rewards."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=gen).to(train.device)
    n_reward = len(train) - search_images if search_images else max(1, int(round(frac * len(train))))
    if not 1 <= n_reward < len(train):
        raise InvalidConfig(
            f"two_stage: search_split_images={search_images} leaves {n_reward} of {len(train)} train images "
            f"for rewards; valid: 1..{len(train) - 1}"
        )
    return train.subset(perm[n_reward:], "search"), train.subset(perm[:n_reward], "reward")


@register_method("two_stage")
class TwoStage(BaseMethod[TwoStageConfig]):
    """Two-stage architectural fine-tuning; see the module docstring."""

    target_train_fields = ("finetune",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = TwoStageConfig
    name: ClassVar[str]

    @classmethod
    def check_cell(cls, config: TwoStageConfig, facts: CellFacts) -> None:
        """Also refuse a supernet split the train split cannot hold, at collection."""
        super().check_cell(config, facts)
        n = facts.train_images
        if n is not None and config.search_split_images and not config.search_split_images < n:
            raise InvalidConfig(
                f"two_stage: search_split_images={config.search_split_images} but the train split "
                f"{facts.where()} holds {n} images; valid: 1..{n - 1}"
            )

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        search_split, reward_split = hold_out(task.train, cfg.reward_frac, task.seed, cfg.search_split_images)
        supernet, points = make_supernet(task.build_model(), cfg.scope)
        freeze_all_but_last_blocks(supernet, len(scope_blocks(supernet.structure, cfg.scope)))
        rec.scalar("mutable_layers_count", len(points))
        with rec.stage("search") as watch:
            search = Search(cfg, supernet, points, search_split, reward_split, rec, task.seed, watch)
            actions = search.run()
        rec.note("architecture", _kernels(actions))
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
    """Stage 1: alternate supernet steps (one sampled subnet each) and controller rounds.

    A round (every ``steps_per_update`` supernet steps; 0: one epoch of the supernet split) runs
    ``controller.train_steps`` REINFORCE steps, then logs the P(5x5) heatmap, the mean reward,
    its baseline and the entropy, and feeds both stopping rules. The search-stage wall time at
    each rule's round is measured (``search_action_stop_s``, ``search_reward_stop_s``), so the
    saving is a measured share of search time, not a count of rounds.
    """

    def __init__(
        self,
        cfg: TwoStageConfig,
        supernet: torch.nn.Module,
        points: list[MutablePoint],
        train: Split,
        reward: Split,
        rec: Recorder,
        seed: int,
        watch: Stopwatch,
    ) -> None:
        self.watch = watch  # the search stage's stopwatch: seconds since the search began
        self.cfg, self.supernet, self.points, self.train, self.reward, self.rec = (
            cfg,
            supernet,
            points,
            train,
            reward,
            rec,
        )
        c, e = cfg.controller, cfg.early_stop
        self.controller = Controller(len(points), c.hidden, c.tanh_c, c.lstm_layers)
        self.policy = EnasReinforce(self.controller, c.lr, c.entropy_weight, c.baseline_decay, c.discount)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.stop = EarlyStop(
            ActionStop(e.window, e.threshold), RewardStop(e.reward_window, e.reward_tol, e.reward_confidence)
        )
        self.rounds = 0
        self.per_epoch = math.ceil(len(train) / cfg.search.batch_size)
        self.every = cfg.steps_per_update or self.per_epoch
        self.arch_at: dict[str, list[int]] = {}
        self.time_at: dict[str, float] = {}

    def run(self) -> list[int]:
        """Search; the architecture at the action stop (``stop_search``) or at the reward stop."""
        hooks = engine.StepHooks(before_step=self._sample_subnet, periodic=((self.every, self._round),))
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
        chosen = self.arch_at.get("action" if self.cfg.early_stop.stop_search else "reward")
        return chosen or self.controller.argmax()

    def _sample_subnet(self, step: int) -> None:
        with torch.no_grad():
            actions = self.controller.rollout(1, generator=self.gen).actions
        set_choices(self.supernet, self.points, actions[0].tolist())

    def _round(self, step: int) -> bool:
        c, e = self.cfg.controller, self.cfg.early_stop
        rewards, baseline, entropy = [], 0.0, 0.0
        for _ in range(c.train_steps):
            rollout = self.controller.rollout(c.samples_per_update, generator=self.gen)
            batch = torch.tensor([self._reward(a.tolist()) for a in rollout.actions])
            stats = self.policy.step(rollout.log_probs, rollout.entropies, batch)
            rewards.append(stats["reward"])
            baseline, entropy = stats["baseline"], stats["entropy"]
        self.rounds += 1
        r = self.rounds
        for k, p in enumerate(self.controller.estimate_probs(e.rollouts, generator=self.gen)):
            self.rec.point("search_p5x5_prob", r, float(p), position=k)
        arch, path = self.controller.greedy_path()
        mean_reward = float(np.mean(rewards))
        self.rec.point("search_reward_frac", r, mean_reward)
        self.rec.point("search_reward_ema_frac", r, baseline)
        self.rec.point("search_entropy_nat", r, entropy)
        self.rec.point("search_greedy_min_prob", r, min(path))
        self.stop.update(r, arch, path, mean_reward)
        for rule, fired in (("action", self.stop.action_stop), ("reward", self.stop.reward_stop)):
            if fired is not None and rule not in self.time_at:
                self.time_at[rule], self.arch_at[rule] = self.watch.seconds, arch
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
        """Both stopping points in rounds and seconds; a rule that never fired is absent (censored)."""
        rec, stop = self.rec, self.stop
        rec.scalar("search_updates", self.rounds)
        rec.scalar("search_steps_per_epoch_count", self.per_epoch)
        for name, value in (("action_stop_updates", stop.action_stop), ("reward_stop_updates", stop.reward_stop)):
            if value is not None:
                rec.scalar(name, value)
        for rule in ("action", "reward"):
            if rule in self.time_at:
                rec.scalar(f"search_{rule}_stop_s", self.time_at[rule])
                rec.note(f"architecture_at_{rule}_stop", _kernels(self.arch_at[rule]))
        if len(self.time_at) == 2 and self.time_at["reward"] > 0:
            rec.scalar("search_saved_frac", (self.time_at["reward"] - self.time_at["action"]) / self.time_at["reward"])
        if len(self.arch_at) == 2:
            rec.scalar("search_same_arch_bool", float(self.arch_at["action"] == self.arch_at["reward"]))
        if self.cfg.early_stop.stop_search and stop.action_stop is not None:
            rec.note("stopped_by", "actions")
        elif stop.action_stop is not None and stop.reward_stop is not None:
            rec.note("stopped_by", "both rules")
        else:
            rec.note("stopped_by", "budget")


def _kernels(actions: list[int]) -> str:
    return "".join("5" if a else "3" for a in actions)


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
        [{"kernels": _kernels(s), "shared_pct": x, "alone_pct": y} for s, x, y in zip(subnets, shared, alone)],
    )
    try:
        tau, rho = rank_correlation(shared, alone)
    except DegenerateRanking as err:
        rec.note("rank_degenerate", str(err))
        return
    if math.isfinite(tau) and math.isfinite(rho):
        rec.scalar("rank_kendall_tau", tau)
        rec.scalar("rank_spearman_rho", rho)
