"""A run's heartbeat: the writer stamps ``runs.heartbeat_at`` while its run is open.

A run whose writer died (SIGKILL, an OOM kill, a lost node) stays ``running`` in its database.
On the writer's own host its pid tells (``Store.reap_dead_runs``); on any other host the pid
means nothing, so the writer also stamps ``heartbeat_at`` every ``HEARTBEAT_S`` seconds from a
daemon thread, and a ``running`` run from another host whose stamp is older than
``Store.STALE_S`` is marked ``interrupted`` at the next writable open. The thread has its own
connection (SQLite connections stay in their thread) and writes one short ``BEGIN IMMEDIATE``
update per beat, so a beat waits for a busy writer like any other write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HEARTBEAT_S = 60.0

__all__ = ["HEARTBEAT_S", "Heartbeat"]


class Heartbeat:
    """Stamp ``run_id``'s heartbeat in the database at ``path`` every ``every_s`` until stopped.

    Use as a context manager or call ``start``/``stop``. A beat that fails (the database busy
    beyond its timeout, the file gone) is skipped and retried at the next one: a heartbeat must
    never take its run down. ``on_beat`` runs after each beat with the thread's connection (a
    cluster shard republishes its database, so the copy others read beats too)."""

    def __init__(
        self,
        path: str | Path,
        run_id: str,
        every_s: float = HEARTBEAT_S,
        on_beat: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s!r}")
        self.path, self.run_id, self.every_s = Path(path), run_id, float(every_s)
        self.on_beat = on_beat
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.run_id[:8]}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.every_s))
            self._thread = None

    def _loop(self) -> None:
        from bench.results.store import Store

        store = None
        try:
            while not self._stop.wait(self.every_s):
                try:
                    if store is None:
                        store = Store(self.path)
                    if store.beat(self.run_id):
                        self.beats += 1
                        if self.on_beat is not None:
                            self.on_beat(store.db.conn)
                except Exception:  # noqa: BLE001 - skipped, retried at the next beat
                    continue
        finally:
            if store is not None:
                store.close()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
