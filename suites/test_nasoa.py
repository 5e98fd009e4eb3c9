"""NASOA: meta-data shards, the schedule generator vs RS / BOHB / fixed MLP under time budgets,
and the Table 2 step-time table (paper 001).

Cells:
- ``nasoa_meta:*`` on the meta-train datasets (seed = shard): random fine-tuning runs on
  random subsets, every run's meta-features and accuracy as series; cached for the
  ``nasoa`` cells (which generate a missing shard themselves under a file lock).
- ``nasoa:<search>-t<k>`` on the meta-test dataset at budget t_k (k of 4, log-uniform
  between ``budget_low`` and ``budget_high``): accuracy at the budget, chosen model and
  regime, search cost in device-seconds, the predictor's errors (Table 3 layout for every
  predictor depth: ``t3_<predictor>_<segment>_mae``) and, for the generator, the Kendall
  tau between predicted and achieved accuracy over extra scored candidates.
- ``nasoa_steptime:table2``: training step / inference ms and peak training memory.

    pytest suites/test_nasoa.py --bench-db nasoa.db                           # smoke, CPU
    pytest suites/test_nasoa.py --bench-budget paper --bench-device cuda -k steptime   # Table 2 on the GPU
"""
from bench.grid import Grid, TierPlan

SMOKE_ZOO = {"zoo.models": ("etnas_a", "etnas_b", "etnas_d"), "zoo.batch_size": 32}
SMOKE_META = {"meta.runs": 16, "meta.min_iters": 4, "meta.max_iters": 40, "meta.min_source_images": 1,
              "meta.min_images_per_class": 4}
SMOKE_NASOA = {**SMOKE_ZOO, **SMOKE_META, "meta_datasets": ("uci-digits",), "meta_shards": (0,),
               "budget_low": ("etnas_a", 1.0), "budget_high": ("etnas_d", 4.0), "step_steps": 4,
               "cost_factor": 6.0}

PAPER_TABLE2 = ("etnas_a", "etnas_b", "etnas_c", "etnas_d", "etnas_e", "etnas_f", "etnas_g", "etnas_h", "etnas_i",
                "etnas_j", "etnas_k", "etnas_l", "tv:regnet_y_400mf", "tv:regnet_y_800mf", "tv:regnet_y_1_6gf",
                "tv:regnet_y_16gf", "tv:efficientnet_b0", "tv:efficientnet_b1", "tv:efficientnet_b2",
                "tv:efficientnet_b3", "tv:mobilenet_v3_large", "tv:resnet18", "tv:resnet34", "tv:resnet50",
                "tv:resnet101")


def budgets(search: str, extra: dict, indices=(0, 1, 2, 3)) -> dict[str, dict]:
    return {f"nasoa:{search}-t{k}": {**extra, "budget_index": k} for k in indices}


METHODS = {
    "nasoa_meta:shard": {"dataset": "uci-digits"},
    **budgets("gen", {"search": "generator"}),
    **budgets("fixed_mlp", {"search": "generator", "online": False, "predictor.adaptive": False}),
    **budgets("rs", {"search": "random"}),
    **budgets("bohb", {"search": "bohb"}),
    "nasoa_steptime:table2": {},
}
SMOKE_METHODS = {
    "nasoa_meta:shard": {**SMOKE_ZOO, **SMOKE_META, "dataset": "uci-digits"},
    **{label: SMOKE_NASOA for label in METHODS if label.startswith("nasoa:")},
    "nasoa:gen-t1": {**SMOKE_NASOA, "rank_candidates": 3},
    "nasoa_steptime:table2": {"models": ("etnas_a", "etnas_d", "etnas_g", "tv:resnet18"), "width": 0.125,
                              "size": 32, "batch": 8, "steps": 3, "warmup": 1, "train.steps": 10,
                              "train.batch_size": 32, "train.log_every": 10},
}
# The smoke grid trims budgets to t0 and t2 (t1 for the generator's rank check).
SMOKE_SKIP = [f"nasoa:{s}-t{k}" for s in ("gen", "fixed_mlp", "rs", "bohb") for k in (1, 3)]

GRID = Grid(
    suite="nasoa",
    methods={label: cfg for label, cfg in METHODS.items()
             if label not in SMOKE_SKIP or label == "nasoa:gen-t1"},
    datasets=("lfw-faces",),
    models=("etnas_a",),
    seeds=(0,),
    task={"source": "mnist5k"},
    tiers={
        "smoke": TierPlan(task={"input_size": 16, "width": 0.125, "pretrain.train.epochs": 1.0},
                          methods={k: v for k, v in SMOKE_METHODS.items() if k not in SMOKE_SKIP or k == "nasoa:gen-t1"}),
        "short": TierPlan(task={"input_size": 64, "width": 0.5}),
        "paper": TierPlan(datasets=("fgvc-aircraft",), task={"input_size": 224, "width": 1.0, "source": "imagenet"},
                          methods={"nasoa_steptime:table2": {"models": PAPER_TABLE2}}),
    },
)

def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"


# --- nasoa_nsga: the offline NAS (modified NSGA-II, Algorithms 1-2) at proxy scale --------------------
# One cell: block-level search on ResNet-18's macro, then macro-level search over the front's cells;
# proxy accuracy on uci-digits (tiny nets, 30 engine steps), step time measured at 16 px, cap 4x the
# frame's step time (CPU timing noise under 2 workers makes a 2x cap re-draw often); every
# evaluated architecture is recorded (series + the ``nsga_archs`` note).
import dataclasses as _dc

NSGA_SMOKE = {"nsga.nodes": 4, "nsga.block_init": 4, "nsga.block_generations": 1, "nsga.macro_init": 4,
              "nsga.macro_generations": 2, "nsga.block_frame": "020-_64_11-21-21-21", "nsga.cells": 3,
              "nsga.first_channels": (32, 64), "nsga.last_channels": (256, 512), "nsga.min_blocks": 4,
              "nsga.max_blocks": 10, "nsga.zoo_size": 4, "nsga.step_cap_ratio": 4.0, "nsga.max_draws": 20,
              "nsga.proxy.dataset": "uci-digits", "nsga.proxy.input_size": 16, "nsga.proxy.width": 0.125,
              "nsga.proxy.train.steps": 30, "nsga.proxy.train.batch_size": 32, "nsga.proxy.train.log_every": 30,
              "nsga.proxy.time_width": 0.125, "nsga.proxy.time_size": 16, "nsga.proxy.time_batch": 8,
              "nsga.proxy.time_steps": 3, "nsga.proxy.time_warmup": 1,
              "final.steps": 30, "final.batch_size": 32, "final.log_every": 30}
NSGA_SHORT = {"nsga.nodes": 4, "nsga.block_init": 8, "nsga.block_generations": 3, "nsga.macro_init": 8,
              "nsga.macro_generations": 3, "nsga.proxy.dataset": "mnist5k", "nsga.proxy.input_size": 32,
              "nsga.proxy.time_width": 0.25, "nsga.proxy.time_size": 64, "nsga.step_cap_ratio": 2.0,
              "final.epochs": 10.0}

GRID = _dc.replace(
    GRID,
    methods={**GRID.methods, "nasoa_nsga:search": {}},
    tiers={**GRID.tiers,
           "smoke": _dc.replace(GRID.tiers["smoke"],
                                methods={**GRID.tiers["smoke"].methods, "nasoa_nsga:search": NSGA_SMOKE}),
           "short": _dc.replace(GRID.tiers["short"],
                                methods={**GRID.tiers["short"].methods, "nasoa_nsga:search": NSGA_SHORT})},
)
