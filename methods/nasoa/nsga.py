"""NASOA's offline NAS: the modified NSGA-II of Algorithms 1 and 2 (paper 001, appendix 7.2-7.3).

Two objectives, both as minimisation for pymoo: ``-accuracy`` (proxy top-1 %) and the
measured training-step time (ms), subject to ``step_ms <= cap``. One generation
(Algorithm 1, lines 5-9):

1. non-dominated sorting of the whole evaluated population P_t
   (``pymoo``'s ``NonDominatedSorting``), each front ordered by crowding distance
   (``pymoo``'s ``calc_crowding_distance``, descending; ties by evaluation order);
2. the first N individuals of that order are the parents (cycling through the order
   when fewer than N have been evaluated; a parent none of whose ``max_draws``
   mutations is valid, new and under the cap is passed over for the next one), so a
   generation has **exactly N** children;
3. one mutation per parent, no crossover. A child is *re-drawn* (another mutation of
   the same parent) until it passes the encoding validation (``encoding.parse`` of its
   string and ``check_channels`` at every width it is built at), is not an architecture
   evaluated before, and its measured step time is under the cap; no invalid or
   over-cap child is ever trained;
4. P_{t+1} = P_t U Q_t (no truncation, the paper's change to NSGA-II).

Algorithm 2: a block-level search (macro fixed to ``block_frame``, ResNet-50's by
default; mutations: replace an op, change a ratio, add / remove / modify a skip), then
the ``cells`` blocks most common on its Pareto front (ties by crowding distance) seed a
macro-level search (random macros of ``min_blocks..max_blocks`` blocks from a first to a
last channel count; mutations: add a '1', remove a '1', swap two different adjacent
digits), and the zoo is the ``zoo_size`` best of the final population by the same rank +
crowding order.

The search itself (``NsgaSearch``) only sees an ``Evaluator`` (check, step time,
accuracy), so it is tested with synthetic objectives; ``ProxyEvaluator`` is the real one
(tiny nets trained by the harness engine, step time by ``steptime.measure``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import Diverged, InvalidConfig
from bench.measure import Stopwatch
from bench.models.cost import CostModel, count_train_step
from methods.nasoa.builder import ETNet, scaled_first_channels
from methods.nasoa.encoding import (
    NUM_STAGES,
    OP_NAMES,
    RATIOS,
    Arch,
    Block,
    EncodingError,
    Op,
    Skip,
    check_channels,
    format_arch,
    parse,
)

BLOCK_MUTATIONS = ("op", "ratio", "skip_add", "skip_remove", "skip_modify")
MACRO_MUTATIONS = ("add_one", "remove_one", "swap")


class NoValidChild(InvalidConfig):
    """No valid, new, under-cap child could be drawn within ``max_draws`` attempts."""


# --------------------------------------------------------------------------- mutations


def _choice(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def possible_skips(n_ops: int) -> list[Skip]:
    """Every skip a block of ``n_ops`` operators may carry (the validation rules of ``parse_block``)."""
    out = []
    for kind in "ac":
        for src in range(n_ops):
            for dst in range(src + 1, n_ops + 1):
                if kind == "c" and dst == n_ops:
                    continue  # concat into the block output
                if kind == "a" and src == 0 and dst == n_ops:
                    continue  # the implicit residual
                out.append(Skip(kind, src, dst))
    return out


def _canonical_skips(skips: Sequence[Skip]) -> tuple[Skip, ...]:
    return tuple(sorted(skips, key=lambda s: (s.dst, s.src, s.kind)))


def mutate_block(block: Block, rng: np.random.Generator, kind: str | None = None) -> tuple[Block, str]:
    """One block mutation (appendix 7.3.1): ``op`` replace, ``ratio`` change, ``skip_add/remove/modify``.

    ``kind=None`` draws one of the kinds applicable to ``block``. The result always
    differs from ``block``; its validity is the caller's check (e.g. a depthwise op whose
    output width is not a multiple of its input).
    """
    n = len(block.ops)
    free = [s for s in possible_skips(n) if all((s.src, s.dst) != (t.src, t.dst) for t in block.skips)]
    applicable = {
        "op": True,
        "ratio": n > 1,
        "skip_add": bool(free),
        "skip_remove": bool(block.skips),
        "skip_modify": bool(block.skips),
    }
    if kind is None:
        kind = _choice(rng, [k for k in BLOCK_MUTATIONS if applicable[k]])
    elif kind not in applicable:
        raise InvalidConfig(f"unknown block mutation {kind!r}; kinds: {', '.join(BLOCK_MUTATIONS)}")
    elif not applicable[kind]:
        raise InvalidConfig(f"block mutation {kind!r} does not apply to block {block}")
    ops, skips = list(block.ops), list(block.skips)
    if kind == "op":
        i = int(rng.integers(n))
        ops[i] = Op(_choice(rng, [o for o in OP_NAMES if o != ops[i].op]), ops[i].ratio)
    elif kind == "ratio":  # the last op's ratio is fixed (implicitly 2)
        i = int(rng.integers(n - 1))
        ops[i] = Op(ops[i].op, _choice(rng, [r for r in RATIOS if r != ops[i].ratio]))
    elif kind == "skip_add":
        skips.append(_choice(rng, free))
    elif kind == "skip_remove":
        skips.pop(int(rng.integers(len(skips))))
    else:  # skip_modify: another kind and/or other places, not colliding with the remaining skips
        j = int(rng.integers(len(skips)))
        old = skips.pop(j)
        taken = {(s.src, s.dst) for s in skips}
        options = [s for s in possible_skips(n) if s != old and (s.src, s.dst) not in taken]
        if not options:
            raise InvalidConfig(f"block {block}: skip {old} has no other valid position")
        skips.insert(j, _choice(rng, options))
    return Block(tuple(ops), _canonical_skips(skips)), kind


def mutate_macro(
    stages: tuple[tuple[int, ...], ...], rng: np.random.Generator, kind: str | None = None, max_blocks: int = 0
) -> tuple[tuple[tuple[int, ...], ...], str]:
    """One macro mutation (appendix 7.3.2): ``add_one`` / ``remove_one`` a '1', ``swap`` two different
    adjacent digits of a stage. All three keep the first and last channel counts.

    ``max_blocks`` (0 = no limit) bounds ``add_one``; ``remove_one`` never empties a stage.
    """
    total = sum(len(s) for s in stages)
    removable = [(s, i) for s, st in enumerate(stages) for i, d in enumerate(st) if d == 1 and len(st) > 1]
    swappable = [(s, i) for s, st in enumerate(stages) for i in range(len(st) - 1) if st[i] != st[i + 1]]
    applicable = {
        "add_one": not max_blocks or total < max_blocks,
        "remove_one": bool(removable),
        "swap": bool(swappable),
    }
    if kind is None:
        options = [k for k in MACRO_MUTATIONS if applicable[k]]
        if not options:
            raise InvalidConfig(f"no macro mutation applies to {stages}")
        kind = _choice(rng, options)
    elif kind not in applicable:
        raise InvalidConfig(f"unknown macro mutation {kind!r}; kinds: {', '.join(MACRO_MUTATIONS)}")
    elif not applicable[kind]:
        raise InvalidConfig(f"macro mutation {kind!r} does not apply to {stages}")
    new = [list(s) for s in stages]
    if kind == "add_one":
        s = int(rng.integers(NUM_STAGES))
        new[s].insert(int(rng.integers(len(new[s]) + 1)), 1)
    elif kind == "remove_one":
        s, i = _choice(rng, removable)
        del new[s][i]
    else:
        s, i = _choice(rng, swappable)
        new[s][i], new[s][i + 1] = new[s][i + 1], new[s][i]
    return tuple(tuple(s) for s in new), kind


def random_block(rng: np.random.Generator, max_ops: int = 3, max_skips: int = 2) -> Block:
    """A uniformly drawn block: 1..max_ops ops (any op, any ratio) and 0..max_skips distinct skips."""
    n = int(rng.integers(1, max_ops + 1))
    ops = tuple(Op(int(rng.integers(len(OP_NAMES))), int(_choice(rng, RATIOS)) if i < n - 1 else 2) for i in range(n))
    pool = possible_skips(n)
    k = int(rng.integers(min(max_skips, len(pool)) + 1))
    picked: list[Skip] = []
    for idx in rng.permutation(len(pool)):
        if len(picked) == k:
            break
        s = pool[int(idx)]
        if all((s.src, s.dst) != (t.src, t.dst) for t in picked):
            picked.append(s)
    return Block(ops, _canonical_skips(picked))


def random_macro(
    rng: np.random.Generator, first: int, last: int, min_blocks: int, max_blocks: int
) -> tuple[tuple[int, ...], ...]:
    """Random four-stage digits whose product is ``last / first`` with min..max blocks (appendix 7.3.2)."""
    ratio = last // first
    doublings = round(float(np.log2(ratio))) if ratio >= 1 else -1
    if last % first or 2**doublings != ratio:
        raise InvalidConfig(f"last channels {last} must be first channels {first} times a power of two")
    lo = max(min_blocks, NUM_STAGES, -(-doublings // 2))
    if lo > max_blocks:
        raise InvalidConfig(f"{first} -> {last} channels need more than max_blocks={max_blocks} blocks")
    n = int(rng.integers(lo, max_blocks + 1))
    fours = int(rng.integers(max(0, doublings - n), doublings // 2 + 1))  # n4 + n2 <= n, 2*n4 + n2 = doublings
    digits = [4] * fours + [2] * (doublings - 2 * fours) + [1] * (n - doublings + fours)
    digits = [digits[int(i)] for i in rng.permutation(n)]
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, n), NUM_STAGES - 1, replace=False))
    bounds = [0, *cuts, n]
    return tuple(tuple(digits[bounds[s] : bounds[s + 1]]) for s in range(NUM_STAGES))


# --------------------------------------------------------------------------- selection


def pareto_ranks(F: np.ndarray) -> np.ndarray:
    """Pareto rank (0 = non-dominated) of every row of ``F`` (all objectives minimised), by pymoo."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    _, rank = NonDominatedSorting().do(F, return_rank=True)
    return np.asarray(rank, dtype=int)


