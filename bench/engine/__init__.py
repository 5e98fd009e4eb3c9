"""The one training engine every method uses (``bench.engine.train``).

``from bench import engine`` then ``engine.fit(model, split, engine.TrainConfig(...), rec)``
and ``engine.evaluate(model, split)``; ``StepHooks`` customise a step without a second loop.
"""

from bench.contract.settings import TrainConfig
from bench.engine.train import FitReport, LossFn, StepHooks, default_loss, evaluate, fit, lr_factor, make_optimizer

__all__ = [
    "FitReport",
    "LossFn",
    "StepHooks",
    "TrainConfig",
    "default_loss",
    "evaluate",
    "fit",
    "lr_factor",
    "make_optimizer",
]
