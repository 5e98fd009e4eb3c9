"""Opening a run: the one way a ``runs`` row is started (the pytest plugin and cluster shards).

A run's row records the provenance every result of it shares (``bench.env.collect``: git,
host and the writer's pid, torch and CUDA, flags, threads) and the arithmetic its cells ran
under; the pid lets ``Store.reap_dead_runs`` find a run whose writer died. The flags are
those of the mode its cells run in (``apply_mode``), not this process's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def open_run(
    store: Any,
    *,
    argv: Sequence[str],
    tier: str,
    mode: str,
    device: str,
    threads: int | None,
    tag: str | None,
    arith_json: str | None = None,
) -> str:
    """Start a ``runs`` row in ``store`` and return its run_id.

    ``arith_json``: the arithmetic as the worker that ran the first cell saw it (``CellResult``
    ``info["arithmetic"]``), recorded instead of this process's when given.
    """
    from bench.env import collect
    from bench.execute.runner import apply_mode

    apply_mode(mode)
    info = collect(argv=list(argv), tier=tier, mode=mode, device=device, threads=threads or None)
    if arith_json:
        info["arith_json"] = arith_json
    return store.start_run({**info, "tag": tag})
