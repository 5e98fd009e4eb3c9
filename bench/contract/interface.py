"""The contract between the harness and a method.

A method is a class with a ``name``, a frozen dataclass ``Config``, a constructor taking
that config, ``fit(task, rec) -> Fitted`` and ``evaluate(fitted, split) -> dict``. The
runner builds the ``Task`` (data already on the device, the model spec, the source
weights, seed, tier, device), hands the method a ``Recorder`` for everything it wants to
report, and turns the returned ``Fitted`` into val/test metrics. Nothing else: no
optional hooks, no mode flags.

One optional classmethod, ``check_cell(config, facts)``, lets a method refuse at collection a
config that cannot run on a cell (a batch larger than the train split, a ``k`` larger than the
model's blocks), so the error names what is valid before anything runs or is written;
``bench.engine.method.BaseMethod`` provides it. ``facts`` is a ``CellFacts``.

``evaluate`` returns split-agnostic names (``top1_pct``, ``loss_nat``); the runner
prefixes them with the split (``val_top1_pct``, ``test_top1_pct``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch

from bench.contract.settings import TaskSettings
from bench.contract.split import Split

if TYPE_CHECKING:
    from bench.contract.recorder import Recorder
    from bench.models.net import MappedNet

__all__ = ["EVAL_KEYS", "CellFacts", "Fitted", "Method", "Split", "Task", "TaskSettings"]


@dataclass(eq=False)
class Task:
    """Everything a method needs to fit one cell."""

    dataset: str
    model: str
    num_classes: int
    seed: int
    tier: str
    device: torch.device
    settings: TaskSettings
    train: Split
    val: Split
    test: Split
    data_root: str | None = None
    download: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def build_model(self, *, pretrained: bool = True) -> MappedNet:
        """The task's architecture on the task device with a fresh head for its classes.

        With ``pretrained`` and a ``source`` in the settings, the body carries the source
        weights (loaded from cache, pretrained on first use); otherwise random init.
        """
        from bench.models.pretrain import build_model

        return build_model(self, pretrained=pretrained)


@dataclass(eq=False)
class Fitted:
    """A trained model plus the canonical string that rebuilds its architecture."""

    model: torch.nn.Module
    arch: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellFacts:
    """What the grid knows about a cell at collection, without loading data or weights.

    ``train_images``: the size of the train split (``bench.data.registry.train_images``), None
    where the dataset does not say. ``structure()``: the model's ``StructuralMap`` built on the
    meta device, None where the model cannot be built there (the check waits for run time)."""

    dataset: str
    model: str
    settings: TaskSettings
    train_images: int | None

    def structure(self) -> Any:
        from bench.models.net import structure_of

        return structure_of(self.model, self.settings.width)

    def where(self) -> str:
        """The cell's dataset and model in words, for error messages."""
        return f"on {self.dataset} with {self.model}"


@runtime_checkable
class Method(Protocol):
    """What every registered method provides. See the module docstring."""

    name: ClassVar[str]
    Config: ClassVar[type]
    config: Any

    def __init__(self, config: Any) -> None: ...

    def fit(self, task: Task, rec: Recorder) -> Fitted: ...

    def evaluate(self, fitted: Fitted, split: Split) -> dict[str, float]: ...


EVAL_KEYS: Sequence[str] = ("top1_pct", "loss_nat")
"""Keys every method's ``evaluate`` must return."""
