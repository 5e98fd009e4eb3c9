"""NASOA: encoding round trips and errors, builder counts against Table 10, the zoo as models,
the Hedge predictor (gradient equivalence, alpha a distribution), prequential segments and
the generator's budget guarantee."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision

from bench.errors import InvalidConfig, WeightsNotFound
from bench.models.net import build_model
from methods.nasoa.builder import ETNet, analytic_counts, freeze_stages
from methods.nasoa.encoding import EncodingError, format_arch, parse
from methods.nasoa.generator import budget_seconds, plan
from methods.nasoa.predictor import HedgeMLP, PredictorConfig, prequential, segment_errors
from methods.nasoa.zoo import CLASSIC, ZOO, imagenet_state_dict

# Full-width parameter counts (M) our builder must give (methods.md, verified analytically).
EXPECTED_MPARAMS = dict(zip(ZOO, (2.62, 3.94, 7.13, 15.24, 21.42, 28.45, 49.29, 44.00, 72.44, 103.00, 87.34, 130.44)))


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_counts_match_table10(name):
    entry = ZOO[name]
    params, macs = analytic_counts(entry.encoding)
    assert abs(params / 1e6 - entry.mparams) <= 0.05, (name, params)
    assert abs(params / 1e6 - EXPECTED_MPARAMS[name]) <= 0.005
    assert abs(macs / 1e9 / entry.gmacs - 1) <= 0.02, (name, macs)


@pytest.mark.parametrize("encoding", [e.encoding for e in ZOO.values()] + list(CLASSIC.values()))
def test_round_trip(encoding):
    assert format_arch(parse(encoding)) == encoding
    assert format_arch(parse(encoding.replace("_", " "))) == encoding


def test_resnet18_by_encoding_differs_from_torchvision_only_by_the_stem():
    # torchvision's 7x7 stem: 3*64*49 + 128 (BN) = 9,536; ours: three 3x3 convs 3->32->32->64
    # (864 + 9,216 + 18,432) + BN (64 + 64 + 128) = 28,768; so 11,689,512 + 19,232 = 11,708,744.
    ours, _ = analytic_counts(CLASSIC["resnet18"])
    tv = sum(p.numel() for p in torchvision.models.resnet18().parameters())
    assert tv == 11_689_512 and ours == 11_708_744 == tv + 28_768 - 9_536


def test_resnet50_family_expressible():
    ours, _ = analytic_counts(CLASSIC["resnet50"])
    tv = sum(p.numel() for p in torchvision.models.resnet50().parameters())
    assert ours - tv == 28_768 - 9_536
    wide, _ = analytic_counts(CLASSIC["wide_resnet50_2"])
    assert wide - sum(p.numel() for p in torchvision.models.wide_resnet50_2().parameters()) == 28_768 - 9_536


@pytest.mark.parametrize(
    "bad, match",
    [
        ("5-_64_1-1-1-1", r"block op 1 .*unknown op 5"),
        ("061-_64_1-1-1-1", r"ratio \(character 1\).*ratio digit 6"),
        ("02031-a04_64_1-1-1-1", r"skip 'a04'.*0 <= src < dst <= 3"),
        ("02031-a21_64_1-1-1-1", r"skip 'a21'"),
        ("02031-c13_64_1-1-1-1", r"concat into place 3 \(the block output\)"),
        ("02031-x02_64_1-1-1-1", r"kind 'x'"),
        ("02031-a03_64_1-1-1-1", r"'a03' is the implicit residual"),
        ("02031-a02a02_64_1-1-1-1", r"a second skip from place 0 to place 2"),
        ("020-a02_64_1-1-1-1", r"implicit residual"),
        ("0203-_64_1-1-1-1", r"2n-1 digits"),
        ("020-_64_1-1-1", r"3 stage\(s\)"),
        ("020-_64_1-13-1-1", r"stage 2, block 2.*digit '3'"),
        ("020-_64_1--1-1", r"stage 2.*empty"),
        ("020-_66_1-1-1-1", r"first channels.*divisible by 4"),
        ("020_64_1-1-1-1", r"exactly one '-'"),
        ("020-_64", r"2 part\(s\)"),
        ("301-_12_1-1-1-1", r"stage 1 block 1 op 1 \(conv3x3_g4\).*12 -> 3 channels .* its 4 groups"),
        ("401-_16_1-1-1-1", r"op 1 \(dwconv3x3\).*16 -> 4 channels .* its 16 groups"),
    ],
)
def test_malformed_encodings_say_what_and_where(bad, match):
    with pytest.raises(EncodingError, match=match):
        parse(bad)
    assert issubclass(EncodingError, InvalidConfig)


def test_builder_forward_backward_and_concat_widening():
    torch.manual_seed(0)
    for name in ("etnas_a", "etnas_b", "etnas_i", "etnas_l"):
        net = build_model(name, 10, width=0.125)
        out = net(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)
        out.sum().backward()
        assert all(p.grad is not None for p in net.parameters())
    # ET-NAS-L's block: c12 concatenates place 1 into place 2, so op 3 reads wider input.
    net = ETNet(ZOO["etnas_l"].encoding, num_classes=10, width=0.125)
    block = net.layer1[0]
    assert block.ops[2][0].in_channels == block.ops[1][0].out_channels + block.ops[0][0].out_channels


def test_stride_on_first_non_1x1_op():
    net = ETNet("10001-_64_4-111-11122-1111111111111112", num_classes=10)
    first = net.layer2[0]
    assert [op[0].stride for op in first.ops] == [(1, 1), (2, 2), (1, 1)]
    net = ETNet("1-_32_1-1-1-1", num_classes=10)
    assert net.layer2[0].ops[0][0].stride == (2, 2)


def test_zoo_models_registered_with_stages_and_frozen_stages():
    net = build_model("etnas_c", 5, width=0.25)
    assert len(net.structure.stages) == 4 and net.structure.stem == ("stem",)
    assert net.arch_string() == "etnas_c(num_classes=5,width=0.25)"
    freeze_stages(net, 1)
    assert net.frozen_prefix == 1 + len(net.structure.stages[0])
    assert not any(p.requires_grad for p in net.layer1.parameters())
    assert all(p.requires_grad for p in net.layer2.parameters())
    freeze_stages(net, -1)
    assert net.frozen_prefix == 0
    with pytest.raises(InvalidConfig, match=r"-1\.\.3"):
        freeze_stages(net, 4)


def test_imagenet_weights_absent_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(WeightsNotFound, match=r"ET-NAS-G.*211-_64_41-211-121-11111121\.pth"):
        imagenet_state_dict("etnas_g")
    net = build_model("etnas_a", 1000)
    (tmp_path / "etnas").mkdir()
    torch.save(net.state_dict(), tmp_path / "etnas" / f"{ZOO['etnas_a'].encoding}.pth")
    state = imagenet_state_dict("etnas_a")
    build_model("etnas_a", 1000).load_state_dict(state, strict=True)


# ------------------------------------------------------------------ predictor


def _manual_eq4_grads(model: HedgeMLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 4 literally: W_l gets alpha_l dL_l/dW_l; Phi_l gets sum_{j>=l} alpha_j dL_j/dPhi_l."""
    f = model.layer_outputs(x)
    losses = (f - y.unsqueeze(-1)).pow(2).mean(0)
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    L = model.cfg.depth
    alpha = model.alpha.float()
    for j in range(L):
        params = list(model.heads[j].parameters()) + [p for l in range(j + 1) for p in model.hidden[l].parameters()]
        names = [f"heads.{j}.weight", f"heads.{j}.bias"] + [
            f"hidden.{l}.{k}" for l in range(j + 1) for k in ("weight", "bias")
        ]
        gs = torch.autograd.grad(losses[j], params, retain_graph=True)
        for n, g in zip(names, gs):
            grads[n] += alpha[j] * g
    return grads


