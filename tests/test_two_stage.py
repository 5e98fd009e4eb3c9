"""Two-stage architectural fine-tuning: search space, controller, early stopping, stages."""

import numpy as np
import pytest
import torch
from torch import nn

from bench.contract.recorder import Recorder
from bench.execute.runner import build_task, resolve, run_cell, seed_everything
from bench.models.net import build_model, scope_blocks
from bench.models.pretrain import pretrained_source
from methods.two_stage.controller import Controller, EarlyStop, EnasReinforce
from methods.two_stage.space import (
    MutableConvBN,
    build_from_arch,
    derive_child,
    make_supernet,
    mutable_points,
    set_choices,
    widen,
)
from tests.conftest import tiny_spec

DECISIONS = {"resnet18": (4, 8, 12, 16), "resnet50": (3, 9, 13, 16)}  # the paper's Table 1 (as log2 of the count)


@pytest.mark.parametrize("model", sorted(DECISIONS))
def test_decision_counts_per_scope(model):
    net = build_model(model, num_classes=10, width=0.125)
    counts = tuple(len(mutable_points(net, s)) for s in ("small", "medium", "large", "full"))
    assert counts == DECISIONS[model]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
def test_zero_padded_5x5_equals_3x3(stride, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=stride, padding=1, bias=False)
    x = torch.randn(2, 6, size, size)
    wide = widen(conv)
    assert wide.kernel_size == (5, 5) and wide.padding == (2, 2) and wide.stride == (stride, stride)
    assert torch.allclose(wide(x), conv(x), atol=1e-5, rtol=0)


def test_supernet_all_5x5_computes_the_original_network():
    torch.manual_seed(0)
    original = build_model("resnet18", num_classes=10, width=0.25).eval()
    supernet, points = make_supernet(build_model("resnet18", num_classes=10, width=0.25), "full")
    supernet.load_state_dict(original.state_dict(), strict=False)
    for p in points:  # copy the reference weights into both candidates of every mutable layer
        block = original.get_submodule(p.block)
        mutable = supernet.get_submodule(p.conv_path)
        mutable.conv3.load_state_dict(getattr(block, p.conv).state_dict())
        mutable.bn3.load_state_dict(getattr(block, p.bn).state_dict())
        mutable.conv5 = widen(mutable.conv3)
        mutable.bn5.load_state_dict(mutable.bn3.state_dict())
    supernet.eval()
    x = torch.randn(2, 3, 64, 64)
    set_choices(supernet, points, [1] * len(points))
    assert torch.allclose(supernet(x), original(x), atol=1e-5, rtol=0)
    set_choices(supernet, points, [0] * len(points))
    assert torch.allclose(supernet(x), original(x), atol=1e-5, rtol=0)


def test_derive_child_and_arch_string_round_trip():
    net = build_model("resnet18", num_classes=10, width=0.25)
    points = mutable_points(net, "small")
    child = derive_child(net, points, [1, 0, 0, 1])
    assert child.get_submodule("layer4.0.conv1").kernel_size == (5, 5)
    assert child.get_submodule("layer4.0.conv2").kernel_size == (3, 3)
    assert child.get_submodule("layer4.1.conv2").kernel_size == (5, 5)
    rebuilt = build_from_arch("resnet18(num_classes=10,width=0.25)|two_stage(scope=small,kernels=5335)")
    assert [m.kernel_size for n, m in rebuilt.named_modules() if isinstance(m, nn.Conv2d)] == [
        m.kernel_size for n, m in child.named_modules() if isinstance(m, nn.Conv2d)
    ]


def test_inherit_takes_the_supernet_candidates():
    supernet, points = make_supernet(build_model("resnet18", num_classes=10, width=0.25), "small")
    with torch.no_grad():
        supernet.get_submodule(points[0].conv_path).conv5.weight.fill_(0.5)
    child = derive_child(build_model("resnet18", num_classes=10, width=0.25), points, [1, 0, 0, 0], supernet)
    assert torch.equal(
        child.get_submodule(points[0].conv_path).weight,
        torch.full_like(child.get_submodule(points[0].conv_path).weight, 0.5),
    )
    assert not isinstance(child.get_submodule(points[0].conv_path), MutableConvBN)


