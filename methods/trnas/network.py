"""NAS-Bench-201 networks and the Tr-Net-i-j / Tr-Supernet-i-j prefix surgery.

``NB201Net(cells, C, N, num_classes)``: stem (conv3x3 -> C, BN), three stages of ``N``
cells at C/2C/4C channels with a residual reduction block between stages
(ReLU-conv3x3/s2-BN, ReLU-conv3x3-BN; shortcut AvgPool2 + conv1x1), head BN-ReLU-GAP-FC.
It is a ``MappedNet`` whose blocks are the ``3N + 2`` *entries* (cells and reduction
blocks: 17 for N = 5) in forward order, so ``structure.blocks`` is the paper's module
list. ``cells`` builds each cell: ``fixed_cell(arch)`` (a benchmark network) or a
search cell from ``methods.trnas.supernet``.

``transfer(net, source, i, j, count=...)`` is Tr-Net-i-j: the stem and first ``j``
blocks of the pretrained CIFAR ResNet ``source`` replace the NB201 stem and its first
``i`` entries, frozen (``requires_grad`` off, BatchNorm in eval, run under
``no_grad``: no activation memory). ``count="modules"`` counts ``i`` over the entries
(cells and reduction blocks; methods.md's default), ``count="cells"`` over cells only
(everything up to and including the i-th cell is replaced). Shapes are checked before
anything is built; a mismatch raises ``InvalidConfig`` listing the (i, j) pairs that fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from bench.errors import InvalidConfig
from bench.measure import SavedBytes
from bench.models.net import MappedNet, StructuralMap
from methods.trnas.space import EDGES, OPS, Arch, check_arch, format_arch

Count = Literal["modules", "cells"]
CellBuilder = Callable[[int], nn.Module]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k, stride, no bias) -> BN, the benchmark's conv op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


def make_op(name: str, channels: int, affine: bool = True) -> nn.Module | None:
    """The module of one op (``None`` for ``none``, which contributes zero)."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, affine=affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise InvalidConfig(f"unknown op {name!r}; ops: {', '.join(OPS)}")


class FixedCell(nn.Module):
    """A benchmark cell: node_i = sum_j op_ji(node_j), output node 3 (``none`` edges skipped)."""

    def __init__(self, arch: Arch, channels: int) -> None:
        super().__init__()
        self.arch = check_arch(arch)
        self.channels = channels
        self.edges = nn.ModuleDict()
        for k, (to, src) in enumerate(EDGES):
            op = make_op(OPS[self.arch[k]], channels)
            if op is not None:
                self.edges[f"{src}to{to}"] = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in (1, 2, 3):
            total = None
            for name, op in self.edges.items():
                src, dst = (int(v) for v in name.split("to"))
                if dst != to:
                    continue
                out = op(nodes[src])
                total = out if total is None else total + out
            nodes.append(total if total is not None else torch.zeros_like(x))
        return nodes[3]

    def extra_repr(self) -> str:
        return format_arch(self.arch)


