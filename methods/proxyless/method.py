"""``original``, ``adapt_cell`` and ``adapt_full``: train a cell-graph model, optionally adapting its edges.

All three train the task's cell-graph model from random initialisation with the same
recipe (methods.md section 4: SGD 0.025, momentum 0.9, wd 3e-4, cosine to 0.001,
batch 96, clip 5, Cutout for NAS models) in one continuous run of the shared engine:

- ``original``: the network as designed (no theta);
- ``adapt_cell`` / ``adapt_full``: every edge becomes
  ``theta_none*0 + theta_id*id(x) + theta_same*op(x)`` (raw, init (0, 0, 1)); for the
  first ``arch.frac`` of the steps (E_arch = 50/600 by default), per mini-batch the
  engine updates the weights and then ``StepHooks.after_step`` updates theta (Adam 3e-4,
  betas (0.5, 0.999)) on the *same* batch with the updated weights. At the end of that
  stage the network is discretised (argmax per edge; none removes the edge, identity
  becomes a skip, the chosen theta is kept as a frozen scalar unless
  ``arch.keep_theta=False``) and weight training continues without re-initialisation
  (same optimiser state and schedule).

Recorded: the series ``theta_none_ratio`` / ``theta_id_ratio`` / ``theta_same_ratio`` at
(step, position = theta index; the note ``theta_keys`` names each position), the note
``architecture`` (readable discretised graph) and ``choices`` (one letter per edge),
``edges_changed_count``, ``edges_total_count``, per cell type
``edges_changed_<type>_count``, per transition ``edges_<from>_to_<to>_count`` (original
``same``/``id``/``none`` to the new effective op), ``arch_steps`` and ``arch_stage_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.measure import Stopwatch
from bench.models.net import build_from_arch_string, model_info
from bench.registry import register_method
from methods.proxyless import edges as E
from methods.proxyless.cells import NAS_FAMILIES, as_cells


def nas_recipe() -> engine.TrainConfig:
    """The DARTS/NAT evaluation recipe at the paper's lr and 600 epochs."""
    return engine.TrainConfig(
        optimizer="sgd",
        lr=0.025,
        momentum=0.9,
        nesterov=False,
        weight_decay=3e-4,
        batch_size=96,
        epochs=600.0,
        final_lr_frac=0.001 / 0.025,
        clip_grad_norm=5.0,
        log_every=500,
    )


@dataclass(frozen=True)
class ArchConfig:
    """The theta optimiser and the architecture stage (unstated in the paper; ours from methods.md)."""

    lr: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    frac: float = 50 / 600
    softmax: bool = False
    softmax_init: float = 1.0
    keep_theta: bool = True
    record_points: int = 20

    def __post_init__(self) -> None:
        require(self.lr > 0, "arch.lr must be > 0")
        require(0.0 < self.frac <= 1.0, f"arch.frac must be in (0, 1], got {self.frac}")
        require(self.record_points >= 1, "arch.record_points must be >= 1")


@dataclass(frozen=True)
class OriginalConfig:
    """The network as designed, trained with the NAS recipe; ``nas_cutout`` for NAS families."""

    train: engine.TrainConfig = field(default_factory=nas_recipe)
    nas_cutout: int = 16

    def __post_init__(self) -> None:
        require(self.nas_cutout >= 0, "nas_cutout must be >= 0")


@dataclass(frozen=True)
class AdaptConfig:
    """``original``'s recipe plus the architecture stage (``arch``)."""

    train: engine.TrainConfig = field(default_factory=nas_recipe)
    arch: ArchConfig = field(default_factory=ArchConfig)
    nas_cutout: int = 16

    def __post_init__(self) -> None:
        require(self.nas_cutout >= 0, "nas_cutout must be >= 0")


def recipe_for(train: engine.TrainConfig, nas_cutout: int, model: str) -> engine.TrainConfig:
    """``train`` with Cutout switched on for NAS families (when not set explicitly)."""
    if nas_cutout and not train.cutout and model_info(model).family in NAS_FAMILIES:
        return dataclasses.replace(train, cutout=nas_cutout)
    return train


