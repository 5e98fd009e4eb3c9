"""``BaseMethod``: what every method shares, so a method file holds only what is its own.

A method subclasses it, sets ``name`` and ``Config`` (a frozen dataclass) and writes ``fit``.
The constructor keeps the config; ``check_cell`` refuses at collection a batch larger than
the train split for the stages named in ``target_train_fields``; ``evaluate`` scores the fitted model with the engine
(``top1_pct``, ``loss_nat``), which is right for every method whose fitted model is a
classifier. A method that evaluates otherwise (a kNN probe on embeddings) overrides it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from bench.engine.train import evaluate as engine_evaluate
from bench.errors import InvalidConfig

if TYPE_CHECKING:
    from bench.contract.interface import CellFacts, Fitted, Task
    from bench.contract.recorder import Recorder
    from bench.contract.split import Split

C = TypeVar("C")

__all__ = ["BaseMethod"]


class BaseMethod(Generic[C]):
    """Base of a registered method (see the module docstring and ``bench.contract.interface.Method``)."""

    name: ClassVar[str]
    Config: ClassVar[type]
    # Config fields holding a TrainConfig that trains on the cell's whole train split (the
    # stages ``check_cell`` can size at collection; stages on other data are checked by the
    # engine when they run).
    target_train_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config")
        frozen = getattr(getattr(config, "__dataclass_params__", None), "frozen", False)
        if config is not None and not (dataclasses.is_dataclass(config) and frozen):
            raise TypeError(f"{cls.__qualname__}.Config must be a frozen dataclass (@dataclass(frozen=True))")

    def __init__(self, config: C) -> None:
        self.config = config

    @classmethod
    def check_cell(cls, config: Any, facts: CellFacts) -> None:
        """Raise ``InvalidConfig`` when ``config`` cannot run on the cell ``facts`` describes.

        Called by the grid at collection, so the error comes before any cell runs or any row is
        written. Here: each ``target_train_fields`` stage's batch fits in the train split. A
        method with block-indexed settings (``k``, a scope) extends it with the model's
        ``facts.structure()``."""
        n = facts.train_images
        for name in cls.target_train_fields:
            batch = getattr(config, name).batch_size
            if n is not None and batch > n:
                raise InvalidConfig(
                    f"{name}.batch_size={batch} but the train split {facts.where()} holds {n} images "
                    f"(val_frac {facts.settings.val_frac:g}, test_frac {facts.settings.test_frac:g}, "
                    f"train_limit {facts.settings.train_limit}); valid batch sizes: 1..{n}"
                )

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        raise NotImplementedError(f"{type(self).__qualname__} must define fit(task, rec)")

    def evaluate(self, fitted: Fitted, split: Split) -> dict[str, float]:
        """Top-1 accuracy and loss of the fitted classifier on ``split`` (the engine's evaluation)."""
        return engine_evaluate(fitted.model, split)
