"""Two-stage architectural fine-tuning: search space, controller, early stopping, stages."""

import numpy as np
import pytest
import torch
from torch import nn

from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import InvalidConfig
from bench.execute.runner import build_task, resolve, run_cell, seed_everything
from bench.models.net import build_model, scope_blocks
from bench.models.pretrain import pretrained_source
from methods.two_stage.controller import (
    ActionStop,
    Controller,
    EarlyStop,
    EnasReinforce,
    RewardStop,
    discounted_weights,
    rise_upper_bound,
)
from methods.two_stage.space import (
    MutableConvBN,
    build_from_arch,
    derive_child,
    make_supernet,
    mutable_points,
    set_choices,
    widen,
)
from tests.conftest import TINY_CONFIGS, tiny_spec

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


PAPER_LR = 3.5e-4  # Table 2's controller Adam lr


@pytest.mark.parametrize("lstm_layers", [1, 2])
def test_stacked_controller_learns_a_toy_reward_at_the_paper_lr(lstm_layers):
    """One action always pays (layer 1 at 5x5): within 200 Adam steps of 20 samples (four rounds of
    the ENAS schedule) its greedy probability exceeds 0.9 at lr 3.5e-4."""
    torch.manual_seed(0)
    controller = Controller(num_layers=4, hidden=64, lstm_layers=lstm_layers)
    assert controller.lstm.num_layers == lstm_layers
    policy = EnasReinforce(controller, lr=PAPER_LR)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        r = controller.rollout(20, generator=gen)
        assert r.log_probs.shape == r.entropies.shape == r.actions.shape == (20, 4)
        policy.step(r.log_probs, r.entropies, (r.actions[:, 1] == 1).float())
    arch, path = controller.greedy_path()
    assert arch[1] == 1 and path[1] > 0.9, path
    assert controller.estimate_probs(400, generator=gen)[1] > 0.9


def test_greedy_path_probabilities_are_the_policy_s():
    """The step-by-step decode (sampling, greedy) and the teacher-forced evaluation are one policy."""
    torch.manual_seed(1)
    controller = Controller(num_layers=6, hidden=16, lstm_layers=2)
    arch, path = controller.greedy_path()
    log_probs, _ = controller.evaluate(torch.tensor([arch]))
    assert torch.allclose(log_probs.exp()[0], torch.tensor(path), atol=1e-6)
    assert all(p >= 0.5 for p in path)


def test_discount_weights_the_return_per_eq_4_5():
    assert discounted_weights(3, 0.5).tolist() == [0.25, 0.5, 1.0]  # G_t = gamma^(T-t) R
    assert discounted_weights(4, 1.0).tolist() == [1.0] * 4
    controller = Controller(num_layers=3, hidden=4)
    for gamma, weights in ((0.5, [0.25, 0.5, 1.0]), (1.0, [1.0, 1.0, 1.0])):
        policy = EnasReinforce(controller, entropy_weight=0.0, discount=gamma)
        log_probs = torch.zeros(2, 3, requires_grad=True)
        policy.step(log_probs, torch.zeros(2, 3), torch.tensor([1.0, 0.0]))
        # baseline = first batch mean 0.5: advantages +0.5 / -0.5; loss -mean_i sum_t A_i w_t log p_it
        expected = torch.tensor([[-0.25 * w for w in weights], [0.25 * w for w in weights]])
        assert torch.allclose(log_probs.grad, expected), (gamma, log_probs.grad)


def test_action_rule_fires_on_settled_not_uniform_not_flipping():
    settled, uniform, flipping = ActionStop(3, 0.9), ActionStop(3, 0.9), ActionStop(3, 0.9)
    for r in range(1, 9):
        settled.update(r, [1, 0, 1], [0.97, 0.98, 0.99])
        uniform.update(r, [1, 0, 1], [0.52, 0.51, 0.55])  # the same argmax, but nothing decided
        flipping.update(r, [1, 0, 1] if r % 2 else [1, 1, 1], [0.96, 0.97, 0.99])  # decided, but A* flips
    assert settled.fired == 3 and settled.arch == [1, 0, 1]
    assert uniform.fired is None and flipping.fired is None
    late = ActionStop(3, 0.9)  # the window counts rounds of the same A*, the threshold every choice
    for r, (arch, probs) in enumerate(
        [
            ([0, 1], [0.99, 0.99]),
            ([1, 1], [0.95, 0.95]),
            ([1, 1], [0.95, 0.6]),
            ([1, 1], [0.95, 0.95]),
            ([1, 1], [0.95, 0.95]),
        ],
        start=1,
    ):
        late.update(r, arch, probs)
    assert late.fired == 4


