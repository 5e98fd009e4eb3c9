"""The one training engine every method uses.

``fit`` trains a model on a ``Split`` with a ``TrainConfig``: SGD (nesterov) or AdamW,
cosine or constant schedule with linear warmup, optional label smoothing and gradient
clipping, bf16 autocast and channels_last on CUDA. Frozen parts are the model's
business (``MappedNet.set_frozen_prefix``: no gradients, BatchNorm in eval, prefix run
under ``no_grad``); the engine optimises exactly the parameters that require grad.

Methods with unusual steps customise through ``StepHooks`` rather than writing their
own loop: ``before_step`` (e.g. sample a subnet, or an architecture step before the
weight step, darts-pt's order), ``loss_fn`` (e.g. a contrastive loss), ``after_step`` (e.g.
an architecture update on the same batch) all run inside the timed step; ``periodic``
callbacks (evaluation, controller updates) run outside it, and one that returns True ends
the stage early (e.g. a search that has converged). ``fit(..., cutout_prob=)`` sets the
Cutout probability of each epoch (darts-pt's ramp) at the epoch's start, outside the timed step.

Per step the engine times the step (``Recorder.step_timer``), keeps the loss on the
device (no ``.item()`` in the timed region), and every ``log_every`` steps checks for a
non-finite loss (raising ``Diverged``), records the mean loss as a curve and prints
progress. FLOPs of one forward+backward and the training memory (``counted_mem_mib``, see
``fit``) are counted on the first (warm-up) step, which runs eagerly.

Speed options (``TrainConfig``; at their defaults a CPU training is what it always was):
``compile`` runs forward and loss through ``torch.compile(model)``, a wrapper used only inside
the step, so the model object, its state_dict keys, frozen prefix and evaluation stay eager. The
first compiled step of each fit compiles; it is left out of the step times and its wall seconds
are ``<stage>_compile_s``. Frames compiled after it (a failed guard: a subnet sampled in
``before_step``, a changed frozen prefix) stay in the timed steps and are counted as
``<stage>_compile_recompiles_count``. ``optimizer_impl`` is the optimiser's implementation
(``"auto"``: fused on CUDA where it can be, else foreach; torch's default loop on CPU); the
one that ran is the note ``optimizer_impl``.

``bench.engine.timing.time_steps`` times the same step (one step builder, ``TrainStep``,
serves both) on synthetic tensors in speed mode: the step-time figure a planner should use for
a training that ``fit`` will run.
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
from bench.engine.speed import compiled_frames, impl_kwargs, optimizer_impl
from bench.errors import Diverged, InvalidConfig
from bench.measure import MIB, SavedBytes, Stopwatch, flop_counter, storage_bytes

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


def make_optimizer(
    params: Iterable[nn.Parameter], cfg: TrainConfig, impl_name: str | None = None
) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg``; weight decay skips 1-D tensors (BN, biases).

    Its update runs as ``impl_name`` says, by default as ``bench.engine.speed.optimizer_impl(params,
    cfg)`` resolves it (a caller that records the implementation resolves it once and passes it);
    ``"auto"`` off CUDA passes torch nothing, so a CPU training is exactly what it was before the
    option existed.
    """
    params = list(params)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    impl = impl_kwargs(impl_name or optimizer_impl(params, cfg), cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **impl
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, **impl)


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


