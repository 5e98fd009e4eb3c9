"""``simclr``, ``simclr_adapt_cell``, ``simclr_adapt_full``: the self-supervised variant of paper 004.

The network (a cell-graph model such as ``resnet50_cifar`` or ``darts_v2_8``, random
init) gets a projection head in place of its classifier and is trained with SimCLR in
one continuous run of the shared engine (``bench.engine.fit`` with
``StepHooks(loss_fn=SimCLRLoss)``): per step the batch is augmented twice on the
device (``ssl.SimCLRAugment``), both views go through backbone + head in one forward
(2N images) and the NT-Xent loss (temperature 0.5) is minimised.

- ``simclr``: the network as designed.
- ``simclr_adapt_cell`` / ``simclr_adapt_full``: proxyless adaptation as in
  ``method.py`` (theta edges ``cell``/``full``, ``ArchSearch``): for the first
  ``arch.frac`` of the steps, after each weight step, ``after_step`` takes an Adam step on
  theta with the *SSL* loss on the same batch and, by default, the same two views
  (``arch_same_views``); then the network is discretised and training continues.

Evaluation (``evaluate``) is weighted kNN on frozen backbone features (the entries before
the head; GAP output): k = 200, cosine similarity, vote ``exp(sim / 0.5)``, memory bank =
the training split without augmentation (SimCLR-CIFAR / InstDisc protocol). It returns
the kNN top-1 as ``top1_pct`` (so rows carry ``val_top1_pct`` / ``test_top1_pct`` like
every supervised method) and as ``loss_nat`` the mean -log of the true class's vote
share (floored at 1e-6).

Defaults and where they come from:

- paper 004: NT-Xent temperature 0.5, kNN k = 200, Adam lr 1e-3, 500 epochs, ResNet-50
  (CIFAR stem) and a DARTS network, one continuous (proxyless) run;
- SimCLR (CIFAR recipe the paper cites): batch 512, weight decay 1e-6, constant lr, the
  augmentation (RandomResizedCrop, flip, ColorJitter(.4, .4, .4, .1) p .8, grayscale
  p .2), head Linear(2048->512, no bias)-BN-ReLU-Linear(512->128), kNN temperature 0.5;
- ours: the engine's AdamW (decoupled decay, none on BN/bias) for Adam + L2; the head's
  hidden width scales with the backbone (``head.hidden_ratio`` 0.25: 512 for 2048);
  both views in one forward (BatchNorm statistics over 2N images); the theta optimiser
  and ``arch.frac`` of the supervised adaptation (Adam 3e-4, betas (0.5, 0.999), 50/600);
  ``arch_same_views``; the paper's SSL DARTS network has 24 cells (~24.6M parameters),
  the suite uses the 8-cell ``darts_v2_8``.

Recorded: ``knn_k_count``, ``knn_temperature_ratio``, ``ntxent_temperature_ratio``,
``ntxent_final_loss_nat`` (mean NT-Xent of the last logging window; the engine's curve is
``train_loss_nat``), ``ntxent_last_step_loss_nat``, ``feature_dim_count``,
``head_params``, optionally the curve ``train_val_knn_top1_pct`` (``knn_every``), and for
the adaptive variants everything ``ArchSearch`` records (theta series, ``architecture``,
``choices``, ``edges_changed_count``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.registry import register_method
from methods.proxyless import edges as E
from methods.proxyless.cells import as_cells
from methods.proxyless.method import ArchConfig, ArchSearch, arch_string, weight_params
from methods.proxyless.ssl import (
    AugConfig,
    SimCLRAugment,
    embed,
    knn_evaluate,
    knn_scores,
    nt_xent,
)


def simclr_recipe() -> engine.TrainConfig:
    """SimCLR-CIFAR as the paper runs it: Adam(W) 1e-3, wd 1e-6, batch 512, 500 epochs, constant lr."""
    return engine.TrainConfig(
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-6,
        batch_size=512,
        epochs=500.0,
        schedule="constant",
        flip="off",
        log_every=500,
    )


@dataclass(frozen=True)
class HeadConfig:
    """Projection head Linear(F->H, no bias)-BN-ReLU-Linear(H->out); H = max(min_hidden, ratio * F)."""

    hidden_ratio: float = 0.25
    min_hidden: int = 16
    out: int = 128

    def __post_init__(self) -> None:
        require(
            self.hidden_ratio > 0 and self.min_hidden >= 1 and self.out >= 1,
            "head.hidden_ratio must be > 0, head.min_hidden and head.out >= 1",
        )


@dataclass(frozen=True)
class SimCLRConfig:
    """SimCLR on a cell-graph network, kNN evaluation; see the module docstring for the sources."""

    train: engine.TrainConfig = field(default_factory=simclr_recipe)
    temperature: float = 0.5
    aug: AugConfig = field(default_factory=AugConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    knn_k: int = 200
    knn_temperature: float = 0.5
    knn_every: int = 0
    eval_batch: int = 512

    def __post_init__(self) -> None:
        require(self.temperature > 0 and self.knn_temperature > 0, "temperature and knn_temperature must be > 0")
        require(
            self.knn_k >= 1 and self.knn_every >= 0 and self.eval_batch >= 1,
            "knn_k and eval_batch must be >= 1, knn_every >= 0",
        )
        require(
            self.train.eval_every == 0,
            "train.eval_every must be 0: the network has no classifier (use knn_every for a kNN curve)",
        )


@dataclass(frozen=True)
class SimCLRAdaptConfig(SimCLRConfig):
    """``simclr`` plus the architecture stage of proxyless adaptation (``arch``, as the supervised adapt)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    arch_same_views: bool = True


