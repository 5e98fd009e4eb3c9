"""Tr-NAS: the NB201 space, networks, Tr-Net surgery, memory, REA, projection, rank statistics."""

import dataclasses
import random
import sys
import types

import numpy as np
import pytest
import torch
from scipy import stats

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from bench.measure import MemoryMeter, count_params
from bench.models.net import build_model
from methods.trnas import space
from methods.trnas.darts_pt import ArchOptConfig, SearchRun, project, ramped_cutout, split_halves, tune_gaps
from methods.trnas.network import (
    TransferNet,
    check_transfer,
    nb201,
    replaced_entries,
    saved_activation_bytes,
    transfer,
    valid_pairs,
)
from methods.trnas.rank import RankConfig, correlations
from methods.trnas.rea import RegularizedEvolution
from methods.trnas.supernet import ArchState, supernet
from tests.conftest import tiny_spec

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


# ----------------------------------------------------------------------------- space


def test_space_has_15625_distinct_archs_and_round_trips():
    archs = list(space.all_archs())
    assert len(archs) == space.SPACE_SIZE == 15_625
    strings = [space.format_arch(a) for a in archs]
    assert len(set(archs)) == len(set(strings)) == 15_625
    for index, (arch, text) in enumerate(zip(archs, strings)):
        assert space.parse(text) == arch
        assert space.to_index(arch) == index
        assert space.from_index(index) == arch


def test_index_order_is_gen_all_order_and_example_parses():
    assert space.format_arch(space.from_index(0)) == ALL_NONE
    assert space.from_index(1) == (0, 0, 0, 0, 0, 1)  # the last edge varies fastest
    assert space.parse(space.EXAMPLE) == (3, 3, 4, 1, 3, 1)


def test_isomorphism_matches_the_benchmarks_6466_unique_topologies():
    assert len({space.canonical(a) for a in space.all_archs()}) == 6_466
    # skip on 0->1 then conv 1->2 computes what conv 0->2 with a dead node 1 computes
    a = space.parse("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    b = space.parse("|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|")
    c = space.parse("|none~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|skip_connect~2|")
    assert space.is_isomorphic(a, b) and not space.is_isomorphic(b, c)


@pytest.mark.parametrize(
    "text, why",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node"),
        ("|conv_5x5~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "unknown op"),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
            "must come from node 0",
        ),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "needs 2 incoming"),
        ("nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "'\\|'"),
        ("|nor_conv_3x3|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "lacks"),
    ],
)
def test_malformed_strings_are_rejected_with_the_reason(text, why):
    with pytest.raises(InvalidConfig, match=why):
        space.parse(text)


def test_bad_index_and_arch_are_rejected():
    with pytest.raises(InvalidConfig, match="0..15624"):
        space.from_index(15_625)
    with pytest.raises(InvalidConfig, match="6 op indices"):
        space.to_index((0, 1, 2))


def test_mutation_changes_exactly_one_edge_to_a_different_op():
    rng = random.Random(0)
    for arch in space.sample(200, 1):
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch, child)) == 1


def test_mutation_picks_a_node_then_one_of_its_edges_as_nb201_does():
    """NB201's R_EA: node 1..3 uniformly, then an incoming edge: P(1<-0) = 1/3, node 2's 1/6, node 3's 1/9."""
    rng = random.Random(0)
    draws = 90_000
    counts, new_ops = np.zeros(6), np.zeros((6, 5))
    parent = (3, 3, 3, 3, 3, 3)
    for _ in range(draws):
        child = space.mutate(parent, rng)
        (edge,) = [k for k in range(6) if child[k] != parent[k]]
        counts[edge] += 1
        new_ops[edge, child[edge]] += 1
    expected = np.array([1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9])
    sd = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) < 5 * sd), counts / draws  # uniform would be 1/6 each
    assert new_ops[:, 3].sum() == 0  # never the parent's op
    others = new_ops[:, [0, 1, 2, 4]].sum(0) / draws
    assert np.all(np.abs(others - 0.25) < 0.01), others  # the new op is uniform over the other 4


