"""The DARTS search space with a frozen pretrained ResNet-20 prefix (Tr-NAS's second setting).

**Space.** Two-input cells: nodes 0 and 1 are the cell inputs c_{k-2} and c_{k-1}
(preprocessed by ReLU-conv1x1-BN, or ``FactorizedReduce`` for c_{k-2} after a reduction
cell), then ``STEPS`` = 4 intermediate nodes; node i sums one edge from every earlier
node (2 + 3 + 4 + 5 = 14 edges, ``EDGES``), each a mixture of the 8 DARTS ops
(``PRIMITIVES``; ``skip_connect`` is ``FactorizedReduce`` on the stride-2 edges of a
reduction cell, the pools are followed by BN as in DARTS search). The cell output is the
channel concatenation of the 4 intermediate nodes (4C). ``search_supernet``: stem
conv3x3 -> 3C + BN, ``layers`` = 8 cells at C = 16 with reduction cells (2C, 4C) at
``layers // 3`` and ``2 * layers // 3`` (cells 2 and 5), GAP, linear. Search BN layers
have no affine parameters (DARTS); the ops themselves are the ones of
``methods.proxyless.cells`` (``darts_op``, ``sep_conv``, ``dil_conv``, ``ReLUConvBN``).

**Architecture parameters.** ``DartsArchState.alpha`` is one (2, 14, 8) leaf tensor:
``alpha[0]`` for every normal cell, ``alpha[1]`` for every reduction cell (DARTS'
``alphas_normal`` / ``alphas_reduce``); it is not a module parameter, so the weight
optimiser never sees it, and ``darts_pt.AlphaStep`` (Adam on ``state.alpha``) drives it
unchanged. Edges are numbered globally: ``g = 14 * t + e`` (t = 0 normal, 1 reduce).

**Projection (DARTS-PT, darts-pt's ``sota/cnn/projection.py``).** Per step one normal and one
reduction edge are decided by ``darts_pt.decide_edge`` (remove each op in turn, keep the op whose
removal hurts the architecture-split accuracy most, with BN in train mode); when every op is
decided, per step one normal and one reduction *node* chooses its 2 inputs by ``decide_node``,
darts-pt's ``project_edge``: rounds that measure each remaining input removed alone and drop the
one whose removal hurts least, until 2 remain. The first node has only its 2 inputs and keeps
both without a step (as darts-pt, whose edge projection runs over the 3 later nodes): 14 op
steps + 3 node steps. Tuning is one fit (``SearchRun.schedule``) of ``tune`` x 16 + 1 epochs:
``tune`` epochs after each step but the last, one epoch after it (darts-pt's ``proj_intv *
num_projs + 1``).
``DartsArchState.weights`` applies the decisions: decided edges are one-hot, removed ops /
edges zero, edges a decided node dropped zero (not renormalised,
as DARTS-PT does).

**Genotype.** Per node its 2 kept edges with their decided op (sorted by source). An
edge decided as ``none`` that a node keeps (possible only where a node has no choice)
gets the best non-``none`` op by alpha (``none_fallbacks`` counts them). Strings are
DARTS' ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)``
and round-trip through ``parse_genotype``. ``darts_network`` builds the fixed network
of a genotype (the DARTS evaluation network, 20 cells at C = 36 by default, without the
auxiliary head and drop-path, which the shared engine does not provide) from
``methods.proxyless.cells.darts_cell``.

**Transfer (Tr-Supernet-i-j).** ``darts_transfer(net, source, i, j)`` replaces the stem
and cells 0..i-1 by the stem and blocks 1..j of the pretrained ResNet ``source``
(B = wide ResNet-20, 64/128/256 channels: cells 0-1 by stem + blocks 1-3 for C = 16),
frozen (``requires_grad`` off, BN eval, ``no_grad``: no activation memory). Cell i takes
s0 = the output of block j-1 (the stem's for j = 1) and s1 = the output of block j; both
must have the shape the replaced cells would have produced, else ``InvalidConfig`` names
the pairs that fit.

**Method** ``trnas_dartspt_darts`` (``TrNasDartsPtDarts``): first-order DARTS search
through the engine with ``AlphaStep`` as ``before_step``, alpha first (DARTS hyperparameters,
50 epochs, Cutout ramped as darts-pt ramps it with ``cutout_ramp``, 5 warmup epochs with
transfer: paper Sec. 4.3.2 and A.1), projection as above, then the derived network trained from
scratch with ``final``. Recorded: ``search_s`` (search + projection, measurements and all
tuning), ``proj_tune_steps_count``, ``search_act_mib`` (saved activations of one
supernet batch), ``search_peak_alloc_mib`` (CUDA), notes ``found_genotype`` and
``search_argmax_genotype``, series ``proj_removed_top1_pct`` and
``proj_edge_removed_top1_pct``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InvalidConfig
from bench.models.net import MappedNet, StructuralMap
from bench.models.net import build_model as build_arch
from bench.registry import register_method
from methods.proxyless.cells import CellNet, ReLUConvBN, darts_cell, darts_op, dil_conv
from methods.proxyless.edges import EdgeSpec, FactorizedReduce, PairStem, TakeLast
from methods.trnas.common import TransferConfig, pretrained_source, with_warmup
from methods.trnas.darts_pt import (
    ArchOptConfig,
    SearchRun,
    _search_default,
    _tune_default,
    decide_edge,
    split_halves,
    train_mode_accuracy,
)
from methods.trnas.network import _source_layout
from methods.trnas.seeds import role_seed

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NUM_OPS = len(PRIMITIVES)
STEPS = 4
EDGES: tuple[tuple[int, int], ...] = tuple((node, src) for node in range(STEPS) for src in range(node + 2))
"""(intermediate node 0..3, source node 0..node+1) of each of the 14 edges, DARTS' order."""
NUM_EDGES = len(EDGES)
CELL_TYPES = ("normal", "reduce")
NODE_EDGES: tuple[tuple[int, ...], ...] = tuple(
    tuple(k for k, (n, _) in enumerate(EDGES) if n == node) for node in range(STEPS)
)


