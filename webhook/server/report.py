"""What happens after an answer: the decision's log line and its metrics.

Inline by default (the Flask test client, the CLI). The server reports in batches from a
background thread, so a request thread only queues a tuple: a log line per request is a write
to stderr, a system call that gives up the GIL, and a request thread that gives the GIL up
waits to get it back behind the other threads; the multiprocess metrics take a lock per value.
Together they cost the served webhook more than evaluating its rules.

The worker's event loop, which answers most requests itself, reports them in small batches
before it waits for the next request (``drain``): the reporter thread would otherwise take the
GIL from it for a millisecond or two every ``interval``, a wait that a request arriving then has
to sit out (most of the 99th percentile, measured). The thread remains for what the request
threads answer and for what is left when requests stop coming.

The price: log lines and metrics appear up to ``interval`` seconds late (a scrape every 15 s
does not notice), and a worker killed outright (SIGKILL, OOM) loses at most that much. A worker
that exits otherwise (drain, ``--max-requests`` recycling, worker timeout) reports everything
first: the queue is flushed at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from ..admission import Outcome, Webhook
from ..echo import echo
from . import logs, metrics

log = logging.getLogger("podgate")

# time answered, log line fields, metrics: small, so that a batch keeps no request alive (a queue
# of whole requests made the garbage collector's work per request larger than the rules')
Report = tuple[float, dict[str, Any], metrics.Sample]


def decision_fields(webhook: Webhook, outcome: Outcome, seconds: float) -> dict[str, Any]:
    """The decision log line's fields: who, what, which rules; never the Pod's content."""
    req, decision = outcome.request, outcome.decision
    fields: dict[str, Any] = {"webhook": webhook, "latency_ms": round(seconds * 1000, 3)}
    if req is not None:
        fields.update(uid=echo(req.uid), operation=req.operation, dry_run=req.dry_run,
                      namespace=echo(req.namespace) if isinstance(req.namespace, str) else req.namespace)
    if decision is not None:
        fields.update(allowed=decision.allowed, reason=decision.reason, pod=decision.pod, policy=decision.policy,
                      rules=decision.rules_fired(), injected=decision.injected)
        if decision.findings:
            fields["violations"] = [f.to_json() for f in decision.findings]
    elif outcome.error is not None:
        fields.update(allowed=False, reason="bad request", error=outcome.error.message)
    return fields


class Reporter:
    """Logs and counts each answered request: inline, or every ``interval`` seconds in a batch."""

    MAX_QUEUED = 10_000  # past this (the log stream stopped taking lines), callers report inline
    # the event loop reports this many at once: one write for their lines, each counter once, and
    # short enough (about 50 µs) that the API server's next request seldom waits for it
    DRAIN_BATCH = 8

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self._queue: deque[Report] = deque()
        self._queued = threading.Event()
        self._lock = threading.Lock()  # one batch at a time, so lines keep their order
        self._writer_pid = 0  # the process whose thread is running: none in a forked child

    def report(self, webhook: Webhook, outcome: Outcome, seconds: float) -> None:
        if self.interval is not None and self._writer_pid != os.getpid():
            self._start()
        self._queue.append((time.time(), decision_fields(webhook, outcome, seconds),
                            metrics.sample(webhook, outcome, seconds)))
        if self.interval is None or len(self._queue) >= self.MAX_QUEUED:
            self.flush()
        elif not self._queued.is_set():
            self._queued.set()

    def flush(self) -> None:
        """Report everything queued, in order: one write for all the log lines."""
        with self._lock:
            self._flush_locked()

    def drain(self) -> None:
        """``flush`` once a batch is full or due, unless a flush is under way: for the worker's
        event loop, which reports what it answered before it waits for the next request, and
        must not wait for the thread."""
        queue = self._queue
        if not queue or (len(queue) < self.DRAIN_BATCH and time.time() - queue[0][0] < (self.interval or 0.0)):
            return
        if self._lock.acquire(blocking=False):
            try:
                self._flush_locked()
            finally:
                self._lock.release()

    def _flush_locked(self) -> None:
        queue, batch = self._queue, []
        while queue:
            batch.append(queue.popleft())
        if not batch:
            return
        logs.decisions([(answered, fields) for answered, fields, _ in batch])
        metrics.record(taken for _, _, taken in batch)

    def _start(self) -> None:
        with self._lock:
            if self._writer_pid == os.getpid():
                return
            self._queue.clear()  # a fork's copy of the parent's queue: the parent reports those
            self._writer_pid = os.getpid()
            atexit.register(self.flush)  # runs before logging's own shutdown, registered earlier
            threading.Thread(target=self._run, name="podgate-report", daemon=True).start()

    def _run(self) -> None:
        assert self.interval is not None
        while True:
            self._queued.wait()
            time.sleep(self.interval)  # let the batch fill
            self._queued.clear()
            try:
                self.flush()
            except Exception:  # the reporter must outlive any surprise
                log.exception("reporting decisions failed")
