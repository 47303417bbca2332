"""The decision log's direct path writes exactly the lines the logging path writes."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from webhook.server import logs

FIELDS = {"webhook": "validate", "latency_ms": 0.5, "uid": "u1", "allowed": False, "rules": ["port-collision"],
          "violations": [{"rule": "port-collision", "action": "deny", "containers": ["a", "b"], "port": 8080}]}


@pytest.fixture
def podgate_logger() -> Iterator[logging.Logger]:
    logs.configure()
    logger = logging.getLogger("podgate")
    saved = logger.handlers[:]
    yield logger
    logger.handlers[:] = saved


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("handler_class", [logs.JsonLineHandler, logging.StreamHandler], ids=["direct", "logging"])
def test_same_line_either_way(podgate_logger: logging.Logger, handler_class: type[logging.StreamHandler],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    # one clock for both lines, stopped: two readings of a running clock may straddle a second
    # (on a loaded machine, more than one), and the lines could not be compared whole
    monkeypatch.setattr(time, "time", lambda: 1767225599.25)
    monkeypatch.setattr(time, "time_ns", lambda: 1767225599_250_000_000)
    stream = io.StringIO()
    handler = handler_class(stream)
    handler.setFormatter(logs.JsonFormatter())
    podgate_logger.handlers[:] = [handler]
    logs.decisions([(time.time(), FIELDS)])
    logging.getLogger("podgate.decision").info("decision", extra={"fields": FIELDS})
    direct, via_logging = lines(stream)
    assert direct == via_logging == {"ts": "2025-12-31T23:59:59.250Z", "level": "info", "logger": "podgate.decision",
                                     "msg": "decision", **FIELDS}


def test_a_foreign_handler_or_a_filter_gets_a_real_record(podgate_logger: logging.Logger) -> None:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    podgate_logger.handlers[:] = [Collect()]
    logs.decisions([(time.time(), FIELDS)])
    assert records[0].getMessage() == "decision" and records[0].fields == FIELDS  # type: ignore[attr-defined]


def test_level_above_info_silences_decisions(podgate_logger: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logs.JsonLineHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    podgate_logger.handlers[:] = [handler]
    podgate_logger.setLevel("WARNING")
    try:
        logs.decisions([(time.time(), FIELDS)])
    finally:
        podgate_logger.setLevel("INFO")
    assert stream.getvalue() == ""


def test_timestamp_matches_logging() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", None, None)
    assert logs.timestamp(record.created) == logs.JsonFormatter().format(record).split('"')[3]
