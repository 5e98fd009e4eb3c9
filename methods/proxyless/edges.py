"""Cell graphs with differentiable {none, identity, original} edges (proxyless adaptation).

A cell is NAT's DARTS-style DAG: nodes 0 and 1 are the cell inputs ``c_{k-2}`` and
``c_{k-1}``, every later node is the sum of its incoming edges, and the cell output is
one node (``output=(5,)``) or the channel concatenation of several (DARTS). An edge
has a ``kind``:

- ``op``: a real operation (conv, separable conv, pooling, ...);
- ``skip``: an identity (a ``FactorizedReduce`` when it crosses a stride-2 or
  channel-changing boundary); its original op *is* its identity candidate;
- ``null``: a placeholder that computes zero (NAT's padding to two inputs per node).

``adapt(model, mode)`` turns every edge into
``o_e(x) = theta_none * 0 + theta_id * id(x) + theta_same * op(x)`` with raw weights
initialised (0, 0, 1), so the adapted network computes exactly what the original does
(``softmax=True`` is the flagged alternative: softmax weights from (-c, -c, +c)).
``mode="cell"`` shares one theta per edge position among all cells of a type (normal /
reduce); ``mode="full"`` gives every edge of every cell its own theta.

``discretise(model)`` replaces the mixture by the argmax per edge: ``none`` removes the
edge, ``id`` keeps only the identity, ``same`` only the original op; the chosen theta is
kept as a frozen scalar (``keep_theta=False`` resets it to 1). Modules no longer used
are dropped, so parameters and FLOPs shrink with the architecture.

Identity candidates: a plain ``nn.Identity`` when source and destination nodes have
the same shape; ``FactorizedReduce`` (two 1x1 stride-2 convs on offset grids,
concatenated, then BN) across a stride-2 boundary; a 1x1 conv + BN projection when only
the channels change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import InvalidConfig

CHOICES = ("none", "id", "same")
MODES = ("cell", "full")


class FactorizedReduce(nn.Module):
    """DARTS' stride-2 identity: ReLU, two 1x1 stride-2 convs on grids offset by one pixel, concat, BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out < 2:
            raise ValueError(f"FactorizedReduce needs c_out >= 2, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]  # offset grid; same size for odd inputs too
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Project(nn.Module):
    """Identity across a channel change at the same resolution: 1x1 conv + BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def identity_op(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The identity candidate between nodes of (c_in, stride-ratio) and c_out."""
    if stride == 2:
        return FactorizedReduce(c_in, c_out)
    if stride != 1:
        raise InvalidConfig(f"an identity edge can cross one stride-2 boundary at most, got stride {stride}")
    return nn.Identity() if c_in == c_out else Project(c_in, c_out)


@dataclass(frozen=True)
class EdgeSpec:
    """One edge of a cell graph: ``src -> dst``, its kind and the readable op name."""

    src: int
    dst: int
    kind: str  # "op" | "skip" | "null"
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("op", "skip", "null"):
            raise ValueError(f"edge kind must be op, skip or null, got {self.kind!r}")

    def label(self) -> str:
        return f"n{self.dst}<-{self.name}(n{self.src})"


class Edge(nn.Module):
    """An edge: the original op, or (adapted) a theta mixture, or (discretised) one choice."""

    def __init__(self, spec: EdgeSpec, op: nn.Module | None, ident_factory: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.spec = spec
        self.op = op  # None for null edges; for skip edges this is the identity itself
        # The identity candidate is built only when adaptation or a choice needs it, so the
        # original network has no unused parameters (its counts and optimiser are the model's own).
        self.ident_factory = ident_factory
        self.ident: nn.Module | None = None  # None for skip edges: op is the identity
        self.theta: nn.Parameter | None = None
        self.softmax = False
        self.choice: str | None = None
        self.register_buffer("scale", torch.ones(()))

    def build_ident(self) -> None:
        """Create the identity candidate (on the edge's device) if this edge has one and lacks it."""
        if self.spec.kind != "skip" and self.ident is None and self.ident_factory is not None:
            self.ident = self.ident_factory().to(self.scale.device)

    def _same(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.op is None else self.op(x)

    def _id(self, x: torch.Tensor) -> torch.Tensor:
        # A skip edge's op is its identity (never dropped); any other edge built its ident (build_ident)
        # before "id" is used. mypy cannot tie either to spec.kind inside one expression.
        return self.op(x) if self.spec.kind == "skip" else self.ident(x)  # type: ignore[misc]

    def weights(self) -> torch.Tensor:
        """(w_none, w_id, w_same): the raw theta, or its softmax under the flag."""
        assert self.theta is not None
        return torch.softmax(self.theta, 0) if self.softmax else self.theta

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.choice is not None:
            if self.choice == "none":
                return None
            y = self._id(x) if self.choice == "id" else self._same(x)
            return None if y is None else y * self.scale
        if self.theta is None:
            return self._same(x)
        w = self.weights()  # w[0] multiplies the zero tensor: omitted, so its gradient is exactly 0
        if self.spec.kind == "skip":
            assert self.op is not None  # a skip edge's op is its identity and is never dropped
            return (w[1] + w[2]) * self.op(x)
        assert self.ident is not None  # adapt() built every identity before giving the edge a theta
        y = w[1] * self.ident(x)
        same = self._same(x)
        return y if same is None else y + w[2] * same

    def effective(self) -> str:
        """What the edge computes now: ``none``, ``id`` or ``same`` (null edges: same == none)."""
        choice = self.choice or "same"
        if self.spec.kind == "null" and choice == "same":
            return "none"
        if self.spec.kind == "skip" and choice == "same":
            return "id"
        return choice

    def original(self) -> str:
        return {"op": "same", "skip": "id", "null": "none"}[self.spec.kind]


@dataclass(frozen=True)
class NodeShape:
    """Channels of a node and its resolution level (0 = the level of input node 1)."""

    channels: int
    level: int


class Cell(nn.Module):
    """A DAG cell: optional input preprocessing, edges summed per node, output node(s)."""

    def __init__(
        self,
        cell_type: str,
        shapes: Sequence[NodeShape],
        specs: Sequence[EdgeSpec],
        ops: Sequence[nn.Module | None],
        output: Sequence[int],
        *,
        pre0: nn.Module | None = None,
        pre1: nn.Module | None = None,
        out_act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(specs) != len(ops):
            raise ValueError("one op per edge spec")
        self.cell_type = cell_type
        self.shapes = tuple(shapes)
        self.output = tuple(output)
        self.pre0 = pre0 if pre0 is not None else nn.Identity()
        self.pre1 = pre1 if pre1 is not None else nn.Identity()
        self.out_act = out_act if out_act is not None else nn.Identity()
        edges = []
        for spec, op in zip(specs, ops):
            src, dst = shapes[spec.src], shapes[spec.dst]
            stride = 2 ** (dst.level - src.level)
            factory = None if spec.kind == "skip" else partial(identity_op, src.channels, dst.channels, stride)
            edges.append(Edge(spec, op, factory))
        self.edges = nn.ModuleList(edges)
        self.incoming = [[i for i, s in enumerate(specs) if s.dst == n] for n in range(len(shapes))]

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s0, s1 = pair
        states: list[torch.Tensor] = [self.pre0(s0), self.pre1(s1)]
        for node in range(2, len(self.shapes)):
            acc = None
            for i in self.incoming[node]:
                y = self.edges[i](states[self.edges[i].spec.src])
                if y is not None:
                    acc = y if acc is None else acc + y
            states.append(acc if acc is not None else self._zeros(states[1], node))
        outs = [states[n] for n in self.output]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return s1, self.out_act(out)

    def _zeros(self, ref: torch.Tensor, node: int) -> torch.Tensor:
        """A node all of whose inputs were removed computes zeros of its shape."""
        shape = self.shapes[node]
        h, w = ref.shape[-2:]
        f = 2**shape.level
        return ref.new_zeros(ref.shape[0], shape.channels, -(-h // f), -(-w // f))


class PairStem(nn.Module):
    """Stem wrapper: runs the stem and hands (x, x) to the first cell (c_{k-2} = c_{k-1})."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.stem = stem

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return x, x


class TakeLast(nn.Module):
    """Head entry that keeps the last cell's output from the (c_{k-1}, c_k) pair."""

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return pair[1]


# ---------------------------------------------------------------------------------------------
# adaptation, discretisation, telemetry


def cells(model: nn.Module) -> list[tuple[str, Cell]]:
    """(name, cell) of every cell in forward order (the model's blocks)."""
    out = [(n, m) for n, m in model.named_modules() if isinstance(m, Cell)]
    if not out:
        raise InvalidConfig(
            f"{type(model).__name__} exposes no cell graph (no Cell modules); "
            "use a cell-graph model such as resnet20_cells, mobilenetv2_cifar or darts_v2_8"
        )
    return out


def edges(model: nn.Module) -> Iterator[tuple[str, Cell, int, Edge]]:
    """(cell name, cell, edge index, edge) for every edge of every cell."""
    for name, cell in cells(model):
        for i, edge in enumerate(cell.edges):
            yield name, cell, i, edge


def theta_key(mode: str, cell_name: str, cell: Cell, index: int) -> str:
    """Which theta an edge uses: per (cell type, position) in cell mode, per edge in full mode."""
    return f"{cell.cell_type}.e{index}" if mode == "cell" else f"{cell_name}.e{index}"


def build_identities(model: nn.Module) -> None:
    """Create every edge's identity candidate (adaptation and NAT's supernet choose among them)."""
    for _, _, _, edge in edges(model):
        edge.build_ident()


def adapt(model: nn.Module, mode: str, *, softmax: bool = False, softmax_init: float = 1.0) -> list[str]:
    """Give every edge a theta (shared per cell type in ``cell`` mode); returns the theta keys.

    Raw init (0, 0, 1) keeps the network's function exactly; ``softmax`` uses (-c, -c, +c).
    The thetas are parameters of the edges (one ``Parameter`` object per key, shared by
    the edges of that key), created on the model's device.
    """
    if mode not in MODES:
        raise InvalidConfig(f"unknown adaptation mode {mode!r}; valid modes: {', '.join(MODES)}")
    device = next(model.parameters()).device
    init = torch.tensor([-softmax_init, -softmax_init, softmax_init] if softmax else [0.0, 0.0, 1.0])
    bank: dict[str, nn.Parameter] = {}
    build_identities(model)
    for name, cell, i, edge in edges(model):
        key = theta_key(mode, name, cell, i)
        if key not in bank:
            bank[key] = nn.Parameter(init.clone().to(device))
        edge.theta = bank[key]
        edge.softmax = softmax
    return list(bank)


def thetas(model: nn.Module) -> dict[str, nn.Parameter]:
    """Distinct theta parameters by key order of first use (cell mode: one per type and position)."""
    out: dict[int, nn.Parameter] = {}
    for _, _, _, edge in edges(model):
        if edge.theta is not None and id(edge.theta) not in out:
            out[id(edge.theta)] = edge.theta
    return {f"theta{k}": p for k, p in enumerate(out.values())}


def theta_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in thetas(model).values()}


def discretise(model: nn.Module, *, keep_theta: bool = True) -> dict[str, str]:
    """Argmax per edge (ties go to the earlier of none, id, same); returns {edge: choice}.

    ``none`` removes the edge, ``id`` keeps the identity candidate, ``same`` the original
    op; unused modules are dropped. The chosen weight becomes the frozen ``scale``
    buffer (``keep_theta=False``: 1.0), so with one-hot thetas the function is unchanged.
    """
    out = {}
    for name, _, i, edge in edges(model):
        if edge.theta is None:
            raise InvalidConfig("discretise needs an adapted model (call adapt first)")
        w = edge.weights().detach()
        k = int(torch.argmax(w))
        edge.choice = CHOICES[k]
        edge.scale.fill_(float(w[k]) if keep_theta else 1.0)
        edge.theta = None
        if edge.choice != "same" and edge.spec.kind != "skip":
            edge.op = None
        if edge.choice != "id":
            edge.ident = None
        out[f"{name}.e{i}"] = edge.choice
    return out


def apply_choices(model: nn.Module, choices: Sequence[str]) -> None:
    """Set discretised choices (scale 1) edge by edge, e.g. NAT's derived architecture."""
    all_edges = list(edges(model))
    if len(choices) != len(all_edges):
        raise InvalidConfig(f"{len(choices)} choices for {len(all_edges)} edges")
    for (_, _, _, edge), choice in zip(all_edges, choices):
        if choice not in CHOICES:
            raise InvalidConfig(f"unknown edge choice {choice!r}; valid: {', '.join(CHOICES)}")
        if choice == "id":
            edge.build_ident()
        edge.choice, edge.theta = choice, None
        edge.scale.fill_(1.0)
        if choice != "same" and edge.spec.kind != "skip":
            edge.op = None
        if choice != "id":
            edge.ident = None


def changed_edges(model: nn.Module) -> list[tuple[str, str, str, str]]:
    """(edge name, cell type, original, now) for every edge whose effective op changed."""
    out = []
    for name, cell, i, edge in edges(model):
        if edge.effective() != edge.original():
            out.append((f"{name}.e{i}", cell.cell_type, edge.original(), edge.effective()))
    return out


CODE = {"none": "n", "id": "i", "same": "s"}


def choice_code(model: nn.Module) -> str:
    """One letter per edge in model order (n/i/s): the canonical discretised encoding."""
    return "".join(CODE[e.choice or "same"] for _, _, _, e in edges(model))


def readable(model: nn.Module) -> str:
    """Per cell, its nodes as sums of the edges' effective ops, e.g. ``n5=id(n2)+conv3x3(n4)``."""
    parts = []
    for name, cell in cells(model):
        nodes = []
        for node in range(2, len(cell.shapes)):
            terms = []
            for i in cell.incoming[node]:
                e = cell.edges[i]
                now = e.effective()
                if now == "none":
                    continue
                terms.append(f"{'id' if now == 'id' else e.spec.name}(n{e.spec.src})")
            nodes.append(f"n{node}=" + ("+".join(terms) if terms else "0"))
        parts.append(f"{name}[{cell.cell_type}]{{{';'.join(nodes)}}}")
    return " ".join(parts)
