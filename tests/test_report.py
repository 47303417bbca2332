"""The reporter logs and counts every answered request exactly once, in order, inline or batched,
and a worker that exits normally reports everything it still held."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.server import logs
from webhook.admission import Context, Outcome, review
from webhook.policy import load_policy_set
from webhook.server.report import Reporter

from .conftest import review_for
from .test_rules import ctr, pod, port

REPO = Path(__file__).resolve().parent.parent


def outcome(uid: str, ctx: Context | None = None) -> Outcome:
    body = review_for(pod(ctr("a", port(8080)), ctr("b", port(8080))), uid=uid)
    return review(json.dumps(body).encode(), "validate", ctx or Context(load_policy_set()))


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, list[str]]]]:
    """Each call to logs.decisions: (thread name, uids), instead of writing lines."""
    import threading

    calls: list[tuple[str, list[str]]] = []
    def decisions(entries: list[tuple[float, dict]], wait: bool = True) -> int:
        calls.append((threading.current_thread().name, [fields["uid"] for _, fields in entries]))
        return len(entries)

    monkeypatch.setattr(logs, "decisions", decisions)
    yield calls


def test_inline_reports_at_once(written: list[tuple[str, list[str]]]) -> None:
    reporter = Reporter()
    reporter.report("validate", outcome("u1"), 0.001)
    assert written == [("MainThread", ["u1"])]


def test_batched_reports_everything_in_order_off_the_request_thread(written: list[tuple[str, list[str]]]) -> None:
    reporter = Reporter(0.05)
    uids = [f"u{i}" for i in range(200)]
    answers = [outcome(uid) for uid in uids]
    for answer in answers:
        reporter.report("validate", answer, 0.001)
    deadline = time.monotonic() + 30  # for a loaded machine; a passing test waits a batch or two
    while sum(len(batch) for _, batch in written) < len(uids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [uid for _, batch in written for uid in batch] == uids
    assert {thread for thread, _ in written} == {"podgate-report"}
    assert len(written) < len(uids)  # batches, not a write per request


def test_a_full_queue_is_reported_by_the_caller(written: list[tuple[str, list[str]]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """If the log stream stops taking lines, the queue does not grow without bound."""
    monkeypatch.setattr(Reporter, "MAX_QUEUED", 3)
    reporter = Reporter(3600)
    for i in range(3):
        reporter.report("validate", outcome(f"u{i}"), 0.001)
    assert written == [("MainThread", ["u0", "u1", "u2"])]


def test_a_process_that_exits_reports_what_it_held(tmp_path: Path) -> None:
    """A worker recycled by --max-requests, or drained on SIGTERM, exits through sys.exit:
    nothing it answered goes unlogged, even with the next batch an hour away."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from webhook.server import logs
        from webhook.server.report import Reporter
        from tests.test_report import outcome
        logs.configure()
        reporter = Reporter(3600)
        for i in range(50):
            reporter.report("validate", outcome(f"u{{i}}"), 0.001)
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["uid"] for e in lines if e["msg"] == "decision"] == [f"u{i}" for i in range(50)]


@pytest.fixture
def stalled_pipe() -> Iterator[tuple[int, logs.JsonLineHandler]]:
    """podgate's log handler on a pipe whose reader reads nothing until the test says so."""
    import logging
    import os

    logs.configure()
    logger = logging.getLogger("podgate")
    saved = logger.handlers[:]
    read_end, write_end = os.pipe()
    handler = logs.JsonLineHandler(os.fdopen(write_end, "w"))
    handler.setFormatter(logs.JsonFormatter())
    logger.handlers[:] = [handler]
    try:
        yield read_end, handler
    finally:
        logger.handlers[:] = saved
        handler.stream.close()
        os.close(read_end)


def _read_all(fd: int, quiet: float = 0.2) -> str:
    """What the pipe holds, until nothing more comes for ``quiet`` seconds."""
    import os
    import select

    out = b""
    while select.select([fd], [], [], quiet)[0] and (chunk := os.read(fd, 1 << 16)):
        out += chunk
    return out.decode()