class ProjectionHead(nn.Sequential):
    """SimCLR-CIFAR's MLP head: Linear(F->H, no bias) - BN - ReLU - Linear(H->out)."""

    def __init__(self, features: int, hidden: int, out: int) -> None:
        super().__init__(
            nn.Linear(features, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )


def attach_head(model: nn.Module, cfg: HeadConfig) -> ProjectionHead:
    """Replace the model's classifier entry with a projection head (same device); returns the head."""
    old = model.get_submodule(model.structure.classifier)
    features = old.in_features
    hidden = max(cfg.min_hidden, round(cfg.hidden_ratio * features))
    head = ProjectionHead(features, hidden, cfg.out).to(old.weight.device)
    model.replace(model.structure.classifier, head)
    return head


class SimCLRLoss:
    """``loss_fn`` for the engine: two augmented views, one forward of 2N images, NT-Xent.

    ``reuse`` is the loss for the theta step in ``after_step``: the same batch and, when
    ``same_views``, the very views the weight step used (else two fresh ones).
    """

    def __init__(self, augment: SimCLRAugment, temperature: float, same_views: bool = True) -> None:
        self.augment, self.temperature, self.same_views = augment, temperature, same_views
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """[2N, C, H, W]: the first N rows are view 1, the next N view 2."""
        v = torch.cat([self.augment(x), self.augment(x)])
        if x.is_contiguous(memory_format=torch.channels_last):
            v = v.contiguous(memory_format=torch.channels_last)
        return v

    def loss(self, model: nn.Module, v: torch.Tensor) -> torch.Tensor:
        z = model(v)
        n = v.shape[0] // 2
        return nt_xent(z[:n], z[n:], self.temperature)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = self.views(x)
        self._last = (x, v)
        return self.loss(model, v)

    def reuse(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        last, self._last = self._last, None
        v = last[1] if self.same_views and last is not None and last[0] is x else self.views(x)
        return self.loss(model, v)


class KnnMonitor:
    """``periodic`` callback: kNN top-1 on ``val`` with ``train`` as bank, as the curve ``<stage>_val_knn_top1_pct``."""

    def __init__(
        self, model: nn.Module, bank: Split, val: Split, cfg: SimCLRConfig, rec: Recorder, stage: str = "train"
    ) -> None:
        self.model, self.bank, self.val, self.cfg, self.rec, self.stage = model, bank, val, cfg, rec, stage

    def __call__(self, done: int) -> bool:
        out = knn_evaluate(
            self.model,
            self.bank,
            self.val,
            k=self.cfg.knn_k,
            temperature=self.cfg.knn_temperature,
            batch_size=self.cfg.eval_batch,
        )
        self.rec.point(f"{self.stage}_{self.val.name}_knn_top1_pct", done, out["top1_pct"])
        return False


class _SimCLR(BaseMethod[SimCLRConfig]):
    target_train_fields = ("train",)  # trains on the whole train split (checked at collection)
    Config: ClassVar[type] = SimCLRConfig
    mode: ClassVar[str | None] = None
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        model = task.build_model(pretrained=False)
        if self.mode is not None:
            model = as_cells(model)
        base = model.arch_string()
        head = attach_head(model, cfg.head)
        rec.scalar("feature_dim_count", head[0].in_features)
        rec.scalar("head_params", sum(p.numel() for p in head.parameters()))
        rec.scalar("knn_k_count", cfg.knn_k)
        rec.scalar("knn_temperature_ratio", cfg.knn_temperature)
        rec.scalar("ntxent_temperature_ratio", cfg.temperature)
        same_views = getattr(cfg, "arch_same_views", True)
        loss = SimCLRLoss(SimCLRAugment.for_split(cfg.aug, task.train, seed=task.seed), cfg.temperature, same_views)
        periodic: list = []
        search = None
        if self.mode is not None:
            assert isinstance(cfg, SimCLRAdaptConfig)  # mode is set only by _SimCLRAdapt subclasses (its Config)
            keys = E.adapt(model, self.mode, softmax=cfg.arch.softmax, softmax_init=cfg.arch.softmax_init)
            rec.note("theta_keys", keys)
            rec.scalar("thetas_count", len(keys))
            total = cfg.train.total_steps(len(task.train))
            arch_steps = max(1, round(cfg.arch.frac * total))
            search = ArchSearch(model, cfg.arch, rec, arch_steps, loss.reuse, cfg.train.bf16)
            periodic.append((1, search.periodic))
        if cfg.knn_every:
            periodic.append((cfg.knn_every, KnnMonitor(model, task.train, task.val, cfg, rec)))
        hooks = engine.StepHooks(
            loss_fn=loss, after_step=search.after_step if search else None, periodic=tuple(periodic)
        )
        with rec.stage("train"):
            report = engine.fit(
                model,
                task.train,
                cfg.train,
                rec,
                stage="train",
                hooks=hooks,
                seed=task.seed,
                params=weight_params(model),
            )
        if search is not None and not search.done:
            search.finish(report.steps)
        curve = rec.curve("train_loss_nat")
        rec.scalar("ntxent_final_loss_nat", curve[-1][-1] if curve else report.final_loss_nat)
        rec.scalar("ntxent_last_step_loss_nat", report.final_loss_nat)
        if self.mode is None:
            if any(isinstance(m, E.Cell) for m in model.modules()):
                rec.note("architecture", E.readable(model))
            arch = base
        else:
            arch = arch_string(base, self.mode, model)
        info = {"mode": self.mode or "original", "ssl": "simclr", "bank": task.train}
        return Fitted(model, arch, info=info)

    def evaluate(self, fitted: Fitted, split: Split) -> dict[str, float]:
        """Weighted kNN top-1 / NLL with the training split (embedded once, cached) as memory bank."""
        cfg = self.config
        bank: Split = fitted.info["bank"]
        feats = fitted.info.get("_bank_features")
        if feats is None:
            feats = fitted.info["_bank_features"] = embed(fitted.model, bank, cfg.eval_batch)
        return knn_evaluate(
            fitted.model,
            bank,
            split,
            k=cfg.knn_k,
            temperature=cfg.knn_temperature,
            bank_features=feats,
            batch_size=cfg.eval_batch,
        )


@register_method("simclr")
class SimCLR(_SimCLR):
    """SimCLR on the network as designed; kNN evaluation."""


class _SimCLRAdapt(_SimCLR):
    Config: ClassVar[type] = SimCLRAdaptConfig


@register_method("simclr_adapt_cell")
class SimCLRAdaptCell(_SimCLRAdapt):
    """SimCLR with proxyless adaptation, one theta per edge position and cell type."""

    mode = "cell"


@register_method("simclr_adapt_full")
class SimCLRAdaptFull(_SimCLRAdapt):
    """SimCLR with proxyless adaptation, one theta per edge of every cell."""

    mode = "full"


__all__ = [
    "HeadConfig",
    "KnnMonitor",
    "ProjectionHead",
    "SimCLRAdaptConfig",
    "SimCLRConfig",
    "SimCLRLoss",
    "attach_head",
    "knn_scores",
    "simclr_recipe",
]
