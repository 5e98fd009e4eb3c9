"""``nat``: the NAT baseline (Guo et al. 2019) as the paper ran it for comparison.

1. **Supernet.** The task's network with every edge switchable among {none, id, same}
   (identical cells share one choice per cell type and edge position). Its weights
   train on ``supernet_frac`` (40%) of the training split with a uniformly sampled
   architecture per step (``StepHooks.before_step``).
2. **Policy.** A small GCN over the cell graph (nodes = the cell's nodes, features =
   node index and cell type; two graph convolutions of ``hidden`` units) followed by an
   edge MLP over (source, destination, edge kind and op) that outputs a softmax over
   {none, id, same} per edge position. Every ``steps_per_update`` supernet steps it is
   updated by REINFORCE: reward = accuracy of the sampled transformed network minus the
   original network's, on one batch of the held-out 60% of the *training* split, minus
   an EMA baseline (0.99), plus an entropy bonus (0.005); Adam 3e-4, wd 5e-4.
3. **Derive and retrain.** The best (by reward) of ``derive_samples`` sampled
   architectures is built from fresh weights and trained with the ``original`` recipe.

The cost (``fit_s``) includes the policy stage (``policy_s``) and the retraining
(``train_s``). Only networks whose cells of one type are identical are supported (as
NAT); a heterogeneous network (e.g. ``proxylessnas_cifar``) is an ``InvalidConfig``.
Recorded: series ``nat_reward_frac``, ``nat_reward_ema_frac``, ``nat_entropy_nat`` per
update and ``nat_p_{none,id,same}_prob`` at (update, edge position); the discretised
architecture as in ``adapt_*`` (``architecture``, ``edges_changed_count``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.errors import InvalidConfig
from bench.registry import register_method
from methods.proxyless import edges as E
from methods.proxyless.cells import as_cells, cell_types_identical
from methods.proxyless.method import arch_string, nas_recipe, recipe_for, record_changes

OP_VOCAB = (
    "skip",
    "null",
    "conv3x3",
    "expand1x1",
    "project1x1",
    "dw3x3",
    "dw5x5",
    "dw7x7",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "max_pool_3x3",
    "avg_pool_3x3",
)
KINDS = ("op", "skip", "null")
TYPES = ("normal", "reduce", "first")


@dataclass(frozen=True)
class CellGraph:
    """One cell type's graph as tensors: normalised adjacency, node and edge features."""

    adj: torch.Tensor  # [nodes, nodes]
    nodes: torch.Tensor  # [nodes, node_feats]
    src: torch.Tensor  # [edges]
    dst: torch.Tensor  # [edges]
    edge_feats: torch.Tensor  # [edges, edge_feats]


def cell_graph(cell: E.Cell, max_nodes: int = 8) -> CellGraph:
    """GCN inputs of ``cell``: symmetric normalised adjacency with self loops and one-hot features."""
    n = len(cell.shapes)
    if n > max_nodes:
        raise InvalidConfig(f"nat policy supports cells of at most {max_nodes} nodes, got {n}")
    adj = torch.eye(n)
    for e in cell.edges:
        adj[e.spec.src, e.spec.dst] = adj[e.spec.dst, e.spec.src] = 1.0
    d = adj.sum(1).rsqrt()
    adj = d[:, None] * adj * d[None, :]
    nodes = torch.zeros(n, max_nodes + len(TYPES))
    nodes[torch.arange(n), torch.arange(n)] = 1.0
    nodes[:, max_nodes + TYPES.index(cell.cell_type)] = 1.0
    feats = torch.zeros(len(cell.edges), len(KINDS) + len(OP_VOCAB) + 1)
    for i, e in enumerate(cell.edges):
        feats[i, KINDS.index(e.spec.kind)] = 1.0
        op = OP_VOCAB.index(e.spec.name) if e.spec.name in OP_VOCAB else len(OP_VOCAB)
        feats[i, len(KINDS) + op] = 1.0
    src = torch.tensor([e.spec.src for e in cell.edges])
    dst = torch.tensor([e.spec.dst for e in cell.edges])
    return CellGraph(adj, nodes, src, dst, feats)


