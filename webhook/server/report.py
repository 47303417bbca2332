"""What happens after an answer: the decision's log line and its metrics.

Inline by default (the Flask test client, the CLI). The server reports in batches from a
background thread, so a request thread only queues a tuple: a log line per request is a write
to stderr, a system call that gives up the GIL, and a request thread that gives the GIL up
waits to get it back behind the other threads; the multiprocess metrics take a lock per value.
Together they cost the served webhook more than evaluating its rules.

The worker's event loop, which answers most requests itself, reports them in small batches
before it waits for the next request (``drain``), and waits no longer than until the oldest of
them is due: the reporter thread would otherwise take the GIL from it every ``interval``, a wait
that a request arriving then has to sit out (a millisecond or two for a batch of 250: most of
the 99th percentile, measured; still the 99.9th for a few lines). The thread remains for what
the request threads answer and for what the event loop cannot write at once.

The event loop never waits for the log stream: it writes a batch only if the stream can take it
at once (``logs.decisions(..., wait=False)``), else leaves it to the thread, which may block in
the write (a log reader that stopped reading: a full pipe). Past ``MAX_QUEUED`` waiting lines,
the event loop drops the oldest line, not its metrics, and the thread says how many were dropped
once the stream takes lines again: /healthz and the next Pod must not wait for a log reader.

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

# time answered, log line fields: small, so that a batch keeps no request alive (a queue of whole
# requests made the garbage collector's work per request larger than the rules')
Line = tuple[float, dict[str, Any]]


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

    MAX_QUEUED = 10_000  # log lines waiting for the stream; past this, see ``report``
    # the event loop reports this many at once: one write for their lines, each counter once, and
    # short enough (about 50 µs) that the API server's next request seldom waits for it
    DRAIN_BATCH = 8

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self._lines: deque[Line] = deque()  # for the log stream, oldest first
        self._uncounted: deque[metrics.Sample] = deque()  # for the metrics, which never wait for the log
        self._queued = threading.Event()
        self._lock = threading.Lock()  # one writer at a time, so lines keep their order
        self._writer_pid = 0  # the process whose thread is running: none in a forked child
        self._stalled = False  # the stream did not take the event loop's last lines: the thread writes
        self._dropped = 0  # lines dropped while the log stream took none, not yet told

    def report(self, webhook: Webhook, outcome: Outcome, seconds: float, *, wait: bool = True) -> None:
        """Queue the answer's log line and metrics. Past ``MAX_QUEUED`` waiting lines (the stream
        stopped taking them) the caller writes them itself, or with ``wait=False`` (the event loop,
        which must not wait) the oldest line is dropped and counted."""
        if self.interval is not None and self._writer_pid != os.getpid():
            self._start()
        lines = self._lines
        lines.append((time.time(), decision_fields(webhook, outcome, seconds)))
        self._uncounted.append(metrics.sample(webhook, outcome, seconds))
        if self.interval is None:
            self.flush()
        elif len(lines) >= self.MAX_QUEUED:
            if wait:
                self.flush()
            else:
                self._drop_oldest()
        elif wait and not self._queued.is_set():  # the event loop drains its own (``drain``)
            self._queued.set()

    def flush(self) -> None:
        """Report everything queued, in order: one write for all the log lines (which may wait)."""
        self._count()
        with self._lock:
            self._write(wait=True)

    def drain(self) -> float | None:
        """For the worker's event loop, before it waits for the next request: once a batch is
        full or due, count it, and write its lines if the stream takes them at once; never wait
        for the stream or for the thread. Returns how soon to call again (lines wait that are not
        due yet), or None (nothing waits, or the thread has them)."""
        lines = self._lines
        if not lines:
            return None
        interval = self.interval or 0.0
        waited = time.time() - lines[0][0]
        if len(lines) < self.DRAIN_BATCH and waited < interval:
            return interval - waited
        self._count()
        if not self._stalled and self._lock.acquire(blocking=False):
            try:
                self._write(wait=False)
            finally:
                self._lock.release()
        return interval if lines and not self._stalled else None

    def _count(self) -> None:
        uncounted, batch = self._uncounted, []
        while uncounted:
            batch.append(uncounted.popleft())
        if batch:
            metrics.record(batch)

    def _write(self, wait: bool) -> None:
        lines, batch = self._lines, []
        while lines:
            batch.append(lines.popleft())
        written = logs.decisions(batch, wait=wait) if batch else 0
        if written < len(batch):  # not ready: back in the queue, in order, for the thread to write
            lines.extendleft(reversed(batch[written:]))
            self._stalled = True
            self._queued.set()
            return
        self._stalled = False
        if wait and self._dropped:
            dropped, self._dropped = self._dropped, 0
            log.warning("the log stream took no lines for a while: %d decision log lines were dropped "
                        "(their metrics were counted)", dropped)

    def _drop_oldest(self) -> None:
        try:
            self._lines.popleft()
        except IndexError:  # the thread took the queue meanwhile
            return
        self._dropped += 1
        self._queued.set()

    def _start(self) -> None:
        with self._lock:
            if self._writer_pid == os.getpid():
                return
            self._lines.clear()  # a fork's copy of the parent's queues: the parent reports those
            self._uncounted.clear()
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
