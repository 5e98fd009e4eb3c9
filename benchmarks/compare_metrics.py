"""Are two results databases the same numbers? The check behind "a pure refactor".

Pairs the latest row of every cell of two databases (suite, variant, dataset, model, seed,
tier, mode) and compares every metric exactly. Timing and memory metrics (names ending in
``_s``, ``_ms``, ``_mib`` and the step-time summaries) are listed apart: they move from run
to run by nature; planned and counted costs among them should still be identical.

    .venv/bin/python benchmarks/compare_metrics.py BEFORE.db AFTER.db
"""

from __future__ import annotations

import math
import re
import sqlite3
import sys
from collections import defaultdict

TIMING = re.compile(r"(_s|_ms|_mib|_ms_median|_ms_p10|_ms_p90)$|_ms_|peak_mem|_hit_bool$")
QUERY = """SELECT r.suite, r.variant, r.dataset, r.model, r.seed, r.tier, r.mode, r.status, m.name, m.value
FROM latest_results r LEFT JOIN metrics m ON m.result_id = r.result_id"""


def load(path: str) -> tuple[dict[tuple, float | None], dict[tuple, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    values: dict[tuple, float | None] = {}
    statuses: dict[tuple, str] = {}
    for *cell, status, name, value in conn.execute(QUERY):
        key = tuple(cell)
        statuses[key] = status
        if name is not None:
            values[(key, name)] = value
    return values, statuses


def same(x: float | None, y: float | None) -> bool:
    return x == y or (x is not None and y is not None and math.isnan(x) and math.isnan(y))


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    a, sa = load(sys.argv[1])
    b, sb = load(sys.argv[2])
    print(f"cells: {len(sa)} and {len(sb)}; the same cells: {set(sa) == set(sb)}")
    changed_status = sorted(k for k in sa if sb.get(k) != sa[k])
    print(f"cells whose status differs: {len(changed_status)} {changed_status[:5]}")
    diffs: dict[str, list] = defaultdict(list)
    timing: dict[str, list[bool]] = defaultdict(list)
    compared = 0
    for key in set(a) | set(b):
        name = key[1]
        if TIMING.search(name):
            timing[name].append(same(a.get(key), b.get(key)))
            continue
        compared += 1
        if not same(a.get(key), b.get(key)):
            diffs[name].append((key[0], a.get(key), b.get(key)))
    print(f"non-timing metric values: {compared}, identical: {compared - sum(map(len, diffs.values()))}")
    for name, rows in sorted(diffs.items()):
        print(f"  DIFFERS {name}: {len(rows)} cells, e.g. {rows[:2]}")
    print("timing and memory metrics, identical / compared (planned and counted ones should be all):")
    for name, flags in sorted(timing.items()):
        print(f"  {name}: {sum(flags)}/{len(flags)}")
    return 1 if diffs or changed_status else 0


if __name__ == "__main__":
    sys.exit(main())
