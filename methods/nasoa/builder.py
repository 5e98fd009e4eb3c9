"""Build an ET-NAS network from its encoding, as a ``MappedNet`` (stem, 4 stages, head).

Semantics (methods.md section 2, "Builder semantics"; they reproduce Table 10's
parameter and MAC counts):

- stem: conv3x3 s2 (3 -> C/2), conv3x3 (C/2), conv3x3 s2 (-> C), each + BN + ReLU; no
  max-pool (total stride 4);
- every op is conv (no bias) + BN; stride 2 (first block of stages 2-4) sits on the first
  op that is not a 1x1 conv (the last op when all are 1x1);
- forward keeps the *pre-ReLU* place tensors [x, o1..on]; after op i the skips that
  target place i are applied (the implicit residual a0n last). Add: a source whose
  channels or cumulative stride differ is projected by conv1x1 (stride = stride ratio)
  + BN. Concat: a source at another stride goes through conv1x1 + BN keeping its
  channels, then ``cat([src, tgt])``, which widens the place. Op i+1 reads ReLU(place i);
  the block output is ReLU(place n);
- head: global average pool, flatten, fc. Init: Kaiming fan_out convs, BN gamma 1 beta 0.

``width`` scales the first channel count to ``max(min_first, round(C*width / 8)*8)`` so
that every ratio and group count stays whole at smoke widths.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models.net import MappedNet, StructuralMap
from methods.nasoa.encoding import OP_GROUPS, Arch, Block, check_channels, parse


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


def stride_op_index(block: Block) -> int:
    """0-based index of the op that carries a block's stride."""
    for i, op in enumerate(block.ops):
        if op.kernel != 1:
            return i
    return len(block.ops) - 1


class ETBlock(nn.Module):
    """One block of an ET-NAS network (see the module docstring for the forward pass)."""

    def __init__(self, block: Block, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.block = block
        n = len(block.ops)
        s_idx = stride_op_index(block)
        place_ch, place_stride = [c_in], [1]
        ops, projs = [], {}
        skips = sorted(block.skips, key=lambda s: s.dst) + [_Residual(n)]
        self._skips = []
        for i, op in enumerate(block.ops, start=1):
            cin = place_ch[i - 1]
            cout = c_out * 2**op.ratio // 4
            st = stride if i - 1 == s_idx else 1
            groups = cin if op.op == 4 else OP_GROUPS[op.op]
            ops.append(_conv_bn(cin, cout, op.kernel, st, groups))
            ch, cum = cout, place_stride[i - 1] * st
            for s in (s for s in skips if s.dst == i):
                src_ch, src_stride = place_ch[s.src], place_stride[s.src]
                ratio = cum // src_stride
                key = f"p{s.src}{s.dst}"
                if s.kind == "a":
                    if src_ch != ch or ratio != 1:
                        projs[key] = _conv_bn(src_ch, ch, 1, ratio)
                else:
                    if ratio != 1:
                        projs[key] = _conv_bn(src_ch, src_ch, 1, ratio)
                    ch += src_ch
                self._skips.append((s.kind, s.src, s.dst, key if key in projs else None))
            place_ch.append(ch)
            place_stride.append(cum)
        self.ops = nn.ModuleList(ops)
        self.proj = nn.ModuleDict(projs)
        self.relu = nn.ReLU(inplace=False)
        self.out_channels = place_ch[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        places = [x]
        h = x
        for i, op in enumerate(self.ops, start=1):
            t = op(h)
            for kind, src, dst, key in self._skips:
                if dst != i:
                    continue
                s = places[src] if key is None else self.proj[key](places[src])
                t = t + s if kind == "a" else torch.cat([s, t], dim=1)
            places.append(t)
            h = self.relu(t)
        return h


class _Residual:
    """The implicit a0n skip (applied after every written skip into place n)."""

    kind = "a"
    src = 0

    def __init__(self, n: int) -> None:
        self.dst = n


def scaled_first_channels(first: int, width: float, min_first: int = 8) -> int:
    """First channel count at ``width``: a multiple of 8, at least ``min_first``."""
    if width == 1.0:
        return first
    return max(min_first, int(round(first * width / 8.0)) * 8)


class ETNet(MappedNet):
    """An ET-NAS network: entries ``stem``, ``layer{s}.{b}``, ``avgpool``, ``flatten``, ``fc``."""

    def __init__(
        self,
        encoding: str | Arch,
        num_classes: int = 1000,
        width: float = 1.0,
        arch_name: str = "etnas",
        arch_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        arch = parse(encoding) if isinstance(encoding, str) else encoding
        self.arch = arch
        c = scaled_first_channels(arch.first_channels, width)
        check_channels(arch, first=c)
        self.stem = nn.Sequential(
            _conv_bn(3, c // 2, 3, 2),
            nn.ReLU(inplace=True),
            _conv_bn(c // 2, c // 2, 3, 1),
            nn.ReLU(inplace=True),
            _conv_bn(c // 2, c, 3, 2),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], c
        for s, digits in enumerate(arch.stages):
            blocks = []
            for b, d in enumerate(digits):
                blocks.append(ETBlock(arch.block, c_in, c_in * d, 2 if s > 0 and b == 0 else 1))
                c_in = c_in * d
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            stages.append(tuple(f"layer{s + 1}.{b}" for b in range(len(digits))))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        kwargs = (
            arch_kwargs
            if arch_kwargs is not None
            else {"encoding": str(arch), "num_classes": num_classes, "width": width}
        )
        self._set_structure(
            StructuralMap(stem=("stem",), stages=tuple(stages), head=("avgpool", "flatten", "fc"), classifier="fc"),
            arch_name,
            kwargs,
        )


def freeze_stages(model: MappedNet, k: int) -> MappedNet:
    """NASOA's "frozen stages" k in -1..num_stages-1: -1 nothing; k >= 0 stem + stages 1..k.

    Uses the harness's frozen prefix (no grad, BatchNorm in eval, no activations stored).
    """
    stages = model.structure.stages
    if isinstance(k, bool) or not isinstance(k, int) or not -1 <= k < len(stages):
        from bench.errors import InvalidConfig

        raise InvalidConfig(f"frozen stages must be an integer in -1..{len(stages) - 1}, got {k!r}")
    if k < 0:
        return model.set_frozen_prefix(0)
    return model.set_frozen_prefix(len(model.structure.stem) + sum(len(s) for s in stages[:k]))


def analytic_counts(arch: Arch | str, num_classes: int = 1000, size: int = 224) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of the full-width network at ``size`` px.

    Built on the meta device (no memory, no compute) and counted with
    ``torch.utils.flop_counter`` (2 FLOPs per MAC); BN, ReLU, adds and pooling are not MACs.
    """
    from bench.measure import count_flops

    with torch.device("meta"):
        net = ETNet(arch, num_classes=num_classes)
        x = torch.empty(1, 3, size, size)
    params = sum(p.numel() for p in net.parameters())
    flops = count_flops(lambda: net.eval()(x))
    return params, flops // 2
