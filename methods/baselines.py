"""The baselines every paper compares against: scratch, full fine-tuning, last-k, linear probe.

All four train the task's architecture with the shared engine at the same budget and
differ only in initialisation and in what trains:

- ``scratch``: random initialisation, every parameter trains;
- ``full_ft``: source weights, every parameter trains;
- ``last_k``: source weights, only the last ``k`` blocks and the head train; the stem
  and earlier blocks are frozen (no gradients, BatchNorm in eval, run under no_grad);
- ``linear_probe``: source weights, only the classifier trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bench import engine
from bench.contract.config import require
from bench.contract.interface import CellFacts, Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InvalidConfig
from bench.models.net import MappedNet, freeze_all_but_last_blocks, head_only, scope_blocks
from bench.registry import register_method
from bench.results.analysis import first_step_reaching


@dataclass(frozen=True)
class FineTuneConfig:
    """Training recipe shared by the baselines.

    ``target_top1_pct`` > 0 records ``target_reached_steps``: the first evaluation step
    (every ``train.eval_every``) at which test accuracy reached it, read off the
    ``train_test_top1_pct`` curve (the curve is for plotting and milestones, never for
    selecting anything).
    """

    train: engine.TrainConfig = field(default_factory=engine.TrainConfig)
    target_top1_pct: float = 0.0

    def __post_init__(self) -> None:
        require(0.0 <= self.target_top1_pct <= 100.0, "target_top1_pct must be in [0, 100] (0: off)")


@dataclass(frozen=True)
class LastKConfig:
    """``k``: how many of the last blocks train together with the head (0 = head only).

    ``scope`` (``small``/``medium``/``large``/``full``, see ``bench.models.net.scope_blocks``)
    sets k to the blocks of the last 1/2/3/all stages instead, so one grid entry means
    the same thing for ResNet-18 (2 blocks per stage) and ResNet-50 (3-6).
    """

    k: int = 2
    scope: Literal["small", "medium", "large", "full"] | None = None
    train: engine.TrainConfig = field(default_factory=engine.TrainConfig)
    target_top1_pct: float = 0.0

    def __post_init__(self) -> None:
        require(self.k >= 0, f"k must be >= 0, got {self.k}")
        require(0.0 <= self.target_top1_pct <= 100.0, "target_top1_pct must be in [0, 100] (0: off)")


class FineTune(BaseMethod[FineTuneConfig | LastKConfig]):  # fit reads train / target_top1_pct, which both have
    """Shared fit/evaluate of the baselines; subclasses choose init and what trains."""

    target_train_fields = ("train",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = FineTuneConfig
    pretrained: ClassVar[bool] = True
    name: ClassVar[str]

    def prepare(self, model: MappedNet) -> None:
        """Freeze what this baseline does not train (default: nothing)."""

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        model = task.build_model(pretrained=self.pretrained)
        self.prepare(model)
        with rec.stage("train"):
            engine.fit(
                model,
                task.train,
                self.config.train,
                rec,
                stage="train",
                val=task.val,
                curves=(task.test,),
                seed=task.seed,
            )
        record_target(rec, "train", self.config.target_top1_pct)
        return Fitted(model=model, arch=model.arch_string(), info={"frozen_prefix": model.frozen_prefix})


def record_target(rec: Recorder, stage: str, target: float) -> None:
    """Iterations to ``target``: ``target_reached_steps`` from the ``<stage>_test_top1_pct`` curve.

    A run that never reaches the target is a censored observation (it would have needed more
    than its budget), not a missing one: ``target_reached_steps`` is then stored as NULL (NaN
    here), ``target_reached_bool`` is 0, and ``target_budget_steps`` (the last evaluated step)
    is what the claims count it at (``bench.results.verdict``), so a method that never reaches
    the target loses instead of dropping out.
    """
    if target <= 0:
        return
    curve = rec.curve(f"{stage}_test_top1_pct")
    rec.note("target_top1_pct", target)
    if not curve:
        return
    reached = first_step_reaching(curve, target)
    rec.scalar("target_budget_steps", max(step for step, _ in curve))
    rec.scalar("target_reached_bool", float(reached is not None))
    rec.scalar("target_reached_steps", math.nan if reached is None else reached)


@register_method("scratch")
class Scratch(FineTune):
    """Random initialisation, everything trains."""

    pretrained = False


@register_method("full_ft")
class FullFineTune(FineTune):
    """Source weights, everything trains."""


@register_method("last_k")
class LastK(FineTune):
    """Source weights; only the last ``k`` blocks and the head train."""

    Config = LastKConfig
    config: LastKConfig

    @classmethod
    def check_cell(cls, config: LastKConfig, facts: CellFacts) -> None:
        """Also refuse a ``k`` larger than the model's blocks, at collection (``prepare`` checks
        again at run time, for a model whose structure cannot be built at collection)."""
        super().check_cell(config, facts)
        structure = facts.structure()
        if structure is not None and config.scope is None and config.k > len(structure.blocks):
            blocks = len(structure.blocks)
            raise InvalidConfig(f"last_k: k={config.k} but {facts.model} has {blocks} blocks; valid k: 0..{blocks}")

    def prepare(self, model: MappedNet) -> None:
        blocks = len(model.structure.blocks)
        k = len(scope_blocks(model.structure, self.config.scope)) if self.config.scope else self.config.k
        if k > blocks:
            raise InvalidConfig(f"last_k: k={k} but the model has only {blocks} blocks (valid k: 0..{blocks})")
        freeze_all_but_last_blocks(model, k)


@register_method("linear_probe")
class LinearProbe(FineTune):
    """Source weights; only the classifier trains."""

    def prepare(self, model: MappedNet) -> None:
        head_only(model)
