"""``trnas_cka``: how similar trained NB201 networks' representations are to B's (the paper's Figs. 1-2).

**Linear CKA** (Kornblith et al. 2019, the paper's Eq. 1): for representations ``X`` [n, p1]
and ``Y`` [n, p2] of the same n examples (any trailing shape, flattened per example), centre
each column over the examples and take

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
              = <Kc, Lc>_F / (||Kc||_F ||Lc||_F),  Kc = Xc Xc^T, Lc = Yc Yc^T,

the HSIC of linear kernels normalised to [0, 1]. It is 1 for X against itself, symmetric, and
invariant to orthogonal transforms and isotropic scaling of either side (not to general
invertible linear maps). ``linear_cka`` computes it in float64 by whichever of the two forms is
cheaper (the feature form when p << n, the Gram form when n << p). A representation that is
constant over the examples (a cell whose every path is ``none`` outputs zeros) has no centred
variance and CKA is 0/0: here it is 0, the similarity of a representation that tells the
examples apart not at all (``CONSTANT_TOL``: centred norm below 1e-7 of the raw norm, the
float32 resolution of the features). Non-finite features are an error.

**The method.** B is the grid's model (``task.build_model()``: the pretrained ResNet-32 with
the task's source weights; ``pretrain_on="target"`` pretrains it on the task's own training
split instead, as the Tr-Net cells do at short and paper tiers). ``archs`` NB201 networks
(``space.sample(archs, task.seed)``: the architectures of ``trnas_rank``; weights from
``role_seed("cka-init", task.seed, k)``, batches from ``role_seed("cka-data", task.seed, k)``,
streams of their own) are trained as plain networks with ``train`` (NB201's recipe;
``train_candidate``, so a diverged training is counted and left out of the similarity).
Then, on the first ``images`` validation images, forward hooks collect the output of the stem
and of every block, in eval mode: B's stem + its blocks (columns, ``1 + len(blocks)``: 16 for
ResNet-32) and the network's stem + its ``3N + 2`` entries, cells and reduction blocks (rows,
18 for N = 5). Row ``i``, column ``j`` is thus the similarity of the two representations that
Tr-Net-i-j splices together: what B's stem + ``j`` blocks hand to NB201 entry ``i``.

Recorded: the series ``cka_linear_ratio`` (step = row, position = column), the CKA matrix
averaged over the trained networks (Fig. 1's last panel); per network the series
``cka_arch_cut_ratio`` (its CKA at the cut ``(cut_i, cut_j)``, step = network number) and
``cka_arch_val_top1_pct`` (its validation accuracy); the note ``cka_examples``: the full
matrices of the worst, median and best network by validation accuracy (Fig. 1's three
single-network panels; the best is the returned one, last) with their architectures and
accuracies. Scalars: ``cka_cut_ratio``
(mean CKA at the cut; default Tr-Net-5-5's), ``cka_stage<s>_ratio`` (mean CKA between the
representations of stage s of both networks, the stem counted in stage 1: the paper's
"higher for low-level, lower for high-level representations" is stage1 > stage3),
``cka_images_count``, ``cka_networks_count`` (networks in the mean), ``cka_diverged_count``,
``cka_constant_count`` (representations that were constant, scored 0) and the stage times
``train_s`` and ``cka_s``. The returned model is the best network by validation accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.data.loader import iter_eval
from bench.engine.method import BaseMethod
from bench.errors import InnerRunsDiverged, InvalidConfig
from bench.models.net import MappedNet
from bench.registry import register_method
from methods.trnas.common import Builder, TransferConfig, nb201_train, pretrained_source, train_candidate
from methods.trnas.seeds import role_seed
from methods.trnas.space import format_arch, sample

CONSTANT_TOL = 1e-7


def _matrix(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a float64 [n, features] matrix (trailing dimensions flattened per example)."""
    t = torch.as_tensor(x)
    if t.ndim < 1 or t.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 examples along the first dimension, got shape {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("CKA of non-finite features is undefined (a diverged network?)")
    return t


def _centred(x: torch.Tensor) -> torch.Tensor | None:
    """Column-centred ``x``, or None when the representation is constant over the examples."""
    xc = x - x.mean(0, keepdim=True)
    if float(xc.norm()) <= CONSTANT_TOL * float(x.norm()):
        return None
    return xc


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA of two representations of the same examples (see the module docstring).

    ``x`` [n, ...] and ``y`` [n, ...]; 0.0 when either is constant over the examples.
    """
    X, Y = _matrix(x), _matrix(y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"x and y must hold the same examples: {X.shape[0]} vs {Y.shape[0]} rows")
    Xc, Yc = _centred(X), _centred(Y)
    if Xc is None or Yc is None:
        return 0.0
    n, p1, p2 = X.shape[0], X.shape[1], Y.shape[1]
    if n * (p1 + p2) <= p1 * p2 + p1 * p1 + p2 * p2:  # Gram form: n^2 (p1 + p2) multiply-adds
        K, L = Xc @ Xc.T, Yc @ Yc.T
        num, den = (K * L).sum(), K.norm() * L.norm()
    else:  # feature form: n (p1 p2 + p1^2 + p2^2)
        num = (Yc.T @ Xc).square().sum()
        den = (Xc.T @ Xc).norm() * (Yc.T @ Yc).norm()
    return float(num / den)


def normalised_gram(x: torch.Tensor) -> torch.Tensor | None:
    """``Kc / ||Kc||_F`` of ``x`` [n, ...] (float64), or None when ``x`` is constant over the examples.

    The CKA of two representations is the Frobenius inner product of their normalised Grams,
    so a set of representations is compared pairwise from one Gram each (``cka_matrix``).
    """
    xc = _centred(_matrix(x))
    if xc is None:
        return None
    k = xc @ xc.T
    return k / k.norm()


def cka_matrix(rows: Sequence[torch.Tensor | None], cols: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """[len(rows), len(cols)] linear CKA from ``normalised_gram`` outputs (None, a constant one, scores 0)."""
    out = torch.zeros(len(rows), len(cols), dtype=torch.float64)
    for r, k in enumerate(rows):
        for c, g in enumerate(cols):
            if k is not None and g is not None:
                out[r, c] = float((k * g).sum())
    return out


def representation_names(net: MappedNet) -> list[str]:
    """The entries whose outputs are compared: the stem's last part, then every block."""
    return [net.structure.stem[-1], *net.structure.blocks]


def representation_stages(net: MappedNet) -> list[int]:
    """0-based stage of each representation (the stem's output counts in the first stage)."""
    return [0] + [net.structure.stage_of(b) for b in net.structure.blocks]


@torch.no_grad()
def representations(net: MappedNet, split: Split, batch_size: int = 256) -> list[torch.Tensor | None]:
    """Normalised centred Grams of the stem's and every block's output on ``split``, in eval mode.

    Forward hooks on the entries collect each output (float32, flattened per example, on the
    split's device); the model's mode is restored afterwards and no parameter or buffer changes.
    """
    names = representation_names(net)
    feats: list[list[torch.Tensor]] = [[] for _ in names]
    handles = []
    for slot, name in enumerate(names):

        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor, slot: int = slot) -> None:
            feats[slot].append(out.detach().float().flatten(1))

        handles.append(net.get_submodule(name).register_forward_hook(hook))
    was = net.training
    net.eval()
    try:
        for x, _ in iter_eval(split, batch_size):
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was)
    grams = []
    for slot in range(len(names)):
        x = torch.cat(feats[slot])
        feats[slot] = []
        grams.append(normalised_gram(x))
    return grams


