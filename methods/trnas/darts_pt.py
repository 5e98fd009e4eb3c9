"""``trnas_dartspt``: DARTS + perturbation-based projection on NB201, with or without Tr-Supernet-i-j.

As darts-pt's code runs it (``nasbench201/train_search.py``, ``projection.py``, ``architect_ig.py``).

Search (first-order DARTS): the training split is halved (``train_frac``) into a weight
part and an architecture part. The supernet's weights train through the shared engine
(SGD 0.025, cosine to 0.001, momentum 0.9, wd 3e-4, clip 5, batch 64; Cutout when
``search.cutout`` > 0). Each iteration first takes one Adam step on the shared ``alpha``
(lr 3e-4, betas (0.5, 0.999), wd 1e-3) on a batch of the architecture part (``AlphaStep`` as
the engine's ``before_step``), then the weight step: darts-pt's order, alpha first. The alpha
batches are augmented as the weight batches are (darts-pt draws both through one transform).
With ``cutout_ramp`` the Cutout probability of search epoch e is e / (epochs - 1) (darts-pt's
ramp: none in the first epoch, every image in the last and in tuning). With transfer the supernet
is Tr-Supernet-i-j (frozen ResNet prefix) and the search warms up for ``warmup_epochs``.

Projection (DARTS-PT): for every undecided edge, in a seeded random order, the
supernet's accuracy on the architecture part (BatchNorm in train mode) is measured with
each op removed in turn; the op whose removal hurts most is kept and the edge becomes
one-hot. Weights and alpha are tuned in one fit (lr 0.0025, constant; one optimiser, as
darts-pt resets its optimiser once) of ``tune`` x (edges - 1) epochs, the decisions at the
start of every ``tune``-th epoch and of the last epoch (``tune_gaps``): for 6 edges and
``tune`` = 10 epochs the gaps are 10, 10, 10, 10, 9 and 1 after the last decision, 50
epochs in all. Every edge is decided exactly once. The series ``proj_removed_top1_pct``
holds the accuracy at (edge decision, op removed); ``proj_tune_steps_count`` the tuning steps.

The derived architecture is trained as the plain NB201 network with ``final`` and
returned. Recorded: ``search_s`` (wall time of the supernet training and the whole
projection: measurements and all tuning, the epoch after the last decision included, which
is what darts-pt's search phase runs and the paper times), ``search_act_mib`` (saved
activations of one supernet batch), ``search_peak_alloc_mib`` (CUDA; projection included, in
the search's precision: ``search_bf16_bool``, ``search_channels_last_bool``),
``found_table_test_top1_pct`` with a NATS-Bench table (``nats_path`` or the tier's default
under the data root, ``common.find_table``; the 200-epoch test accuracy, mean over the table's
seeds named in the note ``table_kind``). ``hessian.every_epochs`` > 0 turns on
Fig. 9's probe (``methods.trnas.hessian``): the series ``search_hessian_eig_nat``, the dominant
eigenvalue of the architecture-split loss w.r.t. alpha every that many epochs of search steps,
without touching the search (its seconds are ``search_hessian_s``, left out of ``search_s``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.data.loader import DeviceLoader, iter_eval
from bench.engine.method import BaseMethod
from bench.measure import MemoryMeter
from bench.registry import register_method
from methods.trnas.common import (
    MIB,
    Builder,
    TransferConfig,
    find_table,
    nb201_train,
    with_warmup,
)
from methods.trnas.hessian import HessianConfig, HessianProbe
from methods.trnas.network import nb201, saved_activation_bytes
from methods.trnas.seeds import role_seed
from methods.trnas.space import OPS, format_arch
from methods.trnas.supernet import ArchState, supernet

if TYPE_CHECKING:
    from methods.trnas.darts_space import DartsArchState


@dataclass(frozen=True)
class ArchOptConfig:
    """Adam on alpha (DARTS defaults)."""

    lr: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-3
    batch_size: int = 64


def _search_default() -> engine.TrainConfig:
    return engine.TrainConfig(
        optimizer="sgd",
        lr=0.025,
        momentum=0.9,
        nesterov=False,
        weight_decay=3e-4,
        batch_size=64,
        epochs=50.0,
        final_lr_frac=0.001 / 0.025,
        clip_grad_norm=5.0,
        crop_pad=4,
        cutout=16,
        log_every=100,
    )


def _tune_default() -> engine.TrainConfig:
    return dataclasses.replace(_search_default(), lr=0.0025, epochs=10.0, schedule="constant")


@dataclass(frozen=True)
class DartsPtConfig:
    """Tr-NAS settings: 50 search epochs (13 warmup with transfer), tune 10 epochs per edge, Cutout on.

    ``tune`` is darts-pt's ``proj_intv``: the tuning between two decisions (``tune_gaps``: 5 x 10
    epochs in all for 6 edges). ``cutout_ramp``: the search's Cutout probability ramps from 0 to 1
    over the epochs (``ramped_cutout``, darts-pt's ``cutout_prob * epoch / (epochs - 1)``);
    False: every image in every epoch.
    """

    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    search: engine.TrainConfig = field(default_factory=_search_default)
    warmup_epochs: float = 13.0
    arch_opt: ArchOptConfig = field(default_factory=ArchOptConfig)
    tune: engine.TrainConfig = field(default_factory=_tune_default)
    train_frac: float = 0.5
    proj_eval_batches: int = 0
    cutout_ramp: bool = True
    final: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    nats_path: str = ""
    nats_dataset: str = ""
    hessian: HessianConfig = field(default_factory=HessianConfig)  # Fig. 9's probe, off by default

    def __post_init__(self) -> None:
        require(0 < self.train_frac < 1, "train_frac must be in (0, 1)")
        require(
            self.N >= 1 and self.C >= 0 and self.warmup_epochs >= 0 and self.proj_eval_batches >= 0,
            "N >= 1, C >= 0, warmup_epochs >= 0, proj_eval_batches >= 0",
        )


class AlphaStep:
    """The ``before_step`` hook: one Adam step on alpha from a batch of the architecture split.

    Run before the weight step of every iteration, darts-pt's order (``architect.step`` and then
    ``model.step``): the weight step then sees the updated alpha. The batches are augmented as the
    weight batches are (``augment``): darts-pt draws both from the training set through one
    transform (crop, flip, Cutout at the epoch's probability).
    """

    def __init__(
        self, net: torch.nn.Module, state: ArchState | DartsArchState, split: Split, cfg: ArchOptConfig, seed: int
    ) -> None:
        self.net, self.state = net, state
        self.opt = torch.optim.Adam(
            [state.alpha], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
        )
        self.loader = DeviceLoader(split, cfg.batch_size, shuffle=True, drop_last=True, seed=seed)
        self._it = iter(self.loader)
        self.steps = 0

    def augment(self, cfg: engine.TrainConfig, cutout_prob: float = 1.0) -> None:
        """Augment the alpha batches as ``cfg`` augments the weight batches (flip, crop, Cutout)."""
        ldr = self.loader
        ldr.flip = cfg.flip != "off" and ldr.split.flip_ok
        ldr.crop_pad, ldr.cutout, ldr.cutout_prob = cfg.crop_pad, cfg.cutout, cutout_prob

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def __call__(self, step: int) -> None:
        xv, yv = self._batch()
        loss = F.cross_entropy(self.net(xv), yv)
        (grad,) = torch.autograd.grad(loss, [self.state.alpha])
        self.opt.zero_grad(set_to_none=True)
        self.state.alpha.grad = grad
        self.opt.step()
        self.steps += 1


def ramped_cutout(epochs: int) -> Callable[[int], float]:
    """darts-pt's Cutout probability in epoch e of an ``epochs``-epoch search: ``e / (epochs - 1)``
    (``cutout_prob * epoch / (epochs - 1)`` with its default ``cutout_prob`` 1): no Cutout in the
    first epoch, every image in the last. A one-epoch search stays at 0 (darts-pt divides by zero)."""
    return lambda e: min(1.0, e / max(1, epochs - 1))


def tune_gaps(decisions: int, interval: int, last: int, *, shorten_last: bool) -> list[int]:
    """Tuning steps after each of ``decisions`` projection decisions, as darts-pt schedules them.

    darts-pt tunes for a fixed number of epochs and decides at the start of every ``proj_intv``-th
    epoch and of the last epoch. On NB201 (``nasbench201/projection.py``) that is ``proj_intv *
    (edges - 1)`` epochs: the last decision comes at the start of the last epoch, so the gap before
    it is one epoch short (``shorten_last``) and one epoch follows it (10, 10, 10, 10, 9, 1 for 6
    edges and ``proj_intv`` 10: 5 x 10 epochs). In the DARTS space (``sota/cnn/projection.py``)
    ``proj_intv * (decisions - 1) + 1`` epochs: ``proj_intv`` after each decision, one after the
    last. Here ``interval`` is ``proj_intv`` in steps and ``last`` one epoch in steps (at most
    ``interval``, so a sub-epoch interval, as the smoke and short tiers use, keeps the order).
    """
    if decisions < 1:
        return []
    gaps = [interval] * (decisions - 1) + [last]
    if shorten_last and decisions > 1:
        gaps[-2] = interval - last
    return gaps


@torch.no_grad()
def train_mode_accuracy(net: torch.nn.Module, split: Split, batches: int = 0, batch_size: int = 256) -> float:
    """Top-1 (%) with BatchNorm in train mode (batch statistics), as DARTS-PT measures it.

    The mode is switched only when the net is not already training (``train()`` walks every
    module, which dominates the cost of a projection measurement on a large supernet).
    """
    was = net.training
    if not was:
        net.train()
    correct = seen = 0
    for k, (x, y) in enumerate(iter_eval(split, batch_size)):
        if batches and k >= batches:
            break
        correct += int((net(x).argmax(1) == y).sum())
        seen += len(y)
    if not was:
        net.train(False)
    return 100.0 * correct / max(1, seen)


def decide_edge(
    net: torch.nn.Module,
    state: ArchState | DartsArchState,
    split: Split,
    edge: int,
    batches: int,
    n_ops: int = len(OPS),
) -> tuple[int, list[float]]:
    """One DARTS-PT op decision: the accuracy with each op of ``edge`` removed in turn; the op whose
    removal hurts most (lowest accuracy; ties: the first, as darts-pt's strict ``<``) is kept.

    ``state`` needs ``removed`` (an (edge, op) pair zeroed while measuring) and ``decide(edge, op)``.
    Returns (kept op, accuracies).
    """
    accs = []
    for op in range(n_ops):
        state.removed = (edge, op)
        accs.append(train_mode_accuracy(net, split, batches))
    state.removed = None
    keep = int(np.argmin(accs))
    state.decide(edge, keep)
    return keep, accs


def project(
    net: torch.nn.Module,
    state: ArchState | DartsArchState,
    split: Split,
    order: list[int],
    batches: int,
    run_steps: Callable[[list[Callable[[], None]]], object],
    rec: Recorder | None = None,
    ops: Sequence[str] = OPS,
) -> list[tuple[int, int, list[float]]]:
    """Decide every edge of ``order`` once with ``decide_edge``; ``run_steps`` runs the decisions
    (``SearchRun.schedule``: with darts-pt's tuning between them). Returns (edge, op, accuracies)
    per decision. ``ops`` names the candidate ops (NB201's by default; the DARTS space has 8)."""
    decisions: list[tuple[int, int, list[float]]] = []

    def step(n: int, edge: int) -> None:
        keep, accs = decide_edge(net, state, split, edge, batches, len(ops))
        decisions.append((edge, keep, accs))
        if rec is not None:
            for op, acc in enumerate(accs):
                rec.point("proj_removed_top1_pct", n, acc, position=op)
            rec.progress(f"projection {n + 1}/{len(order)}: edge {edge} keeps {ops[keep]}")

    run_steps([functools.partial(step, n, edge) for n, edge in enumerate(order)])
    return decisions


def split_halves(train: Split, frac: float, seed: int) -> tuple[Split, Split]:
    """(weight part, architecture part): a seeded ``frac`` / ``1 - frac`` split of ``train``."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=gen).to(train.device)
    cut = max(1, round(frac * len(train)))
    return train.subset(perm[:cut], "search"), train.subset(perm[cut:], "arch")


class SearchRun:
    """The search phase the DARTS+PT methods share (NB201 here, the DARTS space in ``darts_space``).

    On construction: ``search_act_mib`` (saved activations of one search batch), the CUDA
    peak reset, the ``AlphaStep`` hook and the trainable weights. ``search(cfg, cutout_ramp=)``
    trains the supernet through the engine with an alpha step before every weight step (Cutout
    ramped per epoch as darts-pt ramps it, alpha batches included). ``schedule(steps,
    shorten_last=)`` runs the projection decisions with darts-pt's tuning between them
    (``tune_gaps``) as *one* tuning fit (one optimiser, as darts-pt resets its optimiser once before
    projecting), the decisions as its periodic callbacks; ``tune_steps`` counts the steps.
    ``finish()`` records ``search_peak_alloc_mib`` on CUDA.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        state: ArchState | DartsArchState,
        w_part: Split,
        a_part: Split,
        arch_opt: ArchOptConfig,
        tune_cfg: engine.TrainConfig,
        task: Task,
        rec: Recorder,
        batch_size: int,
    ) -> None:
        self.net, self.w_part, self.tune_cfg, self.rec = net, w_part, tune_cfg, rec
        self.seed, self.device = task.seed, task.device
        x, y = w_part.batch(slice(0, min(batch_size, len(w_part))))
        rec.scalar("search_act_mib", saved_activation_bytes(net, x, y) / MIB)
        self.cuda = task.device.type == "cuda"
        self.meter = MemoryMeter(task.device).__enter__() if self.cuda else None  # exited by finish()
        self.hook = AlphaStep(net, state, a_part, arch_opt, role_seed("search-data", task.seed, 3))
        self.weights = [p for p in net.parameters() if p.requires_grad]
        self.quiet = Recorder(task.device, progress=lambda _m: None)
        self.periodic: list[tuple[int, Callable[[int], bool | None]]] = []  # search-only callbacks
        self.tune_steps = 0

    def _epoch_steps(self, cfg: engine.TrainConfig) -> int:
        return max(1, len(self.w_part) // cfg.batch_size)

    def search(self, cfg: engine.TrainConfig, *, cutout_ramp: bool) -> None:
        cuda = self.device.type == "cuda"  # the precision of search_peak_alloc_mib (no claim reads it)
        self.rec.scalar("search_bf16_bool", float(cuda and cfg.bf16))
        self.rec.scalar("search_channels_last_bool", float(cuda and cfg.channels_last))
        self.hook.augment(cfg)
        prob = None
        if cutout_ramp and cfg.cutout:
            ramp = ramped_cutout(math.ceil(cfg.total_steps(len(self.w_part)) / self._epoch_steps(cfg)))

            def prob(epoch: int) -> float:  # the weight and the alpha batches share it (one transform)
                self.hook.loader.cutout_prob = ramp(epoch)
                return self.hook.loader.cutout_prob

        engine.fit(
            self.net,
            self.w_part,
            cfg,
            self.rec,
            stage="search",
            hooks=engine.StepHooks(before_step=self.hook, periodic=tuple(self.periodic)),
            seed=role_seed("search-data", self.seed, 2),
            params=self.weights,
            cutout_prob=prob,
        )

    def schedule(self, steps: Sequence[Callable[[], None]], *, shorten_last: bool) -> list[int]:
        """Run ``steps`` (projection decisions) with darts-pt's tuning between them; returns the gaps.

        The first decision runs now; then one fit of ``sum(gaps)`` tuning steps in which decision
        k runs after ``sum(gaps[:k])`` steps (a periodic callback, outside the timed steps). Cutout
        in tuning applies to every image (darts-pt's ramp ends at 1 and stays there)."""
        interval = self.tune_cfg.total_steps(len(self.w_part))
        gaps = tune_gaps(
            len(steps), interval, min(self._epoch_steps(self.tune_cfg), interval), shorten_last=shorten_last
        )
        if not steps:
            return gaps
        steps[0]()
        due = [int(t) for t in np.cumsum(gaps)[:-1]]
        pending = list(zip(due, steps[1:]))

        def decide(done: int) -> None:
            while pending and pending[0][0] == done:
                pending.pop(0)[1]()

        self.hook.augment(self.tune_cfg)
        engine.fit(
            self.net,
            self.w_part,
            dataclasses.replace(self.tune_cfg, steps=sum(gaps)),
            self.quiet,
            stage="tune",
            hooks=engine.StepHooks(before_step=self.hook, periodic=((1, decide),)),
            seed=role_seed("tune-data", self.seed),
            params=self.weights,
        )
        assert not pending  # every decision was due before the last tuning step
        self.tune_steps += sum(gaps)
        return gaps

    def finish(self) -> None:
        if self.meter is not None:
            self.meter.__exit__(None, None, None)
            self.rec.scalar("search_peak_alloc_mib", self.meter.result()["peak_alloc_mib"])


@register_method("trnas_dartspt")
class TrNasDartsPt(BaseMethod[DartsPtConfig]):
    """DARTS+PT on NB201 with or without the transferred prefix; see the module docstring."""

    target_train_fields = ("final",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = DartsPtConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        table = find_table(task, cfg.nats_path, cfg.nats_dataset)  # before the search: a bad table fails early
        builder = Builder(task, cfg.C, cfg.N, cfg.transfer)
        w_part, a_part = split_halves(task.train, cfg.train_frac, role_seed("search-data", task.seed))
        torch.manual_seed(role_seed("supernet-init", task.seed))
        state = ArchState(task.device, seed=role_seed("supernet-init", task.seed, 1))
        net = builder.wrap(supernet(state, builder.C, cfg.N, task.num_classes))
        search_cfg = with_warmup(cfg.search, cfg.warmup_epochs if cfg.transfer.enabled else 0.0, len(w_part))
        run = SearchRun(net, state, w_part, a_part, cfg.arch_opt, cfg.tune, task, rec, cfg.search.batch_size)
        every = cfg.hessian.every_steps(len(w_part), cfg.search.batch_size)
        probe = (
            HessianProbe(net, state.alpha, a_part, cfg.hessian, role_seed("hessian-probe", task.seed), rec)
            if every
            else None
        )
        if probe is not None:
            run.periodic.append((every, probe))
        with rec.stage("search"):
            run.search(search_cfg, cutout_ramp=cfg.cutout_ramp)
            rec.note("search_argmax_arch", format_arch(state.argmax()))
            rng = np.random.default_rng(role_seed("search-data", task.seed, 1))
            order = [int(e) for e in rng.permutation(np.array(state.undecided()))]
            tune = lambda steps: run.schedule(steps, shorten_last=True)  # noqa: E731
            decisions = project(net, state, a_part, order, cfg.proj_eval_batches, tune, rec)
        run.finish()
        if probe is not None:  # the probe is analysis, not search: its seconds are search_hessian_s, not search_s
            probe.finish()
            rec.scalar("search_s", rec.metrics["search_s"] - probe.watch.total_s)
        arch = tuple(state.decided)
        rec.scalar("alpha_steps", run.hook.steps)
        rec.scalar("proj_decisions_count", len(decisions))
        rec.scalar("proj_tune_steps_count", run.tune_steps)
        rec.note("found_arch", format_arch(arch))
        if table is not None:
            rec.scalar("found_table_test_top1_pct", table.test_accuracy(arch))
            rec.note("table_kind", table.kind([arch]))
        torch.manual_seed(role_seed("final-init", task.seed))
        final = nb201(arch, builder.C, cfg.N, task.num_classes).to(task.device)
        with rec.stage("train"):
            engine.fit(final, task.train, cfg.final, rec, stage="train", seed=role_seed("final-data", task.seed))
        rec.scalar("trainable_params", sum(p.numel() for p in final.parameters() if p.requires_grad))
        return Fitted(final, format_arch(arch), info={"proxy": cfg.transfer.label()})
