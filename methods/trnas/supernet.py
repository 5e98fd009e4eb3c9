"""The NB201 DARTS supernet: one architecture parameter per edge and op, shared by all cells.

``ArchState`` holds ``alpha`` (6 x 5, a leaf tensor that requires grad, *not* a module
parameter, so weight optimisers never see it) and the projection state: ``decided[e]``
is the op kept on edge ``e`` (or -1) and ``removed`` an (edge, op) pair zeroed for a
perturbation measurement. ``weights()`` is softmax(alpha) per edge, one-hot on decided
edges and with the removed op zeroed (not renormalised), as DARTS-PT does.

``supernet(state, C, N, num_classes)`` builds an ``NB201Net`` of ``SearchCell``s (BN
without affine parameters, as in DARTS search) that all read the same ``state``;
``methods.trnas.network.transfer`` turns it into Tr-Supernet-i-j unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import InvalidConfig
from methods.trnas.network import NB201Net, make_op
from methods.trnas.space import EDGES, NUM_EDGES, NUM_OPS, OPS, Arch


class ArchState:
    """Shared architecture weights and projection state (see the module docstring)."""

    def __init__(self, device: torch.device | str = "cpu", init_std: float = 1e-3, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.alpha = (init_std * torch.randn(NUM_EDGES, NUM_OPS, generator=gen)).to(device).requires_grad_(True)
        self.decided = [-1] * NUM_EDGES
        self.removed: tuple[int, int] | None = None

    def weights(self) -> torch.Tensor:
        """Per-edge op weights used by every cell (see the module docstring)."""
        w = torch.softmax(self.alpha, dim=-1)
        if any(d >= 0 for d in self.decided) or self.removed is not None:
            mask = torch.ones_like(w)
            fixed = torch.zeros_like(w)
            for e, op in enumerate(self.decided):
                if op >= 0:
                    mask[e] = 0
                    fixed[e, op] = 1
            w = w * mask + fixed
            if self.removed is not None:
                keep = torch.ones_like(w)
                keep[self.removed] = 0
                w = w * keep
        return w

    def decide(self, edge: int, op: int) -> None:
        """Make ``edge`` one-hot on ``op``; an edge is decided once."""
        if not 0 <= edge < NUM_EDGES or not 0 <= op < NUM_OPS:
            raise InvalidConfig(f"edge must be in 0..{NUM_EDGES - 1} and op in 0..{NUM_OPS - 1}, got {edge}, {op}")
        if self.decided[edge] >= 0:
            raise ValueError(f"edge {edge} was already decided ({OPS[self.decided[edge]]})")
        self.decided[edge] = op

    def undecided(self) -> list[int]:
        return [e for e, d in enumerate(self.decided) if d < 0]

    def argmax(self) -> Arch:
        """Decided ops where decided, argmax of alpha elsewhere."""
        best = self.alpha.detach().argmax(-1).tolist()
        return tuple(d if d >= 0 else int(b) for d, b in zip(self.decided, best))


class SearchCell(nn.Module):
    """A cell whose every edge is the weighted sum of all 5 ops (``none`` contributes 0)."""

    def __init__(self, state: ArchState, channels: int) -> None:
        super().__init__()
        self._state = [state]  # a list, so the state is not registered as a submodule
        self.edges = nn.ModuleList()
        for _ in EDGES:
            ops = nn.ModuleList([make_op(name, channels, affine=False) or nn.Identity() for name in OPS])
            self.edges.append(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._state[0].weights()
        nodes = [x]
        for to in (1, 2, 3):
            total = 0
            for k, (dst, src) in enumerate(EDGES):
                if dst != to:
                    continue
                for o, op in enumerate(self.edges[k]):
                    if o == 0:  # none: weight x 0
                        continue
                    total = total + w[k, o] * op(nodes[src])
            nodes.append(total if isinstance(total, torch.Tensor) else torch.zeros_like(x))
        return nodes[3]


def supernet(state: ArchState, C: int = 16, N: int = 5, num_classes: int = 10) -> NB201Net:
    """An NB201 supernet whose cells share ``state``."""
    return NB201Net(lambda channels: SearchCell(state, channels), C, N, num_classes, arch_name="nb201_supernet")
