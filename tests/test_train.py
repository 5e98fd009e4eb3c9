"""The training engine: schedule values, learning, hooks, divergence, frozen parts, evaluation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import engine
from bench.contract.interface import Split
from bench.contract.recorder import Recorder
from bench.data.registry import load_splits
from bench.errors import Diverged
from bench.models.net import build_model, head_only


@pytest.fixture(scope="module")
def digits():
    return load_splits("uci-digits", seed=0, input_size=16, device="cpu")


def test_lr_schedule_values():
    cfg = engine.TrainConfig(steps=10, warmup_frac=0.2, final_lr_frac=0.1)
    f = [engine.lr_factor(s, 10, cfg) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0
    assert f[2] == pytest.approx(1.0)
    assert f[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    const = engine.TrainConfig(steps=4, schedule="constant")
    assert [engine.lr_factor(s, 4, const) for s in range(4)] == [1.0] * 4


def test_optimizer_groups_skip_decay_on_1d():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = engine.make_optimizer(model.parameters(), engine.TrainConfig(weight_decay=0.1))
    decays = sorted((g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 4 + 4 + 4), (0.1, 12)]
    assert opt.param_groups[0]["nesterov"] is True


def test_fit_learns_and_records(digits):
    train, val, _ = digits
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, width=0.25)
    before = engine.evaluate(model, val)["top1_pct"]
    rec = Recorder("cpu", timing_warmup=2)
    cfg = engine.TrainConfig(steps=40, batch_size=64, lr=0.1, eval_every=20, log_every=10)
    report = engine.fit(model, train, cfg, rec, val=val)
    after = engine.evaluate(model, val)["top1_pct"]
    assert after > max(40.0, before + 20), (before, after)
    m = rec.finalize()
    assert report.steps == 40 and m["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert m["train_step_gflop"] > 0 and m["train_timed_steps"] == 38
    losses = rec.series["train_loss_nat"]
    assert [s for s, _ in losses] == [10, 20, 30, 40] and losses[-1][1] < losses[0][1]
    assert [s for s, _ in rec.series["train_val_top1_pct"]] == [20, 40]


def test_hooks_called_in_order(digits):
    train, _, _ = digits
    calls = []
    hooks = engine.StepHooks(
        before_step=lambda s: calls.append(("before", s)),
        after_step=lambda s, x, y: calls.append(("after", s, tuple(x.shape))),
        periodic=((3, lambda done: calls.append(("every3", done))),),
    )
    model = build_model("resnet20", num_classes=10, width=0.25)
    engine.fit(model, train, engine.TrainConfig(steps=6, batch_size=16), Recorder("cpu"), hooks=hooks)
    assert [c[1] for c in calls if c[0] == "before"] == list(range(6))
    assert [c for c in calls if c[0] == "after"][0] == ("after", 0, (16, 3, 16, 16))
    assert [c[1] for c in calls if c[0] == "every3"] == [3, 6]


def test_non_finite_loss_raises_diverged(digits):
    train, _, _ = digits

    def nan_after_two(model, x, y):
        loss = F.cross_entropy(model(x), y)
        return loss * float("nan") if nan_after_two.calls >= 2 else loss

    nan_after_two.calls = 0
    hooks = engine.StepHooks(before_step=lambda s: setattr(nan_after_two, "calls", s), loss_fn=nan_after_two)
    model = build_model("resnet20", num_classes=10, width=0.25)
    with pytest.raises(Diverged, match="non-finite loss nan at step 2 of stage 'train'"):
        engine.fit(model, train, engine.TrainConfig(steps=8, batch_size=16, log_every=4), Recorder("cpu"), hooks=hooks)


def test_frozen_parts_untouched(digits):
    train, _, _ = digits
    model = build_model("resnet18", num_classes=10, width=0.25)
    head_only(model)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    rec = Recorder("cpu")
    engine.fit(model, train, engine.TrainConfig(steps=5, batch_size=32, lr=0.5), rec)
    after = model.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert rec.metrics["trainable_params"] == model.fc.weight.numel() + model.fc.bias.numel()


def test_nothing_to_train_is_an_error(digits):
    train, _, _ = digits
    model = build_model("resnet20", num_classes=10, width=0.25)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        engine.fit(model, train, engine.TrainConfig(steps=2), Recorder("cpu"))


class LabelReader(nn.Module):
    """Logits that put all mass on the class written into pixel (0, 0, 0)."""

    def forward(self, x):
        return F.one_hot(x[:, 0, 0, 0].long(), 3).float() * 10


def test_evaluate_exact_values():
    y = torch.tensor([0, 1, 2, 1, 0])
    x = torch.zeros(5, 3, 8, 8)
    x[:, 0, 0, 0] = y.float()
    x[4, 0, 0, 0] = 2.0  # one wrong prediction
    split = Split("val", x, y, num_classes=3, input_size=8)
    out = engine.evaluate(LabelReader(), split, batch_size=2)
    assert out["top1_pct"] == pytest.approx(80.0)
    logits = LabelReader()(x)
    assert out["loss_nat"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


def test_periodic_callback_can_stop_early_and_curves_are_named_by_split(digits):
    train, val, test = digits
    model = build_model("resnet20", num_classes=10, width=0.25)
    rec = Recorder("cpu")
    hooks = engine.StepHooks(periodic=((2, lambda done: done >= 4),))
    report = engine.fit(
        model,
        train,
        engine.TrainConfig(steps=10, batch_size=16, eval_every=2, log_every=3),
        rec,
        stage="search",
        val=val,
        curves=(test,),
        hooks=hooks,
    )
    assert report.steps == 4 and rec.metrics["search_stopped_steps"] == 4
    assert [s for s, _ in rec.series["search_val_top1_pct"]] == [2, 4]
    assert [s for s, _ in rec.series["search_test_top1_pct"]] == [2, 4]
    assert [s for s, _ in rec.series["search_loss_nat"]] == [3, 4]
