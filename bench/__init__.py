"""archbench: a benchmark harness for architecture-aware fine-tuning and NAS.

The public API, imported lazily so ``import bench`` stays cheap::

    from bench import Grid, TierPlan, run_cell, register_method, Fitted, Task
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Method": "bench.contract.interface",
    "Task": "bench.contract.interface",
    "TaskSettings": "bench.contract.settings",
    "Fitted": "bench.contract.interface",
    "Split": "bench.contract.split",
    "Recorder": "bench.contract.recorder",
    "Grid": "bench.execute.grid",
    "TierPlan": "bench.execute.grid",
    "CellSpec": "bench.contract.cell",
    "CellResult": "bench.contract.cell",
    "run_cell": "bench.execute.runner",
    "register_method": "bench.registry",
    "get_method": "bench.registry",
    "list_methods": "bench.registry",
    "TrainConfig": "bench.contract.settings",
    "StepHooks": "bench.engine.train",
    "load": "bench.results.exports",
    "Claim": "bench.results.claims",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'bench' has no attribute {name!r}; public names: {', '.join(__all__)}")
    return getattr(importlib.import_module(_WHERE[name]), name)