class GCNPolicy(nn.Module):
    """Two graph convolutions over each cell type's graph, then per-edge logits over {none, id, same}."""

    def __init__(self, graphs: list[CellGraph], hidden: int = 100) -> None:
        super().__init__()
        self.graphs = graphs
        node_in, edge_in = graphs[0].nodes.shape[1], graphs[0].edge_feats.shape[1]
        self.gc1 = nn.Linear(node_in, hidden)
        self.gc2 = nn.Linear(hidden, hidden)
        self.edge = nn.Sequential(nn.Linear(2 * hidden + edge_in, hidden), nn.ReLU(), nn.Linear(hidden, len(E.CHOICES)))

    def logits(self) -> torch.Tensor:
        """[positions, 3]: every (cell type, edge position) in order."""
        out = []
        for g in self.graphs:
            h = torch.relu(g.adj @ self.gc1(g.nodes))
            h = torch.relu(g.adj @ self.gc2(h))
            out.append(self.edge(torch.cat([h[g.src], h[g.dst], g.edge_feats], dim=1)))
        return torch.cat(out)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` architectures ([n, positions] indices into CHOICES), their log-probs and the mean entropy."""
        logits = self.logits()
        probs = torch.softmax(logits, -1)
        actions = torch.multinomial(probs.detach(), n, replacement=True, generator=generator).T  # [n, positions]
        logp = torch.log_softmax(logits, -1)
        chosen = logp.gather(1, actions.T).T.sum(1)
        entropy = -(probs * logp).sum(-1).mean()
        return actions, chosen, entropy


class NatReinforce:
    """REINFORCE for NAT's GCN policy (Guo et al. 2020).

    Per update, with rewards ``r_i``, log-probabilities ``log p_i`` and the policy's entropy ``H``:

    - the baseline moves **first**: ``b <- decay * b + (1 - decay) * mean(r)`` (``b`` starts at the
      first batch's mean);
    - the advantage uses the updated baseline: ``A_i = r_i - b``;
    - the entropy is a **loss term**, differentiated: loss ``-mean(A_i * log p_i) - entropy_weight * H``;
    - one Adam step (with weight decay).

    It differs from ``methods.two_stage.controller.EnasReinforce`` (entropy added to the reward,
    baseline updated after the advantage): the two learners come from different papers and each
    keeps its own update, so they are two classes, not one with flags.
    """

    def __init__(
        self, policy: GCNPolicy, lr: float, weight_decay: float, entropy_weight: float, baseline_decay: float
    ) -> None:
        self.policy = policy
        self.opt = torch.optim.Adam(policy.parameters(), lr=lr, weight_decay=weight_decay)
        self.entropy_weight, self.decay = entropy_weight, baseline_decay
        self.baseline: float | None = None

    def step(self, logp: torch.Tensor, entropy: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        mean = float(rewards.mean())
        self.baseline = mean if self.baseline is None else self.decay * self.baseline + (1 - self.decay) * mean
        loss = -((rewards - self.baseline) * logp).mean() - self.entropy_weight * entropy
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"reward": mean, "baseline": self.baseline, "entropy": float(entropy.detach())}


def _supernet_default() -> engine.TrainConfig:
    return engine.TrainConfig(
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=3e-4,
        batch_size=96,
        epochs=50.0,
        clip_grad_norm=5.0,
        log_every=500,
    )


@dataclass(frozen=True)
class PolicyConfig:
    """NAT's policy settings (methods.md: hidden 100, Adam 3e-4, wd 5e-4, entropy 0.005, EMA 0.99)."""

    hidden: int = 100
    lr: float = 3e-4
    weight_decay: float = 5e-4
    entropy_weight: float = 0.005
    baseline_decay: float = 0.99
    samples_per_update: int = 1
    reward_batch: int = 96

    def __post_init__(self) -> None:
        require(
            self.hidden >= 1 and self.samples_per_update >= 1 and self.reward_batch >= 1,
            "hidden, samples_per_update and reward_batch must be >= 1",
        )
        require(0.0 <= self.baseline_decay < 1.0, "baseline_decay must be in [0, 1)")


@dataclass(frozen=True)
class NATConfig:
    """Supernet (40% of train, SGD 0.01, 50 epochs), policy, derivation (best of 10), retraining."""

    supernet: engine.TrainConfig = field(default_factory=_supernet_default)
    supernet_frac: float = 0.4
    steps_per_update: int = 1
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    derive_samples: int = 10
    train: engine.TrainConfig = field(default_factory=nas_recipe)
    nas_cutout: int = 16

    def __post_init__(self) -> None:
        require(0.0 < self.supernet_frac < 1.0, "supernet_frac must be in (0, 1)")
        require(self.steps_per_update >= 1 and self.derive_samples >= 1, "steps_per_update, derive_samples >= 1")


def expand(model: nn.Module, per_position: list[str]) -> list[str]:
    """Per-(type, position) choices to one choice per edge of every cell (identical cells)."""
    offsets, k = {}, 0
    for _, cell in E.cells(model):
        if cell.cell_type not in offsets:
            offsets[cell.cell_type] = k
            k += len(cell.edges)
    out: list[str] = []
    for _, cell in E.cells(model):
        out.extend(per_position[offsets[cell.cell_type] + i] for i in range(len(cell.edges)))
    return out


def representative_cells(model: nn.Module) -> list[E.Cell]:
    """The first cell of every type, in order of first appearance."""
    seen: dict[str, E.Cell] = {}
    for _, cell in E.cells(model):
        seen.setdefault(cell.cell_type, cell)
    return list(seen.values())


def set_supernet(model: nn.Module, choices: list[str]) -> None:
    """Switch every edge of the supernet (no module is dropped)."""
    for (_, _, _, edge), c in zip(E.edges(model), choices):
        edge.choice = c


@register_method("nat")
class NAT(BaseMethod[NATConfig]):
    """NAT: supernet + GCN policy by REINFORCE, best of samples, retrain; see the module docstring."""

    target_train_fields = ("train",)  # trains on the whole train split (checked at collection)

    Config: ClassVar[type] = NATConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        supernet = as_cells(task.build_model(pretrained=False))
        E.build_identities(supernet)  # the supernet samples identity choices
        problems = cell_types_identical(supernet)
        if problems:
            raise InvalidConfig(
                "nat supports only networks of identical cells per type (as NAT); "
                f"{task.model}: {'; '.join(problems[:3])}. Use adapt_full for heterogeneous networks"
            )
        gen = torch.Generator().manual_seed(task.seed + 7)
        perm = torch.randperm(len(task.train), generator=gen).to(task.device)
        n_w = max(1, int(round(cfg.supernet_frac * len(task.train))))
        w_split, r_split = task.train.subset(perm[:n_w], "supernet"), task.train.subset(perm[n_w:], "reward")
        graphs = [cell_graph(c) for c in representative_cells(supernet)]
        positions = sum(len(g.src) for g in graphs)
        policy = GCNPolicy(graphs, cfg.policy.hidden)
        p = cfg.policy
        learner = NatReinforce(policy, p.lr, p.weight_decay, p.entropy_weight, p.baseline_decay)
        original = expand(
            supernet,
            [
                c.edges[i].original() if c.edges[i].spec.kind != "skip" else "same"
                for c in representative_cells(supernet)
                for i in range(len(c.edges))
            ],
        )
        state = {"updates": 0}

        def reward_batch() -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, len(r_split), (min(p.reward_batch, len(r_split)),), generator=gen)
            return r_split.batch(idx.to(task.device))

        @torch.no_grad()
        def accuracy(choices: list[str], x: torch.Tensor, y: torch.Tensor) -> float:
            set_supernet(supernet, choices)
            was = supernet.training
            supernet.eval()
            acc = float((supernet(x).argmax(1) == y).float().mean())
            supernet.train(was)
            return acc

        def sample_uniform(step: int) -> None:
            idx = torch.randint(0, len(E.CHOICES), (positions,), generator=gen).tolist()
            set_supernet(supernet, expand(supernet, [E.CHOICES[i] for i in idx]))

        def update(done: int) -> bool:
            actions, logp, entropy = policy.sample(p.samples_per_update, gen)
            x, y = reward_batch()
            base = accuracy(original, x, y)
            rewards = torch.tensor(
                [accuracy(expand(supernet, [E.CHOICES[i] for i in a.tolist()]), x, y) - base for a in actions]
            )
            stats = learner.step(logp, entropy, rewards)
            state["updates"] += 1
            u = state["updates"]
            rec.point("nat_reward_frac", u, stats["reward"])
            rec.point("nat_reward_ema_frac", u, stats["baseline"])
            rec.point("nat_entropy_nat", u, stats["entropy"])
            with torch.no_grad():
                probs = torch.softmax(policy.logits(), -1)
            for k, row in enumerate(probs.tolist()):
                for name, v in zip(E.CHOICES, row):
                    rec.point(f"nat_p_{name}_prob", u, v, position=k)
            return False

        for e in (m for m in supernet.modules() if isinstance(m, E.Edge)):
            e.choice = "same"
        sup_cfg = recipe_for(cfg.supernet, cfg.nas_cutout, task.model)
        with rec.stage("policy"):
            engine.fit(
                supernet,
                w_split,
                sup_cfg,
                rec,
                stage="supernet",
                seed=task.seed,
                hooks=engine.StepHooks(before_step=sample_uniform, periodic=((cfg.steps_per_update, update),)),
            )
            with torch.no_grad():
                actions, _, _ = policy.sample(cfg.derive_samples, gen)
            x, y = reward_batch()
            scored = [
                (accuracy(expand(supernet, [E.CHOICES[i] for i in a.tolist()]), x, y), k) for k, a in enumerate(actions)
            ]
            best = actions[max(scored)[1]]
        rec.scalar("nat_updates", state["updates"])
        rec.scalar("nat_derived_reward_frac", max(scored)[0] - accuracy(original, x, y))
        child = as_cells(task.build_model(pretrained=False))
        base = child.arch_string()
        E.apply_choices(child, expand(child, [E.CHOICES[i] for i in best.tolist()]))
        record_changes(child, rec)
        train = recipe_for(cfg.train, cfg.nas_cutout, task.model)
        with rec.stage("train"):
            engine.fit(child, task.train, train, rec, stage="train", val=task.val, seed=task.seed)
        return Fitted(child, arch_string(base, "nat", child), info={"mode": "nat"})
