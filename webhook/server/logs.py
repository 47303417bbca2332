"""Structured logs: one JSON line per record, and one record per admission decision."""

from __future__ import annotations

import logging
import select
import sys
import time
from typing import Any

import orjson
from gunicorn.glogging import Logger as GunicornLogger

_second: tuple[int, str] = (-1, "")  # the date part of the last timestamp, formatted once per second


def timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) as 2024-01-31T12:00:00.123Z."""
    global _second
    second = int(created)
    cached = _second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((created - second) * 1000):03d}Z"  # milliseconds, as LogRecord.msecs


def render(created: float, level: str, logger: str, msg: str, fields: dict[str, Any] | None = None,
           exception: str | None = None) -> str:
    """One log line: ts, level, logger, msg, then the structured fields."""
    out: dict[str, Any] = {"ts": timestamp(created), "level": level, "logger": logger, "msg": msg}
    if fields:
        out.update(fields)
    if exception:
        out["exception"] = exception
    return orjson.dumps(out, default=str).decode()


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; ``extra={"fields": {...}}`` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg if not record.args and isinstance(record.msg, str) else record.getMessage()
        return render(record.created, record.levelname.lower(), record.name, msg, getattr(record, "fields", None),
                      self.formatException(record.exc_info) if record.exc_info else None)


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """podgate's own handler: JSON lines on a stream, and ready-made lines from ``decisions``."""

    def write_lines(self, lines: list[str]) -> None:
        """Write the lines with one write (one system call for a batch of decisions)."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(self.terminator.join(lines) + self.terminator)
            self.flush()

    def write_ready(self, lines: list[str]) -> int:
        """Write the first lines that can be written without blocking: while no other thread is
        writing and the stream polls ready, in writes that a pipe takes whole. How many were."""
        if not self.lock.acquire(blocking=False):  # type: ignore[union-attr]
            return 0
        try:
            done, end = 0, self.terminator
            while done < len(lines) and _ready(self.stream):
                upto, size = done, 0
                while upto < len(lines) and (size := size + len(lines[upto].encode()) + len(end)) <= _ATOMIC_WRITE:
                    upto += 1
                if upto == done:  # a line longer than one atomic write: the thread writes it
                    break
                self.stream.write(end.join(lines[done:upto]) + end)
                self.flush()
                done = upto
            return done
        finally:
            self.lock.release()  # type: ignore[union-attr]


# A pipe that polls writable takes a write up to this size whole, without blocking (one writer).
_ATOMIC_WRITE = select.PIPE_BUF


def _ready(stream: Any) -> bool:
    """Whether a write to ``stream`` returns at once: its descriptor polls writable (a stream
    without one, such as an in-memory buffer, never blocks)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLOUT for _, events in poller.poll(0))


_DECISIONS = logging.getLogger("podgate.decision")


def _direct_handlers(logger: logging.Logger) -> list[JsonLineHandler] | None:
    """The handlers a record of ``logger`` would reach, if all are plain JsonLineHandlers (else None)."""
    found: list[JsonLineHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if type(handler) is not JsonLineHandler or type(handler.formatter) is not JsonFormatter \
                    or handler.filters or handler.level > logging.INFO:
                return None
            found.append(handler)
        current = current.parent if current.propagate else None  # type: ignore[assignment]
    return found


def decisions(entries: list[tuple[float, dict[str, Any]]], wait: bool = True) -> int:
    """Log admission decisions, each ``(time, fields)``: INFO lines of ``podgate.decision``.

    Every Pod creation comes through here. When the records would only reach podgate's own JSON
    handler (the normal case), the lines JsonFormatter would write are rendered without a
    LogRecord (caller lookup, thread and process names: a third of the cost) and written in one
    go. Any other handler or filter gets real records through ``logging``.

    ``wait=False`` writes only what cannot block (``JsonLineHandler.write_ready``), and only
    through one handler of podgate's own. How many of the entries, from the first, were logged.
    """
    if not entries or not _DECISIONS.isEnabledFor(logging.INFO):
        return len(entries)
    handlers = _direct_handlers(_DECISIONS)
    if handlers is None:
        if not wait:
            return 0
        for _created, fields in entries:
            _DECISIONS.info("decision", extra={"fields": fields})
        return len(entries)
    if not handlers:
        return len(entries)
    if not wait and len(handlers) > 1:
        return 0
    lines = [render(created, "info", "podgate.decision", "decision", fields) for created, fields in entries]
    if not wait:
        return handlers[0].write_ready(lines)
    for handler in handlers:
        handler.write_lines(lines)
    return len(entries)


LEVELS = ("debug", "info", "warning", "error", "critical")


def configure(level: str | None = None) -> None:
    """JSON lines on stderr for the ``podgate`` loggers (idempotent), at ``level`` where given, else
    at the level set before (INFO at first). At ``warning`` and above, decisions are not logged."""
    logger = logging.getLogger("podgate")
    if level is not None:
        logger.setLevel(level.upper())
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    if level is None:
        logger.setLevel(logging.INFO)
    handler = JsonLineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False


class GunicornJsonLogger(GunicornLogger):
    """gunicorn's own lines (booting workers, listening, signals) as JSON lines, like podgate's:
    one format on stderr, for one log pipeline."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