def test_hedge_update_equals_backprop_of_alpha_weighted_loss():
    torch.manual_seed(0)
    model = HedgeMLP(7, PredictorConfig(depth=5, width=16, seed=1))
    with torch.no_grad():
        model.alpha.copy_(torch.tensor([0.1, 0.3, 0.2, 0.15, 0.25], dtype=torch.float64))
    x, y = torch.randn(1, 7), torch.tensor([0.7])
    expected = _manual_eq4_grads(model, x, y)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.update(x, y)
    for n, p in model.named_parameters():
        step = before[n] - p.detach()
        torch.testing.assert_close(step, model.cfg.lr * expected[n], rtol=1e-4, atol=1e-7)
    # W_l of the first head moved by alpha_1-scaled gradient only: not by the others'.
    assert not torch.equal(before["hidden.0.weight"], model.hidden[0].weight.detach())


def test_alpha_stays_a_distribution_and_moves_to_better_layers():
    torch.manual_seed(0)
    model = HedgeMLP(4, PredictorConfig(depth=6, width=16, floor=0.2))
    for _ in range(200):
        x = torch.randn(1, 4)
        model.update(x, torch.tensor([0.5]))
        a = model.alpha
        assert torch.all(a >= 0.2 / 6 - 1e-12) and abs(float(a.sum()) - 1.0) < 1e-9
    assert not torch.allclose(model.alpha, torch.full((6,), 1 / 6, dtype=torch.float64))


