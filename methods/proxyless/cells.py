"""Cell-graph models: every block is a ``Cell`` whose edges proxyless adaptation and NAT act on.

==================  ===========  ====================================================================
name                family       structure
==================  ===========  ====================================================================
resnet20_cells      cell-resnet  He et al. CIFAR ResNet-20 (3 x 3 BasicBlocks, 16/32/64) as NAT cells
mobilenetv2_cifar   cell-mbv2    MobileNetV2 for CIFAR (stride 1 stem and first stages), 17 blocks
darts_v2            cell-darts   DARTS-V2 genotype, 20 cells, C=36 (the paper's evaluation network)
darts_v2_8          cell-darts   DARTS-V2 genotype, 8 cells, C=16 (NAT's size; smoke/short tiers)
resnet50_cifar      cell-resnet  ResNet-50 with a 3x3 stride-1 conv1 and no max-pool (SimCLR backbone)
proxylessnas_cifar  cell-mbconv  a heterogeneous MBConv network (kernel/expansion differ per block)
==================  ===========  ====================================================================

Every block follows NAT's two-input DAG (nodes 0 = c_{k-2}, 1 = c_{k-1}; every node
has two input edges, padded with ``null`` edges from node 0):

- ResNet BasicBlock: ``n2 = skip(n1) + null(n0)``, ``n3 = conv3x3_s(n2) + null(n0)`` (conv-BN-ReLU,
  the block's stride), ``n4 = conv3x3(n3) + null(n0)`` (conv-BN), ``n5 = skip(n2) + skip(n4)``,
  output ReLU(n5). The stride-2 shortcut is a ``FactorizedReduce`` (a learned projection,
  like option B), so this is He's ResNet-20 with a projection shortcut.
- Bottleneck / inverted residual: ``n2 = expand1x1(n1)``, ``n3 = conv3x3_s / dw3x3_s(n2)``,
  ``n4 = project1x1(n3)`` (each ``+ null(n0)``), ``n5 = skip(n1) + skip(n4)`` when the block
  has a residual, else ``n5 = null(n1) + skip(n4)``. MobileNetV2 blocks with expansion 1
  use ``n2 = skip(n1)``.
- DARTS: the genotype's 8 edges over 4 intermediate nodes, inputs preprocessed
  (ReLU-conv1x1-BN, or FactorizedReduce after a reduction cell), output the concatenation
  of nodes 2-5.

Cell types (theta sharing in ``cell`` mode): ``reduce`` for blocks that change the
resolution or the channels (no plain residual), ``normal`` otherwise, and ``first`` for
MobileNetV2-style blocks without an expansion conv (their graph differs). ``width`` scales
every channel count (at least 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.models.net import MappedNet, ModelInfo, StructuralMap
from bench.registry import MODELS
from methods.proxyless.edges import Cell, EdgeSpec, FactorizedReduce, NodeShape, PairStem, TakeLast, identity_op


def _c(channels: int, width: float) -> int:
    return max(2, int(channels * width + 0.5))


def conv_bn(
    c_in: int, c_out: int, k: int, stride: int = 1, *, groups: int = 1, act: str | None = "relu", dilation: int = 1
) -> nn.Sequential:
    """conv(k, stride) -> BN -> activation (relu, relu6 or none)."""
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act == "relu":
        layers.append(nn.ReLU(inplace=False))
    elif act == "relu6":
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class CellNet(MappedNet):
    """stem -> (x, x) -> cells (stages by resolution) -> last output -> [head conv] -> GAP -> fc."""

    def __init__(
        self,
        arch: str,
        kwargs: dict,
        stem: nn.Module,
        blocks: Sequence[Cell],
        stage_of: Sequence[int],
        features: int,
        num_classes: int,
        head_conv: nn.Module | None = None,
        head_act: bool = False,
    ) -> None:
        super().__init__()
        self.stem = PairStem(stem)
        stages: list[list[str]] = []
        for i, (cell, s) in enumerate(zip(blocks, stage_of)):
            setattr(self, f"cell{i}", cell)
            while len(stages) <= s:
                stages.append([])
            stages[s].append(f"cell{i}")
        self.last = TakeLast()
        head = ["last"]
        if head_conv is not None:
            self.head_conv = head_conv
            head.append("head_conv")
        if head_act:
            self.head_act = nn.ReLU(inplace=False)
            head.append("head_act")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(features, num_classes)
        head += ["avgpool", "flatten", "fc"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        structure = StructuralMap(
            stem=("stem",), stages=tuple(tuple(s) for s in stages if s), head=tuple(head), classifier="fc"
        )
        self._set_structure(structure, arch, kwargs)


def _chain_shapes(c_pp: int, c_p: int, level0: int, mid: Sequence[int], stride: int, c_out: int) -> list[NodeShape]:
    """Shapes of nodes 0..5 of a chain cell: n2 at the input level, n3.. after the stride."""
    lv = 1 if stride == 2 else 0
    return [
        NodeShape(c_pp, level0),
        NodeShape(c_p, 0),
        NodeShape(mid[0], 0),
        NodeShape(mid[1], lv),
        NodeShape(c_out, lv),
        NodeShape(c_out, lv),
    ]


def basic_cell(c_pp: int, c_p: int, level0: int, c_out: int, stride: int) -> Cell:
    """A ResNet BasicBlock as a NAT cell (see the module docstring)."""
    shapes = _chain_shapes(c_pp, c_p, level0, (c_p, c_out), stride, c_out)
    specs = [
        EdgeSpec(1, 2, "skip", "skip"),
        EdgeSpec(0, 2, "null", "null"),
        EdgeSpec(2, 3, "op", "conv3x3"),
        EdgeSpec(0, 3, "null", "null"),
        EdgeSpec(3, 4, "op", "conv3x3"),
        EdgeSpec(0, 4, "null", "null"),
        EdgeSpec(2, 5, "skip", "skip"),
        EdgeSpec(4, 5, "skip", "skip"),
    ]
    ops = [
        nn.Identity(),
        None,
        conv_bn(c_p, c_out, 3, stride),
        None,
        conv_bn(c_out, c_out, 3, act=None),
        None,
        identity_op(c_p, c_out, stride),
        nn.Identity(),
    ]
    kind = "reduce" if stride == 2 or c_p != c_out else "normal"
    return Cell(kind, shapes, specs, ops, output=(5,), out_act=nn.ReLU(inplace=False))


def inverted_cell(
    c_pp: int,
    c_p: int,
    level0: int,
    c_out: int,
    stride: int,
    expand: int,
    kernel: int = 3,
    depthwise: bool = True,
    act: str = "relu6",
    out_act: bool = False,
) -> Cell:
    """MobileNetV2 inverted residual (depthwise) or ResNet bottleneck (dense 3x3) as a NAT cell."""
    hidden = c_p * expand if depthwise else c_out // 4
    residual = stride == 1 and c_p == c_out
    shapes = _chain_shapes(c_pp, c_p, level0, (hidden, hidden), stride, c_out)
    first = EdgeSpec(1, 2, "skip", "skip") if depthwise and expand == 1 else EdgeSpec(1, 2, "op", "expand1x1")
    mid = f"dw{kernel}x{kernel}" if depthwise else f"conv{kernel}x{kernel}"
    specs = [
        first,
        EdgeSpec(0, 2, "null", "null"),
        EdgeSpec(2, 3, "op", mid),
        EdgeSpec(0, 3, "null", "null"),
        EdgeSpec(3, 4, "op", "project1x1"),
        EdgeSpec(0, 4, "null", "null"),
        EdgeSpec(1, 5, "skip", "skip") if (residual or not depthwise) else EdgeSpec(1, 5, "null", "null"),
        EdgeSpec(4, 5, "skip", "skip"),
    ]
    ops = [
        nn.Identity() if first.kind == "skip" else conv_bn(c_p, hidden, 1, act=act),
        None,
        conv_bn(hidden, hidden, kernel, stride, groups=hidden if depthwise else 1, act=act),
        None,
        conv_bn(hidden, c_out, 1, act=None),
        None,
        (nn.Identity() if residual else identity_op(c_p, c_out, stride)) if (residual or not depthwise) else None,
        nn.Identity(),
    ]
    kind = "first" if first.kind == "skip" else ("normal" if residual else "reduce")
    return Cell(kind, shapes, specs, ops, output=(5,), out_act=nn.ReLU(inplace=False) if out_act else None)


def _chain_net(
    arch: str,
    kwargs: dict,
    stem: nn.Module,
    c_stem: int,
    plan: Sequence[tuple],
    make,
    num_classes: int,
    head_conv: int = 0,
) -> CellNet:
    """Stack chain cells from ``plan`` rows (c_out, stride, *extra), tracking c_{k-2}."""
    blocks: list[nn.Module]
    stage_of: list[int]
    blocks, stage_of = [], []
    c_pp, c_p, prev_stride, stage = c_stem, c_stem, 1, 0
    for row in plan:
        c_out, stride = row[0], row[1]
        if stride == 2 and blocks:
            stage += 1
        level0 = -1 if prev_stride == 2 else 0
        blocks.append(make(c_pp, c_p, level0, c_out, stride, *row[2:]))
        stage_of.append(stage)
        c_pp, c_p, prev_stride = c_p, c_out, stride
    hc = None
    features = c_p
    if head_conv:
        hc = conv_bn(c_p, head_conv, 1, act="relu6")
        features = head_conv
    return CellNet(arch, kwargs, stem, blocks, stage_of, features, num_classes, head_conv=hc)


def _resnet20_cells(num_classes: int, width: float = 1.0) -> CellNet:
    widths = [_c(c, width) for c in (16, 32, 64)]
    plan = [(w, 2 if i > 0 and j == 0 else 1) for i, w in enumerate(widths) for j in range(3)]
    return _chain_net(
        "resnet20_cells",
        {"num_classes": num_classes, "width": width},
        conv_bn(3, widths[0], 3),
        widths[0],
        plan,
        basic_cell,
        num_classes,
    )


def _resnet50_cifar(num_classes: int, width: float = 1.0) -> CellNet:
    widths = [_c(c, width) for c in (64, 128, 256, 512)]
    plan = [
        (4 * w, 2 if i > 0 and j == 0 else 1) for i, (w, n) in enumerate(zip(widths, (3, 4, 6, 3))) for j in range(n)
    ]

    def make(c_pp: int, c_p: int, level0: int, c_out: int, stride: int) -> Cell:
        return inverted_cell(c_pp, c_p, level0, c_out, stride, 1, 3, depthwise=False, act="relu", out_act=True)

    return _chain_net(
        "resnet50_cifar",
        {"num_classes": num_classes, "width": width},
        conv_bn(3, widths[0], 3),
        widths[0],
        plan,
        make,
        num_classes,
    )


# (expansion, channels, repeats, stride) of MobileNetV2 for CIFAR (strides 1 in the first two groups).
MBV2_CIFAR = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenetv2_cifar(num_classes: int, width: float = 1.0) -> CellNet:
    plan = [(_c(c, width), s if j == 0 else 1, t) for t, c, n, s in MBV2_CIFAR for j in range(n)]
    c0 = _c(32, width)
    return _chain_net(
        "mobilenetv2_cifar",
        {"num_classes": num_classes, "width": width},
        conv_bn(3, c0, 3, act="relu6"),
        c0,
        plan,
        inverted_cell,
        num_classes,
        head_conv=_c(1280, width),
    )


# (expansion, kernel, channels, stride) per block: heterogeneous kernels and expansions (ProxylessNAS style).
PROXYLESS_CIFAR = (
    (1, 3, 24, 1),
    (3, 5, 32, 1),
    (3, 3, 32, 1),
    (3, 7, 56, 2),
    (3, 3, 56, 1),
    (6, 7, 112, 2),
    (3, 5, 112, 1),
    (6, 5, 128, 1),
    (3, 3, 128, 1),
    (6, 7, 256, 2),
    (6, 5, 256, 1),
    (6, 7, 432, 1),
)


def _proxylessnas_cifar(num_classes: int, width: float = 1.0) -> CellNet:
    plan = [(_c(c, width), s, t, k) for t, k, c, s in PROXYLESS_CIFAR]
    c0 = _c(32, width)
    return _chain_net(
        "proxylessnas_cifar",
        {"num_classes": num_classes, "width": width},
        conv_bn(3, c0, 3, act="relu6"),
        c0,
        plan,
        inverted_cell,
        num_classes,
        head_conv=_c(1280, width),
    )


# ------------------------------------------------------------------------------------ DARTS

DARTS_V2 = {
    "normal": (
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    "reduce": (
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
}


class ReLUConvBN(nn.Sequential):
    def __init__(
        self, c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        )


def sep_conv(c: int, k: int, stride: int) -> nn.Sequential:
    """DARTS SepConv: (ReLU, depthwise k x k, pointwise, BN) twice, the stride on the first."""
    pad = k // 2
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, k, stride, pad, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, k, 1, pad, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    )


def dil_conv(c: int, k: int, stride: int, dilation: int = 2) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c, c, k, stride, pad, dilation=dilation, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    )


def darts_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "sep_conv_3x3":
        return sep_conv(c, 3, stride)
    if name == "sep_conv_5x5":
        return sep_conv(c, 5, stride)
    if name == "dil_conv_3x3":
        return dil_conv(c, 3, stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    raise ValueError(f"unknown DARTS op {name!r}")


def darts_cell(
    genotype: Sequence[tuple[str, int]], c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
) -> Cell:
    pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
    pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
    lv = 1 if reduction else 0
    shapes = [NodeShape(c, 0), NodeShape(c, 0)] + [NodeShape(c, lv)] * 4
    specs, ops = [], []
    for k, (name, src) in enumerate(genotype):
        dst = 2 + k // 2
        stride = 2 if reduction and src < 2 else 1
        kind = "skip" if name == "skip_connect" else "op"
        specs.append(EdgeSpec(src, dst, kind, "skip" if kind == "skip" else name))
        ops.append(darts_op(name, c, stride))
    return Cell("reduce" if reduction else "normal", shapes, specs, ops, output=(2, 3, 4, 5), pre0=pre0, pre1=pre1)


def _darts(arch: str, num_classes: int, width: float, layers: int, init_channels: int) -> CellNet:
    c = _c(init_channels, width)
    stem_multiplier = 3
    c_curr = stem_multiplier * c
    stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
    c_pp, c_p, c_curr = c_curr, c_curr, c
    blocks, stage_of, stage, reduction_prev = [], [], 0, False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            c_curr *= 2
            stage += 1
        blocks.append(
            darts_cell(DARTS_V2["reduce" if reduction else "normal"], c_pp, c_p, c_curr, reduction, reduction_prev)
        )
        stage_of.append(stage)
        reduction_prev = reduction
        c_pp, c_p = c_p, 4 * c_curr
    return CellNet(arch, {"num_classes": num_classes, "width": width}, stem, blocks, stage_of, c_p, num_classes)


def _darts_v2(num_classes: int, width: float = 1.0) -> CellNet:
    return _darts("darts_v2", num_classes, width, 20, 36)


def _darts_v2_8(num_classes: int, width: float = 1.0) -> CellNet:
    return _darts("darts_v2_8", num_classes, width, 8, 16)


NAS_FAMILIES = ("cell-darts", "cell-mbconv")
"""Families trained with Cutout (the paper: cutout for NAS models)."""

for _info in (
    ModelInfo(
        "resnet20_cells",
        "cell-resnet",
        _resnet20_cells,
        None,
        "CIFAR ResNet-20 as NAT cells (FactorizedReduce shortcut); edges for proxyless adaptation",
    ),
    ModelInfo(
        "resnet50_cifar",
        "cell-resnet",
        _resnet50_cifar,
        None,
        "ResNet-50 with a 3x3 s1 conv1, no max-pool (SimCLR CIFAR backbone), bottleneck NAT cells",
    ),
    ModelInfo(
        "mobilenetv2_cifar",
        "cell-mbv2",
        _mobilenetv2_cifar,
        None,
        "MobileNetV2 for CIFAR (stride-1 stem), 17 inverted-residual NAT cells + 1x1 head conv",
    ),
    ModelInfo("darts_v2", "cell-darts", _darts_v2, None, "DARTS-V2 genotype, 20 cells, C=36 (evaluation network)"),
    ModelInfo("darts_v2_8", "cell-darts", _darts_v2_8, None, "DARTS-V2 genotype, 8 cells, C=16 (NAT's size)"),
    ModelInfo(
        "proxylessnas_cifar",
        "cell-mbconv",
        _proxylessnas_cifar,
        None,
        "heterogeneous MBConv network (per-block kernel 3/5/7, expansion 1/3/6), ProxylessNAS style",
    ),
):
    MODELS.register(_info.name, _info)
del _info


def cell_types_identical(model: nn.Module) -> list[str]:
    """Problems that stop NAT: cells of one type whose edge lists differ (empty when fine)."""
    from methods.proxyless.edges import cells

    seen: dict[str, tuple[str, list]] = {}
    problems = []
    for name, cell in cells(model):
        sig = [(e.spec.src, e.spec.dst, e.spec.kind, e.spec.name) for e in cell.edges]
        if cell.cell_type not in seen:
            seen[cell.cell_type] = (name, sig)
        elif seen[cell.cell_type][1] != sig:
            problems.append(f"{name} differs from {seen[cell.cell_type][0]} ({cell.cell_type} cells)")
    return problems


# ------------------------------------------------------------------ plain ResNets as cell graphs


class SoloCell(nn.Module):
    """A cell inside a single-input network: both cell inputs are the block input (n0 = n1)."""

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell((x, x))[1]


def _block_cell(block: nn.Module) -> Cell | None:
    """The NAT cell of a torchvision BasicBlock/Bottleneck, reusing its modules (weights kept)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    short = block.downsample if block.downsample is not None else nn.Identity()
    if isinstance(block, BasicBlock):
        c_in, c_out, stride = block.conv1.in_channels, block.conv2.out_channels, block.conv1.stride[0]
        lv = 1 if stride == 2 else 0
        shapes = [
            NodeShape(c_in, 0),
            NodeShape(c_in, 0),
            NodeShape(c_in, 0),
            NodeShape(c_out, lv),
            NodeShape(c_out, lv),
            NodeShape(c_out, lv),
        ]
        specs = [
            EdgeSpec(1, 2, "skip", "skip"),
            EdgeSpec(0, 2, "null", "null"),
            EdgeSpec(2, 3, "op", "conv3x3"),
            EdgeSpec(0, 3, "null", "null"),
            EdgeSpec(3, 4, "op", "conv3x3"),
            EdgeSpec(0, 4, "null", "null"),
            EdgeSpec(2, 5, "skip", "skip"),
            EdgeSpec(4, 5, "skip", "skip"),
        ]
        ops = [
            nn.Identity(),
            None,
            nn.Sequential(block.conv1, block.bn1, nn.ReLU()),
            None,
            nn.Sequential(block.conv2, block.bn2),
            None,
            short,
            nn.Identity(),
        ]
    elif isinstance(block, Bottleneck):
        c_in, hidden, c_out = block.conv1.in_channels, block.conv1.out_channels, block.conv3.out_channels
        lv = 1 if block.conv2.stride[0] == 2 else 0
        shapes = [
            NodeShape(c_in, 0),
            NodeShape(c_in, 0),
            NodeShape(hidden, 0),
            NodeShape(hidden, lv),
            NodeShape(c_out, lv),
            NodeShape(c_out, lv),
        ]
        specs = [
            EdgeSpec(1, 2, "op", "expand1x1"),
            EdgeSpec(0, 2, "null", "null"),
            EdgeSpec(2, 3, "op", "conv3x3"),
            EdgeSpec(0, 3, "null", "null"),
            EdgeSpec(3, 4, "op", "project1x1"),
            EdgeSpec(0, 4, "null", "null"),
            EdgeSpec(1, 5, "skip", "skip"),
            EdgeSpec(4, 5, "skip", "skip"),
        ]
        ops = [
            nn.Sequential(block.conv1, block.bn1, nn.ReLU()),
            None,
            nn.Sequential(block.conv2, block.bn2, nn.ReLU()),
            None,
            nn.Sequential(block.conv3, block.bn3),
            None,
            short,
            nn.Identity(),
        ]
    else:
        return None
    kind = "reduce" if lv or c_in != c_out else "normal"
    return Cell(kind, shapes, specs, ops, output=(5,), out_act=nn.ReLU())


def as_cells(model: MappedNet) -> MappedNet:
    """``model`` itself when it has cells; else its ResNet blocks become ``SoloCell``s (same function, weights kept).

    Lets proxyless adaptation and NAT run on the harness's plain ResNets (``resnet18``,
    ``resnet20``, ``resnet50``, with source weights) as well as on the cell-graph models.
    """
    if any(isinstance(m, Cell) for m in model.modules()):
        return model
    for name in model.structure.blocks:
        cell = _block_cell(model.get_submodule(name))
        if cell is not None:
            model.replace(name, SoloCell(cell).to(next(model.parameters()).device))
    return model
