"""The ET-NAS architecture encoding (NASOA paper, appendix): parse, validate, format.

Full string ``{block}_{first channels}_{macro}`` (the paper prints spaces instead of
underscores; both parse, ``format_arch`` writes underscores)::

    02031-a02_64_111-2111-21111111111111111111111-211      # ET-NAS-I

Block ``<ops>-<skips>``:

- ops: one (op, ratio) digit pair per operator except the last, whose ratio is
  implicitly 2, so ``n`` operators take ``2n - 1`` digits. Op ids: 0 conv3x3, 1 conv1x1,
  2 conv3x3 groups 2, 3 conv3x3 groups 4, 4 depthwise conv3x3 (groups = C_in). A ratio
  r gives ``out = C_block_out * 2**r / 4`` (x1/4 .. x4 of the block's *output* channels).
- skips: triples ``a|c`` (add / concat), source place, target place. Places are 0..n:
  0 the block input, i the output of op i. The residual ``a0n`` is implicit and never
  written. A concat into place n (the block output) is rejected.

Macro: four stages separated by ``-``; every digit is one block whose output channels
are its input channels times the digit (1, 2 or 4). The first block of stages 2-4 has
stride 2.

Every malformed string raises ``EncodingError`` (an ``InvalidConfig``) that says what is
wrong and where (the part and the character position).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import InvalidConfig

OP_NAMES = {0: "conv3x3", 1: "conv1x1", 2: "conv3x3_g2", 3: "conv3x3_g4", 4: "dwconv3x3"}
OP_GROUPS = {0: 1, 1: 1, 2: 2, 3: 4}  # op 4: groups = C_in
RATIOS = (0, 1, 2, 3, 4)
MACRO_DIGITS = (1, 2, 4)
NUM_STAGES = 4
MAX_OPS = 5


class EncodingError(InvalidConfig):
    """A malformed ET-NAS encoding; the message names the part and position."""


@dataclass(frozen=True)
class Op:
    """One operator: ``op`` id (0-4) and channel ``ratio`` (out = C_out * 2**ratio / 4)."""

    op: int
    ratio: int

    @property
    def kernel(self) -> int:
        return 1 if self.op == 1 else 3


@dataclass(frozen=True)
class Skip:
    """An extra connection: ``kind`` 'a' (add) or 'c' (concat), from place ``src`` into ``dst``."""

    kind: str
    src: int
    dst: int

    def __str__(self) -> str:
        return f"{self.kind}{self.src}{self.dst}"


@dataclass(frozen=True)
class Block:
    """A block: operators in a chain plus extra skips (the residual a0n is implicit)."""

    ops: tuple[Op, ...]
    skips: tuple[Skip, ...] = ()

    def __str__(self) -> str:
        digits = "".join(f"{o.op}{o.ratio}" for o in self.ops[:-1]) + str(self.ops[-1].op)
        return digits + "-" + "".join(str(s) for s in self.skips)


@dataclass(frozen=True)
class Arch:
    """A whole ET-NAS network: block, stem output channels and the four stages' digits."""

    block: Block
    first_channels: int
    stages: tuple[tuple[int, ...], ...]

    def __str__(self) -> str:
        return format_arch(self)

    @property
    def num_blocks(self) -> int:
        return sum(len(s) for s in self.stages)

    def stage_channels(self, first: int | None = None) -> list[list[int]]:
        """Output channels of every block, stage by stage, from ``first`` (default: ours)."""
        c = self.first_channels if first is None else first
        out = []
        for stage in self.stages:
            row = []
            for d in stage:
                c *= d
                row.append(c)
            out.append(row)
        return out


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts superscripts (which ``int`` refuses) and
    other scripts' digits (which ``int`` reads, giving non-canonical encodings)."""
    return text.isascii() and text.isdigit()


def _fail(encoding: str, where: str, what: str) -> EncodingError:
    return EncodingError(
        f"bad ET-NAS encoding {encoding!r}: {where}: {what}. "
        "Format: '<ops>-<skips>_<first channels>_<s1>-<s2>-<s3>-<s4>', "
        "e.g. '02031-a02_64_111-2111-21111111111111111111111-211'"
    )


