"""Tr-NAS: NAS with frozen pretrained ResNet-32 blocks on NAS-Bench-201 (paper 003).

The grid's model is B, the CIFAR ResNet-32 whose stem and first j blocks replace the
first i entries of every NB201 network (pretrained by the harness on the source and
cached); the variant label says which proxy: ``original`` (no transfer, the NB201
protocol), ``tr_5_5`` / ``tr_10_10`` (Tr-Net-i-j, 18 epochs with 13 of linear warmup).

- ``trnas_rank:<proxy>``: Kendall / Spearman of the proxy's validation accuracy against
  a reference (a longer harness training, or the NATS-Bench table) over M sampled
  architectures, all and top-k, with bootstrap CIs (Tables 1 and 3);
  ``trnas_rank:tr_<i>_<j>_w<n>`` is the warmup ablation (Fig. 7): n of the paper's 18 epochs
  in {0, 1, 5, 9, 17} (13 is the plain ``tr_5_5`` / ``tr_10_10`` cell), scaled to the tier's
  proxy epochs; the smoke tier runs only ``tr_5_5_w0``, short and paper the whole axis;
- ``trnas_rea:<proxy>``: regularized evolution with that proxy (Fig. 4);
- ``trnas_dartspt:<proxy>[_nocutout]``: DARTS+PT on the NB201 supernet or
  Tr-Supernet-5-5, with and without Cutout (Table 4, Fig. 5-6, Sec. 4.4.2), with the
  dominant Hessian eigenvalue w.r.t. alpha probed during search (Fig. 9, ``hessian``);
- ``trnas_cka:original``: linear CKA between B's stem + blocks and trained NB201 networks'
  stem + entries (Figs. 1-2, the motivation);
- ``trnas_memory:<net|supernet>_<proxy>``: training memory on tensors of the real shape
  (batch 256 networks, 128 supernets, fp32 NCHW at every tier; Table 2, Fig. 6): average and
  peak allocated on CUDA, saved activations everywhere; 3 / 32 / 64 architectures at smoke /
  short / paper, the Tr cells measuring the same architectures without transfer for the ratio's
  bootstrap CI;
- ``trnas_dartspt_darts:<original|tr_resnet20>[_nocutout]``: DARTS+PT in the DARTS space (8 two-input
  cells, C = 16) without / with cells 0-1 replaced by the stem + blocks 1-3 of a wide ResNet-20
  (64/128/256, built by the method, pretrained like B), 5 warmup epochs, with Cutout in the search
  (ramped as darts-pt ramps it) or, ``_nocutout``, without (Table 5's four rows).
  The paper runs CIFAR-10 with 4 seeds: ``--bench-datasets cifar10 --bench-seeds 0-3``. Smoke
  sizing (an 8-cell supernet costs ~0.4 s a forward on one CPU thread): 4 cells, B at width
  0.5 (C = 2), Tr-Supernet-2-4 (at 4 cells the replaced cells are a normal and a reduction
  cell, which B's blocks 1-4 match), one search step, perturbation for one (normal, reduce)
  pair of edges and of nodes (the rest decided from alpha as DARTS does), a 3-cell network.

Short and paper tiers pretrain B on the target's own training split (never val or
test; ``transfer.pretrain_on="target"``), as the paper pretrains ResNet-32 on the
NB201 train split. The paper tier runs CIFAR-10, CIFAR-100 and ImageNet16-120 (16 px) on
NB201's own splits (``split="nb201"``; place NB201's ``configs/nas-benchmark/*split*.txt`` in
``<data_root>/nas-benchmark/``) and takes the NATS-Bench table
``<data_root>/NATS-tss-v1_0-3ffb9-simple`` as the rank reference when present (else the harness
reference, named as such in every row).

Smoke tier: NB201 at C = 4 (B at width 0.25), N = 1 cell per stage, 16 px, a dozen
architectures (10), a few epochs on ``uci-digits``, B pretrained on ``mnist5k``. With N = 1
the paper's splits keep their meaning: ``tr_5_5`` replaces stage 1 by ResNet stage 1
(i = 1, j = 5), ``tr_10_10`` also the first reduction (i = 2, j = 10), leaving one
stage-2 cell trainable as Tr-Net-10-10 does with N = 5.

    pytest suites/test_trnas.py                                          # smoke: CPU, ~2 minutes
    pytest suites/test_trnas.py --bench-budget cpu -n 2                  # Fashion-MNIST, 2 cores, ~26 min
    pytest suites/test_trnas.py --bench-budget paper --bench-device cuda --bench-data-root /data
"""

