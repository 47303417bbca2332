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


def outcome(uid: str) -> Outcome:
    body = review_for(pod(ctr("a", port(8080)), ctr("b", port(8080))), uid=uid)
    return review(json.dumps(body).encode(), "validate", Context(load_policy_set()))


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, list[str]]]]:
    """Each call to logs.decisions: (thread name, uids), instead of writing lines."""
    import threading

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(logs, "decisions", lambda entries: calls.append(
        (threading.current_thread().name, [fields["uid"] for _, fields in entries])))
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
