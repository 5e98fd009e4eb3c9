"""Shared fixtures: a hermetic cache folder, tiny cell specs, throw-away methods."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.contract.cell import CellSpec
from bench.contract.config import canonical_json, config_dict, make_config
from bench.contract.settings import TaskSettings
from bench.registry import METHODS

# A task small enough for a few seconds per cell on 2 CPU cores.
TINY_TASK = {
    "input_size": 16,
    "width": 0.125,
    "source": "mnist5k",
    "train_limit": 256,
    "pretrain.train.epochs": 0.2,
    "pretrain.train.log_every": 1000,
}
TINY_TRAIN = {"train.steps": 6, "train.batch_size": 32, "train.log_every": 3}
# Per-method tiny configs for methods whose budget is not a single ``train`` recipe.
# Every registered method must appear here or have a ``train`` field (test_contract checks).
# A method family may also ship ``tests/tiny_configs/<family>.json`` ({method: overrides}).
TINY_CONFIGS: dict[str, dict] = {
    "two_stage": {
        "scope": "small",
        "search.steps": 6,
        "search.batch_size": 16,
        "search.log_every": 3,
        "steps_per_update": 2,
        "controller.hidden": 8,
        "controller.samples_per_update": 2,
        "controller.reward_batch": 16,
        "controller.train_steps": 1,
        "early_stop.rollouts": 8,
        "early_stop.window": 2,
        "early_stop.reward_window": 3,
        "rank_subnets": 3,
        "rank_steps": 2,
        "finetune.steps": 6,
        "finetune.batch_size": 32,
        "finetune.log_every": 3,
        "finetune.eval_every": 3,
        "target_top1_pct": 10.0,
    },
}

for _path in sorted((Path(__file__).parent / "tiny_configs").glob("*.json")):
    for _method, _overrides in json.loads(_path.read_text()).items():
        if _method in TINY_CONFIGS:
            raise ValueError(f"{_path.name}: tiny config of '{_method}' is already defined")
        TINY_CONFIGS[_method] = _overrides


def pytest_configure(config: pytest.Config) -> None:
    """Share the cores among xdist workers: torch's default (one thread per core in every
    worker) oversubscribes them, and tests of many small ops then run 10-20x slower. Test
    modules must not set their own thread count (collection imports them in every worker)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        # and for the suites that tests run in subprocesses (pytester), which read it at import
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(scope="session", autouse=True)
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Point the source-weights cache at a per-session folder (never the user's cache)."""
    path = str(tmp_path_factory.mktemp("bench-cache"))
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_CACHE_DIR", path)
    yield path
    mp.undo()


def tiny_spec(
    method: str = "full_ft",
    *,
    dataset: str = "uci-digits",
    model: str = "resnet20",
    seed: int = 0,
    config: dict | None = None,
    task: dict | None = None,
    suite: str = "unit",
) -> CellSpec:
    """A resolved CellSpec for a tiny CPU cell."""
    cls = METHODS.get(method)
    default = TINY_CONFIGS.get(method, TINY_TRAIN if "train" in cls.Config.__dataclass_fields__ else {})
    overrides = {**default, **(config or {})}
    cfg = make_config(cls.Config, overrides)
    settings = make_config(TaskSettings, {**TINY_TASK, **(task or {})})
    return CellSpec(
        suite=suite,
        method=method,
        variant=method,
        dataset=dataset,
        model=model,
        seed=seed,
        tier="smoke",
        config_json=canonical_json(config_dict(cfg)),
        task_json=canonical_json(config_dict(settings)),
        device="cpu",
    )


@pytest.fixture
def register_temp():
    """Register throw-away methods for one test; they are removed afterwards."""
    added: list[str] = []

    def add(name: str, cls: type) -> type:
        cls.name = name
        METHODS.register(name, cls)
        added.append(name)
        return cls

    yield add
    for name in added:
        METHODS.unregister(name)


def metrics_of(result) -> dict:
    return json.loads(json.dumps(result.metrics))
