"""Inner runs: the trainings a method runs to *decide* something (a search trial, a meta-data
run, a proxy evaluation of a candidate), as opposed to the cell's own training.

One inner run that diverges is data, not the end of the cell. A search must see a diverged
configuration as bad, not absent, and a meta-data stream that kept only the runs that survived
would teach its predictor that every (model, lr, frozen) combination trains (survivor bias).
So a method runs each inner training through ``inner_run``::

    got = engine.inner_run(lambda: train(arch), rec, stage="proxy", what=f"proxy of {arch}")
    acc = engine.chance_pct(num_classes) if isinstance(got, Diverged) else got.val_top1_pct

and on divergence records the run at ``chance_pct`` (the accuracy of a constant guess: what a
diverged network is worth to a consumer that needs a number) with a ``diverged`` flag, never
selects it, and goes on.

Metrics on the cell's recorder (present once the cell ran an inner run itself; records read
from a cache were run by another cell and carry their own flags):

- ``inner_runs_count``: inner runs this cell started;
- ``inner_diverged_count``: those of them that diverged.

Only ``Diverged`` raised by the run's own training stage is caught. A ``Diverged`` of another
stage (a source pretraining started lazily inside the run) is not the run's and ends the cell.
Out-of-memory errors end the cell too: they say that the cell's settings do not fit the device
(the next candidate of that shape fails the same way, and the cell's memory figures would mean
nothing), and every other exception is a bug that a broad ``except`` would hide.

A method that cannot continue because every inner run it needed diverged (every search trial,
every proxy evaluation) raises ``bench.errors.InnerRunsDiverged``, a ``Diverged``: the cell is
then recorded as ``diverged`` with that message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from bench.contract.recorder import Recorder
from bench.contract.units import chance_pct
from bench.errors import Diverged

T = TypeVar("T")

RUNS = "inner_runs_count"
DIVERGED = "inner_diverged_count"

__all__ = ["DIVERGED", "RUNS", "chance_pct", "inner_run"]


def inner_run(fn: Callable[[], T], rec: Recorder, *, stage: str, what: str) -> T | Diverged:
    """``fn()``, or the ``Diverged`` its training stage ``stage`` raised (counted on ``rec``).

    ``rec`` is the cell's recorder (not the throw-away one an inner training may log into): it
    gets ``inner_runs_count`` and ``inner_diverged_count`` and a progress line naming ``what``
    diverged. A ``Diverged`` from any other stage propagates (see the module docstring).
    """
    rec.scalar(RUNS, rec.metrics.get(RUNS, 0.0) + 1)
    rec.scalar(DIVERGED, rec.metrics.get(DIVERGED, 0.0))
    try:
        return fn()
    except Diverged as err:
        if err.stage != stage:
            raise
        rec.scalar(DIVERGED, rec.metrics[DIVERGED] + 1)
        rec.progress(f"{what} diverged ({err}); recorded at chance, the cell goes on")
        return err
