"""Baselines suite: scratch, full fine-tuning, last-k and linear probe on the embedded data.

Sources are pretrained by the harness on ``mnist5k`` (cached after the first use), the
targets are the other embedded sets, so a transfer benefit shows up as ``full_ft`` and
``last_k`` beating ``scratch`` at the same step budget. The smoke budget is 30 steps
(under two epochs of uci-digits): transfer pays off most at small budgets, and at
60 steps training from scratch has already caught up on a task this easy. ResNet-18
sees 32 px at smoke tier because its stride-4 stem leaves 4x4 maps at 16 px, which
makes a poor source model (93.6% vs 97.6% MNIST test accuracy).

    pytest suites/test_baselines.py --bench-db results.db -n 2          # smoke, 48 cells
    pytest suites/test_baselines.py --bench-budget short --bench-device cuda
"""

from bench.execute.grid import Grid, TierPlan

GRID = Grid(
    suite="baselines",
    methods={"scratch": {}, "full_ft": {}, "last_k": {"k": 2}, "linear_probe": {}},
    datasets=("uci-digits", "lfw-faces"),
    models=("resnet18", "resnet20"),
    seeds=(0, 1, 2),
    task={"source": "mnist5k"},
    tiers={
        # 2 CPU cores, a few minutes for the whole grid
        "smoke": TierPlan(
            task={"input_size": 16, "width": 0.25, "pretrain.train.epochs": 10.0},
            models={"resnet18": {"input_size": 32}, "resnet20": {"width": 0.5}},
            config={"train.steps": 30, "train.eval_every": 10, "train.log_every": 10},
        ),
        # one GPU, minutes per cell
        "short": TierPlan(
            task={"input_size": 32, "width": 1.0, "pretrain.train.epochs": 15.0},
            config={"train.epochs": 30.0, "train.eval_every": 100},
        ),
        # full widths, longer schedules, more seeds
        "paper": TierPlan(
            task={"input_size": 64, "width": 1.0, "pretrain.train.epochs": 60.0},
            config={"train.epochs": 100.0, "train.eval_every": 200},
            seeds=(0, 1, 2, 3, 4),
        ),
    },
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"