# ----------------------------------------------------------------------------- networks


# NB201's parameter counts (CIFAR-10, 10 classes, C = 16, N = 5; the table's ``params``, in MB =
# 1e6). Published: all-conv3x3 1.531546, all-skip / cells without parameters 0.073306, all-conv1x1
# 0.241306, and the mixed cell below 0.802426. The count depends only on how many edges hold
# nor_conv_3x3 (n3) and nor_conv_1x1 (n1): 73,306 + 5 * (48,608 * n3 + 5,600 * n1), where 48,608 and
# 5,600 are one ReLU-conv-BN op summed over C = 16, 32, 64; that formula reproduces all four published
# figures, and gives the other rows (written out as literals so a change to the network fails them).
NB201_PARAMS = {
    ALL_3X3: 1_531_546,
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|": 73_306,
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|": 241_306,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|": 802_426,
    ALL_NONE: 73_306,
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|": 73_306,
    "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|": 316_346,
    "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|": 101_306,
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|": 344_346,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|": 1_288_506,
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|": 886_426,
}


@pytest.mark.parametrize("text", sorted(NB201_PARAMS))
def test_published_parameter_counts_at_c16_n5(text):
    assert count_params(nb201(text, 16, 5, 10))[1] == NB201_PARAMS[text]


def test_network_shape_at_c16_n5():
    net = nb201(space.EXAMPLE, 16, 5, 10)
    assert len(net.structure.blocks) == 17
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_zero_cell_outputs_zeros():
    net = nb201(ALL_NONE, 4, 1, 3)
    cell = net.get_submodule("entries.0")
    assert torch.count_nonzero(cell(torch.randn(2, 4, 8, 8))) == 0


def _source(width: float = 0.25):
    torch.manual_seed(0)
    return build_model("resnet32", num_classes=10, width=width)


