"""NASOA offline NAS (modified NSGA-II): pymoo sorting on a hand-made front, every mutation kind,
exactly N children, seeded determinism, the step-time cap, and a tiny end-to-end cell."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from bench.contract.config import make_config
from bench.errors import InvalidConfig
from bench.execute.runner import run_cell
from methods.nasoa.builder import scaled_first_channels
from methods.nasoa.encoding import (
    Arch,
    EncodingError,
    check_channels,
    format_arch,
    parse,
    parse_block,
)
from methods.nasoa.nsga import (
    BLOCK_MUTATIONS,
    MACRO_MUTATIONS,
    NoValidChild,
    NsgaConfig,
    NsgaSearch,
    ProxyConfig,
    ProxyEvaluator,
    crowding,
    etnas_search,
    mutate_block,
    mutate_macro,
    pareto_ranks,
    random_block,
    random_macro,
    select_parents,
    survival_order,
)
from methods.nasoa.zoo import CLASSIC, ZOO
from tests.conftest import metrics_of, tiny_spec

ENCODINGS = [e.encoding for e in ZOO.values()] + list(CLASSIC.values())


def dominated(F: np.ndarray) -> np.ndarray:
    """Brute force: row i is dominated by some row (all objectives minimised)."""
    return np.array([any((F[j] <= F[i]).all() and (F[j] < F[i]).any() for j in range(len(F))) for i in range(len(F))])


# --------------------------------------------------------------------------- sorting and selection

# (-acc, ms): A (-90, 10), B (-80, 5), C (-70, 2) form the front; D (-85, 12) is dominated by A only;
# E (-60, 6) by B; F (-50, 20) by everything in the front and D, E.
HAND = np.array([[-90, 10], [-80, 5], [-70, 2], [-85, 12], [-60, 6], [-50, 20]], dtype=float)


def test_hand_made_front_ranks_and_order():
    ranks = pareto_ranks(HAND)
    assert ranks.tolist() == [0, 0, 0, 1, 1, 2]
    assert (ranks == 0).tolist() == (~dominated(HAND)).tolist()
    order = survival_order(HAND)
    # front first; within it the two extremes (infinite crowding) before the middle point
    assert set(order[:3]) == {0, 1, 2} and order[2] == 1
    assert order[3:].tolist() in ([3, 4, 5], [4, 3, 5])
    assert np.isinf(crowding(HAND[[0, 1, 2]])[[0, 2]]).all() and np.isfinite(crowding(HAND[[0, 1, 2]])[1])


def test_select_parents_exactly_n_and_cycles():
    assert len(select_parents(HAND, 4)) == 4 and set(select_parents(HAND, 3)) == {0, 1, 2}
    assert select_parents(HAND[:2], 5).tolist() == [0, 1, 0, 1, 0]  # fewer than N evaluated: cycle
    with pytest.raises(InvalidConfig):
        select_parents(np.zeros((0, 2)), 2)


def test_random_fronts_match_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        F = rng.integers(0, 6, size=(15, 2)).astype(float)  # many ties
        assert ((pareto_ranks(F) == 0) == ~dominated(F)).all()


# --------------------------------------------------------------------------- mutations


def _ops_ratios(block):
    return [o.op for o in block.ops], [o.ratio for o in block.ops]


@pytest.mark.parametrize("kind", BLOCK_MUTATIONS)
def test_block_mutations_make_valid_different_blocks_of_their_kind(kind):
    rng = np.random.default_rng(0)
    valid = 0
    for enc in ENCODINGS:
        arch = parse(enc)
        for _ in range(6):
            try:
                block, got = mutate_block(arch.block, rng, kind)
            except InvalidConfig:
                assert kind != "op"  # op replacement always applies
                break
            assert got == kind and block != arch.block
            (o0, r0), (o1, r1) = _ops_ratios(arch.block), _ops_ratios(block)
            s0, s1 = set(arch.block.skips), set(block.skips)
            if kind == "op":
                assert sum(a != b for a, b in zip(o0, o1)) == 1 and r0 == r1 and s0 == s1
            elif kind == "ratio":
                assert o0 == o1 and sum(a != b for a, b in zip(r0, r1)) == 1 and r1[-1] == 2 and s0 == s1
            elif kind == "skip_add":
                assert (o0, r0) == (o1, r1) and s0 < s1 and len(s1) == len(s0) + 1
            elif kind == "skip_remove":
                assert (o0, r0) == (o1, r1) and s1 < s0 and len(s1) == len(s0) - 1
            else:
                assert (o0, r0) == (o1, r1) and len(s1) == len(s0) and len(s0 - s1) == 1
            child = Arch(block, arch.first_channels, arch.stages)
            try:
                again = parse(format_arch(child))  # the encoding validation
            except EncodingError:
                continue
            assert format_arch(again) == format_arch(child) != enc
            valid += 1
    assert valid >= 5


@pytest.mark.parametrize("kind", MACRO_MUTATIONS)
def test_macro_mutations_make_valid_different_macros_of_their_kind(kind):
    rng = np.random.default_rng(1)
    for enc in ENCODINGS:
        arch = parse(enc)
        try:
            stages, got = mutate_macro(arch.stages, rng, kind)
        except InvalidConfig:
            assert kind != "add_one"
            continue
        assert got == kind and stages != arch.stages
        child = Arch(arch.block, arch.first_channels, stages)
        assert format_arch(parse(format_arch(child))) != enc
        assert child.stage_channels()[-1][-1] == arch.stage_channels()[-1][-1]  # last channels kept
        flat0, flat1 = [d for s in arch.stages for d in s], [d for s in stages for d in s]
        if kind == "add_one":
            assert len(flat1) == len(flat0) + 1 and sorted(flat1) == sorted(flat0 + [1])
        elif kind == "remove_one":
            assert len(flat1) == len(flat0) - 1 and sorted(flat1 + [1]) == sorted(flat0)
        else:
            changed = [s for s in range(4) if stages[s] != arch.stages[s]]
            assert len(changed) == 1
            a, b = arch.stages[changed[0]], stages[changed[0]]
            diff = [i for i in range(len(a)) if a[i] != b[i]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1 and (a[diff[0]], a[diff[1]]) == (b[diff[1]], b[diff[0]])


def test_mutation_limits():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidConfig, match="does not apply"):
        mutate_macro(((1,), (2,), (2,), (2,)), rng, "remove_one")  # never empties a stage
    with pytest.raises(InvalidConfig, match="does not apply"):
        mutate_macro(((1, 1), (2,), (2,), (2,)), rng, "add_one", max_blocks=5)
    with pytest.raises(InvalidConfig, match="does not apply"):
        mutate_block(parse("0-_64_1-1-1-1").block, rng, "ratio")


def test_random_samples_are_well_formed():
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = random_block(rng, 3, 2)
        assert 1 <= len(b.ops) <= 3 and len(b.skips) <= 2 and b.ops[-1].ratio == 2
        parse_block(str(b))  # ops and skips always well formed; channel counts may still fail
        m = random_macro(rng, 32, 512, 6, 12)
        assert 6 <= sum(len(s) for s in m) <= 12 and np.prod([d for s in m for d in s]) == 16


# --------------------------------------------------------------------------- the search with synthetic objectives


class Fake:
    """Deterministic objectives; validation as the proxy does it at width 0.125 (so some draws fail)."""

    def __init__(self, width: float = 0.125) -> None:
        self.width = width
        self.accuracy_calls: list[str] = []
        self.timed: list[str] = []

    def check(self, arch: Arch) -> None:
        parse(format_arch(arch))
        check_channels(arch, first=scaled_first_channels(arch.first_channels, self.width))

    def step_ms(self, arch: Arch) -> float:
        self.timed.append(format_arch(arch))
        return self.cost(arch)

    @staticmethod
    def cost(arch: Arch) -> float:
        cost = sum(1 + 2**o.ratio * (0.2 if o.op == 1 else 1.0) for o in arch.block.ops)
        return arch.num_blocks * cost * arch.first_channels / 64 + len(arch.block.skips)

    def accuracy(self, arch: Arch, index: int) -> float:
        enc = format_arch(arch)
        self.accuracy_calls.append(enc)
        return 30 + (zlib.crc32(enc.encode()) % 600) / 10


SMALL = {
    "nodes": 3,
    "block_init": 4,
    "block_generations": 3,
    "macro_init": 4,
    "macro_generations": 3,
    "block_frame": "020-_64_11-21-21-21",
    "cells": 3,
    "first_channels": (32, 64),
    "last_channels": (256, 512),
    "min_blocks": 4,
    "max_blocks": 10,
    "zoo_size": 4,
    "max_draws": 50,
}


def test_exactly_n_children_every_generation_and_union_population():
    fake = Fake()
    res = etnas_search(make_config(NsgaConfig, SMALL), fake, seed=0)
    assert res.children_per_generation == [3] * 6
    for phase in ("block", "macro"):
        gens = [p.generation for p in res.history if p.phase == phase]
        assert gens.count(0) == 4 and all(gens.count(g) == 3 for g in (1, 2, 3))
    assert len({p.encoding for p in res.history}) == len(res.history) == 4 + 9 + 4 + 9
    assert all(p.origin in BLOCK_MUTATIONS for p in res.history if p.phase == "block" and p.generation)
    assert all(p.origin in MACRO_MUTATIONS for p in res.history if p.phase == "macro" and p.generation)
    assert all(p.arch.block in res.cells for p in res.history if p.phase == "macro")
    # the block search keeps the frame's macro; macro children keep their parent's block and channels
    frame = parse(SMALL["block_frame"])
    assert all(p.arch.stages == frame.stages for p in res.history if p.phase == "block")
    by_index = {p.index: p for p in res.history}
    for p in res.history:
        if p.parent >= 0 and p.phase == "macro":
            q = by_index[p.parent]
            assert p.arch.block == q.arch.block and p.arch.first_channels == q.arch.first_channels


def test_only_valid_children_are_evaluated_and_front_is_correct():
    fake = Fake()
    res = etnas_search(make_config(NsgaConfig, {**SMALL, "block_generations": 6}), fake, seed=2)
    for enc in fake.accuracy_calls:
        fake.check(parse(enc))  # raises if an invalid architecture had been trained
    assert res.stats.invalid > 0  # tiny widths make some groups / depthwise ops invalid: they were re-drawn
    macro = [p for p in res.history if p.phase == "macro"]
    F = NsgaSearch.objectives(macro)
    assert {p.index for p in res.front} == {macro[i].index for i in np.flatnonzero(~dominated(F))}
    ranks = res.ranks()
    assert {i for i, r in ranks.items() if r == 0} >= {p.index for p in res.front}


def test_seeded_determinism():
    a = etnas_search(make_config(NsgaConfig, SMALL), Fake(), seed=5)
    b = etnas_search(make_config(NsgaConfig, SMALL), Fake(), seed=5)
    c = etnas_search(make_config(NsgaConfig, SMALL), Fake(), seed=6)
    assert [p.encoding for p in a.history] == [p.encoding for p in b.history]
    assert [p.encoding for p in a.history] != [p.encoding for p in c.history]


def test_step_time_cap_is_respected_and_over_cap_never_trained():
    fake = Fake()
    cfg = make_config(NsgaConfig, {**SMALL, "step_cap_ratio": 1.0})
    res = etnas_search(cfg, fake, seed=1)
    assert res.cap_ms == pytest.approx(res.ref_ms) and res.stats.over_cap > 0
    assert all(p.step_ms <= res.cap_ms for p in res.history)
    over = {e for e in fake.timed if Fake.cost(parse(e)) > res.cap_ms}
    assert over and not over & set(fake.accuracy_calls)
    assert res.children_per_generation == [3] * 6


def test_exhausted_space_raises_a_clear_error():
    # single-op blocks on a fixed macro: only 5 architectures exist (4 after the cap-free frame check)
    fake = Fake(width=1.0)
    cfg = make_config(NsgaConfig, {**SMALL, "max_ops": 1, "max_skips": 0, "block_generations": 3})
    with pytest.raises(NoValidChild, match="exhausted|no valid"):
        etnas_search(cfg, fake, seed=0)


# --------------------------------------------------------------------------- the real proxy evaluator and a cell


def test_proxy_accuracy_is_seeded(tmp_path):
    from bench.data.registry import load_splits

    train, val, _ = load_splits("uci-digits", seed=0, input_size=16, train_limit=128)
    cfg = make_config(
        ProxyConfig,
        {
            "width": 0.125,
            "train.steps": 3,
            "train.batch_size": 16,
            "train.log_every": 3,
            "time_width": 0.125,
            "time_size": 16,
            "time_batch": 4,
            "time_steps": 2,
            "time_warmup": 1,
        },
    )
    ev = ProxyEvaluator(cfg, train, val, train.device, seed=0)
    arch = parse(CLASSIC["resnet18"])
    assert ev.accuracy(arch, 1) == ev.accuracy(arch, 1)
    assert ev.step_ms(arch) > 0


def test_cell_records_every_architecture():
    r = run_cell(tiny_spec("nasoa_nsga", model="etnas_a"))
    assert r.ok, r.error
    m = metrics_of(r)
    n = int(m["nsga_evaluated_count"])
    assert n == 2 + 2 + 2 + 2  # tiny config: init 2 + 1 generation of 2, per phase
    assert m["nsga_children_min_count"] == m["nsga_children_max_count"] == 2
    for name in ("nsga_proxy_top1_pct", "nsga_step_ms", "nsga_pareto_rank_count", "nsga_phase_count"):
        assert sorted(p[2] for p in r.series[name]) == list(range(n))
    archs = r.info["nsga_archs"]
    assert [a["index"] for a in archs] == list(range(n)) and r.info["nsga_encodings"] == [a["encoding"] for a in archs]
    macro = [a for a in archs if a["phase"] == "macro"]
    F = np.array([[-a["proxy_top1_pct"], a["step_ms"]] for a in macro])
    assert [a["rank"] == 0 for a in macro] == (~dominated(F)).tolist()
    assert all(a["step_ms"] <= m["nsga_cap_ms"] for a in archs)
    assert r.info["nsga_chosen"] in {a["encoding"] for a in macro if a["rank"] == 0}
    assert m["nsga_front_best_top1_pct"] == max(a["proxy_top1_pct"] for a in macro if a["rank"] == 0)
    assert 0 <= m["nsga_front_hv_ratio"] <= 1 and 0 <= m["test_top1_pct"] <= 100