def test_reward_rule_knows_the_reward_is_noisy():
    rng = np.random.default_rng(0)
    flat_quiet = 0.8 + rng.normal(0, 0.002, 10)
    rising = np.linspace(0.6, 0.8, 10) + rng.normal(0, 0.002, 10)
    flat_noisy = 0.8 + rng.normal(0, 0.05, 10)  # a 64-image batch's accuracy: sd ~ 0.05
    assert rise_upper_bound(flat_quiet) < 0.01
    assert rise_upper_bound(rising) > 0.15
    assert rise_upper_bound(flat_noisy) > 0.01  # noise this loud cannot show a plateau in 10 rounds
    assert rise_upper_bound([0.5, 0.5]) == float("inf")
    for series, fires in ((flat_quiet, 10), (rising, None), (flat_noisy, None)):
        rule = RewardStop(window=10, tol=0.01)
        for r, reward in enumerate(series, start=1):
            rule.update(r, float(reward))
        assert rule.fired == fires
    both = EarlyStop(ActionStop(2, 0.9), RewardStop(3, 0.05))
    for r in range(1, 6):
        both.update(r, [1], [0.99], 0.5)
    assert (both.action_stop, both.reward_stop, both.action_stop_arch) == (2, 3, [1])
    assert both.saved_rounds_frac == pytest.approx(1 / 3)


def test_stop_search_stops_the_supernet_early():
    """Same seed: stopping at the action rule runs fewer supernet steps than searching on, and the
    wall time at each stopping point is measured."""
    fires_at_once = {"early_stop.window": 1, "early_stop.threshold": 0.501}  # the greedy choice is >= 0.5
    stopped = run_cell(
        tiny_spec("two_stage", model="resnet18", config={**fires_at_once, "early_stop.stop_search": True})
    )
    full = run_cell(tiny_spec("two_stage", model="resnet18", config={**fires_at_once, "early_stop.stop_search": False}))
    assert stopped.status == full.status == "ok", (stopped.error, full.error)
    steps = TINY_CONFIGS["two_stage"]["search.steps"]
    assert stopped.metrics["search_stopped_steps"] == TINY_CONFIGS["two_stage"]["steps_per_update"] < steps
    assert full.metrics.get("search_stopped_steps", steps) > stopped.metrics["search_stopped_steps"]
    assert stopped.metrics["search_updates"] == 1 < full.metrics["search_updates"]
    assert stopped.info["stopped_by"] == "actions"
    assert 0 < stopped.metrics["search_action_stop_s"] <= stopped.metrics["search_s"]
    assert full.metrics["search_action_stop_s"] < full.metrics["search_s"]


def test_budgets_count_epochs_of_the_supernet_split():
    from methods.two_stage.method import TwoStageConfig, hold_out

    assert TwoStageConfig().steps_per_update == 0  # 0: one epoch of the supernet split
    train = Split(
        "train", torch.zeros(50_000, 1, 1, 1, dtype=torch.uint8), torch.zeros(50_000, dtype=torch.long), 10, 1
    )
    search, reward = hold_out(train, 0.5, 0, search_images=25_000)
    assert (len(search), len(reward)) == (25_000, 25_000)
    assert -(-len(search) // 64) == 391  # Table 2's iterations per epoch at batch 64
    with pytest.raises(InvalidConfig, match="search_split_images"):
        hold_out(train, 0.5, 0, search_images=50_000)


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


def test_calibration_script_runs_the_harness_controller(tmp_path, capsys):
    """benchmarks/two_stage_calibration.py at a tiny size: one row per decision count, as JSON too."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "two_stage_calibration.py"
    spec = importlib.util.spec_from_file_location("two_stage_calibration", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["two_stage_calibration"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    main = module.main

    out = tmp_path / "cal.json"
    assert (
        main(["--schedule", "smoke", "--decisions", "2", "3", "--seeds", "2", "--rounds", "4", "--json", str(out)]) == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["decisions"] for r in rows] == [2, 3] and all(r["runs"] == 2 for r in rows)
    assert all(0.0 <= r["action_fired_frac"] <= 1.0 and 0.0 <= r["reward_fired_frac"] <= 1.0 for r in rows)
    assert "| decisions |" in capsys.readouterr().out
