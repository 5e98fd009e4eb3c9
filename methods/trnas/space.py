"""The NAS-Bench-201 cell search space: operations, edges, strings, indices, isomorphism.

A cell has 4 nodes (0 is the input, 3 the output) and 6 edges ``j -> i`` for ``j < i``;
every edge carries one of 5 operations, so there are 5**6 = 15,625 architectures.
An architecture is written as the benchmark writes it::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

(node 1's incoming edge, then node 2's from 0 and 1, then node 3's from 0, 1 and 2).

``Arch`` is the tuple of 6 operation indices in that edge order (``EDGES``). Its index
0..15624 is the mixed-radix number with the first edge most significant and the
operations in ``OPS`` order: exactly the order in which NAS-Bench-201's
``CellStructure.gen_all`` enumerates the space. It is *not* the row index of the
benchmark's own data file; look architectures up in the benchmark by their string.

``canonical(arch)`` is the benchmark's own isomorphism key (``skip_connect`` is the
identity, ``none`` is zero, the sum at a node is order-free): 6,466 unique topologies.
``is_isomorphic(a, b)`` compares two keys.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from bench.errors import InvalidConfig

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from)
NUM_EDGES = len(EDGES)
NUM_OPS = len(OPS)
SPACE_SIZE = NUM_OPS**NUM_EDGES  # 15,625

Arch = tuple[int, ...]

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _bad(text: str, why: str) -> InvalidConfig:
    return InvalidConfig(
        f"malformed NAS-Bench-201 architecture string {text!r}: {why}. Expected three "
        f"'+'-separated nodes of 'op~source' edges, e.g. {EXAMPLE!r}; ops: {', '.join(OPS)}"
    )


def parse(text: str) -> Arch:
    """The ``Arch`` of a benchmark string; raises ``InvalidConfig`` saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidConfig(f"an architecture string must be a str, got {type(text).__name__}")
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise _bad(text, f"{len(nodes)} node(s) instead of 3")
    ops: list[int] = []
    for to, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise _bad(text, f"node {to} {node!r} must start and end with '|'")
        edges = node[1:-1].split("|")
        if len(edges) != to:
            raise _bad(text, f"node {to} needs {to} incoming edge(s), got {len(edges)}")
        for source, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep:
                raise _bad(text, f"edge {edge!r} lacks '~source'")
            if op not in OPS:
                raise _bad(text, f"unknown op {op!r}")
            if src != str(source):
                raise _bad(text, f"edge {edge!r} of node {to} must come from node {source} (edges in order)")
            ops.append(OPS.index(op))
    return tuple(ops)


def format_arch(arch: Sequence[int]) -> str:
    """The benchmark string of ``arch`` (6 op indices in ``EDGES`` order)."""
    arch = check_arch(arch)
    parts, k = [], 0
    for to in (1, 2, 3):
        parts.append("|" + "|".join(f"{OPS[arch[k + s]]}~{s}" for s in range(to)) + "|")
        k += to
    return "+".join(parts)


def check_arch(arch: Sequence[int]) -> Arch:
    """``arch`` as a tuple after checking it has 6 op indices in 0..4."""
    arch = tuple(arch)
    if len(arch) != NUM_EDGES or any(
        isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < NUM_OPS for o in arch
    ):
        raise InvalidConfig(
            f"an architecture is {NUM_EDGES} op indices in 0..{NUM_OPS - 1} "
            f"({', '.join(f'{i}={o}' for i, o in enumerate(OPS))}), got {arch!r}"
        )
    return arch


def to_index(arch: Sequence[int]) -> int:
    """Mixed-radix index (first edge most significant): the ``gen_all`` enumeration order."""
    index = 0
    for op in check_arch(arch):
        index = index * NUM_OPS + op
    return index


def from_index(index: int) -> Arch:
    """The architecture at ``index`` in 0..15624."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < SPACE_SIZE:
        raise InvalidConfig(f"architecture index must be an integer in 0..{SPACE_SIZE - 1}, got {index!r}")
    ops = []
    for _ in range(NUM_EDGES):
        index, op = divmod(index, NUM_OPS)
        ops.append(op)
    return tuple(reversed(ops))


def all_archs() -> Iterator[Arch]:
    """Every architecture, in index order."""
    return (from_index(i) for i in range(SPACE_SIZE))


def sample(count: int, seed: int) -> list[Arch]:
    """``count`` distinct architectures drawn uniformly with a seeded generator."""
    if not 1 <= count <= SPACE_SIZE:
        raise InvalidConfig(f"can sample 1..{SPACE_SIZE} distinct architectures, asked for {count}")
    return [from_index(i) for i in random.Random(seed).sample(range(SPACE_SIZE), count)]


def canonical(arch: Sequence[int]) -> str:
    """Isomorphism key of ``arch``: NAS-Bench-201's ``to_unique_str(consider_zero=True)``.

    Node 0 is ``"0"``; an incoming term is ``"#"`` (zero) for a ``none`` edge or a source
    that is exactly ``"#"``, the source itself for ``skip_connect`` and ``(src)@op``
    otherwise; a node is its sorted terms joined by ``+``. Over the 15,625 architectures
    this gives the benchmark's published 6,466 unique topologies.
    """
    arch = check_arch(arch)
    nodes = {0: "0"}
    for node in (1, 2, 3):
        terms = []
        for k, (to, src) in enumerate(EDGES):
            if to != node:
                continue
            op = OPS[arch[k]]
            if op == "none" or nodes[src] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[src])
            else:
                terms.append(f"({nodes[src]})@{op}")
        nodes[node] = "+".join(sorted(terms))
    return nodes[3]


def is_isomorphic(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether two architectures have the same canonical form."""
    return canonical(a) == canonical(b)


def mutate(arch: Sequence[int], rng: random.Random) -> Arch:
    """``arch`` with one edge set to a *different* op, drawn as NAS-Bench-201's REA draws it.

    NB201's ``mutate_arch_func`` (``exps/NAS-Bench-201-algos/R_EA.py``, also NATS-Bench's
    ``regularized_ea.py``) picks a node 1..3 uniformly, then one of that node's incoming edges
    uniformly, then an op uniformly among the other 4. Edges are therefore not equally likely:
    node 1's only edge ``1 <- 0`` is picked with probability 1/3, each of node 2's with 1/6 and
    each of node 3's with 1/9.
    """
    arch = list(check_arch(arch))
    node = 1 + rng.randrange(3)
    edge = node * (node - 1) // 2 + rng.randrange(node)  # node n's edges start at 0, 1, 3 in EDGES order
    arch[edge] = rng.choice([o for o in range(NUM_OPS) if o != arch[edge]])
    return tuple(arch)
