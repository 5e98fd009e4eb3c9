"""The one training engine every method uses (``bench.engine.train``).

``from bench import engine`` then ``engine.fit(model, split, engine.TrainConfig(...), rec)``
and ``engine.evaluate(model, split)``; ``StepHooks`` customise a step without a second loop.
``engine.time_steps(model, cfg, ...)`` times that same step on synthetic tensors, in speed mode.
``engine.inner_run`` runs a method's inner training (a search trial, a meta-data run, a proxy
evaluation) so that its divergence is recorded as data and the cell goes on (``bench.engine.inner``).
"""

from bench.contract.settings import TrainConfig
from bench.engine.inner import chance_pct, inner_run
from bench.engine.timing import StepTiming, speed_mode, time_steps
from bench.engine.train import FitReport, LossFn, StepHooks, default_loss, evaluate, fit, lr_factor, make_optimizer

__all__ = [
    "FitReport",
    "LossFn",
    "StepHooks",
    "StepTiming",
    "TrainConfig",
    "chance_pct",
    "default_loss",
    "evaluate",
    "fit",
    "inner_run",
    "lr_factor",
    "make_optimizer",
    "speed_mode",
    "time_steps",
]
