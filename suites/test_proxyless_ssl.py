"""Proxyless adaptation, self-supervised: {simclr, simclr_adapt_cell, simclr_adapt_full} x {resnet50_cifar, darts_v2_8}.

The paper's Table 4: SimCLR (NT-Xent, temperature 0.5) on ResNet-50 (CIFAR stem) and a
DARTS network, as designed (``simclr``) and adapted during the same run
(``simclr_adapt_cell`` / ``simclr_adapt_full``), evaluated by weighted kNN (cosine,
temperature 0.5) on frozen backbone features with the training split as memory bank.
The kNN top-1 is stored as ``val_top1_pct`` / ``test_top1_pct``, so ``bench report
--suite proxyless_ssl --by-variant`` prints the table and the ``px-ssl`` claim reads it.

Tiers: smoke = ``uci-digits`` at its native 8 px (gray digits: no flips, crops of at least
30% of the area), tiny widths, 8 steps of batch 16, k = 20, 3 seeds, no ``simclr_adapt_full``
(CPU budget); short = CIFAR-10 at
32 px, full widths, the paper's recipe for 20 epochs, k = 200, 3 seeds; paper = CIFAR-10,
500 epochs, batch 512, Adam 1e-3, 5 seeds. The DARTS network is the 8-cell ``darts_v2_8``
at every tier (the paper's SSL DARTS has 24 cells and ~24.6M parameters).
"""

from bench.execute.grid import Grid, TierPlan

METHODS = ("simclr", "simclr_adapt_cell", "simclr_adapt_full")

# A code-path tier (12 cells in ~40 CPU-seconds): 8 steps of batch 16 (2 x 16 views) at lr 3e-3,
# theta lr 0.05 over the first half; a small head and k = 20 for the 1,078-image memory bank.
# simclr_adapt_full runs at short/paper tier only (its code path differs from adapt_cell by the
# theta sharing alone, which tests/test_proxyless_ssl.py and the contract test cover).
SMOKE_ALL = {
    "train.steps": 8,
    "train.batch_size": 16,
    "train.lr": 3e-3,
    "train.log_every": 1000,
    "knn_k": 20,
    "head.out": 32,
    "aug.crop_min_scale": 0.3,
}
SMOKE_ARCH = {"arch.lr": 0.05, "arch.frac": 0.5, "arch.record_points": 6}
SHORT_ALL = {"train.epochs": 20.0, "train.log_every": 200}

GRID = Grid(
    suite="proxyless_ssl",
    methods={m: {} for m in METHODS},
    datasets=("uci-digits",),
    models=("resnet50_cifar", "darts_v2_8"),
    seeds=(0, 1, 2, 3, 4),
    task={"source": None},
    tiers={
        "smoke": TierPlan(
            task={"input_size": 8},
            config=SMOKE_ALL,
            seeds=(0, 1, 2),
            skip_methods=("simclr_adapt_full",),
            methods={m: SMOKE_ARCH for m in METHODS if m != "simclr"},
            models={"resnet50_cifar": {"width": 0.0625}, "darts_v2_8": {"width": 0.25}},
        ),
        "short": TierPlan(
            datasets=("cifar10",),
            task={"input_size": 32, "width": 1.0, "val_frac": 0.1, "test_frac": 0.1},
            config=SHORT_ALL,
            seeds=(0, 1, 2),
        ),
        "paper": TierPlan(
            datasets=("cifar10",), task={"input_size": 32, "width": 1.0, "val_frac": 0.1, "test_frac": 0.1}
        ),
    },
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"