def test_fixed_depth_predicts_with_last_layer_and_keeps_alpha():
    model = HedgeMLP(3, PredictorConfig(depth=3, adaptive=False))
    x = torch.randn(4, 3)
    torch.testing.assert_close(model.predict(x), model.layer_outputs(x)[:, -1].clamp(0, 1))
    model.update(x[:1], torch.tensor([0.2]))
    assert model.alpha.tolist() == [0.0, 0.0, 1.0]


def test_prequential_predicts_before_learning_and_segments():
    model = HedgeMLP(2, PredictorConfig(depth=2, width=8))
    x, y = torch.randn(10, 2), torch.rand(10)
    clone = HedgeMLP(2, PredictorConfig(depth=2, width=8))
    first = float(clone.predict(x[:1])[0])
    res = prequential(model, x, y)
    assert res.predictions[0] == pytest.approx(first)
    pred, tgt = np.array([0.1] * 10), np.array([0.0] * 8 + [0.5, 0.5])
    mae, mse = segment_errors(pred, tgt)
    assert mae["all"] == pytest.approx(100 * (0.8 + 0.8) / 10)
    assert mae["20_40"] == pytest.approx(10.0) and mae["80_100"] == pytest.approx(40.0)
    assert mse["80_100"] == pytest.approx(100 * 0.16)