def crowding(F: np.ndarray) -> np.ndarray:
    """Crowding distance of the rows of one front (pymoo); fronts of <= 2 points are all infinite."""
    from pymoo.operators.survival.rank_and_crowding.metrics import (
        calc_crowding_distance,
    )

    F = np.asarray(F, dtype=float)
    if len(F) <= 2:
        return np.full(len(F), np.inf)
    return np.asarray(calc_crowding_distance(F), dtype=float)


def survival_order(F: np.ndarray) -> np.ndarray:
    """Indices of ``F`` by Pareto rank, then by crowding distance (descending), then by index."""
    F = np.asarray(F, dtype=float)
    ranks = pareto_ranks(F)
    cd = np.zeros(len(F))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        cd[members] = crowding(F[members])
    return np.array(sorted(range(len(F)), key=lambda i: (ranks[i], -cd[i], i)), dtype=int)


def select_parents(F: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` parent indices: the survival order, cycled when fewer than ``n`` exist."""
    order = survival_order(F)
    if len(order) == 0:
        raise InvalidConfig("cannot select parents from an empty population")
    return np.array([order[i % len(order)] for i in range(n)], dtype=int)


def hypervolume(acc_pct: Sequence[float], step_ms: Sequence[float], ref_ms: float) -> float:
    """Hypervolume (pymoo) of (1 - acc/100, step_ms / ref_ms) w.r.t. the point (1, 1): in [0, 1]-ish units."""
    from pymoo.indicators.hv import HV

    F = np.column_stack([1.0 - np.asarray(acc_pct, float) / 100.0, np.asarray(step_ms, float) / ref_ms])
    F = F[(F < 1.0).all(axis=1)]
    return float(HV(ref_point=np.array([1.0, 1.0]))(F)) if len(F) else 0.0


# --------------------------------------------------------------------------- the search


@dataclass
class Individual:
    """One evaluated architecture (``index`` = evaluation order over both phases)."""

    index: int
    phase: str
    generation: int
    encoding: str
    arch: Arch
    acc_pct: float
    step_ms: float
    origin: str  # "random" or the mutation kind
    parent: int = -1  # index of the parent, -1 for random ones


class Evaluator(Protocol):
    """What the search needs: validation, step time (cheap, first) and accuracy (expensive)."""

    def check(self, arch: Arch) -> None: ...

    def step_ms(self, arch: Arch) -> float: ...

    def accuracy(self, arch: Arch, index: int) -> float: ...


@dataclass
class DrawStats:
    """Why children were re-drawn."""

    invalid: int = 0
    duplicate: int = 0
    over_cap: int = 0
    exhausted_parents: int = 0
    invalid_reasons: list[str] = field(default_factory=list)


class NsgaSearch:
    """Algorithm 1 over a growing population; see the module docstring."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        nodes: int,
        cap_ms: float,
        rng: np.random.Generator,
        max_draws: int = 200,
        on_eval: Callable[[Individual], None] | None = None,
    ) -> None:
        if nodes < 1:
            raise InvalidConfig(f"nodes (children per generation) must be >= 1, got {nodes}")
        self.ev = evaluator
        self.nodes = nodes
        self.cap_ms = cap_ms
        self.rng = rng
        self.max_draws = max_draws
        self.on_eval = on_eval
        self.history: list[Individual] = []
        self.seen: set[str] = set()
        self.stats = DrawStats()
        self.children_per_generation: list[int] = []

    def _try(self, make: Callable[[], tuple[Arch, str]], what: str) -> tuple[Arch, str, float]:
        for _ in range(self.max_draws):
            arch, origin = make()
            enc = format_arch(arch)
            if enc in self.seen:
                self.stats.duplicate += 1
                continue
            try:
                self.ev.check(arch)
            except EncodingError as err:
                self.stats.invalid += 1
                if len(self.stats.invalid_reasons) < 20:
                    self.stats.invalid_reasons.append(str(err).split(". Format:")[0])
                continue
            ms = self.ev.step_ms(arch)
            if self.cap_ms and ms > self.cap_ms:
                self.stats.over_cap += 1
                self.seen.add(enc)  # measured once; never re-measured
                continue
            return arch, origin, ms
        raise NoValidChild(
            f"{what}: no valid, new architecture under the {self.cap_ms:.3g} ms step-time cap in "
            f"{self.max_draws} draws (invalid {self.stats.invalid}, duplicate "
            f"{self.stats.duplicate}, over cap {self.stats.over_cap}); raise the cap or max_draws"
        )

    def _evaluate(self, arch: Arch, origin: str, ms: float, phase: str, generation: int, parent: int) -> Individual:
        index = len(self.history)
        enc = format_arch(arch)
        self.seen.add(enc)
        ind = Individual(index, phase, generation, enc, arch, float(self.ev.accuracy(arch, index)), ms, origin, parent)
        self.history.append(ind)
        if self.on_eval is not None:
            self.on_eval(ind)
        return ind

    @staticmethod
    def objectives(pop: Sequence[Individual]) -> np.ndarray:
        """(-accuracy, step ms) rows: both minimised."""
        return np.array([[-p.acc_pct, p.step_ms] for p in pop], dtype=float).reshape(-1, 2)

    def run(
        self,
        phase: str,
        sample: Callable[[np.random.Generator], Arch],
        mutate: Callable[[Arch, np.random.Generator], tuple[Arch, str]],
        *,
        init: int,
        generations: int,
    ) -> list[Individual]:
        """Random initial population of ``init``, then ``generations`` of exactly ``nodes`` children."""
        pop: list[Individual] = []
        for _ in range(init):
            arch, origin, ms = self._try(lambda: (sample(self.rng), "random"), f"{phase} initial population")
            pop.append(self._evaluate(arch, origin, ms, phase, 0, -1))
        for g in range(1, generations + 1):
            order = survival_order(self.objectives(pop))
            children: list[Individual] = []
            exhausted: set[int] = set()
            k = 0
            while len(children) < self.nodes:
                # the next parent in rank + crowding order (cycled); a parent with no new valid child within
                # max_draws is passed over, so the generation still gets exactly N children
                p = int(order[k % len(order)])
                k += 1
                if p in exhausted:
                    if len(exhausted) == len(order):
                        raise NoValidChild(
                            f"{phase} generation {g}: every parent is exhausted "
                            f"(invalid {self.stats.invalid}, duplicate {self.stats.duplicate}, "
                            f"over cap {self.stats.over_cap}); raise the cap or max_draws"
                        )
                    continue
                parent = pop[p]
                try:
                    arch, origin, ms = self._try(
                        # the default binds this parent; mypy cannot infer a lambda with a default argument
                        lambda parent=parent: mutate(parent.arch, self.rng),  # type: ignore[misc]
                        f"{phase} generation {g}, parent {parent.encoding}",
                    )
                except NoValidChild:
                    exhausted.add(p)
                    self.stats.exhausted_parents += 1
                    continue
                children.append(self._evaluate(arch, origin, ms, phase, g, parent.index))
            self.children_per_generation.append(len(children))
            pop = pop + children  # P_{t+1} = P_t U Q_t
        return pop


def most_common_blocks(front: Sequence[Individual], order: Sequence[int], m: int) -> list[Block]:
    """MOSTCOMMON(Pf, M): the ``m`` blocks most frequent on ``front``, ties by survival ``order``."""
    counts = Counter(str(p.arch.block) for p in front)
    first_seen: dict[str, int] = {}
    for rank, i in enumerate(order):
        first_seen.setdefault(str(front[int(i)].arch.block), rank)
    blocks = {str(p.arch.block): p.arch.block for p in front}
    keys = sorted(blocks, key=lambda k: (-counts[k], first_seen[k]))
    return [blocks[k] for k in keys[:m]]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy evaluation: tiny nets trained by the engine; step time measured at its own shape.

    ``dataset`` "" trains on the cell's own train split and scores on its val split;
    a dataset name (e.g. ``mnist5k``, ``uci-digits``) loads that dataset's splits instead
    (the paper's proxy is ImageNet-100, a subset of the source).
    """

    dataset: str = ""
    images: int = 0  # train_limit of a named proxy dataset (0 = all)
    input_size: int = 32
    width: float = 0.25
    train: engine.TrainConfig = field(
        default_factory=lambda: engine.TrainConfig(
            steps=300, batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-4, log_every=100
        )
    )
    time_width: float = 1.0  # step time at the paper's shape: full width, 224 px, batch 64
    time_size: int = 224
    time_batch: int = 64
    time_steps: int = 5
    time_warmup: int = 2
    cost: CostModel = field(default_factory=CostModel)  # the step-time objective: measured, or counted (smoke)


@dataclass(frozen=True)
class NsgaConfig:
    """The modified NSGA-II (Algorithms 1-2); paper figures in comments, proxies where noted."""

    nodes: int = 8  # N children per generation (paper: number of compute nodes)
    block_init: int = 16  # random blocks before the EA (paper: a random-search phase)
    block_generations: int = 10
    macro_init: int = 16
    macro_generations: int = 10
    block_frame: str = "10001-_64_411-2111-211111-211"  # the block search's macro: ResNet-50's
    max_ops: int = 3  # ops of a random block (the zoo uses 1-3)
    max_skips: int = 2
    cells: int = 10  # M blocks kept for the macro search
    first_channels: tuple[int, ...] = (32, 64, 128)
    last_channels: tuple[int, ...] = (512, 1024, 2048)
    min_blocks: int = 10
    max_blocks: int = 50
    zoo_size: int = 12  # K models chosen by rank + crowding distance
    step_cap_ms: float = 0.0  # T_m, absolute (0 = off)
    step_cap_ratio: float = 0.0  # cap = ratio x the block frame's step time (0 = off)
    max_draws: int = 200  # re-draws allowed per child before giving up
    proxy: ProxyConfig = field(default_factory=ProxyConfig)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.block_init < 1 or self.macro_init < 1:
            raise InvalidConfig("nodes, block_init and macro_init must be >= 1")
        if self.block_generations < 0 or self.macro_generations < 0 or self.cells < 1 or self.zoo_size < 1:
            raise InvalidConfig("generations must be >= 0; cells and zoo_size >= 1")
        if not 1 <= self.max_ops <= 5 or self.max_skips < 0:
            raise InvalidConfig(f"max_ops must be in 1..5 and max_skips >= 0, got {self.max_ops}, {self.max_skips}")
        if not NUM_STAGES <= self.max_blocks or self.min_blocks > self.max_blocks:
            raise InvalidConfig(f"need {NUM_STAGES} <= max_blocks and min_blocks <= max_blocks")
        parse(self.block_frame)


# --------------------------------------------------------------------------- the proxy evaluator


class ProxyEvaluator:
    """Validation at every width used, step time by ``steptime.measure``, accuracy of a tiny net trained by
    ``bench.engine.fit`` (under its own recorder: the cell's series carry one point per architecture).

    The step-time objective is ``cfg.cost``'s: the measured ms (the paper), or with a counted
    cost model the counted ms of the same shape (``bench.models.cost``), so the Pareto fronts, the
    cap's re-draws and the zoo do not depend on machine load. Either way the measured ms of
    every architecture is kept in ``measured_ms`` (by encoding) and recorded beside.

    A proxy training that diverges is an inner run (``bench.engine.inner``): it scores chance,
    its encoding goes to ``diverged`` and the count to ``rec`` (the cell's recorder).
    """

    def __init__(
        self, cfg: ProxyConfig, train: Split, val: Split, device: torch.device, seed: int, rec: Recorder | None = None
    ) -> None:
        self.cfg, self.train, self.val, self.device, self.seed = cfg, train, val, device, seed
        self.rec = rec if rec is not None else Recorder(device)
        self.train_s = 0.0
        self.time_s = 0.0
        self.measured_ms: dict[str, float] = {}
        self.diverged: set[str] = set()

    def check(self, arch: Arch) -> None:
        parse(format_arch(arch))  # the full validation of the encoding string
        for w in {self.cfg.width, self.cfg.time_width}:
            check_channels(arch, first=scaled_first_channels(arch.first_channels, w))

    def step_ms(self, arch: Arch) -> float:
        from methods.nasoa.steptime import measure

        with Stopwatch(self.device) as sw:
            torch.manual_seed(0)
            net = ETNet(arch, num_classes=self.train.num_classes, width=self.cfg.time_width)
            ms = measure(
                net,
                batch=self.cfg.time_batch,
                size=self.cfg.time_size,
                device=self.device,
                steps=self.cfg.time_steps,
                warmup=self.cfg.time_warmup,
                num_classes=self.train.num_classes,
                memory=False,
            ).step_ms
        self.time_s += sw.seconds
        self.measured_ms[format_arch(arch)] = ms
        if not self.cfg.cost.deterministic:
            return ms
        count = count_train_step(
            lambda: ETNet(arch, num_classes=self.train.num_classes, width=self.cfg.time_width),
            batch=self.cfg.time_batch,
            size=self.cfg.time_size,
            num_classes=self.train.num_classes,
        )
        return self.cfg.cost.step_ms(count)

    def accuracy(self, arch: Arch, index: int) -> float:
        """Proxy val top-1 % of ``arch``; chance when its proxy training diverged."""
        enc = format_arch(arch)
        got = engine.inner_run(
            lambda: self.train_net(arch, self.seed + index)[1], self.rec, stage="proxy", what=f"proxy of {enc}"
        )
        if isinstance(got, Diverged):
            self.diverged.add(enc)
            return engine.chance_pct(self.val.num_classes)
        return got

    def train_net(
        self,
        arch: Arch,
        seed: int,
        train: Split | None = None,
        val: Split | None = None,
        rec: Recorder | None = None,
        tcfg: engine.TrainConfig | None = None,
    ) -> tuple[ETNet, float]:
        """Train ``arch`` at the proxy width from scratch; (net, val top-1 %)."""
        train, val = train or self.train, val or self.val
        tcfg = tcfg or self.cfg.train
        sw = Stopwatch(self.device)
        try:
            with sw:
                torch.manual_seed(seed)
                net = ETNet(arch, num_classes=train.num_classes, width=self.cfg.width).to(self.device)
                tcfg = dataclasses.replace(tcfg, batch_size=min(tcfg.batch_size, len(train)))
                engine.fit(net, train, tcfg, rec or Recorder(self.device), stage="proxy", seed=seed)
                acc = engine.evaluate(net, val)["top1_pct"]
        finally:  # a diverged proxy training spent its seconds too
            self.train_s += sw.total_s
        return net, float(acc)


# --------------------------------------------------------------------------- Algorithm 2


@dataclass
class NsgaResult:
    """Everything both phases evaluated, the cells, the final front and the zoo."""

    history: list[Individual]
    cells: list[Block]
    front: list[Individual]  # rank-0 of the macro phase
    zoo: list[Individual]
    cap_ms: float
    ref_ms: float
    stats: DrawStats
    children_per_generation: list[int]

    def ranks(self) -> dict[int, int]:
        """Final Pareto rank of every evaluated architecture within its own phase."""
        out = {}
        for phase in ("block", "macro"):
            pop = [p for p in self.history if p.phase == phase]
            for p, r in zip(pop, pareto_ranks(NsgaSearch.objectives(pop))):
                out[p.index] = int(r)
        return out


def etnas_search(
    cfg: NsgaConfig, evaluator: Evaluator, seed: int, on_eval: Callable[[Individual], None] | None = None
) -> NsgaResult:
    """Algorithm 2: block-level NSGA-II on ``block_frame``, then macro-level NSGA-II over its cells."""
    rng = np.random.default_rng(seed)
    frame = parse(cfg.block_frame)
    evaluator.check(frame)
    ref_ms = evaluator.step_ms(frame)
    caps = [c for c in (cfg.step_cap_ms, cfg.step_cap_ratio * ref_ms) if c > 0]
    cap = min(caps) if caps else 0.0
    search = NsgaSearch(evaluator, nodes=cfg.nodes, cap_ms=cap, rng=rng, max_draws=cfg.max_draws, on_eval=on_eval)

    def sample_block(r: np.random.Generator) -> Arch:
        return Arch(random_block(r, cfg.max_ops, cfg.max_skips), frame.first_channels, frame.stages)

    def mutate_b(a: Arch, r: np.random.Generator) -> tuple[Arch, str]:
        block, kind = mutate_block(a.block, r)
        return Arch(block, a.first_channels, a.stages), kind

    block_pop = search.run("block", sample_block, mutate_b, init=cfg.block_init, generations=cfg.block_generations)
    F = NsgaSearch.objectives(block_pop)
    ranks = pareto_ranks(F)
    front = [block_pop[i] for i in np.flatnonzero(ranks == 0)]
    cells = most_common_blocks(front, survival_order(NsgaSearch.objectives(front)), cfg.cells)

    pairs = [(f, l) for f in cfg.first_channels for l in cfg.last_channels if l % f == 0 and l >= f]
    if not pairs:
        raise InvalidConfig(
            f"no (first, last) channel pair of {cfg.first_channels} x {cfg.last_channels} is a power-of-two ratio"
        )

    def sample_macro(r: np.random.Generator) -> Arch:
        first, last = _choice(r, pairs)
        return Arch(_choice(r, cells), first, random_macro(r, first, last, cfg.min_blocks, cfg.max_blocks))

    def mutate_m(a: Arch, r: np.random.Generator) -> tuple[Arch, str]:
        stages, kind = mutate_macro(a.stages, r, max_blocks=cfg.max_blocks)
        return Arch(a.block, a.first_channels, stages), kind

    macro_pop = search.run("macro", sample_macro, mutate_m, init=cfg.macro_init, generations=cfg.macro_generations)
    F = NsgaSearch.objectives(macro_pop)
    ranks = pareto_ranks(F)
    final_front = [macro_pop[i] for i in np.flatnonzero(ranks == 0)]
    zoo = [macro_pop[i] for i in survival_order(F)[: cfg.zoo_size]]
    return NsgaResult(
        search.history, cells, final_front, zoo, cap, ref_ms, search.stats, search.children_per_generation
    )
