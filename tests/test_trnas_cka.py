"""Tr-NAS's motivation, measured: linear CKA (Figs. 1-2) and the dominant Hessian eigenvalue w.r.t. alpha (Fig. 9)."""

import numpy as np
import pytest
import torch
from torch import nn

from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.execute.runner import build_task, resolve, run_cell, seed_everything
from methods.trnas.cka import cka_matrix, linear_cka, normalised_gram, representation_names
from methods.trnas.darts_pt import ArchOptConfig, SearchRun, split_halves
from methods.trnas.hessian import HessianConfig, HessianProbe, dominant_eigenvalue
from methods.trnas.supernet import ArchState, supernet
from tests.conftest import tiny_spec


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))
    return q


# ----------------------------------------------------------------------------- linear CKA


def test_cka_of_one_feature_is_the_squared_pearson_correlation():
    # x = 1..4, y = (1, 3, 2, 4): centred dot 4, centred norms^2 5 and 5, r = 0.8, CKA = r^2
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    assert linear_cka(x, y) == pytest.approx(0.64, abs=1e-12)


def test_cka_of_a_representation_with_itself_is_one_and_cka_is_symmetric():
    x = torch.randn(64, 3, 4, 4, generator=_gen(1))  # trailing dims flattened per example
    y = torch.randn(64, 20, generator=_gen(2)) + x.flatten(1)[:, :20]
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_cka_is_invariant_to_orthogonal_maps_isotropic_scaling_and_shifts_but_not_to_anisotropic_scaling():
    x = torch.randn(100, 12, generator=_gen(3), dtype=torch.float64)
    y = x[:, :6] @ torch.randn(6, 8, generator=_gen(4), dtype=torch.float64) + 0.5 * torch.randn(
        100, 8, generator=_gen(5), dtype=torch.float64
    )
    base = linear_cka(x, y)
    assert linear_cka(x @ _orthogonal(12, 6), y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, y @ _orthogonal(8, 7)) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 3.0, y - 11.0) == pytest.approx(base, abs=1e-10)  # centring removes shifts
    scale = torch.ones(12, dtype=torch.float64)
    scale[:3] = 20.0  # stretch three axes only: CKA is not invariant to that
    assert abs(linear_cka(x * scale, y) - base) > 1e-3


def test_cka_of_independent_features_is_near_zero_when_examples_far_outnumber_features():
    x = torch.randn(4000, 8, generator=_gen(8))
    y = torch.randn(4000, 8, generator=_gen(9))
    assert linear_cka(x, y) < 0.01
    # with few examples and many features the (biased) estimator is far from 0: that is the estimator, not a bug
    assert linear_cka(torch.randn(20, 500, generator=_gen(10)), torch.randn(20, 500, generator=_gen(11))) > 0.5


def test_cka_gram_and_feature_forms_agree():
    def direct(x, y):  # the paper's Eq. 1 with H K H, straight from the definition
        n = x.shape[0]
        h = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
        k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
        return float((k * l).sum() / (k.norm() * l.norm()))

    for n, p1, p2 in ((200, 5, 7), (15, 60, 40)):  # feature form, then Gram form
        x = torch.randn(n, p1, generator=_gen(n), dtype=torch.float64)
        y = torch.tanh(x @ torch.randn(p1, p2, generator=_gen(p1), dtype=torch.float64))
        assert linear_cka(x, y) == pytest.approx(direct(x, y), abs=1e-10)
        grams = [normalised_gram(x), normalised_gram(y)]
        assert cka_matrix(grams, grams)[0, 1] == pytest.approx(direct(x, y), abs=1e-10)
        assert cka_matrix(grams, grams)[1, 1] == pytest.approx(1.0, abs=1e-12)


def test_cka_of_a_constant_representation_is_zero_and_bad_inputs_are_errors():
    x = torch.randn(10, 4, generator=_gen(12))
    assert linear_cka(torch.zeros(10, 4), x) == 0.0 and linear_cka(x, torch.full((10, 2), 3.0)) == 0.0
    assert normalised_gram(torch.zeros(10, 5)) is None
    assert cka_matrix([None], [normalised_gram(x)])[0, 0] == 0.0
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:5])
    with pytest.raises(ValueError, match="non-finite"):
        linear_cka(x, torch.full((10, 4), float("nan")))
    with pytest.raises(ValueError, match="2 examples"):
        linear_cka(x[:1], x[:1])


# ------------------------------------------------------------------ dominant eigenvalue


def _quadratic(eigs, seed=0):
    q = _orthogonal(len(eigs), seed)
    a = q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.T
    w = torch.randn(len(eigs), generator=_gen(seed + 1), dtype=torch.float64).requires_grad_(True)
    return a, w, lambda: 0.5 * w @ a @ w