def test_policy_gradient_favours_the_rewarded_action():
    torch.manual_seed(0)
    controller = Controller(num_layers=3, hidden=16)
    policy = EnasReinforce(controller, lr=0.05, entropy_weight=0.0, baseline_decay=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        actions, log_probs, entropies = controller.rollout(8, generator=gen)
        rewards = (actions[:, 1] == 1).float()  # only layer 1 choosing 5x5 pays
        policy.step(log_probs, entropies, rewards)
    probs = controller.estimate_probs(400, generator=gen)
    assert probs[1] > 0.9, probs
    assert controller.argmax()[1] == 1


def test_early_stop_fires_on_settled_actions_not_on_uniform():
    settled = EarlyStop(window=3, threshold=0.9, reward_window=2, reward_tol=0.01)
    uniform = EarlyStop(window=3, threshold=0.9, reward_window=2, reward_tol=0.01)
    for update in range(1, 8):
        settled.update(update, np.array([0.97, 0.02, 0.99]), reward=0.5)
        uniform.update(update, np.array([0.5, 0.52, 0.48]), reward=0.2 * update)
    assert settled.action_stop == 3 and settled.action_stop_arch == [1, 0, 1]
    assert uniform.action_stop is None
    assert settled.reward_stop == 4 and uniform.reward_stop is None  # flat vs steadily rising reward
    assert settled.saved_frac == pytest.approx(0.25)


def test_early_stop_needs_an_unchanged_argmax():
    flip = EarlyStop(window=3, threshold=0.9)
    for update, probs in enumerate(([0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.96, 0.04]), start=1):
        flip.update(update, np.array(probs), reward=0.1)
    assert flip.action_stop is None


@pytest.fixture(scope="module")
def fitted_two_stage():
    spec = tiny_spec("two_stage", model="resnet18")
    cls, config, settings = resolve(spec)
    seed_everything(0)
    task = build_task(spec, settings, torch.device("cpu"))
    rec = Recorder("cpu")
    fitted = cls(config).fit(task, rec)
    rec.finalize()
    return task, rec, fitted


def test_stage_two_trains_exactly_scope_and_head(fitted_two_stage):
    task, rec, fitted = fitted_two_stage
    model = fitted.model
    in_scope = set(scope_blocks(model.structure, "small")) | {"avgpool", "flatten", "fc"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(any(n.startswith(b + ".") for b in in_scope) for n in trainable)
    expected = sum(p.numel() for n, p in model.named_parameters() if any(n.startswith(b + ".") for b in in_scope))
    assert rec.metrics["trainable_params"] == expected


def test_frozen_prefix_bit_identical_after_search_and_finetune(fitted_two_stage):
    task, _, fitted = fitted_two_stage
    s = task.settings
    source, _ = pretrained_source(task.model, s.width, s.source, s.input_size, s.pretrain, s.source_seed, task.device)
    frozen = [n for n, p in fitted.model.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(fitted.model.state_dict()[n], source[n]) for n in frozen)
    assert fitted.model.frozen_prefix == fitted.model.structure.prefix_len_for_blocks(6)


def test_search_telemetry_and_architecture(fitted_two_stage):
    _, rec, fitted = fitted_two_stage
    heat = rec.series["search_p5x5_prob"]
    updates = sorted({p[0] for p in heat})
    assert updates == [1, 2, 3] and sorted({p[2] for p in heat}) == [0, 1, 2, 3]
    assert all(0.0 <= p[1] <= 1.0 for p in heat)
    assert [p[0] for p in rec.series["search_reward_frac"]] == [1, 2, 3]
    assert rec.metrics["search_updates"] == 3 and rec.metrics["mutable_layers_count"] == 4
    assert rec.metrics["rank_subnets_count"] == 3
    assert fitted.arch.startswith("resnet18(num_classes=10,width=0.125)|two_stage(scope=small,kernels=")
    assert [p[0] for p in rec.series["train_test_top1_pct"]] == [3, 6]


def test_cell_writes_rank_correlations_and_stops():
    r = run_cell(tiny_spec("two_stage", model="resnet18", config={"rank_subnets": 4, "rank_steps": 4}))
    assert r.status == "ok", r.error
    pairs = r.info["rank_pairs"]
    assert len(pairs) == 4 and len({p["kernels"] for p in pairs}) == 4
    if "rank_degenerate" not in r.info:
        assert -1.0 <= r.metrics["rank_kendall_tau"] <= 1.0 and -1.0 <= r.metrics["rank_spearman_rho"] <= 1.0
    assert r.metrics["search_s"] > 0 and r.metrics["rank_s"] > 0 and r.metrics["train_s"] > 0
