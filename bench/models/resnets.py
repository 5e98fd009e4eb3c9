"""ResNet families of the harness: torchvision's ImageNet ResNets and He et al.'s CIFAR ResNets.

==========  ===========  =================================================================
name        family       structure
==========  ===========  =================================================================
resnet18    resnet       torchvision ResNet-18, BasicBlock 2/2/2/2, 64..512 channels
resnet50    resnet       torchvision ResNet-50 (v1.5), Bottleneck 3/4/6/3, expansion 4
resnet20    cifar-resnet He et al. 2016 CIFAR ResNet, 3 stages x 3 BasicBlocks, 16/32/64
resnet32    cifar-resnet the same with 3 stages x 5 BasicBlocks (15 blocks)
==========  ===========  =================================================================

``width`` scales every stage width (rounded half up, at least 1 channel). At width 1.0
the torchvision ResNets have torchvision's exact state_dict keys and shapes
(``load_state_dict(strict=True)`` of ImageNet checkpoints works) and the same outputs.
The CIFAR ResNets reuse torchvision's ``BasicBlock``; their shortcut is option "A"
(parameter-free: subsample ``x[:, :, ::2, ::2]`` and zero-pad the new channels) unless
``shortcut="B"`` (1x1 conv + BN projection). Parameter counts at width 1.0, 10 classes:
resnet20 269,722 (A) / 272,474 (B); resnet32 464,154 (A) / 466,906 (B).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3

from bench.errors import InvalidConfig
from bench.models.net import MappedNet, ModelInfo, StructuralMap
from bench.registry import MODELS


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1."""
    return max(1, int(channels * width + 0.5))


def _init_like_torchvision(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convs; BatchNorm weight 1, bias 0; Linear default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _head_and_map(
    model: MappedNet, stem: tuple[str, ...], stages: list[tuple[str, ...]], features: int, num_classes: int
) -> StructuralMap:
    """Add the shared head (GAP, flatten, fc) and return the structural map."""
    model.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    model.flatten = nn.Flatten(1)
    model.fc = nn.Linear(features, num_classes)
    return StructuralMap(stem=stem, stages=tuple(stages), head=("avgpool", "flatten", "fc"), classifier="fc")


class TorchvisionResNet(MappedNet):
    """torchvision's ImageNet ResNet (same attribute names and keys) with a width multiplier."""

    def __init__(
        self, arch: str, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int, width: float
    ) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes, stages = widths[0], []
        for i, (planes, count) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                downsample = None
                if stride != 1 or inplanes != planes * block.expansion:
                    downsample = nn.Sequential(
                        conv1x1(inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
                    )
                blocks.append(block(inplanes, planes, stride, downsample))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            stages.append(tuple(f"layer{i + 1}.{j}" for j in range(count)))
        structure = _head_and_map(self, ("conv1", "bn1", "relu", "maxpool"), stages, inplanes, num_classes)
        _init_like_torchvision(self)
        self._set_structure(structure, arch, {"num_classes": num_classes, "width": width})


class ShortcutA(nn.Module):
    """He et al. option A: subsample by ``stride`` and zero-pad the extra channels (no params)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A cannot shrink channels ({in_channels} -> {out_channels})")
        extra = out_channels - in_channels
        self.stride = stride
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, self.pad)


def _cifar_shortcut(kind: str, inplanes: int, planes: int, stride: int) -> nn.Module | None:
    """The shortcut module of a CIFAR block (None when the identity fits)."""
    if stride == 1 and inplanes == planes:
        return None
    if kind == "A":
        return ShortcutA(inplanes, planes, stride)
    return nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))


class CifarResNet(MappedNet):
    """He et al. 2016 CIFAR ResNet: 3x3 stem, 3 stages of BasicBlocks (16/32/64 x width)."""

    def __init__(self, arch: str, blocks_per_stage: int, num_classes: int, width: float, shortcut: str = "A") -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise InvalidConfig(
                f"shortcut must be 'A' (parameter-free zero padding) or 'B' "
                f"(1x1 conv + BN projection), got {shortcut!r}"
            )
        widths = [_scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes, stages = widths[0], []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(inplanes, planes, stride, _cifar_shortcut(shortcut, inplanes, planes, stride)))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            stages.append(tuple(f"layer{i + 1}.{j}" for j in range(blocks_per_stage)))
        structure = _head_and_map(self, ("conv1", "bn1", "relu"), stages, inplanes, num_classes)
        _init_like_torchvision(self)
        self._set_structure(structure, arch, {"num_classes": num_classes, "width": width, "shortcut": shortcut})


def _resnet18(num_classes: int, width: float = 1.0) -> MappedNet:
    return TorchvisionResNet("resnet18", BasicBlock, (2, 2, 2, 2), num_classes, width)


def _resnet50(num_classes: int, width: float = 1.0) -> MappedNet:
    return TorchvisionResNet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, width)


def _resnet20(num_classes: int, width: float = 1.0, shortcut: str = "A") -> MappedNet:
    return CifarResNet("resnet20", 3, num_classes, width, shortcut)


def _resnet32(num_classes: int, width: float = 1.0, shortcut: str = "A") -> MappedNet:
    return CifarResNet("resnet32", 5, num_classes, width, shortcut)


for _info in (
    ModelInfo(
        "resnet18",
        "resnet",
        _resnet18,
        "ResNet18_Weights.IMAGENET1K_V1",
        "torchvision ResNet-18: BasicBlock 2/2/2/2, 64-512 channels, 7x7 stem + max-pool",
    ),
    ModelInfo(
        "resnet50",
        "resnet",
        _resnet50,
        "ResNet50_Weights.IMAGENET1K_V1",
        "torchvision ResNet-50 v1.5: Bottleneck 3/4/6/3 (stride on the 3x3), expansion 4",
    ),
    ModelInfo(
        "resnet20",
        "cifar-resnet",
        _resnet20,
        None,
        "CIFAR ResNet-20 (He et al. 2016): 3x3 BasicBlocks, 16/32/64 channels; shortcut A or B",
    ),
    ModelInfo(
        "resnet32",
        "cifar-resnet",
        _resnet32,
        None,
        "CIFAR ResNet-32 (He et al. 2016): 3x5 BasicBlocks, 16/32/64 channels; shortcut A or B",
    ),
):
    MODELS.register(_info.name, _info)
del _info