from bench.execute.grid import Grid, TierPlan

PROXIES = ("original", "tr_5_5", "tr_10_10")
TRANSFER = {
    "original": {"transfer.enabled": False},
    "tr_5_5": {"transfer.enabled": True, "transfer.i": 5, "transfer.j": 5},
    "tr_10_10": {"transfer.enabled": True, "transfer.i": 10, "transfer.j": 10},
}
# With N = 1 (smoke) the same replacements are i = 1 (stage 1) and i = 2 (stage 1 + reduction).
SMOKE_I = {"tr_5_5": {"transfer.i": 1}, "tr_10_10": {"transfer.i": 2}}
ORIGINAL_EPOCHS = 12.0 / 18.0  # the Original proxy trains 12 epochs where Tr-Net trains 18

# Fig. 7's warmup axis in epochs of the paper's 18-epoch proxy; 13 is the default cell.
WARMUP_AXIS = (0, 1, 5, 9, 17)
ABLATION = {f"trnas_rank:{p}_w{n}": n for p in ("tr_5_5", "tr_10_10") for n in WARMUP_AXIS}

METHODS = {
    **{f"trnas_rank:{p}": TRANSFER[p] for p in PROXIES},
    **{label: dict(TRANSFER[_p]) for label in ABLATION for _p in [label.split(":")[1].rsplit("_w", 1)[0]]},
    **{f"trnas_rea:{p}": TRANSFER[p] for p in ("original", "tr_5_5")},
    **{f"trnas_dartspt:{p}": TRANSFER[p] for p in ("original", "tr_5_5")},
    **{f"trnas_dartspt:{p}_nocutout": TRANSFER[p] for p in ("original", "tr_5_5")},
    **{
        f"trnas_memory:{kind}_{p}": {**TRANSFER[p], "kind": kind}
        for kind in ("net", "supernet")
        for p in ("original", "tr_5_5")
    },
}


# The DARTS-space setting (paper Sec. 4.3.2): its own method and labels, outside per_label().
DARTS_SPACE = {
    "trnas_dartspt_darts:original": {"transfer.enabled": False},
    "trnas_dartspt_darts:tr_resnet20": {"transfer.enabled": True, "transfer.i": 2, "transfer.j": 3},
}
# Table 5's rows without Cutout in the search (supernet training and tuning); the derived network's
# training keeps the DARTS recipe's Cutout.
NOCUTOUT = {"search.cutout": 0, "tune.cutout": 0}
DARTS_SPACE.update({f"{label}_nocutout": {**o, **NOCUTOUT} for label, o in DARTS_SPACE.items()})


def _with_nocutout(tier: dict[str, dict]) -> dict[str, dict]:
    """A tier's DARTS-space overrides for the _nocutout labels too (search and tune Cutout 0)."""
    return {**tier, **{f"{label}_nocutout": {**o, **NOCUTOUT} for label, o in tier.items()}}


