"""NASOA: meta-data shards, the schedule generator vs RS / BOHB / fixed MLP under time budgets,
and the Table 2 step-time table (paper 001).

Cells:
- ``nasoa_meta:*`` on the meta-train datasets (seed = shard): random fine-tuning runs on
  random subsets, every run's meta-features and accuracy as series; cached for the
  ``nasoa`` cells (which generate a missing shard themselves under a file lock).
- ``nasoa:<search>-t<k>`` on the meta-test dataset at budget t_k (k of 4, log-uniform
  between ``budget_low`` and ``budget_high``; search gen / fixed_mlp / rs / bohb over the
  ET-NAS zoo, and Table 4's rs_hpo / bohb_hpo (one fixed large model), rs_regnet /
  bohb_regnet (model from the RegNetY series) and oa_regnet (the generator over the series)):
  accuracy at the budget, chosen model and regime, search cost in device-seconds, the
  predictor's errors (Table 3 layout for every
  predictor depth: ``t3_<predictor>_<segment>_mae``) and, for the generator, the Kendall
  tau between predicted and achieved accuracy over extra scored candidates.
- ``nasoa_steptime:table2``: training step (the engine's, speed mode) / inference ms and training memory.

    pytest suites/test_nasoa.py --bench-db nasoa.db                           # smoke, CPU
    pytest suites/test_nasoa.py --bench-budget paper --bench-device cuda -k steptime   # Table 2 on the GPU
"""

import dataclasses as _dc

from bench.execute.grid import Grid, TierPlan

SMOKE_ZOO = {"zoo.models": ("etnas_a", "etnas_b", "etnas_d"), "zoo.batch_size": 32}
SMOKE_META = {
    "meta.runs": 16,
    "meta.min_iters": 4,
    "meta.max_iters": 40,
    "meta.min_source_images": 1,
    "meta.min_images_per_class": 4,
}
# Smoke plans with counted step costs (FLOPs and operators at nominal rates, bench.models.cost), not measured
# ones: budgets, plans, search spend and NSGA fronts are then the same on a busy or an idle machine, so
# no smoke cell's outcome depends on the wall clock; the measured step times are recorded beside.
SMOKE_COST = {"cost.kind": "counted"}
SMOKE_NASOA = {
    **SMOKE_ZOO,
    **SMOKE_META,
    **SMOKE_COST,
    "meta_datasets": ("uci-digits",),
    "meta_shards": (0,),
    "budget_low": ("etnas_a", 1.0),
    "budget_high": ("etnas_d", 4.0),
    "step_steps": 4,
    "cost_factor": 6.0,
}

PAPER_TABLE2 = (
    "etnas_a",
    "etnas_b",
    "etnas_c",
    "etnas_d",
    "etnas_e",
    "etnas_f",
    "etnas_g",
    "etnas_h",
    "etnas_i",
    "etnas_j",
    "etnas_k",
    "etnas_l",
    "tv:regnet_y_400mf",
    "tv:regnet_y_800mf",
    "tv:regnet_y_1_6gf",
    "tv:regnet_y_16gf",
    "tv:efficientnet_b0",
    "tv:efficientnet_b1",
    "tv:efficientnet_b2",
    "tv:efficientnet_b3",
    "tv:mobilenet_v3_large",
    "tv:resnet18",
    "tv:resnet34",
    "tv:resnet50",
    "tv:resnet101",
)


def budgets(search: str, extra: dict, indices=(0, 1, 2, 3)) -> dict[str, dict]:
    return {f"nasoa:{search}-t{k}": {**extra, "budget_index": k} for k in indices}


