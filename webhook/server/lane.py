"""The API server's request, read and answered without gunicorn's parser and WSGI machinery.

Every Pod creation sends the same shape of request: ``POST /validate?timeout=10s HTTP/1.1``, a
handful of plain headers, a Content-Length body, over a kept-alive connection. For that shape
gunicorn's parser, its WSGI environ and response object cost several times what the review does.
``parse`` reads exactly that shape and nothing more: anything it does not fully understand (another
method, path or version, a header it would have to act on, an odd byte, a second Content-Length)
makes it return None, and the request goes to gunicorn as before. So it never reads a request
differently from gunicorn (tests/test_lane.py compares the two on generated requests); it only
reads fewer. ``response`` writes the bytes gunicorn would have written for the same answer. (The
benchmark's ``/baseline`` is read here too, so that it measures what ``/validate`` adds.)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from gunicorn import SERVER
from gunicorn.util import http_date

# the request line, then the header fields: each a token without "_" (gunicorn drops or maps
# those), a colon, and a value of visible ASCII with single spaces inside
_HEAD = re.compile(
    rb"POST (/validate|/mutate|/baseline)(?:\?[\x21\x22\x24-\x7e]*)? HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^`|~0-9A-Za-z]+:[ \t]*(?:[\x21-\x7e]+(?: [\x21-\x7e]+)*)?[ \t]*\r\n)*)\r\n")
_LENGTH = re.compile(rb"[0-9]{1,10}")
_ONCE = frozenset({b"host", b"content-type", b"content-length"})  # a second one: gunicorn refuses it
# fields that change how the connection or the body is read, or that gunicorn checks against
# its configuration: a request with any of them is gunicorn's to read
_NOT_HERE = frozenset({
    b"transfer-encoding", b"connection", b"expect", b"upgrade", b"te", b"trailer", b"http2-settings",
    b"proxy-connection", b"keep-alive", b"forwarded", b"x-forwarded-proto", b"x-forwarded-protocol",
    b"x-forwarded-ssl", b"x-forwarded-for",
})


@dataclass(frozen=True)
class FieldLimits:
    """gunicorn's limits on the request line and the header fields (a request near one is not read here)."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @classmethod
    def of(cls, cfg: Any) -> FieldLimits:
        """The worker's (gunicorn's 0, no limit, is read as its default)."""
        return cls(cfg.limit_request_line or cls.line, cfg.limit_request_fields or cls.fields,
                   cfg.limit_request_field_size or cls.field_size)


@dataclass(frozen=True)
class Request:
    path: str
    content_type: str  # as sent, "" without the field
    body: bytes


def parse(buffer: bytes | bytearray, limits: FieldLimits = FieldLimits()) -> Request | None:
    """The request in ``buffer`` if it has the API server's shape and ``buffer`` holds exactly it."""
    data = bytes(buffer)
    head = _HEAD.match(data)
    if head is None or data.find(b"\r\n") >= limits.line:
        return None
    lines = head[2].split(b"\r\n")[:-1]
    if len(lines) >= limits.fields or max(map(len, lines), default=0) >= limits.field_size:
        return None
    once: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in _NOT_HERE:
            return None
        if name in _ONCE:
            if name in once:
                return None
            once[name] = value.strip(b" \t")
    length, content_type = once.get(b"content-length"), once.get(b"content-type", b"")
    if length is None or not _LENGTH.fullmatch(length) or len(data) - head.end() != int(length):
        return None
    return Request(head[1].decode(), content_type.decode(), data[head.end():])


_date = (0, "")


def _http_date() -> str:
    """gunicorn's Date value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, http_date(now))
    return _date[1]


def response(status: str, payload: bytes) -> bytes:
    """The answer as gunicorn sends it for a kept-alive connection (``status``: "200 OK")."""
    return (f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {_http_date()}\r\nConnection: keep-alive\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
