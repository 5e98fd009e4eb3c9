"""``trnas_rea``: regularized evolution (Real et al. 2019) on NB201 with Original or Tr-Net evaluations.

``RegularizedEvolution`` is the algorithm alone, as NB201's ``R_EA.py`` (and NATS-Bench's
``regularized_ea.py``) runs it: a population of ``population`` random architectures; then
repeatedly draw ``tournament`` members uniformly *with replacement* (``random.choice`` per
draw), mutate the fittest (``space.mutate``: a node, then one of its incoming edges, then a
*different* op), evaluate the child, append it and remove the *oldest* member; stop after
``evaluations`` evaluations. An architecture met again reuses its first fitness (as a table
lookup would) and still counts.

The method's fitness is the validation accuracy after the proxy protocol (Tr-Net-i-j
with warmup, or the original network). The best architecture found (by fitness) is then
trained as the plain NB201 network with ``final`` and returned, so ``test_top1_pct``
is its accuracy; with a NATS-Bench table (``nats_path``, or the tier's default under the data
root: ``common.find_table``) its 200-epoch test accuracy, mean over the table's seeds, is also
recorded as ``found_table_test_top1_pct`` (note ``table_kind`` names the seeds). Series per evaluation (Fig. 4):
``rea_best_val_top1_pct`` (best fitness so far), ``rea_fitness_val_top1_pct``,
``rea_eval_act_mib`` (saved activations of one training batch) and on CUDA
``rea_eval_peak_alloc_mib``; ``search_s``, ``search_act_mib`` (mean) and
``search_peak_alloc_mib`` (CUDA) summarise the search cost.

Fig. 4 (bottom) plots the test accuracy of the best-so-far architecture against the number
of evaluations (NB201's ``current_best_index``, looked up in the table). Without a table that
is ``rea_best_test_top1_pct``: the best-so-far architecture's *proxy-trained* network (the
network its fitness came from: Tr-Net-i-j or the original protocol's short training) evaluated
on the test split; it is measured after the search, outside ``search_s``, and never used for
selection. With a table (``nats_path``) ``rea_best_table_test_top1_pct`` is the table's
200-epoch test accuracy of the same architecture, which is what the paper plots.

A proxy training that diverges is an inner run (``bench.engine.inner``): its fitness is
chance, so the tournaments see it as bad; it is counted (``inner_diverged_count``, and
``search_diverged_count`` distinct architectures) and never the architecture found (nor in
``rea_best_val_top1_pct``). When every evaluation diverged the cell fails with
``InnerRunsDiverged``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InnerRunsDiverged
from bench.registry import register_method
from methods.trnas.common import (
    Builder,
    TransferConfig,
    find_table,
    nb201_train,
    train_candidate,
    with_warmup,
)
from methods.trnas.network import nb201
from methods.trnas.seeds import role_seed
from methods.trnas.space import Arch, format_arch, mutate, sample


@dataclass
class Individual:
    arch: Arch
    fitness: float
    born: int


class RegularizedEvolution:
    """Aging evolution over NB201 architectures; see the module docstring."""

    def __init__(
        self, fitness: Callable[[Arch], float], population: int, tournament: int, evaluations: int, seed: int
    ) -> None:
        if not 1 <= tournament <= population <= evaluations:
            raise ValueError(
                f"need 1 <= tournament <= population <= evaluations, got {tournament}, {population}, {evaluations}"
            )
        self.fitness, self.size, self.tournament, self.evaluations = fitness, population, tournament, evaluations
        self.rng = random.Random(seed)
        self.population: deque[Individual] = deque()
        self.history: list[Individual] = []
        self.removed: list[Individual] = []
        self.mutations: list[tuple[Arch, Arch]] = []
        self._seen: dict[Arch, float] = {}

    def _evaluate(self, arch: Arch) -> Individual:
        if arch not in self._seen:
            self._seen[arch] = float(self.fitness(arch))
        ind = Individual(arch, self._seen[arch], len(self.history))
        self.history.append(ind)
        return ind

    def run(self, on_eval: Callable[[Individual, Individual], None] | None = None) -> Individual:
        """Evolve until the evaluation budget is spent; returns the fittest ever evaluated."""
        best: Individual | None = None
        for arch in sample(self.size, self.rng.randrange(2**31)):
            ind = self._evaluate(arch)
            self.population.append(ind)
            best = ind if best is None or ind.fitness > best.fitness else best
            if on_eval:
                on_eval(ind, best)
        while len(self.history) < self.evaluations:
            members = list(self.population)
            contenders = [self.rng.choice(members) for _ in range(self.tournament)]  # with replacement, as NB201
            parent = max(contenders, key=lambda c: c.fitness)
            child_arch = mutate(parent.arch, self.rng)
            self.mutations.append((parent.arch, child_arch))
            child = self._evaluate(child_arch)
            self.population.append(child)
            self.removed.append(self.population.popleft())
            assert best is not None  # set by the initial population (size >= 1) in the loop above
            best = child if child.fitness > best.fitness else best
            if on_eval:
                on_eval(child, best)
        assert best is not None
        return best


@dataclass(frozen=True)
class ReaConfig:
    """Paper settings: population 10, tournament 3, 100 evaluations, Tr-Net-5-5 with 13/18 warmup."""

    population: int = 10
    tournament: int = 3
    evaluations: int = 100
    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    proxy: engine.TrainConfig = field(default_factory=lambda: nb201_train(18.0))
    warmup_epochs: float = 13.0
    final: engine.TrainConfig = field(default_factory=lambda: nb201_train(200.0))
    nats_path: str = ""
    nats_dataset: str = ""

    def __post_init__(self) -> None:
        require(
            1 <= self.tournament <= self.population <= self.evaluations,
            "need 1 <= tournament <= population <= evaluations",
        )
        require(self.N >= 1 and self.C >= 0 and self.warmup_epochs >= 0, "N >= 1, C >= 0, warmup_epochs >= 0")


@register_method("trnas_rea")
class TrNasRea(BaseMethod[ReaConfig]):
    """Regularized evolution with Original or Tr-Net evaluations; see the module docstring."""

    target_train_fields = ("final",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = ReaConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        table = find_table(task, cfg.nats_path, cfg.nats_dataset)  # before the search: a bad table fails early
        builder = Builder(task, cfg.C, cfg.N, cfg.transfer)
        proxy_cfg = with_warmup(cfg.proxy, cfg.warmup_epochs, len(task.train))
        acts: list[float]
        peaks: list[float]
        acts, peaks = [], []
        diverged: set[Arch] = set()
        survivors: list[Individual] = []  # the best-so-far among evaluations that did not diverge
        last: list[tuple[Arch, nn.Module]] = []  # the latest proxy-trained network
        best_nets: dict[int, nn.Module] = {}  # survivor born -> its proxy-trained network (Fig. 4, test)
        best_at: list[tuple[int, Individual]] = []  # (evaluation, best-so-far after it)

        def fitness(arch: Arch) -> float:
            k = len(acts)
            got = train_candidate(
                builder.net(arch, seed=role_seed("proxy-init", task.seed, k)),
                arch,
                task.train,
                task.val,
                proxy_cfg,
                seed=role_seed("proxy-data", task.seed, k),
                stage="proxy",
                rec=rec,
            )
            acts.append(got.act_mib)
            rec.point("rea_eval_act_mib", len(acts), got.act_mib)
            if got.peak_alloc_mib is not None:
                peaks.append(got.peak_alloc_mib)
                rec.point("rea_eval_peak_alloc_mib", len(acts), got.peak_alloc_mib)
            if got.diverged:
                diverged.add(arch)
            last[:] = [(arch, got.model)]
            return got.val_top1_pct

        def on_eval(ind: Individual, _best: Individual) -> None:
            step = ind.born + 1
            if ind.arch not in diverged and (not survivors or ind.fitness > survivors[-1].fitness):
                survivors.append(ind)
                # a new best is always a fresh training: an architecture met again repeats a fitness <= best
                assert last and last[0][0] == ind.arch
                best_nets[ind.born] = last[0][1]
            rec.point("rea_fitness_val_top1_pct", step, ind.fitness)
            if survivors:  # no point until one evaluation has not diverged
                rec.point("rea_best_val_top1_pct", step, survivors[-1].fitness)
                best_at.append((step, survivors[-1]))
            rec.progress(
                f"eval {step}/{cfg.evaluations} {format_arch(ind.arch)}: {ind.fitness:.2f}%"
                + (" (diverged: chance)" if ind.arch in diverged else "")
                + (f" (best {survivors[-1].fitness:.2f}%)" if survivors else "")
            )

        with rec.stage("search"):
            rea = RegularizedEvolution(
                fitness, cfg.population, cfg.tournament, cfg.evaluations, role_seed("rea", task.seed)
            )
            rea.run(on_eval)
        if not survivors:
            raise InnerRunsDiverged(
                f"every one of the {len(acts)} REA proxy trainings diverged (recorded at chance); "
                "there is no architecture to train"
            )
        best = survivors[-1]
        rec.scalar("search_evals_count", len(rea.history))
        rec.scalar("search_trained_count", len(acts))
        rec.scalar("search_diverged_count", len(diverged))
        rec.scalar("search_act_mib", float(np.mean(acts)))
        if peaks:
            rec.scalar("search_peak_alloc_mib", float(np.mean(peaks)))
        rec.scalar("found_val_top1_pct", best.fitness)
        rec.note("found_arch", format_arch(best.arch))
        # Fig. 4: test accuracy of the best-so-far after each evaluation (after the search: not in search_s)
        best_test = {born: engine.evaluate(net, task.test)["top1_pct"] for born, net in best_nets.items()}
        best_nets.clear()
        for step, ind in best_at:
            rec.point("rea_best_test_top1_pct", step, best_test[ind.born])
            if table is not None:
                rec.point("rea_best_table_test_top1_pct", step, table.test_accuracy(ind.arch))
        if table is not None:
            rec.scalar("found_table_test_top1_pct", table.test_accuracy(best.arch))
            rec.note("table_kind", table.kind([best.arch]))
        with rec.stage("train"):
            import torch

            torch.manual_seed(role_seed("final-init", task.seed))
            net = nb201(best.arch, builder.C, cfg.N, task.num_classes).to(task.device)
            engine.fit(net, task.train, cfg.final, rec, stage="train", seed=role_seed("final-data", task.seed))
        rec.scalar("trainable_params", sum(p.numel() for p in net.parameters() if p.requires_grad))
        return Fitted(net, format_arch(best.arch), info={"proxy": cfg.transfer.label()})