def stage_means(matrix: torch.Tensor, row_stages: list[int], col_stages: list[int]) -> list[float]:
    """Mean CKA between the representations of stage s of both networks, s = 0 .. min stages - 1."""
    rs, cs = np.array(row_stages), np.array(col_stages)
    m = matrix.numpy()
    return [float(m[np.ix_(rs == s, cs == s)].mean()) for s in range(min(rs.max(), cs.max()) + 1)]


@dataclass(frozen=True)
class CkaConfig:
    """The paper's Fig. 1: 1000 architectures trained with NB201's 200-epoch recipe, cut at Tr-Net-5-5.

    ``images``: validation images the representations are computed on (the paper does not say;
    2048 keeps the float64 Grams at 32 MiB each). ``pretrain_on`` / ``pretrain``: B's weights as in
    ``TransferConfig`` (the task's source, or the target's training split with ``pretrain``).
    """

    archs: int = 1000
    C: int = 0
    N: int = 5
    train: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    images: int = 2048
    batch_size: int = 256
    cut_i: int = 5
    cut_j: int = 5
    pretrain_on: Literal["source", "target"] = "source"
    pretrain: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))

    def __post_init__(self) -> None:
        require(self.archs >= 1 and self.N >= 1 and self.C >= 0, "archs >= 1, N >= 1, C >= 0 (0: B's stem width)")
        require(self.images >= 2 and self.batch_size >= 1, "images >= 2 (CKA centres over examples), batch_size >= 1")
        require(self.cut_i >= 0 and self.cut_j >= 0, f"cut_i and cut_j must be >= 0, got {self.cut_i}, {self.cut_j}")