class ReductionBlock(nn.Module):
    """NB201's residual reduction block (stride 2, channels x2)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2, affine=affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, affine=affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


def fixed_cell(arch: Arch) -> CellBuilder:
    """A ``cells`` builder for ``NB201Net`` that makes benchmark cells of ``arch``."""
    arch = check_arch(arch)
    return lambda channels: FixedCell(arch, channels)


def entry_layout(N: int) -> list[tuple[str, int, int]]:
    """(kind, channel multiple, downsampling factor at its input) of the 3N + 2 entries."""
    out: list[tuple[str, int, int]] = []
    for stage in range(3):
        if stage:
            out.append(("reduction", 2 ** (stage - 1), 2 ** (stage - 1)))
        out.extend(("cell", 2**stage, 2**stage) for _ in range(N))
    return out


class NB201Net(MappedNet):
    """The benchmark's macro network; see the module docstring."""

    def __init__(
        self,
        cells: CellBuilder,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        affine: bool = True,
        arch_name: str = "nb201",
        arch_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if C < 1 or N < 1:
            raise InvalidConfig(f"NB201 needs C >= 1 and N >= 1, got C={C}, N={N}")
        self.C, self.N = C, N
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        stages: list[list[str]]
        entries, stages = [], [[], [], []]
        stage = 0
        for index, (kind, mult, _) in enumerate(entry_layout(N)):
            if kind == "reduction":
                stage += 1
                entries.append(ReductionBlock(C * mult, C * mult * 2, affine=affine))
            else:
                entries.append(cells(C * mult))
            stages[stage].append(f"entries.{index}")
        self.entries = nn.ModuleList(entries)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(4 * C, num_classes)
        structure = StructuralMap(
            stem=("stem",),
            stages=tuple(tuple(s) for s in stages),
            head=("lastact", "gap", "flatten", "classifier"),
            classifier="classifier",
        )
        self._set_structure(structure, arch_name, {"C": C, "N": N, "num_classes": num_classes, **(arch_kwargs or {})})


def nb201(arch: Arch | str, C: int = 16, N: int = 5, num_classes: int = 10) -> NB201Net:
    """The benchmark network of ``arch`` (a tuple or the benchmark string)."""
    from methods.trnas.space import parse

    arch = parse(arch) if isinstance(arch, str) else check_arch(arch)
    return NB201Net(fixed_cell(arch), C, N, num_classes, arch_kwargs={"arch": format_arch(arch)})


# ----------------------------------------------------------------------------- transfer


def replaced_entries(i: int, N: int, count: Count) -> int:
    """How many leading entries Tr-Net-i-j replaces (``i`` counted per ``count``)."""
    total = 3 * N + 2
    if count == "modules":
        if not 0 <= i <= total:
            raise InvalidConfig(f"i counts entries (cells and reduction blocks) here: 0..{total} for N={N}, got {i}")
        return i
    if count == "cells":
        if not 0 <= i <= 3 * N:
            raise InvalidConfig(f"i counts cells here: 0..{3 * N} for N={N}, got {i}")
        if i == 0:
            return 0
        cells = [k for k, (kind, _, _) in enumerate(entry_layout(N)) if kind == "cell"]
        return cells[i - 1] + 1
    raise InvalidConfig(f"count must be 'modules' or 'cells', got {count!r}")


def _source_layout(source: MappedNet, probe: int = 32) -> list[tuple[int, int]]:
    """(channels, downsampling) after the stem and after each block of the source network.

    Measured with one forward of a ``probe`` x ``probe`` zero image on CPU copies of the
    parts, so any stem (CIFAR 3x3 or ImageNet 7x7 + max-pool) is handled.
    """
    parts = dict(source.parts())
    x = torch.zeros(1, 3, probe, probe, device=next(source.parameters()).device)
    out = []
    was = source.training
    source.eval()
    try:
        with torch.no_grad():
            for name in source.structure.stem:
                x = parts[name](x)
            out.append((x.shape[1], probe // x.shape[-1]))
            for name in source.structure.blocks:
                x = parts[name](x)
                out.append((x.shape[1], probe // x.shape[-1]))
    finally:
        source.train(was)
    return out


def _input_layout(net: NB201Net) -> list[tuple[int, int]]:
    """(channels, downsampling) each entry expects at its input, plus the head's at the end."""
    layout = [(net.C * mult, down) for _, mult, down in entry_layout(net.N)]
    return layout + [(4 * net.C, 4)]


def check_transfer(net: NB201Net, source: MappedNet, i: int, j: int, count: Count = "modules") -> int:
    """Number of entries replaced, after checking that source block ``j`` feeds entry ``i``."""
    n_src = len(source.structure.blocks)
    if not 0 <= j <= n_src:
        raise InvalidConfig(f"j must be in 0..{n_src} (blocks of {source.arch_string()}), got {j}")
    cut = replaced_entries(i, net.N, count)
    have, want = _source_layout(source)[j], _input_layout(net)[cut]
    if have != want:
        fits = valid_pairs(net, source, count)
        js = [b for a, b in fits if a == i]
        is_ = [a for a, b in fits if b == j]
        raise InvalidConfig(
            f"Tr-Net-{i}-{j} does not fit: the source's stem + {j} block(s) output {have[0]} channels at 1/{have[1]} "
            f"resolution but NB201 entry {cut} (C={net.C}, N={net.N}, i counted as {count}) expects {want[0]} "
            f"channels at 1/{want[1]}. With i={i}, j may be {_ranges(js)}; with j={j}, i may be {_ranges(is_)}"
            + ("" if fits else " (no pair fits: the source's stem width must equal C)")
        )
    return cut


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0..2, 5"`` (``"none"`` when empty)."""
    if not values:
        return "none"
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}..{prev}" if prev > start else str(start))
        if v is not None:
            start = prev = v
    return ", ".join(out)


def valid_pairs(net: NB201Net, source: MappedNet, count: Count = "modules") -> list[tuple[int, int]]:
    """Every (i, j) with matching shapes for ``net`` and ``source``."""
    src, inputs = _source_layout(source), _input_layout(net)
    limit = 3 * net.N + 2 if count == "modules" else 3 * net.N
    return [
        (i, j) for i in range(limit + 1) for j in range(len(src)) if src[j] == inputs[replaced_entries(i, net.N, count)]
    ]


class TransferNet(MappedNet):
    """Tr-Net-i-j: frozen source stem + blocks, then the NB201 entries from ``cut`` on."""

    def __init__(self, net: NB201Net, source: MappedNet, i: int, j: int, count: Count = "modules") -> None:
        super().__init__()
        cut = check_transfer(net, source, i, j, count)
        self.C, self.N, self.i, self.j, self.count, self.cut = net.C, net.N, i, j, count, cut
        self.src_stem = nn.Sequential(*[source.get_submodule(n) for n in source.structure.stem])
        blocks = list(source.structure.blocks[:j])
        self.src_blocks = nn.ModuleList([source.get_submodule(n) for n in blocks])
        self.entries = nn.ModuleList(list(net.entries)[cut:])
        self.lastact, self.gap, self.flatten, self.classifier = net.lastact, net.gap, net.flatten, net.classifier
        stages: list[list[str]] = []
        stage: tuple[str, ...] | int  # a source stage's block names here, an entry stage index below
        for stage in source.structure.stages:
            names = [f"src_blocks.{blocks.index(b)}" for b in stage if b in blocks]
            if names:
                stages.append(names)
        layout = [net.structure.stage_of(b) for b in net.structure.blocks][cut:]
        for stage in sorted(set(layout)):
            stages.append([f"entries.{k}" for k, s in enumerate(layout) if s == stage])
        if not stages:  # i = j = 0 and no entries cannot happen (the head needs an input), but be explicit
            raise InvalidConfig("Tr-Net needs at least one block or entry")
        structure = StructuralMap(
            stem=("src_stem",),
            stages=tuple(tuple(s) for s in stages),
            head=net.structure.head,
            classifier=net.structure.classifier,
        )
        self._set_structure(structure, f"tr{i}_{j}", {"C": net.C, "N": net.N, "count": count})
        self.set_frozen_prefix(1 + j)


def transfer(net: NB201Net, source: MappedNet, i: int, j: int, count: Count = "modules") -> TransferNet:
    """Tr-Net-i-j (or Tr-Supernet-i-j when ``net`` is a supernet); see the module docstring."""
    return TransferNet(net, source, i, j, count)


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of tensors autograd saves for backward in one training forward (``bench.measure.SavedBytes``).

    This is the activation memory of a training step, measured the same on any device:
    parts run under ``no_grad`` (a frozen prefix) save nothing. Tensors shared by several
    saves (e.g. the input of a conv and of its shortcut) are counted once, parameters and
    buffers not at all. Only saves still held when the forward ends count: a branch whose
    graph died mid-forward freed its saves.
    """
    was_training = model.training
    model.train()
    try:
        with SavedBytes(exclude=[*model.parameters(), *model.buffers()]) as saved:
            loss = nn.functional.cross_entropy(model(x), y)
        del loss
    finally:
        model.train(was_training)
    return saved.nbytes
