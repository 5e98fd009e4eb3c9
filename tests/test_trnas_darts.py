"""Tr-NAS in the DARTS space: supernet, ResNet-20 prefix, projection, genotypes, the method."""

import numpy as np
import pytest
import torch
from torch import nn

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from bench.models.net import build_model
from methods.trnas import darts_space
from methods.trnas.darts_pt import AlphaStep, ArchOptConfig, project
from methods.trnas.darts_space import (
    EDGES,
    PRIMITIVES,
    DartsArchState,
    Genotype,
    cell_layout,
    check_darts_transfer,
    darts_network,
    darts_transfer,
    decide_node,
    format_genotype,
    paired_order,
    parse_genotype,
    search_supernet,
    valid_darts_pairs,
)
from methods.trnas.network import _source_layout, saved_activation_bytes
from tests.conftest import tiny_spec

QUIET = Recorder("cpu", progress=lambda m: None)


def _split(n=32, size=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(
        "train", torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g), classes, size
    )


def _resnet20(width):
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, width=width)


def test_space_layout_and_alpha_shapes():
    assert len(EDGES) == 14 and len(PRIMITIVES) == 8
    assert [sum(1 for n, _ in EDGES if n == node) for node in range(4)] == [2, 3, 4, 5]
    layout = cell_layout(16, 8)
    assert [k for k, s in enumerate(layout) if s.reduction] == [2, 5]
    assert [s.out_channels for s in layout] == [64, 64, 128, 128, 128, 256, 256, 256]
    assert [s.reduction_prev for s in layout] == [False, False, False, True, False, False, True, False]
    state = DartsArchState(seed=0)
    assert state.alpha.shape == (2, 14, 8) and state.alpha.requires_grad
    for t in (0, 1):
        w = state.weights(t)
        assert w.shape == (14, 8) and torch.allclose(w.sum(-1), torch.ones(14))
    net = search_supernet(state, 2, 8, 10)
    assert len(net.structure.blocks) == 8 and [len(s) for s in net.structure.stages] == [2, 3, 3]
    assert not any(p is state.alpha for p in net.parameters())
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    (g,) = torch.autograd.grad(out.sum(), [state.alpha])
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0  # normal and reduction alphas both used
    # search BN has no affine parameters (DARTS); the stem's does
    cell_bns = [m for m in net.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert cell_bns and not any(m.affine for m in cell_bns)


def test_skipping_zero_weight_ops_computes_what_the_weights_say():
    state = DartsArchState(seed=1)
    net = search_supernet(state, 2, 3, 10).eval()
    state.decide(3, 4)
    state.decide(14 + 5, 0)  # a reduction edge decided as none
    state.decide_node(4 + 2, [14 + 6, 14 + 8])  # reduction node 2 (edges 5..8) drops edges 5 and 7
    state.removed = (7, 6)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        fast = net(x)
        state.zero = lambda t: [[o == 0 for o in range(8)] for _ in range(14)]  # compute every op
        slow = net(x)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_wide_resnet20_is_b_and_the_prefix_fits_cells_0_1():
    layout = _source_layout(_resnet20(4.0))
    assert layout[0] == (64, 1) and [c for c, _ in layout[1:]] == [64] * 3 + [128] * 3 + [256] * 3
    assert [k for k in range(1, 10) if layout[k][1] > layout[k - 1][1]] == [4, 7]  # downsampling blocks
    net = search_supernet(DartsArchState(), 16, 8, 10)
    assert (2, 3) in valid_darts_pairs(net, _resnet20(4.0))
    check_darts_transfer(net, _resnet20(4.0), 2, 3)
    # the paper's setting: saved activations of one search batch, Original vs Tr-Supernet-2-3
    x, y = torch.randn(1, 3, 16, 16), torch.randint(0, 10, (1,))  # every activation scales with H x W alike
    original = saved_activation_bytes(net, x, y)
    tr = darts_transfer(search_supernet(DartsArchState(), 16, 8, 10), _resnet20(4.0), 2, 3)
    assert 1.6 < original / saved_activation_bytes(tr, x, y) < 1.9  # Table 5: 8.12 / 4.64 GB = 1.75x
    small = search_supernet(DartsArchState(), 4, 8, 10)
    with pytest.raises(InvalidConfig, match=r"Tr-Supernet-2-4 does not fit.*Pairs that fit: \[.*\(2, 3\)"):
        darts_transfer(small, _resnet20(1.0), 2, 4)
    with pytest.raises(InvalidConfig, match="no|none"):
        darts_transfer(search_supernet(DartsArchState(), 8, 8, 10), _resnet20(1.0), 2, 3)
    with pytest.raises(InvalidConfig, match="j must be in 1..9"):
        darts_transfer(small, _resnet20(1.0), 2, 10)


def test_frozen_prefix_is_bit_identical_after_search_steps_and_saves_no_activations():
    state = DartsArchState(seed=0)
    tr = darts_transfer(search_supernet(state, 2, 4, 10), _resnet20(0.5), 2, 4)
    assert tr.frozen_prefix == 5 and all(not p.requires_grad for n, p in tr.named_parameters() if n.startswith("src_"))
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with torch.no_grad():
        h = x
        for _, part in tr.parts()[: tr.frozen_prefix]:
            h = part(h)
    suffix = nn.Sequential(*[m for _, m in tr.parts()[tr.frozen_prefix :]])
    total = saved_activation_bytes(tr, x, y)
    assert total == saved_activation_bytes(suffix, h, y) > 0
    before = {k: v.clone() for k, v in tr.state_dict().items() if k.startswith("src_")}
    live = {k: v.detach().clone() for k, v in tr.named_parameters() if k.startswith("cells.")}
    alpha = state.alpha.detach().clone()
    hook = AlphaStep(tr, state, _split(32), ArchOptConfig(batch_size=8), seed=1)
    engine.fit(
        tr,
        _split(32),
        engine.TrainConfig(steps=3, batch_size=8, lr=0.1, log_every=3),
        QUIET,
        hooks=engine.StepHooks(before_step=hook),
        seed=0,
        params=[p for p in tr.parameters() if p.requires_grad],
    )
    tr.train()
    assert not any(m.training for m in tr.src_stem.modules()) and not any(
        m.training for b in tr.src_blocks for m in b.modules()
    )
    after = tr.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert any(not torch.equal(v, after[k]) for k, v in live.items()) and hook.steps == 3
    assert not torch.equal(alpha, state.alpha.detach())
    tr.set_frozen_prefix(0)  # trained end to end, the prefix would store activations too
    assert saved_activation_bytes(tr, x, y) > total


class _Scored(nn.Module):
    """A stand-in supernet: its accuracy rises with sum(weights * value), so projection has a known answer."""

    def __init__(self, state, n=40):
        super().__init__()
        self.state = state
        self.value = torch.rand(2, 14, 8, generator=torch.Generator().manual_seed(0))
        self.thresholds = torch.linspace(0, 14, n)

    def forward(self, x):
        score = sum(float((self.state.weights(t) * self.value[t]).sum()) for t in (0, 1))
        right = (self.thresholds < score).float()
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = right[: len(x)] * 2 - 1  # class 0 when the example's threshold is below the score
        return logits


def test_projection_decides_every_edge_once_then_keeps_two_inputs_per_node():
    state = DartsArchState(seed=0)
    net = _Scored(state)
    split = Split("arch", torch.zeros(40, 3, 8, 8), torch.zeros(40, dtype=torch.long), 10, 8)
    ran = []
    rng = np.random.default_rng(0)
    order = paired_order(rng, state.undecided(0), state.undecided(1))
    assert [g // 14 for g in order] == [0, 1] * 14  # normal, reduce, normal, ...
    decisions = project(net, state, split, order, 0, lambda steps: ran.extend(s() for s in steps), ops=PRIMITIVES)
    assert sorted(g for g, _, _ in decisions) == list(range(28)) and len(ran) == 28
    assert all(keep == int(np.argmin(accs)) and len(accs) == 8 for _, keep, accs in decisions)
    assert state.undecided(0) == state.undecided(1) == []
    with pytest.raises(ValueError, match="already decided"):
        state.decide(0, 1)
    for t in (0, 1):  # the first node has only its 2 inputs (darts-pt has no step for it)
        assert decide_node(net, state, split, 4 * t, 0) == (tuple(state.node_inputs(4 * t)), [])
    node_order = paired_order(rng, state.undecided_nodes(0), state.undecided_nodes(1))
    nodes = [(n, decide_node(net, state, split, n, 0)[0]) for n in node_order]
    assert sorted(n for n, _ in nodes) == [1, 2, 3, 5, 6, 7] and state.undecided_nodes(0) == []
    for node_id, keep in nodes:
        assert len(set(keep)) == 2 and set(keep) <= set(state.node_inputs(node_id))
    for t in (0, 1):
        w = state.weights(t).detach()
        kept = {g - 14 * t for n in range(4) for g in state.kept[4 * t + n]}
        assert all(float(w[e].sum()) == 0 for e in range(14) if e not in kept)
        assert all(float(w[e].max()) == 1 for e in kept if state.decided[14 * t + e] > 0)
    with pytest.raises(ValueError, match="already decided"):
        state.decide_node(0, [0, 1])
    genotype, fallbacks = state.genotype()
    assert len(genotype.normal) == len(genotype.reduce) == 8 and fallbacks >= 0
    assert parse_genotype(format_genotype(genotype)) == genotype


def _scripted_accuracy(monkeypatch, state, node_id, script):
    """Stub the projection measurement: ``script[round][edge]`` is the accuracy with that input removed.

    It checks what darts-pt measures: exactly one input removed, none of the node's inputs dropped yet
    (the edges eliminated in earlier rounds stay in the supernet while the later rounds measure)."""
    calls = []

    def accuracy(net, split, batches=0, batch_size=256):
        assert state.kept[node_id] is None and state.removed is None and state.removed_edge is not None
        rnd = sum(1 for c in calls if c == state.removed_edge)  # how often this edge was measured before
        calls.append(state.removed_edge)
        return script[rnd][state.removed_edge]

    monkeypatch.setattr(darts_space, "train_mode_accuracy", accuracy)
    return calls


def test_node_inputs_are_chosen_by_darts_pts_elimination_rounds_not_one_shot(monkeypatch):
    """Node 2 (4 inputs, edges 5-8). Round 1: removing edge 6 hurts least (60) -> eliminated. Round 2
    re-measures 5, 7, 8 (57, 51, 45): 5 goes. Kept: (7, 8). A one-shot top-2 on round 1 keeps (5, 8)."""
    state = DartsArchState(seed=0)
    script = [{5: 50.0, 6: 60.0, 7: 55.0, 8: 40.0}, {5: 57.0, 7: 51.0, 8: 45.0}]
    calls = _scripted_accuracy(monkeypatch, state, 2, script)
    keep, rounds = decide_node(None, state, None, 2, 0)
    assert keep == (7, 8) and state.kept[2] == (7, 8)
    assert calls == [5, 6, 7, 8, 5, 7, 8]  # 4 + 3 measurements
    assert rounds == [list(script[0].items()), list(script[1].items())]
    one_shot = tuple(sorted(sorted(script[0], key=script[0].get)[:2]))
    assert one_shot == (5, 8) != keep


def test_node_elimination_drops_the_later_edge_on_a_tie_and_measures_5_4_3_for_the_last_node(monkeypatch):
    """darts-pt updates its candidate on ``not acc < best``: of equal accuracies the later edge goes."""
    state = DartsArchState(seed=0)
    flat = {g: 50.0 for g in range(9, 14)}  # node 3: edges 9-13, every removal equal
    calls = _scripted_accuracy(monkeypatch, state, 3, [flat, flat, flat])
    keep, rounds = decide_node(None, state, None, 3, 0)
    assert keep == (9, 10) and [len(r) for r in rounds] == [5, 4, 3] and len(calls) == 12


def test_genotype_strings_round_trip_and_build_a_fixed_network():
    normal = (
        ("sep_conv_3x3", 0),
        ("dil_conv_5x5", 1),
        ("skip_connect", 0),
        ("sep_conv_5x5", 2),
        ("avg_pool_3x3", 1),
        ("dil_conv_3x3", 3),
        ("max_pool_3x3", 0),
        ("sep_conv_3x3", 4),
    )
    reduce = (
        ("max_pool_3x3", 0),
        ("skip_connect", 1),
        ("dil_conv_5x5", 0),
        ("avg_pool_3x3", 2),
        ("sep_conv_5x5", 1),
        ("skip_connect", 2),
        ("dil_conv_3x3", 3),
        ("max_pool_3x3", 0),
    )
    g = Genotype(normal, reduce)
    text = format_genotype(g)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('dil_conv_5x5', 1)")
    assert parse_genotype(text) == g
    with pytest.raises(InvalidConfig, match="not a DARTS genotype"):
        parse_genotype("|nor_conv_3x3~0|")
    with pytest.raises(InvalidConfig, match="node 2 can read nodes 0..1"):
        Genotype((("sep_conv_3x3", 2),) + normal[1:], reduce)
    with pytest.raises(InvalidConfig, match="twice"):
        Genotype((("sep_conv_3x3", 0), ("sep_conv_5x5", 0)) + normal[2:], reduce)
    net = darts_network(g, C=4, layers=5, num_classes=10)
    fives = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5) and m.dilation == (2, 2)]
    assert len(fives) == 3 + 2  # dil_conv_5x5 in 3 normal cells and 2 reduction cells
    engine.fit(net, _split(16), engine.TrainConfig(steps=2, batch_size=8, log_every=2), QUIET, seed=0)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_method_with_the_resnet20_prefix_end_to_end():
    cfg = {
        "transfer.enabled": True,
        "transfer.i": 2,
        "transfer.j": 4,
        "source_width": 0.5,
        "C": 0,
        "layers": 4,
        "warmup_epochs": 0.5,
    }
    result = run_cell(tiny_spec("trnas_dartspt_darts", config=cfg))
    assert result.ok, result.error
    m = result.metrics
    assert m["proj_decisions_count"] == 2 and m["proj_node_decisions_count"] == 2
    assert m["proj_decisions_count"] + m["proj_node_decisions_count"] + m["proj_alpha_decisions_count"] == 28 + 6
    assert m["search_act_mib"] > 0 and m["search_s"] > 0 and m["alpha_steps"] == 1 + m["proj_tune_steps_count"]
    # darts-pt's DARTS-space schedule: tune after every step, one epoch (here: the 1-step interval) after the last
    assert m["proj_tunes_count"] == 2 and m["proj_tune_steps_count"] == 2
    genotype = parse_genotype(result.info["found_genotype"])
    assert len(genotype.normal) == 8
    assert len(result.series["proj_removed_top1_pct"]) == 2 * 8
