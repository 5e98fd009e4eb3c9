"""Proxyless neural architecture adaptation: {original, nat, adapt_cell, adapt_full} x 3 cell-graph models x 5 seeds.

The paper's Tables 1-2: every model trained from scratch as designed (``original``),
by NAT (policy stage + retraining) and by proxyless adaptation with per-type
(``adapt_cell``) or per-edge (``adapt_full``) thetas, five seeds each so collapses
(NAT's 10% runs) show in the per-seed rows. ``bench report --suite proxyless`` prints
mean +- std (n) and ``fit_s`` (total cost) per method and model.

Tiers: smoke = ``uci-digits`` at its native 8 px, tiny widths, 32 steps of batch 32 (an 8-cell DARTS-V2);
short = CIFAR-10 at 32 px and Tiny-ImageNet at 64 px, full widths, 30 epochs (E_arch 1/12 of
them); paper = the same datasets, 600 epochs, E_arch 50/600. The DARTS network is ``darts_v2_8`` at every tier (a grid
cannot switch models per tier); the paper's 20-cell network is ``darts_v2``.
"""

from bench.execute.grid import Grid, TierPlan

METHODS = ("original", "nat", "adapt_cell", "adapt_full")

# 32 steps of batch 32 with 20% warmup and clipping (MobileNetV2's 17 blocks diverge at lr 0.1
# without them); no Cutout on 8 px digits. A code-path tier: 60 cells in a few CPU-minutes.
SMOKE_TRAIN = {
    "train.steps": 32,
    "train.batch_size": 32,
    "train.lr": 0.1,
    "train.warmup_frac": 0.2,
    "train.clip_grad_norm": 5.0,
    "train.log_every": 1000,
    "nas_cutout": 0,
}
SMOKE = {
    "original": SMOKE_TRAIN,
    "adapt_cell": {**SMOKE_TRAIN, "arch.lr": 0.05, "arch.frac": 0.5, "arch.record_points": 6},
    "adapt_full": {**SMOKE_TRAIN, "arch.lr": 0.05, "arch.frac": 0.5, "arch.record_points": 6},
    "nat": {
        **SMOKE_TRAIN,
        "supernet.steps": 8,
        "supernet.batch_size": 32,
        "supernet.lr": 0.05,
        "supernet.log_every": 1000,
        "policy.hidden": 16,
        "policy.lr": 0.01,
        "policy.reward_batch": 32,
        "derive_samples": 2,
    },
}
SHORT = {m: {"train.epochs": 30.0} for m in METHODS}
SHORT["nat"] = {"train.epochs": 30.0, "supernet.epochs": 5.0}

# The paper's Tables 1 and 3: CIFAR-10 at 32 px and Tiny-ImageNet at its native 64 px (train 100k,
# official val as test). ``--bench-datasets cifar10`` runs one of them when the other is not on disk.
PAPER_DATASETS = ("cifar10", "tiny-imagenet")
PAPER_TASK = {"input_size": 32, "width": 1.0, "val_frac": 0.1, "test_frac": 0.1}
PAPER_DATASET_TASK = {"tiny-imagenet": {"input_size": 64}}

GRID = Grid(
    suite="proxyless",
    methods={m: {} for m in METHODS},
    datasets=("uci-digits",),
    models=("resnet20_cells", "mobilenetv2_cifar", "darts_v2_8"),
    seeds=(0, 1, 2, 3, 4),
    task={"source": None},
    tiers={
        "smoke": TierPlan(
            task={"input_size": 8},
            methods=SMOKE,
            models={
                "resnet20_cells": {"width": 0.25},
                "mobilenetv2_cifar": {"width": 0.25},
                "darts_v2_8": {"width": 0.25},
            },
        ),
        "short": TierPlan(datasets=PAPER_DATASETS, task=PAPER_TASK, dataset_task=PAPER_DATASET_TASK, methods=SHORT),
        "paper": TierPlan(datasets=PAPER_DATASETS, task=PAPER_TASK, dataset_task=PAPER_DATASET_TASK),
    },
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"