_DS_SMOKE = {
    "layers": 4,
    "source_width": 0.5,
    "search.steps": 1,
    "search.batch_size": 32,
    "search.cutout": 4,
    "search.log_every": 1000,
    "warmup_epochs": 0.5,
    "arch_opt.batch_size": 32,
    "tune.steps": 1,
    "tune.batch_size": 32,
    "tune.cutout": 4,
    "proj_eval_batches": 1,
    "proj_examples": 16,
    "proj_perturb_pairs": 1,
    "eval_C": 4,
    "eval_layers": 3,
    "final.steps": 4,
    "final.batch_size": 64,
    "final.cutout": 4,
    "final.log_every": 1000,
}
DARTS_SMOKE = _with_nocutout(
    {
        "trnas_dartspt_darts:original": _DS_SMOKE,
        "trnas_dartspt_darts:tr_resnet20": {**_DS_SMOKE, "transfer.j": 4},
    }
)
# short: the full space (8 cells, C = 16, B at width 4) with scaled-down budgets and a smaller evaluation net.
_DS_SHORT = {
    "search.epochs": 5.0,
    "warmup_epochs": 0.5,
    "tune.epochs": 0.25,
    "proj_examples": 2048,
    "eval_C": 16,
    "eval_layers": 8,
    "final.epochs": 20.0,
}
DARTS_SHORT = _with_nocutout(
    {
        "trnas_dartspt_darts:original": _DS_SHORT,
        "trnas_dartspt_darts:tr_resnet20": {
            **_DS_SHORT,
            "transfer.pretrain_on": "target",
            "transfer.pretrain.epochs": 30.0,
        },
    }
)
# paper: the method's defaults are the paper's (50 search epochs, 5 warmup, tune 5 epochs per projection
# step, 20-cell C = 36 network for 600 epochs); B = ResNet-20 at width 4 pretrained on the target's train
# split with Table 6's recipe.
DARTS_PAPER = _with_nocutout(
    {
        "trnas_dartspt_darts:original": {},
        "trnas_dartspt_darts:tr_resnet20": {"transfer.pretrain_on": "target"},
    }
)


# The motivation (Figs. 1-2): linear CKA between B's stem + blocks and trained NB201 networks' stem + entries.
# Its own method and label, outside per_label(); the networks are plain NB201 (Original) networks.
CKA = {"trnas_cka:original": {}}
CKA_SMOKE = {
    "trnas_cka:original": {
        "archs": 3,
        "N": 1,
        "train.epochs": 3.0 * ORIGINAL_EPOCHS,
        "train.batch_size": 64,
        "train.log_every": 1000,
        "images": 256,
        "cut_i": 1,  # Tr-Net-5-5 with N = 1 (SMOKE_I)
        "cut_j": 5,
    }
}
CKA_SHORT = {
    "trnas_cka:original": {
        "archs": 24,
        "train.epochs": 12.0,  # the Original proxy's length
        "pretrain_on": "target",
        "pretrain.epochs": 30.0,
    }
}
CKA_PAPER = {"trnas_cka:original": {"pretrain_on": "target"}}  # 1000 networks, 200 epochs, B on the target


# The paper's memory figures are fp32 NCHW (Table 2, Fig. 6): every tier's memory cells train so.
MEMORY_FP32 = {"train.bf16": False, "train.channels_last": False}


def _proxy_of(label: str) -> str:
    variant = label.split(":", 1)[1]
    for p in ("tr_10_10", "tr_5_5", "original"):
        if p in variant:
            return p
    raise ValueError(label)


def per_label(
    rank: dict, rea: dict, darts: dict, memory: dict, *, n1: bool, epochs: dict, source: dict | None = None
) -> dict[str, dict]:
    """Tier overrides for every label: shared sizes, the Original's shorter proxy, smoke's i for N = 1,
    and ``source`` (how B is pretrained) for the transfer labels."""
    out: dict[str, dict] = {}
    for label in METHODS:
        method, proxy = label.split(":", 1)[0], _proxy_of(label)
        base = {"trnas_rank": rank, "trnas_rea": rea, "trnas_dartspt": darts, "trnas_memory": memory}[method]
        o = dict(base)
        if n1 and proxy in SMOKE_I:
            o.update(SMOKE_I[proxy])
        if source and proxy != "original" and method != "trnas_memory":  # memory needs no trained B
            o.update(source)
        if method in ("trnas_rank", "trnas_rea") and proxy == "original":
            o.update({"proxy.epochs": epochs["proxy"] * ORIGINAL_EPOCHS, "warmup_epochs": 0.0})
        if method == "trnas_dartspt" and label.endswith("_nocutout"):
            o.update({"search.cutout": 0, "tune.cutout": 0})
        if label in ABLATION:  # n of the paper's 18 epochs, scaled to this tier's proxy
            o["warmup_epochs"] = ABLATION[label] * epochs["proxy"] / 18.0
        if method == "trnas_memory":
            o.update(MEMORY_FP32)
            if "supernet" in label:
                o.update({"train.batch_size": memory.get("supernet_batch", 128)})
        o.pop("supernet_batch", None)
        out[label] = o
    return out