def _batches(
    loader: DeviceLoader, cutout_prob: Callable[[int], float] | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        if cutout_prob is not None:  # set at the start of each epoch, outside the timed step
            p = float(cutout_prob(epoch))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"cutout_prob({epoch}) must be in [0, 1], got {p}")
            loader.cutout_prob = p
        yield from loader
        epoch += 1


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
    cutout_prob: Callable[[int], float] | None = None,
) -> FitReport:
    """Train ``model`` on ``train`` for ``cfg``'s budget; see the module docstring.

    ``cutout_prob(epoch)`` (epoch 0-based, counted over this fit's passes through ``train``) is
    the probability that an image of that epoch gets ``cfg.cutout``'s square, set on the loader
    at the start of the epoch (e.g. darts-pt's ramp). None, the default: every image, as always.

    ``params`` defaults to every parameter that requires grad. Records the curves
    ``<stage>_loss_nat`` and, every ``eval_every`` steps, ``<stage>_<split>_top1_pct`` for
    ``val`` and every split in ``curves`` (e.g. ``finetune_test_top1_pct``: accuracy
    against iteration, never used for selection), the metric ``trainable_params``
    (elements updated by this stage; a later stage overwrites it),
    ``<stage>_step_gflop`` (counted in the first fit of a stage name only: searches that run
    many short fits of one stage, e.g. proxy trainings, pay the counting overhead once), the
    per-step timings, and ``<stage>_stopped_steps`` when a periodic callback ended the stage early.
    With ``cfg.compile``: ``<stage>_compile_s`` (wall seconds of each fit's untimed compile
    step) and ``<stage>_compile_recompiles_count`` (frames compiled after it, process-wide:
    dynamo's counter), both summed over the stage's fits.

    Training memory, counted (in the same first fit of a stage name, on its first step: the
    warm-up step, so timed steps pay nothing): ``<stage>_counted_mem_mib`` is the bytes of the
    model's parameters and buffers (and of ``params``), the gradients of the trained parameters,
    the optimiser state after that step (momentum buffers, Adam moments) and what autograd saved
    for backward in that step's forward (``<stage>_saved_act_mib``, ``bench.measure.SavedBytes``),
    each storage counted once; ``counted_mem_mib`` is the largest over the cell's stages. It is
    exact and independent of the device and of what the process ran before, which a measured
    RSS is not, so it is the memory figure on CPU (on CUDA beside the allocator's
    ``peak_mem_mib``). It leaves out what is not a tensor a step keeps: allocator
    fragmentation and caching, kernel workspaces, temporaries freed within the step (an
    activation's gradient in backward), the data batch, and whatever ``after_step`` allocates.
    """
    hooks = hooks or StepHooks()
    device = train.device
    params = trained_params(model, params, stage)
    rec.scalar("trainable_params", sum(p.numel() for p in params))
    if cfg.batch_size > len(train):  # the loader would train on one batch of the whole split
        raise InvalidConfig(
            f"{stage}: batch_size={cfg.batch_size} but the split it trains on holds {len(train)} images;"
            f" valid batch sizes: 1..{len(train)}"
        )
    rec.note("batch_size", cfg.batch_size)
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
    train_step = TrainStep(model, params, cfg, device, total, hooks)
    rec.note("optimizer_impl", train_step.optimizer_impl)
    timer = rec.step_timer(stage)
    losses = torch.zeros(total, device=device)
    batches = _batches(loader, cutout_prob)
    logged = 0
    rec.progress(f"{stage}: {total} steps, batch {cfg.batch_size}, {len(train)} images, lr {cfg.lr:g}")

    flops_key, mem_key = f"{stage}_step_gflop", f"{stage}_counted_mem_mib"
    for step in range(total):
        x, y = next(batches)
        x = train_step.layout(x)
        # The warm-up step (untimed) of a stage's first fit counts its FLOPs and memory, once per stage.
        counter = flop_counter() if step == 0 and flops_key not in rec.metrics else None
        saved = train_step.saved_bytes() if step == 0 and mem_key not in rec.metrics else None
        eager = counter is not None or saved is not None
        if train_step.compiles_next(eager):
            loss = train_step.compile_step(step, x, y)  # untimed: compiling is no step time
        else:
            timer.start()
            with counter if counter is not None else contextlib.nullcontext():
                loss = train_step(step, x, y, saved, eager=eager)
            timer.stop()
        if counter is not None:
            rec.scalar(flops_key, counter.get_total_flops() / 1e9)
        if saved is not None:
            _record_memory(rec, stage, train_step.counted_bytes(saved), saved.nbytes)
        losses[step] = loss.detach()
        done = step + 1
        if done % cfg.log_every == 0 or done == total:
            logged = _check_and_log(losses, logged, done, total, stage, rec, train_step.opt)
        stop = any([callback(done) for every, callback in hooks.periodic if done % every == 0])
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == total or stop):
            for split in ([val] if val is not None else []) + list(curves):
                rec.point(f"{stage}_{split.name}_top1_pct", done, evaluate(model, split)["top1_pct"])
        if stop and done < total:
            if done % cfg.log_every:
                _check_and_log(losses, logged, done, total, stage, rec, train_step.opt)
            rec.scalar(f"{stage}_stopped_steps", done)
            _record_compile(rec, stage, train_step)
            rec.progress(f"{stage}: stopped early at step {done}/{total}")
            return FitReport(
                steps=done, trainable_params=sum(p.numel() for p in params), final_loss_nat=float(losses[done - 1])
            )
    _record_compile(rec, stage, train_step)
    return FitReport(steps=total, trainable_params=sum(p.numel() for p in params), final_loss_nat=float(losses[-1]))


def trained_params(model: nn.Module, params: Sequence[nn.Parameter] | None, stage: str) -> list[nn.Parameter]:
    """The parameters a stage optimises: ``params``, else every parameter that requires grad."""
    out = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not out:
        raise ValueError(f"stage '{stage}': nothing to train (every parameter is frozen)")
    return out