@register_method("trnas_cka")
class TrNasCka(BaseMethod[CkaConfig]):
    """Linear CKA between B's blocks and trained NB201 networks' cells; see the module docstring."""

    Config: ClassVar[type] = CkaConfig
    name: ClassVar[str]
    target_train_fields = ("train",)

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        # B's weights by the same rule as every Tr-NAS method: no source and pretrain_on="source" is an error.
        source = pretrained_source(task, TransferConfig(pretrain_on=cfg.pretrain_on, pretrain=cfg.pretrain))
        builder = Builder(task, cfg.C, cfg.N, TransferConfig(enabled=False))
        rows, cols = 1 + 3 * cfg.N + 2, 1 + len(source.structure.blocks)
        if cfg.cut_i >= rows or cfg.cut_j >= cols:
            raise InvalidConfig(
                f"cut ({cfg.cut_i}, {cfg.cut_j}) is outside the CKA matrix: i counts NB201 entries 0..{rows - 1} "
                f"(N={cfg.N}), j counts {source.arch_string()} blocks 0..{cols - 1}"
            )
        archs = sample(cfg.archs, task.seed)
        rec.note("archs", [format_arch(a) for a in archs])
        n = min(cfg.images, len(task.val))
        images = task.val.subset(torch.arange(n, device=task.val.device), "cka")
        rec.scalar("cka_images_count", n)
        with rec.stage("cka"):
            b_grams = representations(source, images, cfg.batch_size)
        col_stages = representation_stages(source)
        matrices: list[torch.Tensor] = []
        accs: list[float] = []
        kept: list[int] = []
        constant = sum(g is None for g in b_grams)
        best, best_acc = None, -1.0
        for k, arch in enumerate(archs):
            net = builder.net(arch, seed=role_seed("cka-init", task.seed, k))
            with rec.stage("train"):
                got = train_candidate(
                    net,
                    arch,
                    task.train,
                    task.val,
                    cfg.train,
                    seed=role_seed("cka-data", task.seed, k),
                    stage="cka",
                    rec=rec,
                )
            if got.diverged:
                rec.progress(f"cka {k + 1}/{len(archs)} {format_arch(arch)}: training diverged, left out")
                continue
            with rec.stage("cka"):
                grams = representations(net, images, cfg.batch_size)
                m = cka_matrix(grams, b_grams)
            constant += sum(g is None for g in grams)
            matrices.append(m)
            accs.append(got.val_top1_pct)
            kept.append(k)
            rec.point("cka_arch_cut_ratio", k, float(m[cfg.cut_i, cfg.cut_j]))
            rec.point("cka_arch_val_top1_pct", k, got.val_top1_pct)
            if got.val_top1_pct > best_acc:
                best, best_acc = got.model, got.val_top1_pct
            rec.progress(f"cka {k + 1}/{len(archs)} {format_arch(arch)}: val {got.val_top1_pct:.2f}%")
        rec.scalar("cka_diverged_count", len(archs) - len(kept))
        rec.scalar("cka_constant_count", constant)
        if best is None:
            raise InnerRunsDiverged(
                f"every one of the {len(archs)} trainings diverged; there is no representation to compare"
            )
        mean = torch.stack(matrices).mean(0)
        for r in range(mean.shape[0]):
            for c in range(mean.shape[1]):
                rec.point("cka_linear_ratio", r, float(mean[r, c]), position=c)
        rec.scalar("cka_networks_count", len(matrices))
        rec.scalar("cka_cut_ratio", float(mean[cfg.cut_i, cfg.cut_j]))
        for s, value in enumerate(stage_means(mean, representation_stages(best), col_stages)):
            rec.scalar(f"cka_stage{s + 1}_ratio", value)
        order = np.argsort(accs, kind="stable")
        best_i = accs.index(best_acc)  # the returned network: the first at the best accuracy
        picks = [i for i in dict.fromkeys([accs.index(min(accs)), int(order[len(order) // 2])]) if i != best_i]
        picks.append(best_i)
        rec.note(
            "cka_examples",
            [
                {
                    "arch": format_arch(archs[kept[i]]),
                    "val_top1_pct": accs[i],
                    "matrix": [[round(float(v), 5) for v in row] for row in matrices[i]],
                }
                for i in picks
            ],
        )
        rec.note("cka_rows", ["stem", *[f"entry {i}" for i in range(rows - 1)]])
        rec.note("cka_cols", ["stem", *source.structure.blocks])
        rec.scalar("trainable_params", sum(p.numel() for p in best.parameters() if p.requires_grad))
        return Fitted(best, format_arch(archs[kept[best_i]]), info={"analysis": "cka"})