def parse_block(text: str, encoding: str | None = None) -> Block:
    """Parse and validate ``<ops>-<skips>`` (e.g. ``02031-a02``)."""
    enc = text if encoding is None else encoding
    if text.count("-") != 1:
        raise _fail(enc, "block", f"expected exactly one '-' between ops and skips in {text!r}")
    ops_text, skips_text = text.split("-")
    if not ops_text or len(ops_text) % 2 == 0:
        raise _fail(
            enc,
            "block ops",
            f"{ops_text!r} has {len(ops_text)} digits; n operators take 2n-1 digits "
            "(op, ratio pairs; the last op has no ratio)",
        )
    if not _digits(ops_text):
        bad = next(i for i, ch in enumerate(ops_text) if not _digits(ch))
        raise _fail(enc, f"block ops, character {bad}", f"{ops_text[bad]!r} is not a digit")
    n = (len(ops_text) + 1) // 2
    if n > MAX_OPS:
        raise _fail(enc, "block ops", f"{n} operators; at most {MAX_OPS}")
    ops = []
    for i in range(n):
        op = int(ops_text[2 * i])
        if op not in OP_NAMES:
            raise _fail(
                enc,
                f"block op {i + 1} (character {2 * i})",
                f"unknown op {op}; valid ops: " + ", ".join(f"{k} {v}" for k, v in OP_NAMES.items()),
            )
        ratio = int(ops_text[2 * i + 1]) if i < n - 1 else 2
        if ratio not in RATIOS:
            raise _fail(
                enc,
                f"block op {i + 1} ratio (character {2 * i + 1})",
                f"ratio digit {ratio}; valid 0-4 (x1/4, x1/2, x1, x2, x4 of the block output)",
            )
        ops.append(Op(op, ratio))
    if len(skips_text) % 3:
        raise _fail(enc, "block skips", f"{skips_text!r} is not a sequence of 3-character skips like 'a02'")
    skips: list[Skip] = []
    for j in range(0, len(skips_text), 3):
        triple = skips_text[j : j + 3]
        where = f"skip {triple!r} (skips character {j})"
        if triple[0] not in "ac":
            raise _fail(enc, where, f"kind {triple[0]!r}; use 'a' (add) or 'c' (concat)")
        if not _digits(triple[1:]):
            raise _fail(enc, where, "source and target places must be digits")
        src, dst = int(triple[1]), int(triple[2])
        if not (0 <= src < dst <= n):
            raise _fail(
                enc,
                where,
                f"a skip goes from place src to a later place dst with 0 <= src < dst <= {n} "
                f"(places: 0 = block input, 1..{n} = op outputs)",
            )
        if triple[0] == "c" and dst == n:
            raise _fail(
                enc,
                where,
                f"concat into place {n} (the block output) is not allowed; "
                "the block output width is fixed by the macro",
            )
        if triple[0] == "a" and src == 0 and dst == n:
            raise _fail(enc, where, f"'a0{n}' is the implicit residual; do not write it")
        skip = Skip(triple[0], src, dst)
        if any((s.src, s.dst) == (src, dst) for s in skips):
            raise _fail(enc, where, f"a second skip from place {src} to place {dst}")
        skips.append(skip)
    return Block(tuple(ops), tuple(skips))


def parse_macro(text: str, encoding: str | None = None) -> tuple[tuple[int, ...], ...]:
    """Parse the four stages (e.g. ``111-2111-211111-211``)."""
    enc = text if encoding is None else encoding
    parts = text.split("-")
    if len(parts) != NUM_STAGES:
        raise _fail(enc, "macro", f"{len(parts)} stage(s) in {text!r}; need {NUM_STAGES} separated by '-'")
    stages = []
    for s, part in enumerate(parts):
        if not part:
            raise _fail(enc, f"macro stage {s + 1}", "empty stage; every stage needs at least one block")
        for i, ch in enumerate(part):
            if not _digits(ch) or int(ch) not in MACRO_DIGITS:
                raise _fail(
                    enc,
                    f"macro stage {s + 1}, block {i + 1}",
                    f"digit {ch!r}; a block's channel multiplier is one of {MACRO_DIGITS}",
                )
        stages.append(tuple(int(ch) for ch in part))
    return tuple(stages)


def parse(encoding: str) -> Arch:
    """Parse and validate a full encoding into an ``Arch`` (see the module docstring)."""
    if not isinstance(encoding, str):
        raise EncodingError(f"an ET-NAS encoding is a string, got {type(encoding).__name__}")
    parts = re.split(r"[_ ]", encoding.strip())
    if len(parts) != 3:
        raise _fail(
            encoding,
            "top level",
            f"{len(parts)} part(s); need block, first channels and macro separated by '_' (or spaces)",
        )
    block_text, first_text, macro_text = parts
    block = parse_block(block_text, encoding)
    if not _digits(first_text) or int(first_text) < 4 or int(first_text) % 4:
        raise _fail(
            encoding,
            "first channels",
            f"{first_text!r}; need an integer >= 4 divisible by 4 (the ratio x1/4 must give whole channels)",
        )
    arch = Arch(block, int(first_text), parse_macro(macro_text, encoding))
    check_channels(arch, encoding=encoding)
    return arch


def format_arch(arch: Arch) -> str:
    """The canonical string of ``arch`` (underscores between the three parts)."""
    macro = "-".join("".join(str(d) for d in stage) for stage in arch.stages)
    return f"{arch.block}_{arch.first_channels}_{macro}"


def op_channels(block: Block, c_in: int, c_out: int) -> list[tuple[int, int, int]]:
    """(in channels, out channels, groups) of every op of ``block`` between c_in and c_out.

    Concats widen their target place, so the next op's input grows by the source's
    channels (the block input has ``c_in`` channels, op i's output ``c_out*2**r/4``).
    """
    place = [c_in]
    out = []
    for i, op in enumerate(block.ops, start=1):
        cin = place[i - 1]
        cout = c_out * 2**op.ratio // 4
        groups = cin if op.op == 4 else OP_GROUPS[op.op]
        out.append((cin, cout, groups))
        width = cout
        for s in block.skips:
            if s.dst == i and s.kind == "c":
                width += place[s.src]
        place.append(width)
    return out


def check_channels(arch: Arch, first: int | None = None, encoding: str | None = None) -> None:
    """Reject channel counts that are fractional or not divisible by an op's groups."""
    enc = encoding or format_arch(arch)
    c_in = arch.first_channels if first is None else first
    for s, stage in enumerate(arch.stages):
        for b, d in enumerate(stage):
            c_out = c_in * d
            if (c_out * 2 ** min(o.ratio for o in arch.block.ops)) % 4:
                raise _fail(
                    enc,
                    f"stage {s + 1} block {b + 1}",
                    f"{c_out} output channels: a ratio x1/4 gives fractional channels",
                )
            for k, (cin, cout, g) in enumerate(op_channels(arch.block, c_in, c_out), start=1):
                if cin % g or cout % g:
                    raise _fail(
                        enc,
                        f"stage {s + 1} block {b + 1} op {k} ({OP_NAMES[arch.block.ops[k - 1].op]})",
                        f"{cin} -> {cout} channels are not divisible by its {g} groups",
                    )
            c_in = c_out