class TrainStep:
    """The engine's one training step, built once per stage; ``fit`` and ``time_steps`` both call it.

    Building it puts the model in train mode (and in channels_last on CUDA when ``cfg`` says so)
    and makes the optimiser (``make_optimizer``: decay groups, nesterov, ``optimizer_impl``) and
    the lr schedule over ``total`` steps. A call runs ``before_step``, the loss under bf16
    autocast (CUDA and ``cfg.bf16``), backward, optional clipping, the optimiser and schedule
    steps, ``after_step``.

    With ``cfg.compile`` it wraps the model once, ``torch.compile(model)``, and the loss (the
    default one or ``hooks.loss_fn``) gets that wrapper; the model object itself is unchanged
    (its state_dict keys, frozen prefix and evaluation are the eager module's). A counting call
    (``eager=True`` or ``saved``) runs the eager module: FLOPs and saved activations are those
    of the model's own ops. The first compiled call is the compile step, ``compile_step``:
    its callers run it untimed, and frames compiled after it count as ``recompiles()``.
    """

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        cfg: TrainConfig,
        device: torch.device,
        total: int,
        hooks: StepHooks,
    ) -> None:
        cuda = device.type == "cuda"
        self.model, self.params, self.cfg, self.hooks, self.device = model, params, cfg, hooks, device
        self.channels_last = cuda and cfg.channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer_impl = optimizer_impl(params, cfg)
        self.opt = make_optimizer(params, cfg, self.optimizer_impl)
        self.compiled: nn.Module | None = torch.compile(model) if cfg.compile else None
        self.compile_s = 0.0
        self.warmed = False
        self._frames_warm: int | None = None
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, total, cfg))
        self.loss_fn = hooks.loss_fn or default_loss(cfg.label_smoothing)
        self.bf16 = cuda and cfg.bf16
        model.train()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the step trains in (outside the timed region)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def saved_bytes(self) -> SavedBytes:
        """A counter of the activations one step saves (model state excluded: counted apart)."""
        return SavedBytes(exclude=[*self.model.parameters(), *self.model.buffers(), *self.params])

    def __call__(
        self, step: int, x: torch.Tensor, y: torch.Tensor, saved: SavedBytes | None = None, *, eager: bool = False
    ) -> torch.Tensor:
        if self.hooks.before_step is not None:
            self.hooks.before_step(step)
        compiled = None if eager or saved is not None else self.compiled
        module = compiled if compiled is not None else self.model
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast, saved if saved is not None else contextlib.nullcontext():
            loss = self.loss_fn(module, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip_grad_norm:
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip_grad_norm)
        self.opt.step()
        self.sched.step()
        if self.hooks.after_step is not None:
            self.hooks.after_step(step, x, y)
        return loss

    def compiles_next(self, eager: bool = False) -> bool:
        """Whether the next call, unless ``eager``, is the compile step (the first compiled one)."""
        return self.compiled is not None and not eager and not self.warmed

    def compile_step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A call that compiles: its wall seconds (synchronised) add to ``compile_s``, and the
        frames compiled so far become the baseline of ``recompiles()``."""
        watch = Stopwatch(self.device).start()
        loss = self(step, x, y)
        self.compile_s += watch.stop()
        self.warmed = True
        self._frames_warm = compiled_frames()
        return loss

    def recompiles(self) -> int | None:
        """Frames compiled since the compile step (a guard that failed, a new code path); None
        before it or where this torch keeps no count."""
        now = compiled_frames()
        if now is None or self._frames_warm is None:
            return None
        return now - self._frames_warm

    def counted_bytes(self, saved: SavedBytes) -> int:
        """Training memory after a step that ``saved`` counted (see ``fit``): model state,
        gradients, optimiser state and the saved activations, each storage once."""
        weights = [*self.model.parameters(), *self.params]
        grads = [p.grad for p in weights if p.grad is not None]
        state = [t for st in self.opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        return storage_bytes([*weights, *self.model.buffers(), *grads, *state]) + saved.nbytes


def _record_compile(rec: Recorder, stage: str, train_step: TrainStep) -> None:
    """``<stage>_compile_s`` and ``<stage>_compile_recompiles_count`` of a fit whose step was
    compiled, added to those of the stage's earlier fits."""
    if not train_step.warmed:
        return
    for key, value in (
        (f"{stage}_compile_s", train_step.compile_s),
        (f"{stage}_compile_recompiles_count", train_step.recompiles()),
    ):
        if value is not None:
            rec.scalar(key, rec.metrics.get(key, 0.0) + value)


def _record_memory(rec: Recorder, stage: str, counted: int, saved: int) -> None:
    """``<stage>_counted_mem_mib``, ``<stage>_saved_act_mib``, and the cell's ``counted_mem_mib``
    (the largest stage's count: a cell's stages run one after another)."""
    mib = counted / MIB
    rec.scalar(f"{stage}_counted_mem_mib", mib)
    rec.scalar(f"{stage}_saved_act_mib", saved / MIB)
    rec.scalar("counted_mem_mib", max(mib, rec.metrics.get("counted_mem_mib", 0.0)))


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
