"""``bench claims``: the papers' headline numbers beside ours, with a verdict per tier.

    bench claims [--db results.db] [--tier smoke] [--no-write] [--format md] [--out FILE.md]

Reads the latest row of every cell, evaluates every registered claim (see
``bench.results.claims``), prints paper vs ours, and writes the verdicts to the ``claims``
table (which Datasette shows) unless ``--no-write``. ``--format md`` prints (or ``--out``
writes) the per-paper markdown document of ``bench.results.claims_md``, headed by the commit
the rows were measured at.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("claims", help="paper vs ours for every registered claim, with verdicts")
    p.add_argument("--db", default="results.db")
    p.add_argument("--tier", default=None, help="only verdicts at this tier")
    p.add_argument("--no-write", action="store_true", help="print only; leave the claims table as it is")
    p.add_argument("--format", choices=("text", "md"), default="text", help="md: one markdown table per paper")
    p.add_argument("--out", default=None, help="write the output to this file instead of printing it")
    p.set_defaults(func=run)


def evaluate_db(db: str | Path, *, write: bool = True, tier: str | None = None) -> list:
    """Evaluate every claim on ``db``'s latest rows; upsert the verdicts unless ``write`` is False."""
    from bench.env import utc_now
    from bench.results import claims
    from bench.results.report import load_latest
    from bench.results.store import Store

    frame = load_latest(db)
    if tier is not None and not frame.empty:
        frame = frame[frame["tier"] == tier]
    rows = claims.evaluate(frame)
    if write:
        now = utc_now()
        with Store(db) as store:
            store.write_claims([r.as_row(now) for r in rows])
    return rows


def run(args: argparse.Namespace) -> int:
    from bench.results import claims

    if not Path(args.db).exists():
        print(f"bench claims: no database at {args.db}; run a suite first (make bench)", file=sys.stderr)
        return 2
    rows = evaluate_db(args.db, write=not args.no_write, tier=args.tier)
    if args.format == "md":
        from bench.results.claims_md import render_markdown

        text = render_markdown(rows, commit=measured_at(args.db), db=Path(args.db).name, tier=args.tier)
    else:
        text = claims.render(rows)
    if args.out:
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n")
        print(f"bench claims: {len(rows)} verdicts -> {args.out}")
    else:
        print(text)
    return 0


def measured_at(db: str | Path) -> str | None:
    """The commit(s) of the runs whose rows the verdicts read (``+dirty`` when a tree was modified)."""
    from bench.results.store import Store

    with Store(db, readonly=True) as store:
        commits = store.result_commits()
    return ", ".join(sorted({f"{sha[:12]}{'+dirty' if dirty else ''}" for sha, dirty in commits})) or None