def test_hedge_shifts_weight_to_the_shallow_layers_that_learn_first():
    """On a simple stream shallow heads fit first, so Hedge must move alpha towards them."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=gen)
    y = torch.sigmoid(x[:, 0] - 0.5 * x[:, 1]).float()
    model = HedgeMLP(6, PredictorConfig(depth=10))
    prequential(model, x, y)
    assert float(model.alpha[:3].sum()) > 0.3 + 0.05
    assert abs(float(model.alpha.sum()) - 1) < 1e-9


# ------------------------------------------------------------------ generator


@pytest.mark.parametrize("budget", [0.05, 0.3, 1.0, 7.7, 40.0])
def test_plans_never_exceed_the_budget(budget):
    steps = {"a": 3.0, "b": 11.0, "c": 95.0}
    plans = plan(list(steps), steps, budget, train_size=1000, batch=64)
    assert all(p.planned_s <= budget + 1e-12 for p in plans)
    for m in {p.model for p in plans}:
        e = max(p.epochs for p in plans if p.model == m)
        assert (e + 1) * 16 * steps[m] / 1000 > budget  # the largest epoch count that fits
    assert {p.model for p in plans} == {m for m, s in steps.items() if 16 * s / 1000 <= budget}


def test_budgets_are_log_uniform():
    b = [budget_seconds(i, 2.0, 250.0) for i in range(4)]
    assert b[0] == pytest.approx(2.0) and b[3] == pytest.approx(250.0)
    assert b[1] / b[0] == pytest.approx(b[2] / b[1]) == pytest.approx(b[3] / b[2])


def test_emd_similarity_is_one_for_identical_domains_and_falls_with_distance():
    from methods.nasoa.metadata import emd_similarity

    a = (np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([10.0, 30.0]))
    assert emd_similarity(a, a, 0.5) == pytest.approx(1.0)
    far = (a[0] + 3.0, a[1])
    near = (a[0] + 1.0, a[1])
    assert emd_similarity(a, far, 0.5) < emd_similarity(a, near, 0.5) < 1.0
    assert emd_similarity(a, near, 0.5) == pytest.approx(np.exp(-0.5 * np.sqrt(2)))


def test_config_rejects_unknown_search():
    from methods.nasoa.method import NasoaConfig

    with pytest.raises(InvalidConfig, match="search must be one of"):
        dataclasses.replace(NasoaConfig(), search="grid")


# ------------------------------------------------------------------ ImageNet weights, series, Table 4 claim


def test_zoo_imagenet_through_the_harness_path(tmp_path, monkeypatch):
    """source=imagenet: the harness's loader finds etnas_<x>.pth, names the expected path when absent,
    and a paper-tier grid with an ET-NAS model and source imagenet validates."""
    from bench.execute.grid import Grid, TierPlan
    from bench.models import pretrain

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(WeightsNotFound, match=r"expected .*/etnas/etnas_a\.pth"):
        pretrain.imagenet_state_dict("etnas_a", 1.0)
    with pytest.raises(InvalidConfig, match="only at width 1.0"):
        pretrain.imagenet_state_dict("etnas_a", 0.5)
    torch.manual_seed(3)
    reference = build_model("etnas_a", 1000).state_dict()
    (tmp_path / "etnas").mkdir()
    torch.save(reference, tmp_path / "etnas" / "etnas_a.pth")
    loaded = pretrain.imagenet_state_dict("etnas_a", 1.0)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    build_model("etnas_a", 1000).load_state_dict(loaded, strict=True)
    grid = Grid(
        suite="t",
        methods={"scratch": {}},
        datasets=("lfw-faces",),
        models=("etnas_a",),
        seeds=(0,),
        task={"source": "imagenet", "width": 1.0},
        tiers={"paper": TierPlan()},
    )
    assert len(grid.cells("paper")) == 1


def test_regnet_series_matches_torchvision_and_shrinks():
    from methods.nasoa.series import imagenet_top1

    net = build_model("regnet_y_400mf", 1000)
    ref = torchvision.models.regnet_y_400mf()
    net.load_state_dict(ref.state_dict(), strict=True)
    net.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-5)
    assert [len(s) for s in net.structure.stages] == [1, 3, 6, 6]
    small = build_model("regnet_y_800mf", 7, width=0.125)
    freeze_stages(small, 1)
    assert small(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert not any(p.requires_grad for p in small.stem.parameters())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in ref.parameters()) / 20
    assert imagenet_top1("regnet_y_400mf") == pytest.approx(74.046) and np.isnan(imagenet_top1("etnas_a"))


def test_plan_falls_back_to_part_of_an_epoch_of_the_fastest_model():
    steps = {"slow": 80.0, "slower": 200.0}
    plans = plan(list(steps), steps, 0.25, train_size=128, batch=32)  # one epoch = 4 steps = 0.32 s
    assert {p.model for p in plans} == {"slow"} and {(p.epochs, p.iters) for p in plans} == {(0, 3)}
    assert all(p.planned_s <= 0.25 for p in plans)
    assert plan(list(steps), steps, 0.05, train_size=128, batch=32) == []


def test_zoo_vs_regnet_claim_reads_every_budget_and_is_unmeasured_without_series_rows():
    import pandas as pd

    from bench.results.claims import CHECKS

    check = CHECKS["nasoa-zoo-vs-regnet"]

    def rows(variant, acc):
        return [
            {
                "suite": "nasoa",
                "variant": variant,
                "method": "nasoa",
                "dataset": "d",
                "model": "m",
                "seed": seed,
                "status": "ok",
                "tier": "smoke",
                "test_top1_pct": acc + 0.3 * seed * (-1) ** len(variant),
            }
            for seed in range(4)
        ]

    zoo = rows("nasoa:gen-t0", 80.0) + rows("nasoa:gen-t2", 85.0)
    assert check(pd.DataFrame(zoo)).verdict is None
    both = pd.DataFrame(zoo + rows("nasoa:oa_regnet-t0", 70.0) + rows("nasoa:oa_regnet-t2", 80.0))
    out = check(both.assign(extra=rows("nasoa:bohb_regnet-t0", 99.0)[0]["test_top1_pct"]))
    assert out.verdict == "reproduced" and out.n == 4 and "t0" in out.detail and "t2" in out.detail
    # every budget, not the mean: a large win at t0 does not cover a loss at t2
    mixed = pd.DataFrame(zoo + rows("nasoa:oa_regnet-t0", 60.0) + rows("nasoa:oa_regnet-t2", 90.0))
    assert check(mixed).verdict == "not reproduced"


# -- step-time tables: the engine's own step ---------------------------------------------------------


def test_steptime_measure_times_the_engines_step(monkeypatch):
    """``measure`` times ``engine.time_steps`` with the fine-tuning recipe (nesterov SGD, decay
    groups, bf16/channels_last on CUDA), not a loop of its own; CPU has no measured peak."""
    from bench import engine
    from methods.nasoa import steptime

    seen = []
    real = engine.time_steps

    def spy(model, cfg, **kw):
        seen.append((cfg, kw))
        return real(model, cfg, **kw)

    monkeypatch.setattr(engine, "time_steps", spy)
    torch.manual_seed(0)
    t = steptime.measure(
        build_model("resnet20", 10, width=0.25),
        batch=4,
        size=16,
        device=torch.device("cpu"),
        steps=2,
        warmup=1,
        num_classes=10,
    )
    assert [(cfg, kw["batch_size"], kw["image_size"], kw["steps"]) for cfg, kw in seen] == [
        (steptime.FINETUNE, 4, 16, 2)
    ]
    assert steptime.FINETUNE.nesterov and steptime.FINETUNE.bf16 and steptime.FINETUNE.channels_last
    assert t.step_ms > 0 and t.infer_ms > 0 and t.counted_mem_mib > 0
    assert np.isnan(t.peak_mem_mib)


def test_steptime_table_key_names_the_steps_arithmetic(monkeypatch, tmp_path):
    import json

    from methods.nasoa import steptime

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(steptime, "measure", lambda *a, **k: steptime.StepTimes(7.0, 1.0, float("nan"), 1.0))
    cpu = torch.device("cpu")
    assert steptime.step_table(["resnet20"], width=0.25, size=16, batch=4, device=cpu) == {"resnet20": 7.0}
    table = json.loads(steptime._cache_file(cpu).read_text())
    assert list(table) == [f"resnet20|w0.25|16px|bs4|{steptime.device_name(cpu)}|fp32|nchw"]
    cuda = torch.device("cuda")
    assert steptime.arithmetic_label(steptime.FINETUNE, cuda) == "bf16|cl"
    assert steptime.arithmetic_label(dataclasses.replace(steptime.FINETUNE, bf16=False), cuda) == "fp32|cl"


def test_frozen_plans_get_the_iterations_their_own_step_time_buys():
    """A plan trains in its frozen state, so a faster frozen step buys more epochs in the same budget."""
    steps = {"a": 10.0}
    frozen = {("a", k): 10.0 / (k + 2) for k in (0, 1, 2, 3)}
    plans = plan(["a"], steps, 1.0, train_size=320, batch=32, frozen_ms=frozen)  # 10 steps an epoch
    by_k = {p.frozen: p for p in plans if p.lr == plans[0].lr}
    assert by_k[-1].epochs == 10 and by_k[0].epochs == 20 and by_k[3].epochs == 50
    assert all(p.planned_s <= 1.0 + 1e-12 for p in plans)
    # no frozen table: every frozen count plans with the unfrozen step time
    assert {p.epochs for p in plan(["a"], steps, 1.0, train_size=320, batch=32)} == {10}


def test_steptime_table_times_the_frozen_state_the_plan_trains_in(monkeypatch, tmp_path):
    from methods.nasoa import steptime

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    trainable = []

    def fake(net, **k):
        trainable.append(sum(p.numel() for p in net.parameters() if p.requires_grad))
        return steptime.StepTimes(7.0 - len(trainable), 1.0, float("nan"), 1.0)

    monkeypatch.setattr(steptime, "measure", fake)
    cpu = torch.device("cpu")
    free = steptime.step_table(["etnas_a"], width=0.25, size=16, batch=4, device=cpu)
    frozen = steptime.step_table(["etnas_a"], width=0.25, size=16, batch=4, device=cpu, frozen=1)
    assert free != frozen and trainable[1] < trainable[0]
    assert steptime.step_table(["etnas_a"], width=0.25, size=16, batch=4, device=cpu, frozen=1) == frozen  # cached
    assert len(trainable) == 2
