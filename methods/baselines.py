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

from dataclasses import dataclass, field
from typing import ClassVar

from bench import train as engine
from bench.config import require
from bench.errors import InvalidConfig
from bench.interface import Fitted, Split, Task
from bench.models import MappedNet, freeze_all_but_last_blocks, head_only
from bench.recorder import Recorder
from bench.registry import register_method


@dataclass(frozen=True)
class FineTuneConfig:
    """Training recipe shared by the baselines."""

    train: engine.TrainConfig = field(default_factory=engine.TrainConfig)


@dataclass(frozen=True)
class LastKConfig:
    """``k``: how many of the last blocks train together with the head (0 = head only)."""

    k: int = 2
    train: engine.TrainConfig = field(default_factory=engine.TrainConfig)

    def __post_init__(self) -> None:
        require(self.k >= 0, f"k must be >= 0, got {self.k}")


class FineTune:
    """Shared fit/evaluate of the baselines; subclasses choose init and what trains."""

    Config: ClassVar[type] = FineTuneConfig
    pretrained: ClassVar[bool] = True
    name: ClassVar[str]

    def __init__(self, config: FineTuneConfig) -> None:
        self.config = config

    def prepare(self, model: MappedNet) -> None:
        """Freeze what this baseline does not train (default: nothing)."""

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        model = task.build_model(pretrained=self.pretrained)
        self.prepare(model)
        with rec.stage("train"):
            engine.fit(model, task.train, self.config.train, rec, stage="train", val=task.val, seed=task.seed)
        return Fitted(model=model, arch=model.arch_string(), info={"frozen_prefix": model.frozen_prefix})

    def evaluate(self, fitted: Fitted, split: Split) -> dict[str, float]:
        return engine.evaluate(fitted.model, split)


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

    def prepare(self, model: MappedNet) -> None:
        blocks = len(model.structure.blocks)
        if self.config.k > blocks:
            raise InvalidConfig(f"last_k: k={self.config.k} but the model has only {blocks} blocks (valid k: 0..{blocks})")
        freeze_all_but_last_blocks(model, self.config.k)


@register_method("linear_probe")
class LinearProbe(FineTune):
    """Source weights; only the classifier trains."""

    def prepare(self, model: MappedNet) -> None:
        head_only(model)