# Table 4's variants beside the zoo: "HPO only" (RS / BOHB over hyperparameters of one fixed large
# model: the paper's RegNetY-16GF), "HPO + series" (RS / BOHB over model and hyperparameters of the
# RegNetY series) and "OA only" (the online generator over the RegNetY series); they need no
# Table 3 errors (``table3_depths=()``), and only "OA only" reads a meta-data stream (its own series').
REGNETS = ("regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_16gf")
HPO_ONLY = {"zoo.models": ("regnet_y_16gf",), "table3_depths": ()}
SERIES = {"zoo.models": REGNETS, "table3_depths": ()}
# Smoke: the largest smoke zoo model for "HPO only"; the two fastest RegNets (at width 1/8, 16 px a
# RegNet step is 2-6x an ET-NAS step, so t0 fits only part of an epoch of the fastest one), with a
# shorter meta-data stream for "OA only" (its shard, pretraining included, is paid inside the suite).
SMOKE_REGNETS = {"zoo.models": ("regnet_y_400mf", "regnet_y_800mf")}
TABLE4 = {
    "rs_hpo": {"search": "random", **HPO_ONLY},
    "bohb_hpo": {"search": "bohb", **HPO_ONLY},
    "rs_regnet": {"search": "random", **SERIES},
    "bohb_regnet": {"search": "bohb", **SERIES},
    "oa_regnet": {"search": "generator", "zoo.models": REGNETS},
}
SMOKE_CAP = {"max_trials": 3}  # smoke: a fixed bound on RS / BOHB trials of the Table 4 variants
SMOKE_TABLE4 = {
    "rs_hpo": {**SMOKE_NASOA, **TABLE4["rs_hpo"], "zoo.models": ("etnas_d",), **SMOKE_CAP},
    "bohb_hpo": {**SMOKE_NASOA, **TABLE4["bohb_hpo"], "zoo.models": ("etnas_d",), **SMOKE_CAP},
    "rs_regnet": {**SMOKE_NASOA, **TABLE4["rs_regnet"], **SMOKE_REGNETS, **SMOKE_CAP},
    "bohb_regnet": {**SMOKE_NASOA, **TABLE4["bohb_regnet"], **SMOKE_REGNETS, **SMOKE_CAP},
    "oa_regnet": {**SMOKE_NASOA, **TABLE4["oa_regnet"], **SMOKE_REGNETS, "meta.runs": 8, "meta.max_iters": 16},
}
# The paper's budgets: ResNet-18 for 10 epochs to ResNet-101 for 50 epochs.
PAPER_BUDGETS = {"budget_low": ("resnet18", 10.0), "budget_high": ("resnet101", 50.0)}

METHODS = {
    "nasoa_meta:shard": {"dataset": "uci-digits"},
    **budgets("gen", {"search": "generator"}),
    **budgets("fixed_mlp", {"search": "generator", "online": False, "predictor.adaptive": False}),
    **budgets("rs", {"search": "random"}),
    **budgets("bohb", {"search": "bohb"}),
    **{label: cfg for name, extra in TABLE4.items() for label, cfg in budgets(name, extra).items()},
    "nasoa_steptime:table2": {},
}
SMOKE_METHODS = {
    "nasoa_meta:shard": {**SMOKE_ZOO, **SMOKE_META, "dataset": "uci-digits"},
    **{label: SMOKE_NASOA for label in METHODS if label.startswith("nasoa:")},
    **{label: cfg for name, extra in SMOKE_TABLE4.items() for label, cfg in budgets(name, extra).items()},
    "nasoa:gen-t1": {**SMOKE_NASOA, "rank_candidates": 3},
    "nasoa_steptime:table2": {
        "models": ("etnas_a", "etnas_d", "etnas_g", "tv:resnet18"),
        "width": 0.125,
        "size": 32,
        "batch": 8,
        "steps": 3,
        "warmup": 1,
        "train.steps": 10,
        "train.batch_size": 32,
        "train.log_every": 10,
    },
}
# The smoke tier trims budgets to t0 and t2 (t1 for the generator's rank check); short and paper
# run all four budgets.
SMOKE_SKIP = tuple(
    f"nasoa:{s}-t{k}" for s in ("gen", "fixed_mlp", "rs", "bohb", *TABLE4) for k in (1, 3) if (s, k) != ("gen", 1)
)

