"""A gunicorn gthread worker that spreads a few long-lived connections over every worker.

The API server keeps a handful of keep-alive connections to a webhook and sends every request
over them. gunicorn leaves it to chance which worker accepts a connection (all workers poll the
same listening socket; whoever wakes first wins), and a busy worker tends to win again: often
one worker holds every connection and does all the work while the others idle, which halves the
throughput of two workers. ``SO_REUSEPORT`` only swaps that chance for a hash of the client
port (one time in eight, four connections still land on one of two workers).

Here every worker publishes how many connections it holds in a small table shared across the
fork, and takes a new one only while it holds no more than the average. The worker holding the
fewest always qualifies, so a connection never waits for a slot; one that is over its share
stops polling the listening socket and looks again every ``RECHECK`` seconds.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

RECHECK = 0.05  # seconds: how soon a worker over its share looks again
FREE = -1
_SLOT = struct.Struct("q")


class ConnectionTable:
    """Connections held per worker slot, in anonymous shared memory inherited by every fork."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, slots * _SLOT.size)
        self._view = memoryview(self._mem).cast("q")
        for i in range(slots):
            self._view[i] = FREE

    def claim(self, taken: set[int]) -> int:
        """A free slot for a worker about to be forked (the master calls this)."""
        for i in range(self.slots):
            if i not in taken:
                self._view[i] = 0
                return i
        raise RuntimeError(f"more than {self.slots} workers")

    def release(self, slot: int) -> None:
        self._view[slot] = FREE

    def set(self, slot: int, connections: int) -> None:
        self._view[slot] = connections

    def fair(self, slot: int) -> bool:
        """Whether the worker in ``slot`` holds no more than the average of the live workers."""
        mine, total, live = self._view[slot], 0, 0
        for count in self._view:
            if count >= 0:
                total += count
                live += 1
        return mine * live <= total


class BalancedThreadWorker(ThreadWorker):
    """gthread, but a worker over its share of the connections lets the others accept."""

    table: ConnectionTable | None = None  # set in the master before the first fork
    slot: int | None = None  # set by the master's pre_fork hook

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held_back = False
        self._nr_conns = 0
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def nr_conns(self) -> int:
        return self._nr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._nr_conns = value
        if self.table is not None and self.slot is not None:
            self.table.set(self.slot, value)

    def _fair(self) -> bool:
        return self.table is None or self.slot is None or self.table.fair(self.slot)

    def set_accept_enabled(self, enabled: bool) -> None:
        self._held_back = enabled and not self._fair()
        super().set_accept_enabled(enabled and not self._held_back)

    def accept(self, listener: Any) -> None:
        if not self._fair():
            self.set_accept_enabled(True)  # re-evaluated: stops polling the listener
            return
        super().accept(listener)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        super().wait_for_and_dispatch_events(min(timeout, RECHECK) if self._held_back else timeout)


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn hook (master): give the new worker a slot in the connection table."""
    table = BalancedThreadWorker.table
    if table is not None and isinstance(worker, BalancedThreadWorker):
        taken = {w.slot for w in server.WORKERS.values() if getattr(w, "slot", None) is not None}
        worker.slot = table.claim(taken)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook (master): a dead worker's connections are gone; free its slot."""
    table = BalancedThreadWorker.table
    if table is not None and getattr(worker, "slot", None) is not None:
        table.release(worker.slot)
