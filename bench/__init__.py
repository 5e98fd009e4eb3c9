"""archbench: a benchmark harness for architecture-aware fine-tuning and NAS.

The public API, imported lazily so ``import bench`` stays cheap::

    from bench import Grid, TierPlan, run_cell, register_method, Fitted, Task
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Method": "bench.interface", "Task": "bench.interface", "TaskSettings": "bench.interface",
    "Fitted": "bench.interface", "Split": "bench.split", "Recorder": "bench.recorder",
    "Grid": "bench.grid", "TierPlan": "bench.grid", "CellSpec": "bench.cell", "CellResult": "bench.cell",
    "run_cell": "bench.runner", "register_method": "bench.registry", "get_method": "bench.registry",
    "list_methods": "bench.registry", "TrainConfig": "bench.train", "StepHooks": "bench.train",
    "load": "bench.exports", "Claim": "bench.claims",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'bench' has no attribute {name!r}; public names: {', '.join(__all__)}")
    return getattr(importlib.import_module(_WHERE[name]), name)
