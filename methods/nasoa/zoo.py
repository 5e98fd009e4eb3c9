"""The ET-NAS model zoo (NASOA Table 10), registered as models ``etnas_a`` .. ``etnas_l``.

Each entry keeps the paper's figures (parameters in M, GMACs at 224 px, ImageNet top-1,
V100 inference and training-step ms at batch 64). Names follow the paper (the reference
repository swaps E/F and G/H; the paper's pairing is the one whose parameter counts
match). Models build through ``bench.models.net.build_model("etnas_g", num_classes,
width=...)`` like every other model, so embedded sources (``source="mnist5k"``) pretrain
and cache them as for the ResNets.

ImageNet weights (``source="imagenet"``, through the harness's ``bench.models.pretrain`` path, which
calls the ``imagenet_loader`` each zoo model registers): ``imagenet_state_dict`` reads
``etnas_<x>.pth`` (a state_dict of our ``ETNet`` at width 1.0, or ``{"state_dict": ...}``)
or the released checkpoint named by its encoding, ``<encoding>.pth``, from
``$BENCH_CACHE_DIR/etnas`` or ``$TORCH_HOME/hub/checkpoints``; absent, it raises
``WeightsNotFound`` naming the expected paths (nothing is downloaded).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.errors import UnknownName, WeightsNotFound
from bench.models.net import MappedNet, ModelInfo
from bench.registry import MODELS
from methods.nasoa.builder import ETNet


@dataclass(frozen=True)
class ZooEntry:
    """One ET-NAS model with the paper's Table 2/10 figures."""

    letter: str
    encoding: str
    mparams: float
    gmacs: float
    top1_pct: float
    infer_ms: float
    step_ms: float

    @property
    def name(self) -> str:
        return f"etnas_{self.letter.lower()}"


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("A", "2-_32_2-11-112-1121112", 2.6, 0.23, 62.06, 5.30, 14.74),
        ZooEntry("B", "031-_32_1-1-221-11121", 3.9, 0.39, 66.92, 5.92, 15.78),
        ZooEntry("C", "011-_32_2-211-2-111122", 7.1, 0.58, 71.29, 8.94, 26.28),
        ZooEntry("D", "031-_64_1-1-221-11121", 15.2, 1.55, 74.46, 14.54, 36.30),
        ZooEntry("E", "011-_64_21-211-121-11111121", 21.4, 2.61, 76.87, 25.34, 61.95),
        ZooEntry("F", "10001-_64_4-111-11122-1111111111111112", 28.4, 2.31, 78.80, 33.83, 93.04),
        ZooEntry("G", "211-_64_41-211-121-11111121", 49.3, 5.68, 80.41, 53.08, 133.97),
        ZooEntry("H", "10001-_64_4-111111111-211112111112-11111", 44.0, 5.33, 80.92, 76.80, 193.40),
        ZooEntry("I", "02031-a02_64_111-2111-21111111111111111111111-211", 72.4, 13.13, 81.38, 94.60, 265.13),
        ZooEntry("J", "211-_64_411-2111-21111111111111111111111-211", 103.0, 18.16, 82.08, 131.92, 370.28),
        ZooEntry(
            "K", "02031-a02_64_1121-111111111111111111111111111-21111111211111-1", 87.3, 27.51, 82.42, 185.75, 505.00
        ),
        ZooEntry("L", "23311-a02c12_64_211-2111-21111111111111111111111-211", 130.4, 23.46, 82.65, 191.89, 542.52),
    )
}

# The paper's Table 9: classic networks in the same encoding.
CLASSIC = {
    "resnet18": "020-_64_11-21-21-21",
    "resnet34": "020-_64_111-2111-211111-211",
    "resnet50": "10001-_64_411-2111-211111-211",
    "wide_resnet50_2": "11011-_64_411-2111-211111-211",
}


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry of ``etnas_x`` (``UnknownName`` lists the zoo)."""
    if name not in ZOO:
        raise UnknownName(f"'{name}' is not an ET-NAS zoo model; zoo: {', '.join(ZOO)}")
    return ZOO[name]


def _builder(name: str):
    entry = ZOO[name]

    def build(num_classes: int, width: float = 1.0) -> MappedNet:
        return ETNet(
            entry.encoding,
            num_classes=num_classes,
            width=width,
            arch_name=name,
            arch_kwargs={"num_classes": num_classes, "width": width},
        )

    build.__name__ = f"_{name}"
    return build


def weight_folders() -> list[Path]:
    """Where ImageNet checkpoints of the zoo are looked for, in order."""
    from bench.cache import cache_dir

    return [cache_dir() / "etnas", Path(torch.hub.get_dir()) / "checkpoints"]


def weight_files(name: str) -> list[Path]:
    """Every path ``imagenet_state_dict`` tries for zoo model ``name``, in order."""
    entry = zoo_entry(name)
    return [folder / file for folder in weight_folders() for file in (f"{name}.pth", f"{entry.encoding}.pth")]


def imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of zoo model ``name`` from a cache file (never downloaded)."""
    entry = zoo_entry(name)
    for path in weight_files(name):
        if path.exists():
            state = torch.load(path, map_location="cpu", weights_only=True)
            return state.get("state_dict", state) if isinstance(state, dict) else state
    raise WeightsNotFound(
        f"ImageNet weights of {name} (ET-NAS-{entry.letter}) are not cached: expected "
        f"{weight_folders()[0] / (name + '.pth')} (a state_dict of this ETNet at width 1.0), "
        f"or the released checkpoint '{entry.encoding}.pth'; looked in: "
        + ", ".join(str(p) for p in weight_files(name))
    )


for _name, _entry in ZOO.items():
    MODELS.register(
        _name,
        ModelInfo(
            _name,
            "etnas",
            _builder(_name),
            None,
            f"ET-NAS-{_entry.letter} (NASOA Table 10): {_entry.encoding}, {_entry.mparams} M params, "
            f"{_entry.gmacs} GMACs at 224 px; stem of three 3x3 convs, no max-pool",
            imagenet_loader=functools.partial(imagenet_state_dict, _name),
        ),
    )
del _name, _entry