# ----------------------------------------------------------------------------- genotypes


@dataclass(frozen=True)
class Genotype:
    """A DARTS cell pair: per cell type 8 (op, source node) pairs, two per intermediate node."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        for kind in CELL_TYPES:
            genes = getattr(self, kind)
            if len(genes) != 2 * STEPS:
                raise InvalidConfig(f"a {kind} cell needs {2 * STEPS} (op, input) pairs, got {len(genes)}")
            for k, (op, src) in enumerate(genes):
                node = k // 2
                if op not in PRIMITIVES or op == "none":
                    raise InvalidConfig(f"{kind} gene {k}: op {op!r} is not one of {', '.join(PRIMITIVES[1:])}")
                if not 0 <= src < node + 2:
                    raise InvalidConfig(f"{kind} gene {k}: node {node + 2} can read nodes 0..{node + 1}, got {src}")
            for node in range(STEPS):
                if genes[2 * node][1] == genes[2 * node + 1][1]:
                    raise InvalidConfig(f"{kind} node {node + 2} reads node {genes[2 * node][1]} twice")


def format_genotype(g: Genotype) -> str:
    """DARTS' ``Genotype(...)`` string (concat of nodes 2-5)."""

    def genes(seq: tuple[tuple[str, int], ...]) -> str:
        return "[" + ", ".join(f"('{op}', {src})" for op, src in seq) + "]"

    concat = list(range(2, 2 + STEPS))
    return (
        f"Genotype(normal={genes(g.normal)}, normal_concat={concat}, reduce={genes(g.reduce)}, reduce_concat={concat})"
    )


_GENOTYPE = re.compile(
    r"^Genotype\(normal=(\[.*?\]), normal_concat=\[2, 3, 4, 5\], "
    r"reduce=(\[.*?\]), reduce_concat=\[2, 3, 4, 5\]\)$"
)


def parse_genotype(text: str) -> Genotype:
    """The inverse of ``format_genotype``; a malformed string is an ``InvalidConfig``."""
    m = _GENOTYPE.match(text.strip())
    if not m:
        raise InvalidConfig(
            f"not a DARTS genotype string (Genotype(normal=[...], normal_concat=[2, 3, 4, 5], "
            f"reduce=[...], reduce_concat=[2, 3, 4, 5])): {text[:80]!r}"
        )
    try:
        normal, reduce = (tuple((str(op), int(src)) for op, src in ast.literal_eval(part)) for part in m.groups())
    except (ValueError, SyntaxError, TypeError) as err:
        raise InvalidConfig(f"malformed genes in {text[:80]!r}: {err}") from None
    return Genotype(normal, reduce)


# ----------------------------------------------------------------------------- arch state


