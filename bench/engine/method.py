"""``BaseMethod``: what every method shares, so a method file holds only what is its own.

A method subclasses it, sets ``name`` and ``Config`` (a frozen dataclass) and writes ``fit``.
The constructor keeps the config; ``evaluate`` scores the fitted model with the engine
(``top1_pct``, ``loss_nat``), which is right for every method whose fitted model is a
classifier. A method that evaluates otherwise (a kNN probe on embeddings) overrides it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from bench.engine.train import evaluate as engine_evaluate

if TYPE_CHECKING:
    from bench.contract.interface import Fitted, Task
    from bench.contract.recorder import Recorder
    from bench.contract.split import Split

C = TypeVar("C")

__all__ = ["BaseMethod"]


class BaseMethod(Generic[C]):
    """Base of a registered method (see the module docstring and ``bench.contract.interface.Method``)."""

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config")
        frozen = getattr(getattr(config, "__dataclass_params__", None), "frozen", False)
        if config is not None and not (dataclasses.is_dataclass(config) and frozen):
            raise TypeError(f"{cls.__qualname__}.Config must be a frozen dataclass (@dataclass(frozen=True))")

    def __init__(self, config: C) -> None:
        self.config = config

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        raise NotImplementedError(f"{type(self).__qualname__} must define fit(task, rec)")

    def evaluate(self, fitted: Fitted, split: Split) -> dict[str, float]:
        """Top-1 accuracy and loss of the fitted classifier on ``split`` (the engine's evaluation)."""
        return engine_evaluate(fitted.model, split)