GRID = Grid(
    suite="nasoa",
    methods=METHODS,
    datasets=("lfw-faces",),
    models=("etnas_a",),
    seeds=(0,),
    task={"source": "mnist5k"},
    tiers={
        "smoke": TierPlan(
            task={"input_size": 16, "width": 0.125, "pretrain.train.epochs": 1.0},
            methods={k: v for k, v in SMOKE_METHODS.items() if k not in SMOKE_SKIP},
            skip_methods=SMOKE_SKIP,
        ),
        "short": TierPlan(task={"input_size": 64, "width": 0.5}),
        "paper": TierPlan(
            datasets=("fgvc-aircraft",),
            task={"input_size": 224, "width": 1.0, "source": "imagenet"},
            methods={
                "nasoa_steptime:table2": {"models": PAPER_TABLE2},
                **{label: PAPER_BUDGETS for label in METHODS if label.startswith("nasoa:")},
            },
        ),
    },
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"


# --- nasoa_nsga: the offline NAS (modified NSGA-II, Algorithms 1-2) at proxy scale --------------------
# One cell: block-level search on ResNet-18's macro, then macro-level search over the front's cells;
# proxy accuracy on uci-digits (tiny nets, 30 engine steps), step time counted at 16 px (measured at
# short and paper; the measured ms is recorded beside), cap 4x the frame's step time; every
# evaluated architecture is recorded (series + the ``nsga_archs`` note).

NSGA_SMOKE = {
    "nsga.nodes": 4,
    "nsga.block_init": 4,
    "nsga.block_generations": 1,
    "nsga.macro_init": 4,
    "nsga.macro_generations": 2,
    "nsga.block_frame": "020-_64_11-21-21-21",
    "nsga.cells": 3,
    "nsga.first_channels": (32, 64),
    "nsga.last_channels": (256, 512),
    "nsga.min_blocks": 4,
    "nsga.max_blocks": 10,
    "nsga.zoo_size": 4,
    "nsga.step_cap_ratio": 4.0,
    "nsga.max_draws": 20,
    "nsga.proxy.dataset": "uci-digits",
    "nsga.proxy.input_size": 16,
    "nsga.proxy.width": 0.125,
    "nsga.proxy.train.steps": 30,
    "nsga.proxy.train.batch_size": 32,
    "nsga.proxy.train.log_every": 30,
    "nsga.proxy.time_width": 0.125,
    "nsga.proxy.time_size": 16,
    "nsga.proxy.time_batch": 8,
    "nsga.proxy.time_steps": 3,
    "nsga.proxy.time_warmup": 1,
    "nsga.proxy.cost.kind": "counted",
    "final.steps": 30,
    "final.batch_size": 32,
    "final.log_every": 30,
}
NSGA_SHORT = {
    "nsga.nodes": 4,
    "nsga.block_init": 8,
    "nsga.block_generations": 3,
    "nsga.macro_init": 8,
    "nsga.macro_generations": 3,
    "nsga.proxy.dataset": "mnist5k",
    "nsga.proxy.input_size": 32,
    "nsga.proxy.time_width": 0.25,
    "nsga.proxy.time_size": 64,
    "nsga.step_cap_ratio": 2.0,
    "final.epochs": 10.0,
}

GRID = _dc.replace(
    GRID,
    methods={**GRID.methods, "nasoa_nsga:search": {}},
    tiers={
        **GRID.tiers,
        "smoke": _dc.replace(
            GRID.tiers["smoke"], methods={**GRID.tiers["smoke"].methods, "nasoa_nsga:search": NSGA_SMOKE}
        ),
        "short": _dc.replace(
            GRID.tiers["short"], methods={**GRID.tiers["short"].methods, "nasoa_nsga:search": NSGA_SHORT}
        ),
    },
)
