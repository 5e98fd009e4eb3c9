"""What one training step costs, for methods that plan under a time budget.

A method that plans (NASOA's schedule generator and the spend of its RS / BOHB baselines,
the NSGA-II step-time objective and cap) prices each candidate's training step with a
``CostModel``:

- ``measured`` (default): the median of timed steps on the device, the papers' procedure.
  Realistic, but it moves with machine load, so two runs of the same code on a busy and an
  idle machine plan different schedules (budgets, epochs, trial counts, Pareto fronts).
- ``counted``: the work of one training step (forward, loss and backward at the planned
  batch and input size), counted rather than timed: its floating-point operations
  (``torch.utils.flop_counter``) and the number of ATen operators it dispatches, each priced
  at a nominal rate::

      step_ms = flops / (gflops * 1e6) + ops * op_us / 1000

  The operator term matters on small networks, where dispatch, not arithmetic, dominates
  (at the smoke tier's width 1/8 and 16 px a RegNetY step has fewer FLOPs than an ET-NAS
  one but three times the operators, and takes three times as long). Deterministic: the
  same code and config plan the same schedule on any machine under any load. The smoke
  tier plans this way so no smoke cell's outcome or status depends on the wall clock;
  methods record the measured step time beside the planned one (``*_measured_step_ms``),
  so the model's error stays visible.

The defaults (``gflops`` 60, ``op_us`` 27) are a least-squares fit of measured single-thread
CPU step times of the NASOA smoke models (ET-NAS A/B/D/G, RegNetY-400MF/800MF, ResNet-18 at
width 1/8, 16 px, batch 32), which they reproduce within 20%; ``benchmarks/cost_model.py``
refits them on any machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.errors import InvalidConfig

COST_KINDS = ("measured", "counted")


@dataclass(frozen=True)
class StepCount:
    """The counted work of one training step."""

    flops: int
    ops: int


@dataclass(frozen=True)
class CostModel:
    """How a planning method prices a training step (see the module docstring)."""

    kind: str = "measured"
    gflops: float = 60.0  # nominal GFLOP/s (kind="counted")
    op_us: float = 27.0  # nominal microseconds per dispatched ATen operator (kind="counted")

    def __post_init__(self) -> None:
        if self.kind not in COST_KINDS:
            raise InvalidConfig(f"cost.kind must be one of {COST_KINDS}, got {self.kind!r}")
        if not self.gflops > 0 or self.op_us < 0:
            raise InvalidConfig(f"cost.gflops must be > 0 and cost.op_us >= 0, got {self.gflops}, {self.op_us}")

    @property
    def deterministic(self) -> bool:
        """Whether plans priced by this model are the same on every run (no wall clock involved)."""
        return self.kind == "counted"

    def step_ms(self, count: StepCount) -> float:
        """Planned milliseconds of a step of ``count`` (``kind="counted"``)."""
        return count.flops / (self.gflops * 1e6) + count.ops * self.op_us / 1000.0


class _OpCounter:
    """A dispatch mode that counts the ATen operators run inside it."""

    def __new__(cls) -> Any:
        from torch.utils._python_dispatch import TorchDispatchMode

        class Counter(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.ops = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                self.ops += 1
                return func(*args, **(kwargs or {}))

        return Counter()


def count_train_step(build: Callable[[], Any], *, batch: int, size: int, num_classes: int) -> StepCount:
    """FLOPs and dispatched operators of one training step (forward, cross-entropy, backward) of ``build()``.

    The network is built fresh under its own seed and stays on the CPU (the counts do not
    depend on the device), so counting never touches the caller's random stream.
    """
    import torch
    import torch.nn.functional as F

    from bench.measure import flop_counter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build()
        net.train()
        x = torch.randn(batch, 3, size, size)
        y = torch.randint(0, num_classes, (batch,))
        flops, ops = flop_counter(), _OpCounter()
        with flops, ops:
            F.cross_entropy(net(x), y).backward()
    return StepCount(int(flops.get_total_flops()), int(ops.ops))


@functools.lru_cache(maxsize=512)
def model_step_count(model: str, width: float, size: int, batch: int, num_classes: int) -> StepCount:
    """``count_train_step`` of a registered model (cached per process: counting is deterministic)."""
    from bench.models.net import build_model

    return count_train_step(
        lambda: build_model(model, num_classes, width=width), batch=batch, size=size, num_classes=num_classes
    )