def test_dominant_eigenvalue_of_a_quadratic_is_the_largest_eigenvalue_of_its_matrix():
    a, w, loss = _quadratic([5.0, 3.0, 2.0, -1.0, 0.5, 0.0])
    got = dominant_eigenvalue(loss, [w], iters=500, tol=1e-12, seed=0)
    assert got == pytest.approx(float(torch.linalg.eigvalsh(a).max()), abs=1e-4)
    assert got == pytest.approx(5.0, abs=1e-4)
    assert dominant_eigenvalue(loss, [w], iters=500, tol=1e-12, seed=3) == pytest.approx(5.0, abs=1e-4)
    # the most negative eigenvalue is the largest in magnitude: "largest" shifts and finds 2, "magnitude" -6
    _, w2, loss2 = _quadratic([-6.0, 2.0, 1.0, -0.5])
    assert dominant_eigenvalue(loss2, [w2], iters=500, tol=1e-12) == pytest.approx(2.0, abs=1e-4)
    assert dominant_eigenvalue(loss2, [w2], iters=500, tol=1e-12, which="magnitude") == pytest.approx(-6.0, abs=1e-4)


def test_dominant_eigenvalue_of_a_tiny_network_matches_its_explicit_hessian():
    g = _gen(20)
    x, y = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)
    w1 = (0.8 * torch.randn(4, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    w2 = (0.8 * torch.randn(2, 4, generator=g, dtype=torch.float64)).requires_grad_(True)

    def loss_of(a, b):
        return nn.functional.cross_entropy(torch.tanh(x @ a.T) @ b.T, y)

    def flat(v):
        return loss_of(v[:12].view(4, 3), v[12:].view(2, 4))

    h = torch.autograd.functional.hessian(flat, torch.cat([w1.detach().flatten(), w2.detach().flatten()]))
    eigs = torch.linalg.eigvalsh(h)
    got = dominant_eigenvalue(lambda: loss_of(w1, w2), [w1, w2], iters=2000, tol=1e-13, seed=1)
    assert got == pytest.approx(float(eigs.max()), rel=1e-4)
    got = dominant_eigenvalue(lambda: loss_of(w1, w2), [w1, w2], iters=2000, tol=1e-13, seed=1, which="magnitude")
    assert got == pytest.approx(float(eigs[eigs.abs().argmax()]), rel=1e-4)
    assert w1.grad is None and w2.grad is None  # autograd.grad writes no .grad


def test_dominant_eigenvalue_of_a_linear_loss_is_zero():
    w = torch.randn(5, generator=_gen(30)).requires_grad_(True)
    assert dominant_eigenvalue(lambda: (3.0 * w).sum(), [w]) == 0.0
    with pytest.raises(ValueError):
        dominant_eigenvalue(lambda: (w * w).sum(), [w], iters=0)


# ------------------------------------------------------------------ the Hessian probe


def _search_setup(steps=2):
    g = _gen(40)
    train = Split("train", torch.randn(96, 3, 8, 8, generator=g), torch.randint(0, 4, (96,), generator=g), 4, 8)
    w_part, a_part = split_halves(train, 0.5, 0)
    torch.manual_seed(0)
    state = ArchState("cpu", seed=0)
    net = supernet(state, C=4, N=1, num_classes=4)
    return net, state, w_part, a_part


def test_hessian_probe_records_the_series_and_leaves_alpha_weights_and_bn_stats_unchanged():
    net, state, _, a_part = _search_setup()
    net.train()
    rec = Recorder("cpu", progress=lambda m: None)
    cfg = HessianConfig(every_epochs=1.0, batches=1, batch_size=16, iters=60, tol=1e-6)
    probe = HessianProbe(net, state.alpha, a_part, cfg, seed=0, rec=rec)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    alpha = state.alpha.detach().clone()
    rng = torch.get_rng_state()
    for step in (3, 6):
        probe(step)
    probe.finish()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a weight or BN buffer changed"
    assert torch.equal(state.alpha.detach(), alpha) and state.alpha.grad is None
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    series = rec.series["search_hessian_eig_nat"]
    assert [s for s, _ in series] == [3, 6] and all(np.isfinite(v) for _, v in series)
    assert series[0][1] == series[1][1]  # same net, same batches, same start vector: the same number
    assert rec.metrics["search_hessian_count"] == 2 and rec.metrics["search_hessian_s"] > 0
    assert rec.metrics["search_hessian_eig_nat"] == series[-1][1]
    # the probe's number is the dominant eigenvalue of the explicit 30 x 30 Hessian of that loss w.r.t. alpha
    shape = state.alpha.shape
    leaf = state.alpha

    def of_alpha(a):
        state.alpha = a.view(shape)
        try:
            return probe.loss()
        finally:
            state.alpha = leaf

    h = torch.autograd.functional.hessian(of_alpha, leaf.detach().flatten().clone())
    eigs = torch.linalg.eigvalsh(h.double())
    for k, v in enumerate(net.state_dict().values()):  # the explicit Hessian ran BN in train mode: restore
        v.copy_(list(before.values())[k])
    assert series[0][1] == pytest.approx(float(eigs.max()), rel=1e-2)


def test_hessian_probe_in_the_search_does_not_change_the_search():
    """The same seeded search with and without the probe ends with the same alpha and weights."""

    def search(probe_on: bool):
        net, state, w_part, a_part = _search_setup()
        from bench import engine

        rec = Recorder("cpu", progress=lambda m: None)
        task = type("T", (), {"seed": 0, "device": torch.device("cpu")})()
        cfg = engine.TrainConfig(lr=0.05, batch_size=16, steps=4, log_every=1000)
        run = SearchRun(net, state, w_part, a_part, ArchOptConfig(batch_size=16), cfg, task, rec, 16)
        if probe_on:
            run.periodic.append((2, HessianProbe(net, state.alpha, a_part, HessianConfig(iters=5), 0, rec)))
        run.search(cfg, cutout_ramp=True)
        return state.alpha.detach().clone(), {k: v.clone() for k, v in net.state_dict().items()}, rec

    a0, w0, _ = search(False)
    a1, w1, rec = search(True)
    assert torch.equal(a0, a1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [s for s, _ in rec.series["search_hessian_eig_nat"]] == [2, 4]


def test_dartspt_cell_with_the_probe_records_search_hessian_eig():
    cfg = {"hessian.every_epochs": 0.5, "hessian.batch_size": 16, "hessian.iters": 5, "search.steps": 4}
    result = run_cell(tiny_spec("trnas_dartspt", config=cfg))
    assert result.ok, result.error
    series = result.series["search_hessian_eig_nat"]
    assert len(series) >= 1 and result.metrics["search_hessian_count"] == len(series)
    assert 0 <= result.metrics["search_hessian_s"] < result.metrics["search_s"] + result.metrics["search_hessian_s"]
    off = run_cell(tiny_spec("trnas_dartspt", config={"search.steps": 4}))
    assert off.ok and "search_hessian_eig_nat" not in off.series and "search_hessian_count" not in off.metrics
    assert result.info["search_argmax_arch"] == off.info["search_argmax_arch"]
    assert result.metrics["test_top1_pct"] == off.metrics["test_top1_pct"]  # the probe changed nothing


def test_hessian_config_converts_epochs_to_steps():
    assert HessianConfig().every_steps(1000, 64) == 0  # off
    assert HessianConfig(every_epochs=1.0).every_steps(1000, 64) == 15
    assert HessianConfig(every_epochs=0.01).every_steps(1000, 64) == 1
    with pytest.raises(Exception, match="every_epochs"):
        HessianConfig(every_epochs=-1.0)


# ----------------------------------------------------------------------------- the method


def test_cka_cell_records_the_matrix_series_with_the_right_shape_and_hooks_match_a_manual_forward():
    spec = tiny_spec("trnas_cka", model="resnet20", config={"cut_i": 2, "cut_j": 3})
    cls, config, settings = resolve(spec)
    seed_everything(0)
    task = build_task(spec, settings, torch.device("cpu"))
    rec = Recorder("cpu", progress=lambda m: None)
    fitted = cls(config).fit(task, rec)
    b = task.build_model()
    rows, cols = 3 * config.N + 3, 1 + len(b.structure.blocks)  # stem + 5 entries; stem + 9 blocks
    grid = rec.series["cka_linear_ratio"]
    assert sorted((s, p) for s, _, p in grid) == [(r, c) for r in range(rows) for c in range(cols)]
    assert all(-1e-9 <= v <= 1 + 1e-9 for _, v, _ in grid)
    assert len(rec.series["cka_arch_cut_ratio"]) == config.archs == rec.metrics["cka_networks_count"]
    assert rec.metrics["cka_images_count"] == config.images
    mean = {(s, p): v for s, v, p in grid}
    assert rec.metrics["cka_cut_ratio"] == pytest.approx(mean[(2, 3)])
    assert np.mean([v for _, v in rec.series["cka_arch_cut_ratio"]]) == pytest.approx(mean[(2, 3)])
    assert {"cka_stage1_ratio", "cka_stage2_ratio", "cka_stage3_ratio"} <= set(rec.metrics)
    # the best network's matrix (last example) equals CKA recomputed from a manual forward of the parts
    best = rec.info["cka_examples"][-1]
    assert best["arch"] == fitted.arch and len(best["matrix"]) == rows and len(best["matrix"][0]) == cols

    def features(net):
        net.eval()
        x, _ = task.val.batch(slice(0, config.images))
        out, parts = [], dict(net.parts())
        with torch.no_grad():
            for name in net.structure.sequence:
                x = parts[name](x)
                if name in representation_names(net):
                    out.append(x.flatten(1))
        return out

    fb, fn = features(b), features(fitted.model)
    for r, c in ((0, 0), (1, 2), (rows - 1, cols - 1), (2, 3)):
        assert best["matrix"][r][c] == pytest.approx(linear_cka(fn[r], fb[c]), abs=1e-4)


def test_cka_cut_outside_the_matrix_is_an_error():
    result = run_cell(tiny_spec("trnas_cka", model="resnet20", config={"cut_i": 9}))
    assert not result.ok and "cut (9, 1)" in result.error and "0..5" in result.error
