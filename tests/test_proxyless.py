"""Proxyless adaptation: theta edges, cell graphs, discretisation, the adapt methods and NAT."""

import copy

import pytest
import torch

from bench.contract.recorder import Recorder
from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from bench.models.net import build_model
from methods.proxyless import edges as E
from methods.proxyless.edges import FactorizedReduce
from methods.proxyless.method import rebuild
from methods.proxyless.nat import GCNPolicy, NatReinforce, cell_graph, representative_cells
from tests.conftest import tiny_spec

MODELS = {
    "resnet20_cells": 0.25,
    "mobilenetv2_cifar": 0.125,
    "darts_v2_8": 0.25,
    "resnet50_cifar": 0.0625,
    "proxylessnas_cifar": 0.125,
}


def _net(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_model(name, num_classes=10, width=MODELS[name]).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode is not an identity map
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize("mode", ["cell", "full"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_adapted_network_starts_equal_to_the_original(name, mode):
    net = _net(name)
    x = torch.randn(3, 3, 16, 16)
    adapted = copy.deepcopy(net)
    E.adapt(adapted, mode)
    assert torch.equal(adapted(x), net(x))
    net.train(), adapted.train()  # batch statistics: still identical
    assert torch.equal(adapted(x), net(x))


def test_theta_none_gradient_is_zero_under_raw_weights():
    net = _net("resnet20_cells").train()
    E.adapt(net, "full")
    net(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    grads = torch.stack([p.grad for p in E.thetas(net).values() if p.grad is not None])
    assert torch.count_nonzero(grads[:, 0]) == 0
    assert torch.count_nonzero(grads[:, 1:]) > 0  # the others do learn


def test_softmax_flag_makes_theta_none_learn():
    net = _net("resnet20_cells").train()
    E.adapt(net, "full", softmax=True)
    net(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    grads = torch.stack([p.grad for p in E.thetas(net).values() if p.grad is not None])
    assert torch.count_nonzero(grads[:, 0]) > 0


@pytest.mark.parametrize("size", [8, 9, 16])
def test_factorized_reduction_shapes(size):
    fr = FactorizedReduce(6, 10)
    out = fr(torch.randn(2, 6, size, size))
    assert out.shape == (2, 10, (size + 1) // 2, (size + 1) // 2)


def test_stride_two_identity_edges_use_factorized_reduce():
    net = build_model("resnet20_cells", num_classes=10, width=0.25)
    assert all(edge.ident is None for _, _, _, edge in E.edges(net))  # the original has no unused parameters
    E.build_identities(net)
    cells = dict(E.cells(net))
    reduce_cell = cells["cell3"]
    assert reduce_cell.cell_type == "reduce" and cells["cell1"].cell_type == "normal"
    # the shortcut skip n2 -> n5 crosses the stride-2 boundary, and so does the null edge n0 -> n3
    assert isinstance(reduce_cell.edges[6].op, FactorizedReduce)
    assert isinstance(reduce_cell.edges[3].ident, FactorizedReduce)
    assert isinstance(cells["cell1"].edges[3].ident, torch.nn.Identity)
    darts_net = build_model("darts_v2_8", num_classes=10, width=0.25)
    E.build_identities(darts_net)
    darts = dict(E.cells(darts_net))
    assert darts["cell2"].cell_type == "reduce"
    assert isinstance(darts["cell2"].edges[0].ident, FactorizedReduce)  # max_pool from s0, stride 2
    assert isinstance(darts["cell3"].pre0, FactorizedReduce)  # c_{k-2} of the cell after a reduction


@pytest.mark.parametrize("name", ["resnet20_cells", "darts_v2_8", "mobilenetv2_cifar"])
def test_discretisation_preserves_the_function_when_theta_is_kept(name):
    net = _net(name)
    E.adapt(net, "full")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # one-hot-like thetas: the chosen op with a non-trivial scale, the others 0
        for p in E.thetas(net).values():
            k = int(torch.randint(0, 3, (1,), generator=gen))
            p.zero_()
            if k:
                p[k] = 0.5 + float(torch.rand(1, generator=gen))
    x = torch.randn(3, 3, 16, 16)
    before = net(x)
    params_before = sum(p.numel() for p in net.parameters())
    choices = E.discretise(net, keep_theta=True)
    assert set(choices.values()) == {"none", "id", "same"}
    assert torch.allclose(net(x), before, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in net.parameters()) < params_before  # unused candidates are dropped
    assert E.changed_edges(net) and "n5=" in E.readable(net)


def test_discretise_argmax_none_iff_both_negative():
    net = _net("resnet20_cells")
    E.adapt(net, "full")
    ts = list(E.thetas(net).values())
    with torch.no_grad():
        ts[2].copy_(torch.tensor([0.0, -0.1, -0.2]))  # conv edge -> none
        ts[3].copy_(torch.tensor([0.0, 1.2, 1.0]))  # null edge with theta_id > 1 -> identity
        ts[4].copy_(torch.tensor([0.0, 0.3, -0.2]))  # conv edge -> id
    choices = list(E.discretise(net).values())
    assert choices[2:5] == ["none", "id", "id"]
    assert [c[2:] for c in E.changed_edges(net)] == [("same", "none"), ("none", "id"), ("same", "id")]


def test_cell_mode_shares_theta_across_cells_and_full_does_not():
    net = build_model("resnet20_cells", num_classes=10, width=0.25)
    cell_net, full_net = copy.deepcopy(net), copy.deepcopy(net)
    keys = E.adapt(cell_net, "cell")
    assert len(keys) == 2 * 8  # normal + reduce, 8 edge positions each
    cells = dict(E.cells(cell_net))
    assert cells["cell1"].edges[2].theta is cells["cell7"].edges[2].theta
    assert cells["cell1"].edges[2].theta is not cells["cell3"].edges[2].theta
    E.adapt(full_net, "full")
    cells = dict(E.cells(full_net))
    assert len(E.thetas(full_net)) == 9 * 8
    assert cells["cell1"].edges[2].theta is not cells["cell7"].edges[2].theta


def test_models_without_a_cell_graph_are_a_clear_error():
    with pytest.raises(InvalidConfig, match="no cell graph"):
        E.adapt(build_model("resnet20", num_classes=10, width=0.25), "cell")
    with pytest.raises(InvalidConfig, match="valid modes"):
        E.adapt(build_model("resnet20_cells", num_classes=10, width=0.25), "both")


def test_nat_policy_raises_the_probability_of_a_rewarded_choice():
    torch.manual_seed(0)
    net = build_model("resnet20_cells", num_classes=10, width=0.25)
    policy = GCNPolicy([cell_graph(c) for c in representative_cells(net)], hidden=16)
    learner = NatReinforce(policy, lr=0.02, weight_decay=0.0, entropy_weight=0.0, baseline_decay=0.9)
    before = float(torch.softmax(policy.logits().detach(), -1)[2, 1])
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):  # reward 1 when edge position 2 picks identity
        actions, logp, entropy = policy.sample(8, gen)
        learner.step(logp, entropy, (actions[:, 2] == 1).float())
    after = float(torch.softmax(policy.logits().detach(), -1)[2, 1])
    assert after > before + 0.3


@pytest.mark.parametrize("method", ["adapt_cell", "adapt_full"])
def test_adapt_method_end_to_end_records_thetas_and_changes(method):
    result = run_cell(tiny_spec(method, model="resnet20_cells", task={"source": None, "input_size": 8}))
    assert result.ok, result.error
    m = result.metrics
    assert m["edges_total_count"] == 72 and m["arch_steps"] == 3
    assert m["thetas_count"] == (16 if method == "adapt_cell" else 72)
    series = set(result.series)
    assert {"theta_id_ratio", "theta_same_ratio", "theta_none_ratio"} <= series
    assert "|proxyless(mode=" in result.arch
    rebuilt = rebuild(result.arch)
    assert E.choice_code(rebuilt) == result.arch.split("choices=")[1].rstrip(")")


def test_adapted_theta_moves_and_weights_keep_training_after_discretisation():
    rec = Recorder("cpu", progress=lambda _m: None)
    spec = tiny_spec(
        "adapt_full",
        model="resnet20_cells",
        task={"source": None, "input_size": 8},
        config={"arch.lr": 0.05, "arch.frac": 0.5},
    )
    from bench.execute.runner import build_task, resolve

    cls, cfg, settings = resolve(spec)
    task = build_task(spec, settings, torch.device("cpu"))
    fitted = cls(cfg).fit(task, rec)
    same = [v for (_, v, _) in rec.series["theta_same_ratio"]]
    assert any(abs(v - 1.0) > 1e-3 for v in same)  # theta trained
    assert max(s for s, _, _ in rec.series["theta_same_ratio"]) == rec.metrics["arch_steps"] == 3
    assert not list(E.thetas(fitted.model))  # discretised: no theta left
    assert len(rec.series["train_loss_nat"]) >= 1


def test_nat_refuses_heterogeneous_networks():
    result = run_cell(tiny_spec("nat", model="proxylessnas_cifar", task={"source": None, "input_size": 8}))
    assert result.status == "failed" and "identical cells" in result.error


def test_nat_end_to_end():
    result = run_cell(tiny_spec("nat", model="resnet20_cells", task={"source": None, "input_size": 8}))
    assert result.ok, result.error
    assert result.metrics["nat_updates"] >= 1 and result.metrics["policy_s"] > 0
    assert "|proxyless(mode=nat" in result.arch


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
def test_plain_resnets_become_cells_with_the_same_function(name):
    from methods.proxyless.cells import as_cells

    torch.manual_seed(0)
    net = build_model(name, num_classes=10, width=0.125).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = net(x)
    cells = as_cells(copy.deepcopy(net))
    assert len(E.cells(cells)) == len(net.structure.blocks)
    assert torch.allclose(cells(x), ref, atol=1e-6, rtol=0)
    E.adapt(cells, "full")
    assert torch.allclose(cells(x), ref, atol=1e-6, rtol=0)


def test_nt_xent_matches_a_hand_computed_value():
    import math

    from methods.proxyless.ssl import nt_xent

    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each anchor: positive sim 1, the two negatives sim 0 (the other image's two views); tau = 0.5
    pos, neg = math.exp(1 / 0.5), math.exp(0.0)
    expected = -math.log(pos / (pos + 2 * neg))
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(expected, rel=1e-6)
    z2b = torch.tensor([[0.6, 0.8], [-0.8, 0.6]])  # rotated views: asymmetric similarities
    z = torch.nn.functional.normalize(torch.cat([z1, z2b]), dim=1)
    s = (z @ z.T / 0.5).tolist()
    manual = 0.0
    for i, j in ((0, 2), (1, 3), (2, 0), (3, 1)):
        denom = sum(math.exp(s[i][m]) for m in range(4) if m != i)
        manual += -(s[i][j] - math.log(denom))
    assert nt_xent(z1, z2b, 0.5).item() == pytest.approx(manual / 4, rel=1e-6)


def test_weighted_knn_is_perfect_on_a_separable_toy_set():
    from methods.proxyless.ssl import knn_predict

    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 5
    labels = torch.arange(4).repeat_interleave(25)
    bank = centres[labels] + 0.3 * torch.randn(100, 4, generator=gen)
    query_labels = torch.arange(4).repeat_interleave(10)
    query = centres[query_labels] + 0.3 * torch.randn(40, 4, generator=gen)
    scores = knn_predict(query, bank, labels, 4, k=20)
    assert torch.allclose(scores.sum(1), torch.ones(40))
    assert (scores.argmax(1) == query_labels).float().mean().item() == 1.0