def test_the_event_loop_never_waits_for_a_stalled_log_stream(
        stalled_pipe: tuple[int, logs.JsonLineHandler], monkeypatch: pytest.MonkeyPatch) -> None:
    """A log reader that stopped reading fills the pipe: what the event loop reports (wait=False)
    must go on returning at once, count every answer in the metrics, drop the oldest lines past the
    bound and say how many once the stream takes lines again; the lines it keeps stay in order."""
    import threading

    from webhook.server import metrics

    read_end, _ = stalled_pipe
    monkeypatch.setattr(Reporter, "MAX_QUEUED", 200)
    counted: list[object] = []
    monkeypatch.setattr(metrics, "record", lambda samples: counted.extend(samples))
    reporter = Reporter(3600)  # the thread never flushes on its own: only the loop's drains write
    total = 1500  # lines of about 400 bytes: the 64 KiB pipe is full after about 160
    ctx = Context(load_policy_set())
    answers = [outcome(f"u{i}", ctx) for i in range(total)]
    finished = threading.Event()

    def event_loop() -> None:
        for answer in answers:
            reporter.report("validate", answer, 0.001, wait=False)
            reporter.drain()
        finished.set()

    loop = threading.Thread(target=event_loop, daemon=True)
    loop.start()
    assert finished.wait(20), "the event loop blocked on the log stream"
    assert reporter._dropped > 0 and len(reporter._lines) <= Reporter.MAX_QUEUED
    assert len(counted) == total  # the metrics do not wait for the log stream
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(_read_all(read_end, 2.0)), daemon=True)
    reader.start()  # the reader reads again
    reporter.flush()  # as the thread does: it may wait
    reader.join(30)
    assert read, "the reader did not finish"
    assert len(counted) == total
    lines = [json.loads(line) for line in read[0].splitlines()]
    uids = [line["uid"] for line in lines if line.get("logger") == "podgate.decision"]
    assert uids == sorted(uids, key=lambda u: int(u[1:])) and uids[-1] == f"u{total - 1}"
    dropped = total - len(uids)
    assert dropped > 0
    warning = [line for line in lines if line.get("level") == "warning"]
    assert len(warning) == 1 and f"{dropped} decision log lines were dropped" in warning[0]["msg"]


def test_the_event_loop_leaves_a_line_too_long_for_one_pipe_write_to_the_thread(
        stalled_pipe: tuple[int, logs.JsonLineHandler]) -> None:
    read_end, handler = stalled_pipe
    assert handler.write_ready(["x" * 5000]) == 0
    assert handler.write_ready(["a" * 3000, "b" * 3000, "c" * 5000]) == 2  # two writes, then the long one waits
    assert _read_all(read_end) == "a" * 3000 + "\n" + "b" * 3000 + "\n"


def test_the_event_loops_reports_wake_no_thread_and_say_when_they_are_due(
        written: list[tuple[str, list[str]]]) -> None:
    """The event loop's own answers are drained by the event loop: the reporter thread is not
    woken for them (it would take the GIL from the next request), and the loop is told how long
    it may wait before the oldest of them is due."""
    reporter = Reporter(0.2)
    reporter.report("validate", outcome("u0"), 0.001, wait=False)
    assert not reporter._queued.is_set()
    again = reporter.drain()
    assert again is not None and 0 < again <= 0.2 and written == []
    time.sleep(again)
    assert reporter.drain() is None
    assert written == [("MainThread", ["u0"])]
    for i in range(1, 1 + Reporter.DRAIN_BATCH):  # a full batch is written at once, not when due
        reporter.report("validate", outcome(f"u{i}"), 0.001, wait=False)
    assert reporter.drain() is None and len(written[-1][1]) == Reporter.DRAIN_BATCH
    assert not reporter._queued.is_set()