@pytest.mark.parametrize(
    "count, i, j, cut", [("modules", 5, 5, 5), ("modules", 10, 10, 10), ("cells", 5, 5, 5), ("cells", 10, 10, 11)]
)
def test_tr_net_shapes_under_both_counting_flags(count, i, j, cut):
    net = nb201(space.EXAMPLE, 4, 5, 10)
    tr = transfer(net, _source(), i, j, count)
    assert tr.cut == cut == replaced_entries(i, 5, count)
    assert tr.frozen_prefix == 1 + j
    assert len(tr.structure.blocks) == j + 17 - cut
    assert tr(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_tr_net_mismatch_is_a_clear_error():
    net = nb201(space.EXAMPLE, 4, 5, 10)
    with pytest.raises(InvalidConfig, match=r"Tr-Net-5-6 does not fit.*j may be 0..5.*i may be 6..11"):
        check_transfer(net, _source(), 5, 6)
    with pytest.raises(InvalidConfig, match="no pair fits"):
        transfer(nb201(space.EXAMPLE, 8, 5, 10), _source(0.25), 5, 5)
    with pytest.raises(InvalidConfig, match="0..15"):
        transfer(net, _source(), 5, 16)
    assert (1, 5) in valid_pairs(nb201(space.EXAMPLE, 4, 1, 10), _source()) and (2, 10) in valid_pairs(
        nb201(space.EXAMPLE, 4, 1, 10), _source()
    )


def _split(n=64, size=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(
        "train", torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g), classes, size
    )


def test_frozen_prefix_is_bit_identical_after_training_and_bn_stays_in_eval():
    source = _source()
    tr = transfer(nb201(space.EXAMPLE, 4, 1, 10), source, 1, 5)
    before = {k: v.clone() for k, v in tr.state_dict().items() if k.startswith("src_")}
    live = {k: v.detach().clone() for k, v in tr.named_parameters() if k.startswith("entries.")}
    assert all(not p.requires_grad for n, p in tr.named_parameters() if n.startswith("src_"))
    cfg = engine.TrainConfig(steps=4, batch_size=16, lr=0.1, log_every=2)
    engine.fit(tr, _split(), cfg, Recorder("cpu", progress=lambda m: None), seed=0)
    tr.train()
    assert not any(m.training for m in tr.src_stem.modules())
    assert not any(m.training for block in tr.src_blocks for m in block.modules())
    after = tr.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert live and any(not torch.equal(v, after[k]) for k, v in live.items())  # the cells did train


def test_frozen_prefix_costs_no_activation_memory():
    """Counting hook: Tr-Net saves exactly what its trainable suffix alone saves."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    tr = transfer(nb201(ALL_3X3, 4, 1, 10), _source(), 1, 5)
    tr.train()
    with torch.no_grad():
        h = x
        for _, part in tr.parts()[: tr.frozen_prefix]:
            h = part(h)
    suffix = torch.nn.Sequential(*[m for _, m in tr.parts()[tr.frozen_prefix :]])
    total = saved_activation_bytes(tr, x, y)
    assert total == saved_activation_bytes(suffix, h.clone(), y) > 0
    tr.set_frozen_prefix(0)  # the same network trained end to end stores the prefix's activations too
    assert saved_activation_bytes(tr, x, y) > total + 8 * 4 * 16 * 16 * 4


def test_tr_net_saves_about_half_the_activations_at_full_size():
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    original = nb201(ALL_3X3, 16, 5, 10)
    tr = transfer(nb201(ALL_3X3, 16, 5, 10), _source(1.0), 5, 5)
    ratio = saved_activation_bytes(original, x, y) / saved_activation_bytes(tr, x, y)
    assert 1.8 < ratio < 2.6  # the paper measures 2.11x on the GPU allocator


# ----------------------------------------------------------------------------- search


def test_rea_mutates_to_a_different_op_removes_the_oldest_and_keeps_the_budget():
    def fitness(arch):
        return float(sum(arch))

    rea = RegularizedEvolution(fitness, population=5, tournament=3, evaluations=40, seed=0)
    best = rea.run()
    assert len(rea.history) == 40 and len(rea.population) == 5
    assert [r.born for r in rea.removed] == list(range(35))  # always the oldest
    assert all(sum(a != b for a, b in zip(p, c)) == 1 for p, c in rea.mutations)
    assert best.fitness == max(h.fitness for h in rea.history)
    assert best.fitness > np.mean([h.fitness for h in rea.history[:5]])  # evolution climbs


def test_rea_tournament_draws_with_replacement_as_nb201():
    """NB201's R_EA draws each contender with random.choice: a tournament as large as the population
    can miss its best member, which sampling without replacement never does."""
    rea = RegularizedEvolution(lambda a: float(sum(a)), population=3, tournament=3, evaluations=60, seed=0)
    rea.run()
    missed = 0
    for c, (parent, _child) in enumerate(rea.mutations):
        members = rea.history[c : c + 3]  # the population when cycle c drew its tournament
        assert parent in [m.arch for m in members]
        missed += rea._seen[parent] < max(m.fitness for m in members)
    assert missed > 0  # P(the best is never drawn in 3 draws) = (2/3)^3 per cycle


def test_supernet_weights_and_projection_decide_every_edge_once():
    state = ArchState(seed=0)
    w = state.weights()
    assert torch.allclose(w.sum(-1), torch.ones(6))
    state.removed = (2, 3)
    assert state.weights()[2, 3] == 0
    state.removed = None
    net = supernet(state, 4, 1, 10)
    split = _split(32)
    ran = []
    decisions = project(net, state, split, [3, 0, 5, 1, 4, 2], 1, lambda steps: ran.extend(s() for s in steps))
    assert sorted(e for e, _, _ in decisions) == list(range(6)) and len(ran) == 6
    assert all(d >= 0 for d in state.decided) and state.undecided() == []
    assert all(keep == int(np.argmin(accs)) for _, keep, accs in decisions)
    w = state.weights()
    assert torch.equal(w, torch.nn.functional.one_hot(torch.tensor(state.decided), 5).float())
    with pytest.raises(ValueError, match="already decided"):
        state.decide(0, 1)


def test_darts_pt_tuning_schedule_is_5_x_10_epochs_for_6_edges_with_the_last_decision_in_the_last_epoch():
    """darts-pt (nasbench201/projection.py): proj_intv * (edges - 1) epochs, a decision at every
    proj_intv-th epoch and at the last epoch; the DARTS space: proj_intv * (decisions - 1) + 1."""
    assert tune_gaps(6, 100, 10, shorten_last=True) == [100, 100, 100, 100, 90, 10]  # 10 steps an epoch
    assert sum(tune_gaps(6, 100, 10, shorten_last=True)) == 5 * 100
    assert tune_gaps(17, 50, 10, shorten_last=False) == [50] * 16 + [10]  # 16 * 5 + 1 epochs
    assert tune_gaps(6, 2, 2, shorten_last=True) == [2, 2, 2, 2, 0, 2]  # sub-epoch interval: the last two together
    assert tune_gaps(1, 5, 1, shorten_last=True) == [1] and tune_gaps(0, 5, 1, shorten_last=True) == []


class _AlphaNet(torch.nn.Module):
    """A linear classifier whose logits depend on alpha: SearchRun's bookkeeping without a supernet's cost."""

    def __init__(self, state):
        super().__init__()
        self.state, self.fc = state, torch.nn.Linear(3 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) + self.state.weights()[:, :2].sum(0).repeat(5)


def _search_run(net, state, split, tune, seed=0):
    task = types.SimpleNamespace(seed=seed, device=torch.device("cpu"))
    w, a = split_halves(split, 0.5, seed)
    return SearchRun(net, state, w, a, ArchOptConfig(batch_size=8), tune, task, Recorder("cpu"), 8)


def test_darts_pt_schedule_decides_at_the_scheduled_tuning_steps_in_one_fit():
    state = ArchState(seed=0)
    net = _AlphaNet(state)
    tune = engine.TrainConfig(epochs=2.0, batch_size=8, lr=0.0025, schedule="constant", log_every=100)
    run = _search_run(net, state, _split(64), tune)  # 32 weight images: 4 steps an epoch, interval 8
    at = []
    gaps = run.schedule([lambda: at.append(run.hook.steps) for _ in range(6)], shorten_last=True)
    assert gaps == [8, 8, 8, 8, 4, 4] and run.tune_steps == 40 == run.hook.steps
    assert at == [0, 8, 16, 24, 32, 36]  # one alpha step per tuning step: decisions after 0, 8, ... steps


def test_darts_pt_takes_the_alpha_step_before_the_weight_step():
    """darts-pt's train(): architect.step, then model.step; the weight step's forward sees the new alpha."""
    state = ArchState(seed=0)
    net = _AlphaNet(state)
    seen = []
    net.register_forward_pre_hook(lambda _m, _a: seen.append(state.alpha.detach().clone()))
    run = _search_run(net, state, _split(64), engine.TrainConfig(steps=1, batch_size=8))
    seen.clear()  # search_act_mib's forward
    run.search(engine.TrainConfig(steps=1, batch_size=8, log_every=1), cutout_ramp=False)
    assert len(seen) == 2 and run.hook.steps == 1  # the alpha step's forward, then the weight step's
    assert not torch.equal(seen[0], seen[1])  # the weight step ran with the updated alpha


def test_darts_pt_cutout_ramps_over_the_search_epochs_for_weight_and_alpha_batches(monkeypatch):
    assert [ramped_cutout(50)(e) for e in (0, 1, 49)] == [0.0, 1 / 49, 1.0] and ramped_cutout(1)(0) == 0.0
    state = ArchState(seed=0)
    net = _AlphaNet(state)
    run = _search_run(net, state, _split(64), engine.TrainConfig(steps=1, batch_size=8))
    probs = []
    real_fit = engine.fit

    def fit(*args, cutout_prob=None, **kwargs):
        probs.append(None if cutout_prob is None else [(cutout_prob(e), run.hook.loader.cutout_prob) for e in range(3)])
        return real_fit(*args, cutout_prob=cutout_prob, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    cfg = engine.TrainConfig(epochs=3.0, batch_size=8, cutout=4, crop_pad=2, log_every=100)
    run.search(cfg, cutout_ramp=True)  # 3 epochs: 0, 1/2, 1 (the alpha loader follows the weight loader)
    assert probs[-1] == [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
    assert run.hook.loader.cutout == 4 and run.hook.loader.crop_pad == 2  # alpha batches augmented like w's
    run.search(cfg, cutout_ramp=False)
    assert probs[-1] is None and run.hook.loader.cutout_prob == 1.0
    run.search(dataclasses.replace(cfg, cutout=0), cutout_ramp=True)  # no Cutout: nothing to ramp
    assert probs[-1] is None and run.hook.loader.cutout == 0


def test_dartspt_cell_decides_6_edges_with_darts_pts_tuning():
    result = run_cell(tiny_spec("trnas_dartspt"))
    assert result.ok, result.error
    m = result.metrics
    # tune.steps 1 is below an epoch: gaps 1, 1, 1, 1, 0, 1
    assert m["proj_decisions_count"] == 6 and m["proj_tune_steps_count"] == 5
    assert m["alpha_steps"] == 3 + 5  # search.steps 3, then one alpha step per tuning step
    assert len(result.series["proj_removed_top1_pct"]) == 6 * 5


def test_tr_supernet_has_the_frozen_prefix():
    state = ArchState(seed=0)
    tr = transfer(supernet(state, 4, 1, 10), _source(), 1, 5)
    assert isinstance(tr, TransferNet) and tr.frozen_prefix == 6
    out = tr(torch.randn(2, 3, 16, 16))
    (g,) = torch.autograd.grad(out.sum(), [state.alpha])
    assert g.abs().sum() > 0


# ----------------------------------------------------------------------------- rank statistics


def test_correlations_equal_scipy_with_bootstrap_cis():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20)
    proxy = ref + rng.normal(scale=0.5, size=20)
    rec = Recorder("cpu")
    correlations(list(proxy), list(ref), rec, "", RankConfig(bootstrap=200), seed=0)
    assert rec.metrics["krocc_tau"] == pytest.approx(stats.kendalltau(proxy, ref).statistic, abs=1e-12)
    assert rec.metrics["srocc_rho"] == pytest.approx(stats.spearmanr(proxy, ref).statistic, abs=1e-12)
    assert rec.metrics["krocc_lo_tau"] < rec.metrics["krocc_tau"] < rec.metrics["krocc_hi_tau"]
    rec2 = Recorder("cpu")
    correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], rec2, "topk", RankConfig(), seed=0)
    assert "krocc_topk_tau" not in rec2.metrics and "krocc_topk_degenerate" in rec2.info


def test_nats_reference_is_a_clear_message_when_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    with pytest.raises(InvalidConfig, match="pip install nats_bench"):
        RankConfig(reference="nats")


def test_nats_reference_on_harness_splits_is_refused(monkeypatch, tmp_path):
    """The table's accuracies are on NB201's splits: a table with the harness split is an error, at
    collection when the config names it (``check_cell``) and in the cell otherwise (the table read
    end to end on NB201's splits is tests/test_trnas_table.py)."""

    class FakeApi:
        def query_index_by_arch(self, text):
            return space.to_index(space.parse(text))

    fake = types.SimpleNamespace(create=lambda path, kind, fast_mode, verbose: FakeApi())
    monkeypatch.setitem(sys.modules, "nats_bench", fake)
    cfg = {
        "archs": 5,
        "top_k": 3,
        "N": 1,
        "transfer.enabled": False,
        "reference": "nats",
        "nats_path": str(tmp_path),
        "nats_dataset": "cifar10-valid",
        "proxy_from_table": True,
        "bootstrap": 0,
    }
    result = run_cell(tiny_spec("trnas_rank", config=cfg))
    assert result.status == "failed" and result.error_type == "InvalidConfig"
    assert "split='nb201'" in result.error and "'harness'" in result.error
    from bench.contract.interface import CellFacts, TaskSettings
    from bench.registry import METHODS

    cls = METHODS.get("trnas_rank")
    with pytest.raises(InvalidConfig, match="split='nb201'"):
        cls.check_cell(
            RankConfig(**{"reference": "nats", "nats_path": str(tmp_path)}),
            CellFacts("cifar10", "resnet32", TaskSettings(), 40_000),
        )
    cls.check_cell(RankConfig(reference="nats"), CellFacts("cifar10", "resnet32", TaskSettings(split="nb201"), 25_000))


def test_rank_cell_with_transfer_end_to_end():
    cfg = {"transfer.enabled": True, "transfer.i": 1, "transfer.j": 3}
    result = run_cell(tiny_spec("trnas_rank", model="resnet20", config=cfg))
    assert result.ok, result.error
    m = result.metrics
    assert {"krocc_tau", "srocc_rho", "krocc_topk_tau", "proxy_act_mib", "proxy_epoch_s"} <= set(
        m
    ) or "krocc_degenerate" in result.info
    assert len(result.series["rank_proxy_val_top1_pct"]) == 4


def test_rea_cell_with_b_pretrained_on_the_target_train_split():
    cfg = {
        "transfer.enabled": True,
        "transfer.i": 1,
        "transfer.j": 3,
        "transfer.pretrain_on": "target",
        "transfer.pretrain.steps": 3,
        "transfer.pretrain.batch_size": 32,
    }
    result = run_cell(tiny_spec("trnas_rea", model="resnet20", config=cfg, task={"source": None}))
    assert result.ok, result.error
    assert result.metrics["search_evals_count"] == 3 and len(result.series["rea_best_val_top1_pct"]) == 3
    best = [v for _, v in sorted(result.series["rea_best_val_top1_pct"])]
    assert best == sorted(best)  # best-so-far never drops
    # Fig. 4: the best-so-far's proxy-trained network on test, one point per evaluation, changing only
    # when the best-so-far changes
    test = [v for _, v in sorted(result.series["rea_best_test_top1_pct"])]
    assert len(test) == 3 and all(0 <= v <= 100 for v in test)
    assert all(t1 == t0 for (b0, t0), (b1, t1) in zip(zip(best, test), zip(best[1:], test[1:])) if b1 == b0)
    assert "rea_best_table_test_top1_pct" not in result.series  # no table configured


@pytest.mark.gpu
def test_gpu_memory_ratio_original_vs_tr_net_5_5():
    """Peak allocated memory at batch 256, 32 px, C = 16, N = 5 (the paper: 2.11x)."""
    dev = torch.device("cuda")
    x, y = torch.randn(256, 3, 32, 32, device=dev), torch.randint(0, 10, (256,), device=dev)
    peaks = []
    for make in (lambda: nb201(ALL_3X3, 16, 5, 10), lambda: transfer(nb201(ALL_3X3, 16, 5, 10), _source(1.0), 5, 5)):
        net = make().to(dev)
        with MemoryMeter(dev) as meter:  # peak allocated over the baseline (the network's weights)
            torch.nn.functional.cross_entropy(net(x), y).backward()
        peaks.append(meter.result()["peak_mem_mib"])
        del net
    assert peaks[0] / peaks[1] > 1.6


def test_warmup_claim_reads_the_fig7_axis():
    import pandas as pd

    from bench.results.claims import CHECKS

    check = CHECKS["tr-warmup-peak"]

    def frame(points: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "status": "ok",
                    "variant": f"trnas_rank:{v}",
                    "method": "trnas_rank",
                    "dataset": "d",
                    "model": "m",
                    "seed": seed,
                    "krocc_tau": k + 0.01 * ((seed * 7 + len(v)) % 3),
                    "proxy_best_reference_top1_pct": 90.0,
                }
                for v, k in points.items()
                for seed in range(4)
            ]
        )

    base = {"original": 0.5, "tr_5_5_w0": 0.4, "tr_5_5": 0.7}
    out = check(frame(base))
    assert out.verdict == "reproduced" and "w0 < original" in out.detail and "w13 > original" in out.detail
    out = check(frame({**base, "tr_5_5_w5": 0.6, "tr_5_5_w17": 0.65, "tr_10_10_w17": 0.9}))
    assert out.verdict == "reproduced" and "w13 >= w17" in out.detail and "tr_10_10" not in out.detail
    out = check(frame({**base, "tr_5_5_w9": 0.85}))  # the peak is at 9 epochs, not 13
    assert out.verdict == "not reproduced" and "w13 >= w9" in out.detail
    assert check(frame({"original": 0.5})).verdict is None
    assert check(frame({"original": 0.5, "tr_5_5": 0.7})).verdict is None  # no axis run (the cpu tier)


