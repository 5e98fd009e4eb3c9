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


def test_before_step_runs_before_the_forward_of_every_step(digits):
    """darts-pt's alternation (an alpha step, then the weight step) relies on before_step preceding the forward."""
    train, _, _ = digits
    calls = []
    model = build_model("resnet20", num_classes=10, width=0.25)
    model.register_forward_pre_hook(lambda _m, _args: calls.append("forward"))
    hooks = engine.StepHooks(before_step=lambda s: calls.append(f"before {s}"))
    engine.fit(model, train, engine.TrainConfig(steps=4, batch_size=16), Recorder("cpu"), hooks=hooks)
    assert calls == [c for s in range(4) for c in (f"before {s}", "forward")]


def _holes_per_epoch(cutout_prob, epochs=4, n=64, batch=16):
    """Fraction of images with a Cutout square in each epoch of a fit on all-ones images."""
    split = Split("ones", torch.ones(n, 3, 8, 8), torch.zeros(n, dtype=torch.long), 10, 8, flip_ok=False)
    holes: list[float] = []

    def loss(model, x, y):
        holes.append(float((x == 0).flatten(1).any(1).float().mean()))
        return F.cross_entropy(model(x), y)

    cfg = engine.TrainConfig(epochs=float(epochs), batch_size=batch, cutout=4, log_every=100)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    engine.fit(model, split, cfg, Recorder("cpu"), hooks=engine.StepHooks(loss_fn=loss), cutout_prob=cutout_prob)
    per = n // batch
    return [sum(holes[e * per : (e + 1) * per]) / per for e in range(epochs)]


def test_cutout_probability_per_epoch_ramps_as_asked_and_defaults_to_every_image():
    assert _holes_per_epoch(None) == [1.0] * 4  # the default: every image, as before the option existed
    seen = []
    ramp = _holes_per_epoch(lambda e: seen.append(e) or e / 3)  # darts-pt: prob * epoch / (epochs - 1)
    assert seen == [0, 1, 2, 3] and ramp[0] == 0.0 and ramp[3] == 1.0
    assert 0.05 < ramp[1] < 0.65 and 0.35 < ramp[2] < 0.95 and ramp[1] < ramp[2]  # 1/3 and 2/3 of 64 images
    with pytest.raises(ValueError, match=r"cutout_prob\(0\) must be in \[0, 1\]"):
        _holes_per_epoch(lambda e: 1.5)


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


# -- counted training memory and the engine's step timer ----------------------------------------------


def _noise_split(n: int = 16, size: int = 32, classes: int = 10) -> Split:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    return Split("synthetic", x, torch.randint(0, classes, (n,), generator=gen), classes, size)


def _counted(model: nn.Module, batch: int = 8, size: int = 32, stage: str = "train") -> dict[str, float]:
    rec = Recorder("cpu")
    engine.fit(model, _noise_split(2 * batch, size), engine.TrainConfig(steps=2, batch_size=batch, log_every=10), rec)
    return {k: v for k, v in rec.metrics.items() if k.endswith(("counted_mem_mib", "saved_act_mib"))}


def test_counted_memory_is_params_grads_momentum_and_saved_activations():
    """A linear model under SGD with momentum holds its weights three times over (weights,
    gradients, momentum buffers) plus what the step saved: counted exactly, to the byte."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    m = _counted(model, batch=8, size=4)
    weights = (48 * 10 + 10) * 4
    assert (m["train_counted_mem_mib"] - m["train_saved_act_mib"]) * 2**20 == pytest.approx(3 * weights, abs=1e-6)
    assert m["train_saved_act_mib"] * 2**20 >= 8 * 48 * 4  # at least the Linear's input
    assert m["counted_mem_mib"] == m["train_counted_mem_mib"]


def test_counted_memory_orders_models_and_frozen_prefixes():
    torch.manual_seed(0)
    r18 = _counted(build_model("resnet18", 10, width=0.25))
    torch.manual_seed(0)
    r50 = _counted(build_model("resnet50", 10, width=0.25))
    assert r50["counted_mem_mib"] >= 1.5 * r18["counted_mem_mib"], (r18, r50)
    torch.manual_seed(0)
    frozen = _counted(build_model("resnet18", 10, width=0.25).set_frozen_prefix(5))  # stem + first block
    assert frozen["counted_mem_mib"] < r18["counted_mem_mib"]
    assert frozen["train_saved_act_mib"] < 0.8 * r18["train_saved_act_mib"]  # the prefix runs under no_grad


def test_cell_counted_memory_is_the_largest_stage():
    rec = Recorder("cpu")
    cfg = engine.TrainConfig(steps=1, batch_size=8, log_every=10)
    torch.manual_seed(0)
    engine.fit(build_model("resnet50", 10, width=0.25), _noise_split(), cfg, rec, stage="search")
    engine.fit(build_model("resnet18", 10, width=0.25), _noise_split(), cfg, rec, stage="final")
    m = rec.metrics
    assert m["final_counted_mem_mib"] < m["search_counted_mem_mib"] == m["counted_mem_mib"]


def test_time_steps_times_the_engines_step(monkeypatch):
    import bench.engine.train as train_module

    made = []
    real = train_module.make_optimizer

    def spy(params, cfg, *impl):
        opt = real(params, cfg, *impl)
        made.append(opt)
        return opt

    monkeypatch.setattr(train_module, "make_optimizer", spy)
    torch.manual_seed(0)
    model = build_model("resnet18", 10, width=0.25).set_frozen_prefix(5)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = torch.get_rng_state()
    try:
        timing = engine.time_steps(
            model, engine.TrainConfig(steps=1), batch_size=4, image_size=16, num_classes=10, device="cpu", steps=3
        )
        assert torch.are_deterministic_algorithms_enabled()  # the caller's mode is back
        assert not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream did not move
    assert len(timing.times_ms) == 3 and all(math.isfinite(t) and t > 0 for t in timing.times_ms)
    assert timing.p10_ms <= timing.median_ms <= timing.p90_ms
    assert timing.counted_mem_mib > timing.saved_act_mib > 0
    assert len(made) == 1 and made[0].param_groups[0]["nesterov"] is True  # the engine's optimiser ...
    assert sum(p.numel() for g in made[0].param_groups for p in g["params"]) == trainable  # ... of the trained part
    assert model.training


def test_time_steps_refuses_a_fully_frozen_model():
    model = nn.Linear(4, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        engine.time_steps(model, engine.TrainConfig(steps=1), batch_size=2, image_size=4, num_classes=2, device="cpu")