class DartsArchState:
    """alpha (2 x 14 x 8) and the projection decisions; see the module docstring."""

    def __init__(self, device: torch.device | str = "cpu", init_std: float = 1e-3, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        alpha = init_std * torch.randn(len(CELL_TYPES), NUM_EDGES, NUM_OPS, generator=gen)
        self.alpha = alpha.to(device).requires_grad_(True)
        self.decided = [-1] * (len(CELL_TYPES) * NUM_EDGES)  # op per global edge
        self.kept: list[tuple[int, int] | None] = [None] * (len(CELL_TYPES) * STEPS)  # edges per (t, node)
        self.removed: tuple[int, int] | None = None  # (global edge, op) zeroed while measuring
        self.removed_edge: int | None = None  # global edge zeroed while measuring

    # -- what the cells read

    def zero(self, t: int) -> list[list[bool]]:
        """``zero[e][o]``: op o of edge e of cell type t contributes nothing now (skipped)."""
        out = []
        for e in range(NUM_EDGES):
            g = t * NUM_EDGES + e
            node = EDGES[e][0]
            kept = self.kept[t * STEPS + node]
            if self.removed_edge == g or (kept is not None and g not in kept):
                out.append([True] * NUM_OPS)
                continue
            row = [o == 0 for o in range(NUM_OPS)]  # none contributes zero
            if self.decided[g] >= 0:
                row = [True] * NUM_OPS
                row[self.decided[g]] = self.decided[g] == 0
            if self.removed is not None and self.removed[0] == g:
                row[self.removed[1]] = True
            out.append(row)
        return out

    def weights(self, t: int) -> torch.Tensor:
        """(14, 8) op weights of cell type ``t``: softmax(alpha), with the decisions applied."""
        w = torch.softmax(self.alpha[t], dim=-1)
        if (
            not any(d >= 0 for d in self.decided)
            and all(k is None for k in self.kept)
            and self.removed is None
            and self.removed_edge is None
        ):
            return w
        mask = torch.ones(NUM_EDGES, NUM_OPS)  # built on the CPU, moved once (no per-element kernels on GPU)
        fixed = torch.zeros(NUM_EDGES, NUM_OPS)
        keep = torch.ones(NUM_EDGES, NUM_OPS)
        for e in range(NUM_EDGES):
            g = t * NUM_EDGES + e
            if self.decided[g] >= 0:
                mask[e] = 0
                fixed[e, self.decided[g]] = 1
            kept = self.kept[t * STEPS + EDGES[e][0]]
            if self.removed_edge == g or (kept is not None and g not in kept):
                keep[e] = 0
            if self.removed is not None and self.removed[0] == g:
                keep[e, self.removed[1]] = 0
        mask, fixed, keep = (v.to(device=w.device, dtype=w.dtype) for v in (mask, fixed, keep))
        return (w * mask + fixed) * keep

    # -- decisions

    def decide(self, edge: int, op: int) -> None:
        """Make global ``edge`` one-hot on ``op``; an edge is decided once."""
        if not 0 <= edge < len(self.decided) or not 0 <= op < NUM_OPS:
            raise InvalidConfig(
                f"edge must be in 0..{len(self.decided) - 1} and op in 0..{NUM_OPS - 1}, got {edge}, {op}"
            )
        if self.decided[edge] >= 0:
            raise ValueError(f"edge {edge} was already decided ({PRIMITIVES[self.decided[edge]]})")
        self.decided[edge] = op

    def undecided(self, t: int) -> list[int]:
        """Global ids of the undecided edges of cell type ``t``."""
        return [t * NUM_EDGES + e for e in range(NUM_EDGES) if self.decided[t * NUM_EDGES + e] < 0]

    def node_inputs(self, node_id: int) -> list[int]:
        """Global edge ids into node ``node_id`` = t * STEPS + node."""
        t, node = divmod(node_id, STEPS)
        return [t * NUM_EDGES + e for e in NODE_EDGES[node]]

    def decide_node(self, node_id: int, edges: Sequence[int]) -> None:
        """Node ``node_id`` keeps exactly the 2 input ``edges``; a node is decided once."""
        inputs = self.node_inputs(node_id)
        if len(set(edges)) != 2 or not set(edges) <= set(inputs):
            raise InvalidConfig(f"node {node_id} keeps exactly 2 of its input edges {inputs}, got {list(edges)}")
        if self.kept[node_id] is not None:
            raise ValueError(f"node {node_id} was already decided (keeps {self.kept[node_id]})")
        self.kept[node_id] = (min(edges), max(edges))

    def decide_by_alpha(self, edge: int) -> None:
        """Decide ``edge`` as DARTS derives it: the strongest non-``none`` op of alpha."""
        self.decide(edge, self._best_real_op(edge))

    def decide_node_by_alpha(self, node_id: int) -> None:
        """Keep the 2 inputs whose strongest non-``none`` weight (decided op: 1) is largest, as DARTS does."""
        t = node_id // STEPS
        w = self.weights(t).detach()
        inputs = self.node_inputs(node_id)
        strength = [float(w[g - t * NUM_EDGES, 1:].max()) for g in inputs]
        self.decide_node(node_id, [inputs[k] for k in np.argsort([-v for v in strength], kind="stable")[:2]])

    def undecided_nodes(self, t: int) -> list[int]:
        return [t * STEPS + n for n in range(STEPS) if self.kept[t * STEPS + n] is None]

    # -- derivation

    def _best_real_op(self, g: int) -> int:
        t, e = divmod(g, NUM_EDGES)
        row = self.alpha.detach()[t, e].clone()
        row[0] = -float("inf")
        return int(row.argmax())

    def genotype(self) -> tuple[Genotype, int]:
        """(genotype, none_fallbacks) of a fully projected state (every edge and node decided)."""
        if any(d < 0 for d in self.decided) or any(k is None for k in self.kept):
            raise ValueError("genotype() needs every edge and every node decided; project first")
        fallbacks = 0
        cells = []
        for t in range(len(CELL_TYPES)):
            genes = []
            for node in range(STEPS):
                for g in self.kept[t * STEPS + node]:  # type: ignore[union-attr]
                    op = self.decided[g]
                    if op == 0:
                        op, fallbacks = self._best_real_op(g), fallbacks + 1
                    genes.append((PRIMITIVES[op], EDGES[g - t * NUM_EDGES][1]))
            cells.append(tuple(genes))
        return Genotype(*cells), fallbacks

    def argmax_genotype(self) -> Genotype:
        """DARTS' own derivation from alpha: per node the 2 edges with the strongest non-none op."""
        cells = []
        w = torch.softmax(self.alpha.detach(), dim=-1)
        for t in range(len(CELL_TYPES)):
            genes = []
            for node in range(STEPS):
                edges = NODE_EDGES[node]
                strength = [float(w[t, e, 1:].max()) for e in edges]
                top = sorted(sorted(range(len(edges)), key=lambda k: -strength[k])[:2])
                for k in top:
                    genes.append((PRIMITIVES[1 + int(w[t, edges[k], 1:].argmax())], EDGES[edges[k]][1]))
            cells.append(tuple(genes))
        return Genotype(*cells)


# ----------------------------------------------------------------------------- modules


def _without_affine(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by one without affine parameters (DARTS search)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, affine=False))
        else:
            _without_affine(child)
    return module


