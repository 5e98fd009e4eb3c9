"""``trnas_dartspt``: DARTS + perturbation-based projection on NB201, with or without Tr-Supernet-i-j.

Search (first-order DARTS): the training split is halved (``train_frac``) into a weight
part and an architecture part. The supernet's weights train through the shared engine
(SGD 0.025, cosine to 0.001, momentum 0.9, wd 3e-4, clip 5, batch 64; Cutout when
``search.cutout`` > 0); after every weight step an ``after_step`` hook takes one Adam
step on the shared ``alpha`` (lr 3e-4, betas (0.5, 0.999), wd 1e-3) on a batch of the
architecture part (the alternation of DARTS, with w first). With transfer the supernet
is Tr-Supernet-i-j (frozen ResNet prefix) and the search warms up for ``warmup_epochs``.

Projection (DARTS-PT): for every undecided edge, in a seeded random order, the
supernet's accuracy on the architecture part (BatchNorm in train mode) is measured with
each op removed in turn; the op whose removal hurts most is kept and the edge becomes
one-hot; then weights and alpha are tuned (``tune``: lr 0.0025) before the next edge.
Every edge is decided exactly once. The series ``proj_removed_top1_pct`` holds the
accuracy at (edge decision, op removed).

The derived architecture is trained as the plain NB201 network with ``final`` and
returned. Recorded: ``search_s`` (search + projection wall time), ``search_act_mib``
(saved activations of one supernet batch), ``search_peak_alloc_mib`` (CUDA),
``found_table_test_top1_pct`` with a NATS-Bench table (``nats_path`` or the tier's default
under the data root, ``common.find_table``; the 200-epoch test accuracy, mean over the table's
seeds named in the note ``table_kind``).
"""

from __future__ import annotations

import dataclasses
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
    """Tr-NAS settings: 50 search epochs (13 warmup with transfer), tune 10 epochs per edge, Cutout on."""

    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    search: engine.TrainConfig = field(default_factory=_search_default)
    warmup_epochs: float = 13.0
    arch_opt: ArchOptConfig = field(default_factory=ArchOptConfig)
    tune: engine.TrainConfig = field(default_factory=_tune_default)
    train_frac: float = 0.5
    proj_eval_batches: int = 0
    final: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    nats_path: str = ""
    nats_dataset: str = ""

    def __post_init__(self) -> None:
        require(0 < self.train_frac < 1, "train_frac must be in (0, 1)")
        require(
            self.N >= 1 and self.C >= 0 and self.warmup_epochs >= 0 and self.proj_eval_batches >= 0,
            "N >= 1, C >= 0, warmup_epochs >= 0, proj_eval_batches >= 0",
        )


class AlphaStep:
    """The ``after_step`` hook: one Adam step on alpha from a batch of the architecture split."""

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

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def __call__(self, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        xv, yv = self._batch()
        loss = F.cross_entropy(self.net(xv), yv)
        (grad,) = torch.autograd.grad(loss, [self.state.alpha])
        self.opt.zero_grad(set_to_none=True)
        self.state.alpha.grad = grad
        self.opt.step()
        self.steps += 1


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


def project(
    net: torch.nn.Module,
    state: ArchState | DartsArchState,
    split: Split,
    order: list[int],
    batches: int,
    tune: Callable[[int], None],
    rec: Recorder | None = None,
    ops: Sequence[str] = OPS,
) -> list[tuple[int, int, list[float]]]:
    """Decide every edge of ``order`` once: keep the op whose removal hurts accuracy most, then tune.

    ``state`` needs ``removed`` (an (edge, op) pair zeroed while measuring) and
    ``decide(edge, op)``; ``ops`` names the candidate ops (NB201's by default; the DARTS
    space passes its 8, ``methods.trnas.darts_space``).
    """
    decisions = []
    for n, edge in enumerate(order):
        accs = []
        for op in range(len(ops)):
            state.removed = (edge, op)
            accs.append(train_mode_accuracy(net, split, batches))
        state.removed = None
        keep = int(np.argmin(accs))
        state.decide(edge, keep)
        decisions.append((edge, keep, accs))
        if rec is not None:
            for op, acc in enumerate(accs):
                rec.point("proj_removed_top1_pct", n, acc, position=op)
            rec.progress(f"projection {n + 1}/{len(order)}: edge {edge} keeps {ops[keep]}")
        tune(n)
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
    peak reset, the ``AlphaStep`` hook and the trainable weights. ``search(cfg)`` trains the
    supernet through the engine with alpha stepping after every weight step; ``tune(n)``
    is the n-th tuning between projection steps (a quiet recorder, seed ``seed + 100 + n``);
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

    def search(self, cfg: engine.TrainConfig) -> None:
        engine.fit(
            self.net,
            self.w_part,
            cfg,
            self.rec,
            stage="search",
            hooks=engine.StepHooks(after_step=self.hook),
            seed=role_seed("search-data", self.seed, 2),
            params=self.weights,
        )

    def tune(self, n: int) -> None:
        engine.fit(
            self.net,
            self.w_part,
            self.tune_cfg,
            self.quiet,
            stage="tune",
            hooks=engine.StepHooks(after_step=self.hook),
            seed=role_seed("tune-data", self.seed, n),
            params=self.weights,
        )

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
        with rec.stage("search"):
            run.search(search_cfg)
            rec.note("search_argmax_arch", format_arch(state.argmax()))
            order = [
                int(e)
                for e in np.random.default_rng(role_seed("search-data", task.seed, 1)).permutation(
                    np.array(state.undecided())
                )
            ]
            decisions = project(net, state, a_part, order, cfg.proj_eval_batches, run.tune, rec)
        run.finish()
        arch = tuple(state.decided)
        rec.scalar("alpha_steps", run.hook.steps)
        rec.scalar("proj_decisions_count", len(decisions))
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
