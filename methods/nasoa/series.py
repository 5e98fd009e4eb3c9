"""The baseline model series of NASOA's Table 4 / Fig. 6 as harness models.

Table 4's "HPO + series" baselines and "OA only" pick a model from the RegNet (and ResNet)
series; Fig. 6 compares the zoo with "the best of the RegNet series" under the same time
budget. The suite needs them as registered models (width multiplier for smoke tiers,
structural map with four stages so "frozen stages" means the same as for the zoo,
embedded-source pretraining and torchvision ImageNet weights at width 1.0):

==================  ===========  ========================================================
name                family       structure
==================  ===========  ========================================================
resnet34            resnet       torchvision ResNet-34, BasicBlock 3/4/6/3
resnet101           resnet       torchvision ResNet-101, Bottleneck 3/4/23/3
regnet_y_400mf      regnet       torchvision RegNetY-400MF (depth 16, w0 48, gw 8, SE 0.25)
regnet_y_800mf      regnet       torchvision RegNetY-800MF (depth 14, w0 56, gw 16)
regnet_y_1_6gf      regnet       torchvision RegNetY-1.6GF (depth 27, w0 48, gw 24)
regnet_y_16gf       regnet       torchvision RegNetY-16GF (depth 18, w0 200, gw 112)
==================  ===========  ========================================================

torchvision has no RegNetY-200MF / 600MF (the paper's Table 2 lists them), so the series
is the four RegNetY models torchvision ships with ImageNet weights. At width 1.0 the
RegNets keep torchvision's module names (``stem``, ``trunk_output.blockK.blockK-J``,
``fc``), so ImageNet checkpoints load with ``strict=True``; ``width`` scales the stem and
every stage width and group width (group width rounded, at least 1; stage width a
multiple of it), which keeps tiny smoke versions valid RegNets.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from bench.models.net import MappedNet, ModelInfo, StructuralMap
from bench.models.resnets import TorchvisionResNet
from bench.registry import MODELS

# torchvision's BlockParams.from_init_params arguments of each model.
REGNET_Y = {
    "regnet_y_400mf": dict(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8),
    "regnet_y_800mf": dict(depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16),
    "regnet_y_1_6gf": dict(depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24),
    "regnet_y_16gf": dict(depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112),
}
REGNET_WEIGHTS = {
    "regnet_y_400mf": "RegNet_Y_400MF_Weights.IMAGENET1K_V1",
    "regnet_y_800mf": "RegNet_Y_800MF_Weights.IMAGENET1K_V1",
    "regnet_y_1_6gf": "RegNet_Y_1_6GF_Weights.IMAGENET1K_V1",
    "regnet_y_16gf": "RegNet_Y_16GF_Weights.IMAGENET1K_V1",
}


def scaled_params(arch: str, width: float) -> BlockParams:
    """torchvision's block parameters of ``arch`` with widths and group widths scaled by ``width``."""
    p = BlockParams.from_init_params(**REGNET_Y[arch], se_ratio=0.25)
    if width == 1.0:
        return p
    groups = [max(1, int(g * width + 0.5)) for g in p.group_widths]
    widths = [max(g, int(w * width / g + 0.5) * g) for w, g in zip(p.widths, groups)]
    return BlockParams(p.depths, widths, groups, p.bottleneck_multipliers, p.strides, p.se_ratio)


class TorchvisionRegNet(MappedNet):
    """torchvision's RegNet (same module names and keys) as a mapped net with a width multiplier."""

    def __init__(self, arch: str, num_classes: int, width: float) -> None:
        super().__init__()
        tv = RegNet(
            scaled_params(arch, width),
            num_classes=num_classes,
            stem_width=max(1, int(32 * width + 0.5)),
            norm_layer=partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1),
        )
        self.stem = tv.stem
        self.trunk_output = tv.trunk_output
        self.avgpool = tv.avgpool
        self.flatten = nn.Flatten(1)
        self.fc = tv.fc
        stages = tuple(
            tuple(f"trunk_output.{name}.{block}" for block, _ in stage.named_children())
            for name, stage in self.trunk_output.named_children()
        )
        self._set_structure(
            StructuralMap(stem=("stem",), stages=stages, head=("avgpool", "flatten", "fc"), classifier="fc"),
            arch,
            {"num_classes": num_classes, "width": width},
        )


def _regnet(arch: str):
    def build(num_classes: int, width: float = 1.0) -> MappedNet:
        return TorchvisionRegNet(arch, num_classes, width)

    build.__name__ = f"_{arch}"
    return build


def _resnet34(num_classes: int, width: float = 1.0) -> MappedNet:
    return TorchvisionResNet("resnet34", BasicBlock, (3, 4, 6, 3), num_classes, width)


def _resnet101(num_classes: int, width: float = 1.0) -> MappedNet:
    return TorchvisionResNet("resnet101", Bottleneck, (3, 4, 23, 3), num_classes, width)


RESNET_SERIES = ("resnet18", "resnet34", "resnet50", "resnet101")
REGNET_SERIES = tuple(REGNET_Y)

for _info in (
    ModelInfo(
        "resnet34",
        "resnet",
        _resnet34,
        "ResNet34_Weights.IMAGENET1K_V1",
        "torchvision ResNet-34: BasicBlock 3/4/6/3, 64-512 channels (NASOA's ResNet series)",
    ),
    ModelInfo(
        "resnet101",
        "resnet",
        _resnet101,
        "ResNet101_Weights.IMAGENET1K_V1",
        "torchvision ResNet-101 v1.5: Bottleneck 3/4/23/3 (NASOA's ResNet series)",
    ),
    *(
        ModelInfo(
            a,
            "regnet",
            _regnet(a),
            REGNET_WEIGHTS[a],
            f"torchvision {a.replace('regnet_y_', 'RegNetY-').upper().replace('REGNETY', 'RegNetY')} "
            f"(NASOA's RegNet series): {REGNET_Y[a]}, SE 0.25",
        )
        for a in REGNET_Y
    ),
):
    if _info.name not in MODELS:
        MODELS.register(_info.name, _info)
del _info


def imagenet_top1(model: str) -> float:
    """ImageNet top-1 (%) of a model's torchvision weights (its "source accuracy"), NaN if none."""
    from torchvision.models import get_weight

    from bench.models.net import model_info

    name = model_info(model).imagenet_weights
    if not name:
        return float("nan")
    return float(get_weight(name).meta["_metrics"]["ImageNet-1K"]["acc@1"])


__all__ = ["REGNET_SERIES", "RESNET_SERIES", "TorchvisionRegNet", "imagenet_top1", "scaled_params"]
