"""The frozen settings a cell is built from: the training recipe, the source pretraining
recipe and the task's data/model settings.

Plain dataclasses with no torch import, so the grid, the pytest plugin and the cluster
executor can build and hash cells without loading the engine. The engine
(``bench.engine``) runs a ``TrainConfig``; ``bench.models.pretrain`` runs a ``PretrainRecipe``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from bench.contract.config import require

__all__ = ["OPTIMIZER_IMPLS", "RECIPE_VERSION", "SPLIT_POLICIES", "PretrainRecipe", "TaskSettings", "TrainConfig"]

#: ``TaskSettings.split`` values: the harness's seeded split policy, or NAS-Bench-201's own split files.
SPLIT_POLICIES = ("harness", "nb201")

#: ``TrainConfig.optimizer_impl`` values: how the optimiser's update runs over the parameters.
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe of one training stage. Budget: ``steps`` if > 0, else ``epochs``.

    Speed options (at their defaults a CPU training is bit for bit what it was before they
    existed; on CUDA ``"auto"`` picks the fused update): ``compile`` runs the
    step's forward and loss through ``torch.compile`` (off by default; the compiling warm-up
    step is left out of the step times, see ``bench.engine.train.fit``). ``optimizer_impl``
    picks the optimiser's update: ``"fused"`` (one kernel), ``"foreach"`` (batched over
    tensors), ``"loop"`` (one parameter at a time) or ``"auto"``: on CUDA fused where every
    parameter is a floating CUDA tensor and torch has a fused SGD/AdamW, else foreach; off
    CUDA torch's default (the loop on CPU). An explicit one torch cannot run raises torch's error.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 64
    steps: int = 0
    epochs: float = 10.0
    warmup_frac: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    final_lr_frac: float = 0.0
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0
    flip: Literal["auto", "on", "off"] = "auto"
    crop_pad: int = 0
    cutout: int = 0
    bf16: bool = True
    channels_last: bool = True
    eval_every: int = 0
    log_every: int = 50
    compile: bool = False
    optimizer_impl: Literal["auto", "fused", "foreach", "loop"] = "auto"

    def __post_init__(self) -> None:
        for name in (
            "lr",
            "momentum",
            "weight_decay",
            "epochs",
            "warmup_frac",
            "final_lr_frac",
            "label_smoothing",
            "clip_grad_norm",
        ):
            value = getattr(self, name)
            require(math.isfinite(value), f"{name} must be a finite number, got {value!r}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.steps >= 0 and self.epochs >= 0, "steps and epochs must be >= 0")
        require(self.steps > 0 or self.epochs > 0, "set steps > 0 or epochs > 0")
        require(0.0 <= self.warmup_frac < 1.0, f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        require(0.0 <= self.final_lr_frac <= 1.0, f"final_lr_frac must be in [0, 1], got {self.final_lr_frac}")
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)")
        require(self.clip_grad_norm >= 0, "clip_grad_norm must be >= 0 (0 disables clipping)")
        require(
            self.crop_pad >= 0 and self.cutout >= 0 and self.eval_every >= 0 and self.log_every >= 1,
            "crop_pad, cutout and eval_every must be >= 0, log_every >= 1",
        )
        require(isinstance(self.compile, bool), f"compile must be True or False, got {self.compile!r}")
        require(
            self.optimizer_impl in OPTIMIZER_IMPLS,
            f"optimizer_impl must be one of {', '.join(OPTIMIZER_IMPLS)}, got {self.optimizer_impl!r}",
        )

    def total_steps(self, train_size: int) -> int:
        """Optimisation steps this config runs on a training split of ``train_size`` images."""
        if self.steps:
            return self.steps
        per_epoch = max(1, train_size // self.batch_size)
        return max(1, math.ceil(self.epochs * per_epoch))


RECIPE_VERSION = 1


@dataclass(frozen=True)
class PretrainRecipe:
    """How a source model is pretrained on an embedded dataset (part of the cache key)."""

    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5.0, lr=0.05, batch_size=64, warmup_frac=0.05, log_every=100)
    )
    val_frac: float = 0.1
    test_frac: float = 0.1
    version: int = RECIPE_VERSION


@dataclass(frozen=True)
class TaskSettings:
    """Data and model settings of a cell that are not the method's own config.

    ``source`` is where initial weights come from: ``"imagenet"`` (torchvision weights
    from the torch hub cache), the name of an embedded dataset (the harness pretrains the
    architecture on it with ``pretrain`` and caches the checkpoint), or ``None``.

    ``split`` is the split policy every method of the cell sees (``bench.data.registry``):
    ``"harness"`` (seeded stratified splits from ``val_frac`` / ``test_frac``) or ``"nb201"``
    (NAS-Bench-201's own train / valid / test, read from its split files; cifar10, cifar100 and
    imagenet16-120 only; ``val_frac`` / ``test_frac`` unused; ``bench.data.nb201_splits``).
    """

    input_size: int = 32
    width: float = 1.0
    source: str | None = None
    source_seed: int = 0
    val_frac: float = 0.2
    test_frac: float = 0.2
    train_limit: int = 0
    split: Literal["harness", "nb201"] = "harness"
    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe)

    def __post_init__(self) -> None:
        require(self.input_size >= 8, f"input_size must be >= 8, got {self.input_size}")
        require(math.isfinite(self.width) and self.width > 0, f"width must be a finite number > 0, got {self.width}")
        require(
            0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 1,
            f"val_frac and test_frac must be in (0, 1) and sum below 1, got {self.val_frac}, {self.test_frac}",
        )
        require(self.train_limit >= 0, f"train_limit must be >= 0, got {self.train_limit}")
        require(
            self.split in SPLIT_POLICIES,
            f"split must be one of {', '.join(SPLIT_POLICIES)}, got {self.split!r}",
        )
