"""The one training engine every method uses.

``fit`` trains a model on a ``Split`` with a ``TrainConfig``: SGD (nesterov) or AdamW,
cosine or constant schedule with linear warmup, optional label smoothing and gradient
clipping, bf16 autocast and channels_last on CUDA. Frozen parts are the model's
business (``MappedNet.set_frozen_prefix``: no gradients, BatchNorm in eval, prefix run
under ``no_grad``); the engine optimises exactly the parameters that require grad.

Methods with unusual steps customise through ``StepHooks`` rather than writing their
own loop: ``before_step`` (e.g. sample a subnet), ``loss_fn`` (e.g. a contrastive loss),
``after_step`` (e.g. an architecture update on the same batch) all run inside the
timed step; ``periodic`` callbacks (evaluation, controller updates) run outside it, and
one that returns True ends the stage early (e.g. a search that has converged).

Per step the engine times the step (``Recorder.step_timer``), keeps the loss on the
device (no ``.item()`` in the timed region), and every ``log_every`` steps checks for a
non-finite loss (raising ``Diverged``), records the mean loss as a curve and prints
progress. FLOPs of one forward+backward are counted on the first (warm-up) step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.recorder import Recorder
from bench.contract.settings import TrainConfig
from bench.contract.split import Split
from bench.data.loader import DeviceLoader, iter_eval
from bench.errors import Diverged
from bench.measure import flop_counter

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepHooks:
    """Customisation points of ``fit``; see the module docstring for timing semantics."""

    before_step: Callable[[int], None] | None = None
    loss_fn: LossFn | None = None
    after_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
    periodic: Sequence[tuple[int, Callable[[int], bool | None]]] = field(default_factory=tuple)


@dataclass(frozen=True)
class FitReport:
    """What a training stage did."""

    steps: int
    trainable_params: int
    final_loss_nat: float


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg``; weight decay skips 1-D tensors (BN, biases)."""
    params = list(params)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup then cosine/constant."""
    warm = int(round(cfg.warmup_frac * total))
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    floor = cfg.final_lr_frac
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_loss(label_smoothing: float) -> LossFn:
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y, label_smoothing=label_smoothing)

    return loss


def _batches(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def _flip(cfg: TrainConfig, split: Split) -> bool:
    return cfg.flip == "on" or (cfg.flip == "auto" and split.flip_ok)


def fit(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    rec: Recorder,
    *,
    stage: str = "train",
    val: Split | None = None,
    curves: Sequence[Split] = (),
    hooks: StepHooks | None = None,
    seed: int = 0,
    params: Sequence[nn.Parameter] | None = None,
) -> FitReport:
    """Train ``model`` on ``train`` for ``cfg``'s budget; see the module docstring.

    ``params`` defaults to every parameter that requires grad. Records the curves
    ``<stage>_loss_nat`` and, every ``eval_every`` steps, ``<stage>_<split>_top1_pct`` for
    ``val`` and every split in ``curves`` (e.g. ``finetune_test_top1_pct``: accuracy
    against iteration, never used for selection), the metric ``trainable_params``
    (elements updated by this stage; a later stage overwrites it),
    ``<stage>_step_gflop`` (counted in the first fit of a stage name only: searches that run
    many short fits of one stage, e.g. proxy trainings, pay the counting overhead once), the
    per-step timings, and ``<stage>_stopped_steps`` when a periodic callback ended the stage early.
    """
    hooks = hooks or StepHooks()
    device = train.device
    cuda = device.type == "cuda"
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"stage '{stage}': nothing to train (every parameter is frozen)")
    rec.scalar("trainable_params", sum(p.numel() for p in params))
    rec.note("batch_size", cfg.batch_size)
    channels_last = cuda and cfg.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    total = cfg.total_steps(len(train))
    loader = DeviceLoader(
        train,
        cfg.batch_size,
        shuffle=True,
        flip=_flip(cfg, train),
        crop_pad=cfg.crop_pad,
        cutout=cfg.cutout,
        drop_last=True,
        seed=seed,
    )
    opt = make_optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))
    loss_fn = hooks.loss_fn or default_loss(cfg.label_smoothing)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and cfg.bf16 else contextlib.nullcontext
    timer = rec.step_timer(stage)
    losses = torch.zeros(total, device=device)
    batches = _batches(loader)
    logged = 0
    model.train()
    rec.progress(f"{stage}: {total} steps, batch {cfg.batch_size}, {len(train)} images, lr {cfg.lr:g}")

    def step_fn(step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if hooks.before_step is not None:
            hooks.before_step(step)
        with autocast():
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
        opt.step()
        sched.step()
        if hooks.after_step is not None:
            hooks.after_step(step, x, y)
        return loss

    flops_key = f"{stage}_step_gflop"
    for step in range(total):
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        timer.start()
        if step == 0 and flops_key not in rec.metrics:  # warm-up step (untimed): count its FLOPs once per stage
            counter = flop_counter()
            with counter:
                loss = step_fn(0, x, y)
            rec.scalar(flops_key, counter.get_total_flops() / 1e9)
        else:
            loss = step_fn(step, x, y)
        timer.stop()
        losses[step] = loss.detach()
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            logged = _check_and_log(losses, logged, done, total, stage, rec, opt)
        stop = any([callback(done) for every, callback in hooks.periodic if done % every == 0])
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == total or stop):
            for split in ([val] if val is not None else []) + list(curves):
                rec.point(f"{stage}_{split.name}_top1_pct", done, evaluate(model, split)["top1_pct"])
        if stop and done < total:
            if done % cfg.log_every:
                _check_and_log(losses, logged, done, total, stage, rec, opt)
            rec.scalar(f"{stage}_stopped_steps", done)
            rec.progress(f"{stage}: stopped early at step {done}/{total}")
            return FitReport(
                steps=done, trainable_params=sum(p.numel() for p in params), final_loss_nat=float(losses[done - 1])
            )
    return FitReport(steps=total, trainable_params=sum(p.numel() for p in params), final_loss_nat=float(losses[-1]))


def _check_and_log(
    losses: torch.Tensor, logged: int, done: int, total: int, stage: str, rec: Recorder, opt: torch.optim.Optimizer
) -> int:
    """Divergence check and progress for steps [logged, done); returns the new ``logged``."""
    chunk = losses[logged:done]
    finite = torch.isfinite(chunk)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0]) + logged
        raise Diverged(bad, float(losses[bad]), stage)
    mean = float(chunk.mean())
    rec.point(f"{stage}_loss_nat", done, mean)
    rec.progress(f"{stage}: step {done}/{total} loss {mean:.4f} lr {opt.param_groups[0]['lr']:.3g}")
    return done


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 256, bf16: bool = True) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy (nats) of ``model`` on ``split``."""
    was_training = model.training
    model.eval()
    cuda = split.device.type == "cuda"
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and bf16 else contextlib.nullcontext()
    correct = torch.zeros((), device=split.device)
    loss_sum = torch.zeros((), device=split.device)
    try:
        with ctx:
            for x, y in iter_eval(split, batch_size):
                logits = model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
    finally:
        model.train(was_training)
    n = max(1, len(split))
    return {"top1_pct": 100.0 * float(correct) / n, "loss_nat": float(loss_sum) / n}