SMOKE_PROXY = {"proxy.epochs": 3.0, "warmup_epochs": 2.0, "proxy.batch_size": 64, "proxy.log_every": 1000}
SMOKE_FINAL = {"epochs": 2.0, "batch_size": 64, "log_every": 1000}
SMOKE = per_label(
    rank={
        "archs": 10,
        "sample_top_k": 5,
        "N": 1,
        "bootstrap": 200,
        **SMOKE_PROXY,
        "reference_train.epochs": 4.0,
        "reference_train.batch_size": 64,
        "reference_train.log_every": 1000,
    },
    rea={
        "population": 4,
        "tournament": 2,
        "evaluations": 6,
        "N": 1,
        **SMOKE_PROXY,
        **{f"final.{k}": v for k, v in SMOKE_FINAL.items()},
    },
    darts={
        "N": 1,
        "search.epochs": 1.5,
        "warmup_epochs": 0.5,
        "search.cutout": 4,
        "search.log_every": 1000,
        "hessian.every_epochs": 0.5,  # Fig. 9's probe: 3 points of the 1.5-epoch search, ~1-1.5 s a cell
        "hessian.iters": 8,
        "tune.steps": 2,
        "tune.cutout": 4,
        "proj_eval_batches": 1,
        "final.epochs": 2.0,
        "final.batch_size": 64,
        "final.log_every": 1000,
    },
    memory={"N": 1, "archs": 3, "input_size": 16, "train.steps": 2, "train.batch_size": 256, "supernet_batch": 128},
    n1=True,
    epochs={"proxy": 3.0},
)

# short: one GPU, full width (C = 16, N = 5) on CIFAR-10 at 32 px, scaled-down budgets.
SHORT = per_label(
    rank={
        "archs": 24,
        "sample_top_k": 12,
        "reference": "harness",  # the harness split: a table under the data root is not this tier's reference
        "proxy.epochs": 6.0,
        "warmup_epochs": 4.0,
        "reference_train.epochs": 30.0,
    },
    rea={
        "population": 6,
        "tournament": 3,
        "evaluations": 20,
        "proxy.epochs": 6.0,
        "warmup_epochs": 4.0,
        "final.epochs": 30.0,
    },
    darts={
        "search.epochs": 10.0,
        "warmup_epochs": 3.0,
        "tune.epochs": 1.0,
        "final.epochs": 30.0,
        "hessian.every_epochs": 1.0,  # Fig. 9: the dominant eigenvalue once an epoch
    },
    memory={"archs": 32, "input_size": 32, "train.batch_size": 256, "supernet_batch": 128},
    n1=False,
    epochs={"proxy": 6.0},
    source={"transfer.pretrain_on": "target", "transfer.pretrain.epochs": 30.0},
)

# paper: the paper's numbers (1000 architectures, 18/13 epochs, REA 100 evaluations, DARTS+PT 50 search
# epochs and 10 tuning epochs per edge) on NB201's own splits (task split="nb201": NB201's split files
# under <data_root>/nas-benchmark/). The reference is the NATS-Bench table when <data_root> holds
# NATS-tss-v1_0-3ffb9-simple (reference="auto"; needs the nats_bench extra): its 200-epoch test accuracy
# (mean over its seeds) and Table 3's top-1000 of the whole space; without it the harness's 200-epoch
# reference and the top-250 of the random sample, each row naming which (note reference_kind).
# B is pretrained on the target's training split (200 epochs, the paper's Table 6 recipe).
PAPER = per_label(
    rank={},
    rea={},
    darts={"hessian.every_epochs": 1.0},  # Fig. 9: once an epoch of the 50
    memory={"archs": 64, "supernet_batch": 128},
    n1=False,
    epochs={"proxy": 18.0},
    source={"transfer.pretrain_on": "target"},
)