def weight_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every trainable parameter except the thetas."""
    skip = {id(m.theta) for m in model.modules() if isinstance(m, E.Edge) and m.theta is not None}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in skip]


def record_changes(model: torch.nn.Module, rec: Recorder, prefix: str = "") -> None:
    """Notes and counts of the discretised architecture (see the module docstring)."""
    changed = E.changed_edges(model)
    total = len(list(E.edges(model)))
    rec.note(f"{prefix}architecture", E.readable(model))
    rec.note(f"{prefix}choices", E.choice_code(model))
    rec.note(f"{prefix}changed_edges", [f"{n}: {a}->{b}" for n, _, a, b in changed])
    rec.scalar(f"{prefix}edges_changed_count", len(changed))
    rec.scalar(f"{prefix}edges_total_count", total)
    types = sorted({c.cell_type for _, c in E.cells(model)})
    by_type = Counter(t for _, t, _, _ in changed)
    for t in types:
        rec.scalar(f"{prefix}edges_changed_{t}_count", by_type.get(t, 0))
    for (a, b), n in sorted(Counter((a, b) for _, _, a, b in changed).items()):
        rec.scalar(f"{prefix}edges_{a}_to_{b}_count", n)


def arch_string(base: str, mode: str, model: torch.nn.Module) -> str:
    """``<base arch>|proxyless(mode=...,choices=...)``: rebuildable with ``rebuild``."""
    return f"{base}|proxyless(mode={mode},choices={E.choice_code(model)})"


def rebuild(arch: str) -> torch.nn.Module:
    """The discretised architecture of ``arch_string`` (fresh weights, scales 1)."""
    base, _, tail = arch.partition("|")
    model = as_cells(build_from_arch_string(base))
    if tail:
        code = tail.split("choices=", 1)[1].rstrip(")")
        letters = {v: k for k, v in E.CODE.items()}
        E.apply_choices(model, [letters[c] for c in code])
    return model


class ArchSearch:
    """The architecture stage: theta steps in ``after_step``, telemetry and discretisation in ``periodic``."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ArchConfig,
        rec: Recorder,
        arch_steps: int,
        loss_fn: engine.LossFn,
        bf16: bool,
    ) -> None:
        self.model, self.cfg, self.rec, self.arch_steps, self.loss_fn = model, cfg, rec, arch_steps, loss_fn
        self.params = list(E.thetas(model).values())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.every = max(1, arch_steps // cfg.record_points)
        self.bf16 = bf16
        self.done = False
        self.clock = Stopwatch(rec.device).start()  # synchronised on CUDA: queued theta steps count here
        self.record(0)

    def after_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Theta update on the same batch with the just-updated weights."""
        if self.done or step >= self.arch_steps:
            return
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda and self.bf16 else contextlib.nullcontext()
        with ctx:
            loss = self.loss_fn(self.model, x, y)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for p, g in zip(self.params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        self.opt.step()

    def periodic(self, done: int) -> bool:
        if self.done:
            return False
        if done % self.every == 0 or done == self.arch_steps:
            self.record(done)
        if done >= self.arch_steps:
            self.finish(done)
        return False

    @torch.no_grad()
    def record(self, step: int) -> None:
        for k, p in enumerate(self.params):
            w = p.detach().float().cpu()
            for name, v in zip(E.CHOICES, w.tolist()):
                self.rec.point(f"theta_{name}_ratio", step, v, position=k)

    def finish(self, step: int) -> None:
        self.rec.scalar("arch_stage_s", self.clock.stop())
        self.rec.scalar("arch_steps", step)
        E.discretise(self.model, keep_theta=self.cfg.keep_theta)
        for p in self.params:
            p.requires_grad_(False)
            p.grad = None
        record_changes(self.model, self.rec)
        self.rec.scalar("trainable_params", sum(p.numel() for p in self.model.parameters() if p.requires_grad))
        self.done = True
        self.rec.progress(f"discretised at step {step}: {self.rec.metrics['edges_changed_count']:.0f} edges changed")


class _CellTrainer(BaseMethod[OriginalConfig | AdaptConfig]):  # Original's config, or _Adapt's (below)
    target_train_fields = ("train",)  # trains on the whole train split (checked at collection)
    Config: ClassVar[type] = OriginalConfig
    mode: ClassVar[str | None] = None
    name: ClassVar[str]


@register_method("original")
class Original(_CellTrainer):
    """The cell-graph network as designed, trained from scratch with the NAS recipe."""

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        model = task.build_model(pretrained=False)
        train = recipe_for(cfg.train, cfg.nas_cutout, task.model)
        with rec.stage("train"):
            engine.fit(model, task.train, train, rec, stage="train", val=task.val, seed=task.seed)
        if any(isinstance(m, E.Cell) for m in model.modules()):
            rec.note("architecture", E.readable(model))
        return Fitted(model, model.arch_string(), info={"mode": "original"})


class _Adapt(_CellTrainer):
    Config: ClassVar[type] = AdaptConfig
    config: AdaptConfig
    mode: ClassVar[str]  # every concrete subclass sets "cell" or "full"

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        model = as_cells(task.build_model(pretrained=False))
        base = model.arch_string()
        keys = E.adapt(model, self.mode, softmax=cfg.arch.softmax, softmax_init=cfg.arch.softmax_init)
        rec.note("theta_keys", keys)
        rec.scalar("thetas_count", len(keys))
        train = recipe_for(cfg.train, cfg.nas_cutout, task.model)
        total = train.total_steps(len(task.train))
        arch_steps = max(1, round(cfg.arch.frac * total))
        search = ArchSearch(model, cfg.arch, rec, arch_steps, engine.default_loss(train.label_smoothing), train.bf16)
        hooks = engine.StepHooks(after_step=search.after_step, periodic=((1, search.periodic),))
        with rec.stage("train"):
            engine.fit(
                model,
                task.train,
                train,
                rec,
                stage="train",
                val=task.val,
                hooks=hooks,
                seed=task.seed,
                params=weight_params(model),
            )
        if not search.done:  # the stage ended before arch_steps (cannot happen with a fixed budget)
            search.finish(total)
        return Fitted(model, arch_string(base, self.mode, model), info={"mode": self.mode})


@register_method("adapt_cell")
class AdaptCell(_Adapt):
    """Proxyless adaptation with one theta per edge position and cell type."""

    mode = "cell"


@register_method("adapt_full")
class AdaptFull(_Adapt):
    """Proxyless adaptation with one theta per edge of every cell."""

    mode = "full"