# ----------------------------------------------------------------------------- seeds and B


def test_role_seeds_are_distinct_streams_and_unknown_roles_are_refused():
    from methods.trnas.seeds import ROLES, role_seed

    seen = {role_seed(r, s, k) for r in ROLES for s in range(5) for k in range(50)}
    assert len(seen) == len(ROLES) * 5 * 50  # no two (role, seed, index) share a stream
    assert all(0 <= v < 2**63 for v in seen)
    assert role_seed("proxy-init", 3, 7) == role_seed("proxy-init", 3, 7)  # deterministic
    with pytest.raises(ValueError, match="unknown seed role 'proxy'.*proxy-init"):
        role_seed("proxy", 0, 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_original_proxy_weights_differ_from_its_reference_at_every_seed(monkeypatch, tmp_path, seed):
    """At seed 0 the Original proxy once started from its reference's weights, bit for bit."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))  # the reference must train, not hit a cache
    from methods.trnas import rank
    from methods.trnas.common import Trained

    starts: dict[tuple[str, str], dict] = {}
    data_seeds: dict[tuple[str, str], int] = {}

    def spy(net, arch, train, val, cfg, seed, stage, *, rec):
        key = (stage, space.format_arch(arch))
        starts[key] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        data_seeds[key] = seed
        return Trained(arch, net, 50.0 + len(starts), 0.0, 0.0)

    monkeypatch.setattr(rank, "train_candidate", spy)
    cfg = {"archs": 4, "top_k": 3, "N": 1, "transfer.enabled": False, "bootstrap": 0}
    result = run_cell(tiny_spec("trnas_rank", config=cfg, seed=seed))
    assert result.ok, result.error
    archs = result.info["archs"]
    assert all(("proxy", a) in starts and ("reference", a) in starts for a in archs)
    for a in archs:
        proxy, ref = starts[("proxy", a)], starts[("reference", a)]
        weights = [k for k, v in proxy.items() if v.is_floating_point() and v.numel() > 1 and "running" not in k]
        assert any(not torch.equal(proxy[k], ref[k]) for k in weights), f"seed {seed}: {a} shares its init"
        assert data_seeds[("proxy", a)] != data_seeds[("reference", a)]
    assert len({v for v in data_seeds.values()}) == len(data_seeds)


def test_transfer_without_a_source_is_an_error_not_a_random_b():
    cfg = {"transfer.enabled": True, "transfer.i": 1, "transfer.j": 3, "transfer.pretrain_on": "source"}
    for method in ("trnas_rank", "trnas_rea", "trnas_dartspt"):
        result = run_cell(tiny_spec(method, model="resnet20", config=cfg, task={"source": None}))
        assert not result.ok and "needs a pretrained B" in (result.error or ""), (method, result.error)
    # trnas_cka compares B's blocks with NB201 cells: a random B would make the comparison meaningless.
    result = run_cell(tiny_spec("trnas_cka", model="resnet20", config={"pretrain_on": "source"}, task={"source": None}))
    assert not result.ok and "needs a pretrained B" in (result.error or ""), result.error
    # Memory does not depend on B's weights: it builds a random B on purpose and runs without a source.
    result = run_cell(tiny_spec("trnas_memory", model="resnet20", config=cfg, task={"source": None}))
    assert result.ok, result.error
