"""The two-stage search space: 3x3 convolutions inside a scope that may become 5x5.

Every 3x3 convolution of a residual block (groups 1; not the stem, not the 1x1
downsample) inside the search scope (``bench.models.net.scope_blocks``) becomes a mutable
layer with choices {0: 3x3, 1: 5x5}. ResNet-18 has two per BasicBlock (4/8/12/16
decisions for small/medium/large/full), ResNet-50 one per Bottleneck (3/9/13/16), as in
the paper's Table 1.

The 5x5 candidate starts as the pretrained 3x3 kernel zero-padded by one ring, with
padding 2 and the same stride, so the mutated network computes exactly what the
original does (up to float rounding) until training moves the ring. In the supernet
each mutable layer holds both candidates, each with its own BatchNorm copy initialised
from the pretrained one; a subnet is a choice per layer and uses the supernet's weights.

A child architecture is written ``<base arch>|two_stage(scope=small,kernels=3553)``:
one digit per mutable layer in network order (``build_from_arch``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import InvalidConfig
from bench.models.net import MappedNet, build_from_arch_string, scope_blocks


@dataclass(frozen=True)
class MutablePoint:
    """Where a mutable layer lives: the block, its 3x3 conv and the BatchNorm after it."""

    block: str
    conv: str
    bn: str

    @property
    def conv_path(self) -> str:
        return f"{self.block}.{self.conv}"

    @property
    def bn_path(self) -> str:
        return f"{self.block}.{self.bn}"


def widen(conv: nn.Conv2d) -> nn.Conv2d:
    """A 5x5 copy of a 3x3 ``conv``: the kernel zero-padded by one ring, padding 2, same stride."""
    if conv.kernel_size != (3, 3) or conv.padding != (1, 1):
        raise ValueError(f"widen expects a 3x3 conv with padding 1, got {conv}")
    wide = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        5,
        stride=conv.stride,
        padding=2,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    wide = wide.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        wide.weight.copy_(F.pad(conv.weight, (1, 1, 1, 1)))
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    wide.weight.requires_grad_(conv.weight.requires_grad)
    return wide


class MutableConvBN(nn.Module):
    """Both candidates of one mutable layer: (3x3 conv, BN) and (5x5 conv, BN); ``choice`` picks one."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv3, self.bn3 = conv, bn
        self.conv5, self.bn5 = widen(conv), copy.deepcopy(bn)
        self.choice = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.choice:
            return self.bn5(self.conv5(x))
        return self.bn3(self.conv3(x))

    def chosen(self) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        """Copies of the chosen candidate's conv and BN."""
        conv, bn = (self.conv5, self.bn5) if self.choice else (self.conv3, self.bn3)
        return copy.deepcopy(conv), copy.deepcopy(bn)


def mutable_points(model: MappedNet, scope: str) -> list[MutablePoint]:
    """The mutable layers of ``model`` inside ``scope``, in network order."""
    points = []
    for block_name in scope_blocks(model.structure, scope):
        block = model.get_submodule(block_name)
        for name, child in block.named_children():
            is_3x3 = isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.groups == 1
            if is_3x3 or isinstance(child, MutableConvBN):
                bn = name.replace("conv", "bn")
                if not isinstance(getattr(block, bn, None), (nn.BatchNorm2d, nn.Identity)):
                    raise ValueError(f"{block_name}.{name}: no BatchNorm '{bn}' after the 3x3 conv")
                points.append(MutablePoint(block_name, name, bn))
    if not points:
        raise InvalidConfig(f"scope '{scope}' of {model.arch_string()} holds no 3x3 convolution to mutate")
    return points


def make_supernet(model: MappedNet, scope: str) -> tuple[MappedNet, list[MutablePoint]]:
    """Turn every mutable layer of ``scope`` into a ``MutableConvBN`` (in place); return the points."""
    points = mutable_points(model, scope)
    for point in points:
        conv = model.get_submodule(point.conv_path)
        bn = model.get_submodule(point.bn_path)
        model.replace(point.conv_path, MutableConvBN(conv, bn))
        model.replace(point.bn_path, nn.Identity())
    return model, points


def set_choices(model: MappedNet, points: Sequence[MutablePoint], actions: Sequence[int]) -> None:
    """Select the subnet ``actions`` (one 0/1 per point) in a supernet."""
    if len(actions) != len(points):
        raise ValueError(f"{len(actions)} actions for {len(points)} mutable layers")
    for point, action in zip(points, actions):
        model.get_submodule(point.conv_path).choice = int(action)


def derive_child(
    base: MappedNet, points: Sequence[MutablePoint], actions: Sequence[int], supernet: MappedNet | None = None
) -> MappedNet:
    """The stand-alone network of ``actions``, built in place on ``base``.

    Without ``supernet``: ``base`` keeps its (source) weights and every chosen 5x5 layer
    is its 3x3 kernel zero-padded. With ``supernet``: every mutable layer takes the
    chosen candidate's trained conv and BN from the supernet ("inherit").
    """
    for point, action in zip(points, actions):
        if supernet is not None:
            mutable = supernet.get_submodule(point.conv_path)
            mutable.choice = int(action)
            conv, bn = mutable.chosen()
            base.replace(point.conv_path, conv)
            base.replace(point.bn_path, bn)
        elif action:
            base.replace(point.conv_path, widen(base.get_submodule(point.conv_path)))
    return base


def arch_string(base_arch: str, scope: str, actions: Sequence[int]) -> str:
    """Canonical string of a child architecture (see the module docstring)."""
    kernels = "".join("5" if a else "3" for a in actions)
    return f"{base_arch}|two_stage(scope={scope},kernels={kernels})"


_ARCH = re.compile(r"^(?P<base>.+)\|two_stage\(scope=(?P<scope>\w+),kernels=(?P<kernels>[35]+)\)$")


def build_from_arch(text: str) -> MappedNet:
    """Rebuild (randomly initialised) the network an ``arch_string`` names."""
    match = _ARCH.match(text.strip())
    if not match:
        raise InvalidConfig(
            f"not a two-stage architecture string: {text!r}; expected '<base>|two_stage(scope=small,kernels=3553)'"
        )
    model = build_from_arch_string(match["base"])
    points = mutable_points(model, match["scope"])
    actions = [1 if k == "5" else 0 for k in match["kernels"]]
    if len(actions) != len(points):
        raise InvalidConfig(f"{text!r}: {len(actions)} kernels for {len(points)} mutable layers")
    return derive_child(model, points, actions)