def search_op(name: str, c: int, stride: int) -> nn.Module | None:
    """One candidate op of a search edge (``None`` for ``none``), BN without affine."""
    if name == "none":
        return None
    if name == "dil_conv_5x5":
        op: nn.Module = dil_conv(c, 5, stride)
    else:
        op = darts_op(name, c, stride)
    if "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
    return _without_affine(op)


class SearchCell(nn.Module):
    """A two-input DARTS search cell whose 14 edges mix the 8 ops with ``state.weights(t)``."""

    def __init__(
        self, state: DartsArchState, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
    ) -> None:
        super().__init__()
        self._state = [state]  # a list, so the state is not registered as a submodule
        self.t = 1 if reduction else 0
        self.reduction = reduction
        self.pre0 = (
            FactorizedReduce(c_pp, c, affine=False) if reduction_prev else _without_affine(ReLUConvBN(c_pp, c, 1, 1, 0))
        )
        self.pre1 = _without_affine(ReLUConvBN(c_p, c, 1, 1, 0))
        self.edges = nn.ModuleList()
        for _, src in EDGES:
            stride = 2 if reduction and src < 2 else 1
            ops = [search_op(name, c, stride) for name in PRIMITIVES]
            self.edges.append(nn.ModuleList([op if op is not None else nn.Identity() for op in ops]))

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s0, s1 = pair
        state = self._state[0]
        w, zero = state.weights(self.t), state.zero(self.t)
        nodes = [self.pre0(s0), self.pre1(s1)]
        for node in range(STEPS):
            total = None
            for e in NODE_EDGES[node]:
                src = EDGES[e][1]
                for o, op in enumerate(self.edges[e]):
                    if zero[e][o]:
                        continue
                    y = w[e, o] * op(nodes[src])
                    total = y if total is None else total + y
            if total is None:  # every input removed: zeros of the node's shape
                ref = nodes[1]
                h, wd = ref.shape[-2:]
                f = 2 if self.reduction else 1
                total = ref.new_zeros(ref.shape[0], ref.shape[1], -(-h // f), -(-wd // f))
            nodes.append(total)
        return s1, torch.cat(nodes[2:], dim=1)


@dataclass(frozen=True)
class CellShape:
    """Channels of a cell's inputs and output, and the downsampling of its output."""

    c_pp: int
    c_p: int
    c: int
    reduction: bool
    reduction_prev: bool
    out_channels: int
    down: int


def cell_layout(C: int, layers: int, stem_multiplier: int = 3) -> list[CellShape]:
    """DARTS' channel bookkeeping: reductions at layers // 3 and 2 * layers // 3 double C."""
    out, c_curr = [], stem_multiplier * C
    c_pp, c_p, c_curr = c_curr, c_curr, C
    down, reduction_prev = 1, False
    for k in range(layers):
        reduction = k in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
            down *= 2
        out.append(CellShape(c_pp, c_p, c_curr, reduction, reduction_prev, STEPS * c_curr, down))
        c_pp, c_p, reduction_prev = c_p, STEPS * c_curr, reduction
    return out


def _stages(layout: Sequence[CellShape], first: int = 0, prefix: str = "cells") -> list[list[str]]:
    """Block names grouped by resolution."""
    stages: dict[int, list[str]] = {}
    for k, shape in enumerate(layout):
        if k >= first:
            stages.setdefault(shape.down, []).append(f"{prefix}.{k - first}")
    return [stages[d] for d in sorted(stages)]


class DartsSupernet(MappedNet):
    """The 8-cell DARTS search network (see the module docstring)."""

    def __init__(
        self, state: DartsArchState, C: int = 16, layers: int = 8, num_classes: int = 10, stem_multiplier: int = 3
    ) -> None:
        super().__init__()
        if C < 2 or layers < 3:
            raise InvalidConfig(f"the DARTS supernet needs C >= 2 and layers >= 3, got C={C}, layers={layers}")
        self.C, self.layers, self.stem_multiplier = C, layers, stem_multiplier
        self.layout = cell_layout(C, layers, stem_multiplier)
        c_stem = stem_multiplier * C
        self.stem = PairStem(nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)))
        self.cells = nn.ModuleList(
            [SearchCell(state, s.c_pp, s.c_p, s.c, s.reduction, s.reduction_prev) for s in self.layout]
        )
        self.last = TakeLast()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(self.layout[-1].out_channels, num_classes)
        structure = StructuralMap(
            stem=("stem",),
            stages=tuple(tuple(s) for s in _stages(self.layout)),
            head=("last", "gap", "flatten", "classifier"),
            classifier="classifier",
        )
        self._set_structure(structure, "darts_supernet", {"C": C, "layers": layers, "num_classes": num_classes})

    def input_shapes(self, i: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((channels, down) of s0, of s1) that cell ``i`` reads."""
        stem = (self.stem_multiplier * self.C, 1)
        outs = [stem, stem] + [(s.out_channels, s.down) for s in self.layout]
        return outs[i], outs[i + 1]


def search_supernet(state: DartsArchState, C: int = 16, layers: int = 8, num_classes: int = 10) -> DartsSupernet:
    """The DARTS supernet whose normal / reduction cells share ``state``'s alpha."""
    return DartsSupernet(state, C, layers, num_classes)


# ----------------------------------------------------------------------------- transfer


class KeepInput(nn.Module):
    """Runs ``block`` and returns (its input, its output): the (s0, s1) pair of the first cell."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.block(x)


def valid_darts_pairs(net: DartsSupernet, source: MappedNet) -> list[tuple[int, int]]:
    """Every (i, j) for which B's outputs after blocks j-1 and j have the shapes cell i reads."""
    src = _source_layout(source)
    return [
        (i, j) for i in range(1, net.layers) for j in range(1, len(src)) if (src[j - 1], src[j]) == net.input_shapes(i)
    ]


def check_darts_transfer(net: DartsSupernet, source: MappedNet, i: int, j: int) -> None:
    """Raise ``InvalidConfig`` (listing the pairs that fit) unless Tr-Supernet-i-j fits."""
    n_src = len(source.structure.blocks)
    if not 1 <= j <= n_src:
        raise InvalidConfig(f"j must be in 1..{n_src} (blocks of {source.arch_string()}), got {j}")
    if not 1 <= i < net.layers:
        raise InvalidConfig(f"i counts replaced cells: 1..{net.layers - 1} for {net.layers} cells, got {i}")
    src = _source_layout(source)
    have, want = (src[j - 1], src[j]), net.input_shapes(i)
    if have != want:
        fits = valid_darts_pairs(net, source)
        raise InvalidConfig(
            f"Tr-Supernet-{i}-{j} does not fit the DARTS space: B's outputs after block {j - 1} and {j} are "
            f"{have[0][0]} ch at 1/{have[0][1]} and {have[1][0]} ch at 1/{have[1][1]}, but cell {i} (C={net.C}, "
            f"{net.layers} cells) reads s0 = {want[0][0]} ch at 1/{want[0][1]} and s1 = {want[1][0]} ch at "
            f"1/{want[1][1]}. Pairs that fit: {fits or 'none (B stage 1 must have 4C channels)'}"
        )


class DartsTransferNet(MappedNet):
    """Tr-Supernet-i-j in the DARTS space: frozen B stem + blocks 1..j, then cells i.. (see the docstring)."""

    def __init__(self, net: DartsSupernet, source: MappedNet, i: int, j: int) -> None:
        super().__init__()
        check_darts_transfer(net, source, i, j)
        self.C, self.layers, self.i, self.j = net.C, net.layers, i, j
        self.src_stem = nn.Sequential(*[source.get_submodule(n) for n in source.structure.stem])
        names = list(source.structure.blocks[:j])
        blocks: list[nn.Module] = [source.get_submodule(n) for n in names]
        blocks[-1] = KeepInput(blocks[-1])
        self.src_blocks = nn.ModuleList(blocks)
        self.cells = nn.ModuleList(list(net.cells)[i:])
        self.last, self.gap, self.flatten, self.classifier = net.last, net.gap, net.flatten, net.classifier
        prefix = [[f"src_blocks.{names.index(b)}" for b in stage if b in names] for stage in source.structure.stages]
        stages = [s for s in prefix if s] + _stages(net.layout, first=i)
        structure = StructuralMap(
            stem=("src_stem",),
            stages=tuple(tuple(s) for s in stages),
            head=net.structure.head,
            classifier=net.structure.classifier,
        )
        self._set_structure(structure, f"darts_tr{i}_{j}", {"C": net.C, "layers": net.layers})
        self.set_frozen_prefix(1 + j)


def darts_transfer(net: DartsSupernet, source: MappedNet, i: int = 2, j: int = 3) -> DartsTransferNet:
    """Tr-Supernet-i-j of the DARTS space (paper: i = 2 cells replaced by j = 3 ResNet-20 blocks)."""
    return DartsTransferNet(net, source, i, j)


# ----------------------------------------------------------------------------- derived network


def _fixed_cell(
    genes: Sequence[tuple[str, int]], c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
) -> nn.Module:
    """``darts_cell`` of ``genes``; ``dil_conv_5x5`` (absent from ``darts_op``) is swapped in after."""
    five = [k for k, (op, _) in enumerate(genes) if op == "dil_conv_5x5"]
    cell = darts_cell(
        [("dil_conv_3x3" if k in five else op, src) for k, (op, src) in enumerate(genes)],
        c_pp,
        c_p,
        c,
        reduction,
        reduction_prev,
    )
    for k in five:
        edge = cell.edges[k]
        edge.op = dil_conv(c, 5, 2 if reduction and genes[k][1] < 2 else 1)
        edge.spec = EdgeSpec(edge.spec.src, edge.spec.dst, "op", "dil_conv_5x5")
    return cell


def darts_network(genotype: Genotype, C: int = 36, layers: int = 20, num_classes: int = 10) -> CellNet:
    """The fixed DARTS network of ``genotype`` (stem 3C, ``layers`` cells, GAP, linear)."""
    if C < 2 or layers < 3:
        raise InvalidConfig(f"a DARTS network needs C >= 2 and layers >= 3, got C={C}, layers={layers}")
    layout = cell_layout(C, layers)
    stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
    blocks, stage_of, stage = [], [], 0
    for s in layout:
        stage += int(s.reduction)
        blocks.append(
            _fixed_cell(
                genotype.reduce if s.reduction else genotype.normal, s.c_pp, s.c_p, s.c, s.reduction, s.reduction_prev
            )
        )
        stage_of.append(stage)
    kwargs = {"genotype": format_genotype(genotype), "C": C, "layers": layers, "num_classes": num_classes}
    return CellNet("darts_genotype", kwargs, stem, blocks, stage_of, layout[-1].out_channels, num_classes)


# ----------------------------------------------------------------------------- projection of nodes


def decide_node(
    net: nn.Module, state: DartsArchState, split: Split, node_id: int, batches: int
) -> tuple[tuple[int, int], list[list[tuple[int, float]]]]:
    """darts-pt's ``project_edge``: the 2 inputs of a node by elimination, one edge per round.

    While more than 2 candidate inputs remain, measure the accuracy (BN in train mode) with each
    candidate removed alone, and eliminate the one whose removal hurts least (the highest accuracy;
    ties: the later edge, darts-pt's ``not acc < best``). As in darts-pt each measurement starts
    from the projected weights, so the edges eliminated in earlier rounds are *not* zeroed: every
    round re-measures the remaining single removals. With a deterministic measurement that selects
    what a one-shot top-2 would, at more measurements (3, 4 + 3, 5 + 4 + 3 for the nodes with 3, 4, 5
    inputs); darts-pt measures on shuffled, augmented batches, where the rounds differ.
    Returns (the kept pair, per round the (global edge, accuracy without it) of each candidate).
    """
    cands = state.node_inputs(node_id)
    rounds: list[list[tuple[int, float]]] = []
    while len(cands) > 2:
        accs = []
        for g in cands:
            state.removed_edge = g
            accs.append(train_mode_accuracy(net, split, batches))
        state.removed_edge = None
        rounds.append(list(zip(cands, accs)))
        drop = max(range(len(cands)), key=lambda k: (accs[k], k))
        cands = cands[:drop] + cands[drop + 1 :]
    state.decide_node(node_id, cands)
    return (cands[0], cands[1]), rounds


def paired_order(rng: np.random.Generator, normal: Sequence[int], reduce: Sequence[int]) -> list[int]:
    """Random orders of the normal and reduction items, interleaved: normal, reduce, normal, ..."""
    a, b = rng.permutation(np.array(normal)), rng.permutation(np.array(reduce))
    return [int(v) for pair in zip(a, b) for v in pair]


# ----------------------------------------------------------------------------- the method


def _darts_final() -> engine.TrainConfig:
    """DARTS evaluation recipe: SGD 0.025 cosine, momentum 0.9, wd 3e-4, batch 96, 600 epochs, Cutout 16, clip 5."""
    return engine.TrainConfig(
        optimizer="sgd",
        lr=0.025,
        momentum=0.9,
        nesterov=False,
        weight_decay=3e-4,
        batch_size=96,
        epochs=600.0,
        clip_grad_norm=5.0,
        crop_pad=4,
        cutout=16,
        log_every=100,
    )


@dataclass(frozen=True)
class DartsSpaceConfig:
    """Tr-NAS's DARTS-space setting (Sec. 4.3.2, A.1): 8 cells at C = 16, B = ResNet-20 at width 4 (64/128/256),
    cells 0-1 replaced by its stem + blocks 1-3, 50 search epochs with 5 of warmup under transfer, Cutout,
    DARTS-PT projection with ``tune`` between steps (darts-pt's 5 epochs), the found cell evaluated as the
    20-cell, C = 36 network trained for 600 epochs."""

    C: int = 0  # 0: B's stage-1 width / 4 (16 for the wide ResNet-20), so Tr-Supernet-2-3 fits
    layers: int = 8
    source_model: str = "resnet20"
    source_width: float = 4.0
    transfer: TransferConfig = field(default_factory=lambda: TransferConfig(i=2, j=3))
    search: engine.TrainConfig = field(default_factory=_search_default)
    warmup_epochs: float = 5.0
    arch_opt: ArchOptConfig = field(default_factory=ArchOptConfig)
    tune: engine.TrainConfig = field(default_factory=lambda: dataclasses.replace(_tune_default(), epochs=5.0))
    train_frac: float = 0.5
    proj_eval_batches: int = 0
    proj_examples: int = 0  # 0: projection measures on the whole architecture split; n: on its first n images
    # 0: every edge and node is decided by perturbation (DARTS-PT). n > 0 (CPU smoke sizing only): the first
    # n (normal, reduce) pairs of edges and of nodes are, the rest as DARTS derives them from alpha.
    proj_perturb_pairs: int = 0
    cutout_ramp: bool = True  # darts-pt's search Cutout probability, epoch / (epochs - 1)
    eval_C: int = 36
    eval_layers: int = 20
    final: engine.TrainConfig = field(default_factory=_darts_final)

    def __post_init__(self) -> None:
        require(0 < self.train_frac < 1, "train_frac must be in (0, 1)")
        require(self.C == 0 or self.C >= 2, f"C must be 0 (from B) or >= 2, got {self.C}")
        require(
            self.layers >= 3 and self.eval_layers >= 3 and self.eval_C >= 2,
            "layers and eval_layers must be >= 3, eval_C >= 2",
        )
        require(
            self.source_width > 0
            and self.warmup_epochs >= 0
            and self.proj_eval_batches >= 0
            and self.proj_examples >= 0
            and self.proj_perturb_pairs >= 0,
            "source_width > 0; warmup_epochs, proj_eval_batches, proj_examples, proj_perturb_pairs >= 0",
        )


def source_network(task: Task, cfg: DartsSpaceConfig, *, pretrained: bool = True) -> MappedNet:
    """B (``source_model`` at ``source_width``), pretrained by the harness like the NB201 case's ResNet-32:
    on the task's source (cached source pretraining) or, with ``pretrain_on="target"``, on the task's
    training split (cached). The grid's model is the NB201 B, so B is built through a task copy."""
    settings = dataclasses.replace(task.settings, width=cfg.source_width)
    b_task = dataclasses.replace(task, model=cfg.source_model, settings=settings)
    if not pretrained:
        return build_arch(cfg.source_model, num_classes=task.num_classes, width=cfg.source_width).to(task.device)
    return pretrained_source(b_task, cfg.transfer)


@register_method("trnas_dartspt_darts")
class TrNasDartsPtDarts(BaseMethod[DartsSpaceConfig]):
    """DARTS+PT in the DARTS space with or without the ResNet-20 prefix; see the module docstring."""

    target_train_fields = ("final",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = DartsSpaceConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        tr = cfg.transfer
        source = source_network(task, cfg) if tr.enabled else None
        C = cfg.C or _source_layout(source_network(task, cfg, pretrained=False))[0][0] // STEPS
        w_part, a_part = split_halves(task.train, cfg.train_frac, role_seed("search-data", task.seed))
        p_part = (
            a_part.subset(torch.arange(min(cfg.proj_examples, len(a_part)), device=a_part.device), "proj")
            if cfg.proj_examples
            else a_part
        )
        torch.manual_seed(role_seed("supernet-init", task.seed))
        state = DartsArchState(task.device, seed=role_seed("supernet-init", task.seed, 1))
        net: MappedNet = search_supernet(state, C, cfg.layers, task.num_classes)
        if source is not None:
            net = darts_transfer(net, source, tr.i, tr.j)
        net = net.to(task.device)
        search_cfg = with_warmup(cfg.search, cfg.warmup_epochs if tr.enabled else 0.0, len(w_part))
        run = SearchRun(
            net,
            state,
            w_part,
            a_part,
            cfg.arch_opt,
            cfg.tune,
            task,
            rec,
            cfg.search.batch_size,
        )
        with rec.stage("search"):
            run.search(search_cfg, cutout_ramp=cfg.cutout_ramp)
            rec.note("search_argmax_genotype", format_genotype(state.argmax_genotype()))
            rng = np.random.default_rng(role_seed("search-data", task.seed, 1))
            edge_order = paired_order(rng, state.undecided(0), state.undecided(1))
            for t in range(len(CELL_TYPES)):  # the first node has only its 2 inputs: kept, no step (darts-pt)
                state.decide_node(t * STEPS, state.node_inputs(t * STEPS))
            node_order = paired_order(rng, state.undecided_nodes(0), state.undecided_nodes(1))
            cut = min(2 * cfg.proj_perturb_pairs or len(edge_order), len(edge_order))
            cut_nodes = min(2 * cfg.proj_perturb_pairs or len(node_order), len(node_order))
            ops: list[tuple[int, int, list[float]]] = []
            nodes: list[tuple[int, tuple[int, int]]] = []
            rounds = [0]

            def op_step(k: int) -> None:  # darts-pt: one normal and one reduction edge per step
                for n in (k, k + 1):
                    keep, accs = decide_edge(net, state, p_part, edge_order[n], cfg.proj_eval_batches, NUM_OPS)
                    ops.append((edge_order[n], keep, accs))
                    for op, acc in enumerate(accs):
                        rec.point("proj_removed_top1_pct", n, acc, position=op)
                    rec.progress(f"projection {n + 1}/{len(edge_order)}: edge {edge_order[n]} keeps {PRIMITIVES[keep]}")
                if k + 2 == cut:  # the edges left to alpha (smoke sizing), before the nodes are measured
                    for g in edge_order[cut:]:
                        state.decide_by_alpha(g)

            def node_step(k: int) -> None:  # then one normal and one reduction node per step
                for n in (k, k + 1):
                    keep, measured = decide_node(net, state, p_part, node_order[n], cfg.proj_eval_batches)
                    nodes.append((node_order[n], keep))
                    for measurement in measured:  # one step per elimination round, position: the edge's source
                        for g, acc in measurement:
                            rec.point("proj_edge_removed_top1_pct", rounds[0], acc, position=EDGES[g % NUM_EDGES][1])
                        rounds[0] += 1
                    rec.progress(f"topology {n + 1}/{len(node_order)}: node {node_order[n]} keeps edges {keep}")

            steps = [functools.partial(op_step, k) for k in range(0, cut, 2)]
            steps += [functools.partial(node_step, k) for k in range(0, cut_nodes, 2)]
            gaps = run.schedule(steps, shorten_last=False)
            for node_id in node_order[cut_nodes:]:
                state.decide_node_by_alpha(node_id)
            rec.scalar("proj_alpha_decisions_count", len(edge_order) - len(ops) + len(node_order) - len(nodes))
        run.finish()
        genotype, fallbacks = state.genotype()
        text = format_genotype(genotype)
        rec.scalar("alpha_steps", run.hook.steps)
        rec.scalar("proj_decisions_count", len(ops))
        rec.scalar("proj_node_decisions_count", len(nodes))
        rec.scalar("proj_tunes_count", sum(g > 0 for g in gaps))
        rec.scalar("proj_tune_steps_count", run.tune_steps)
        rec.scalar("none_fallbacks_count", fallbacks)
        rec.note("found_genotype", text)
        torch.manual_seed(role_seed("final-init", task.seed))
        final = darts_network(genotype, cfg.eval_C, cfg.eval_layers, task.num_classes).to(task.device)
        with rec.stage("train"):
            engine.fit(final, task.train, cfg.final, rec, stage="train", seed=role_seed("final-data", task.seed))
        rec.scalar("trainable_params", sum(p.numel() for p in final.parameters() if p.requires_grad))
        return Fitted(final, text, info={"proxy": tr.label() if tr.enabled else "original", "C": C})


__all__ = [
    "CELL_TYPES",
    "EDGES",
    "PRIMITIVES",
    "DartsArchState",
    "DartsSpaceConfig",
    "DartsSupernet",
    "DartsTransferNet",
    "Genotype",
    "TrNasDartsPtDarts",
    "cell_layout",
    "check_darts_transfer",
    "darts_network",
    "darts_transfer",
    "format_genotype",
    "parse_genotype",
    "decide_node",
    "search_supernet",
    "valid_darts_pairs",
]