# The smoke tier keeps one ablation point (no warmup); the axis costs a rank cell per point.
SMOKE_SKIP = tuple(label for label in ABLATION if label != "trnas_rank:tr_5_5_w0")

# cpu: real data on 2 CPU cores (the evidence tier, ``make evidence``): Fashion-MNIST at 16 px, B and
# NB201 at width 0.5 (C = 8), N = 1 (the smoke tier's i for Tr-5-5 / Tr-10-10), B pretrained on the
# target's training split as the paper does. Table 1's rank correlation over 16 architectures: proxies
# of 3 epochs (Original 2) against a harness reference of 12 epochs on the same 4,000 training images,
# scored on the official 10,000 test images; 5 seeds, so Tr vs Original pairs by seed. The CKA
# motivation over 8 trained networks. Left to the GPU tiers (their claims say no data at this tier):
# the warmup axis, REA, DARTS+PT (both spaces) and the memory cells (on CPU only a saved-activation count,
# which the smoke tier already checks).
CPU_PROXY = {"proxy.epochs": 3.0, "warmup_epochs": 2.0, "proxy.batch_size": 64, "proxy.log_every": 1000}
CPU = per_label(
    rank={
        "archs": 16,
        "sample_top_k": 8,
        "N": 1,
        "reference": "harness",
        **CPU_PROXY,
        "reference_train.epochs": 12.0,
        "reference_train.batch_size": 64,
        "reference_train.log_every": 1000,
    },
    rea={},
    darts={},
    memory={},
    n1=True,
    epochs={"proxy": 3.0},
    source={"transfer.pretrain_on": "target", "transfer.pretrain.epochs": 8.0, "transfer.pretrain.batch_size": 64},
)
CKA_CPU = {
    "trnas_cka:original": {
        **CKA_SMOKE["trnas_cka:original"],
        "archs": 8,
        "train.epochs": 3.0 * ORIGINAL_EPOCHS,
        "images": 1024,
        "pretrain_on": "target",
        "pretrain.epochs": 8.0,
        "pretrain.batch_size": 64,
    }
}
CPU_RUNS = {f"trnas_rank:{p}" for p in PROXIES} | set(CKA_CPU)
CPU_SKIP = tuple(label for label in (*METHODS, *DARTS_SPACE) if label not in CPU_RUNS)

GRID = Grid(
    suite="trnas",
    methods={**METHODS, **DARTS_SPACE, **CKA},
    datasets=("uci-digits",),
    models=("resnet32",),
    seeds=(0,),
    task={"source": "mnist5k"},
    tiers={
        "smoke": TierPlan(
            task={"input_size": 16, "width": 0.25, "pretrain.train.epochs": 2.0, "pretrain.train.log_every": 1000},
            methods={**SMOKE, **DARTS_SMOKE, **CKA_SMOKE},
            skip_methods=SMOKE_SKIP,
        ),
        "cpu": TierPlan(
            datasets=("fashion-mnist",),
            seeds=(0, 1, 2, 3, 4),
            task={"input_size": 16, "width": 0.5, "source": None, "val_frac": 0.05, "train_limit": 4000},
            methods={**CPU, **CKA_CPU},
            skip_methods=CPU_SKIP,
        ),
        "short": TierPlan(
            datasets=("cifar10",),
            seeds=(0, 1, 2),
            task={"input_size": 32, "width": 1.0, "source": None, "val_frac": 0.25, "test_frac": 0.2},
            methods={**SHORT, **DARTS_SHORT, **CKA_SHORT},
        ),
        "paper": TierPlan(
            datasets=("cifar10", "cifar100", "imagenet16-120"),
            seeds=tuple(range(10)),
            task={"input_size": 32, "width": 1.0, "source": None, "split": "nb201"},
            dataset_task={"imagenet16-120": {"input_size": 16}},
            methods={**PAPER, **DARTS_PAPER, **CKA_PAPER},
        ),
    },
)


def test_cell(bench_cell):
    result = bench_cell.run()
    assert result.ok, f"{result.status}: {result.error_type}: {result.error}"
