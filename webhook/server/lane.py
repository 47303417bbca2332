"""The API server's request, read and answered without gunicorn's parser and WSGI machinery.

Every Pod creation sends the same shape of request: ``POST /validate?timeout=10s HTTP/1.1``, a
handful of plain headers, a Content-Length body, over a kept-alive connection. For that shape
gunicorn's parser, its WSGI environ and response object cost several times what the review does.
``parse`` reads exactly that shape and nothing more: anything it does not fully understand (another
method, path or version, a header it would have to act on, an odd byte, a second Content-Length)
makes it return None, and the request goes to gunicorn as before. So it never reads a request
differently from gunicorn (tests/test_lane.py compares the two on generated requests); it only
reads fewer. ``response`` writes the bytes gunicorn would have written for the same answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from gunicorn import SERVER
from gunicorn.util import http_date

PATHS = (b"/validate", b"/mutate")
_REQUEST_LINE = re.compile(rb"POST (/validate|/mutate)(?:\?[\x21\x22\x24-\x7e]*)? HTTP/1\.1\r\n")
# name: a token without "_" (gunicorn drops or maps those); value: visible ASCII, single spaces inside
_FIELD = re.compile(rb"([!#$%&'*+\-.^`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e]+(?: [\x21-\x7e]+)*)?)[ \t]*\r\n")
_LENGTH = re.compile(rb"[0-9]{1,10}")
# fields that change how the connection or the body is read, or that gunicorn checks against
# its configuration: a request with any of them is gunicorn's to read
_NOT_HERE = frozenset({
    b"transfer-encoding", b"connection", b"expect", b"upgrade", b"te", b"trailer", b"http2-settings",
    b"proxy-connection", b"keep-alive", b"forwarded", b"x-forwarded-proto", b"x-forwarded-protocol",
    b"x-forwarded-ssl", b"x-forwarded-for", b"script-name",
})


@dataclass(frozen=True)
class FieldLimits:
    """gunicorn's limits on the request line and the header fields (a request near one is not read here)."""

    line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @classmethod
    def of(cls, cfg: Any) -> FieldLimits:
        return cls(cfg.limit_request_line or 4094, cfg.limit_request_fields or 100,
                   cfg.limit_request_field_size or 8190)


@dataclass(frozen=True)
class Request:
    path: str
    content_type: str  # as sent, "" without the field
    body: bytes


def parse(buffer: bytes | bytearray, limits: FieldLimits = FieldLimits()) -> Request | None:
    """The request in ``buffer`` if it has the API server's shape and ``buffer`` holds exactly it."""
    data = bytes(buffer)
    line = _REQUEST_LINE.match(data)
    if line is None or line.end() - 2 >= limits.line:
        return None
    at, length, content_type, fields = line.end(), None, None, 0
    while not data.startswith(b"\r\n", at):
        field = _FIELD.match(data, at)
        fields += 1
        if field is None or fields >= limits.fields or field.end() - at - 2 >= limits.field_size:
            return None
        at = field.end()
        name = field[1].lower()
        if name in _NOT_HERE:
            return None
        if name == b"content-length":
            if length is not None or not _LENGTH.fullmatch(field[2]):
                return None
            length = int(field[2])
        elif name == b"content-type":
            if content_type is not None:
                return None
            content_type = field[2]
    at += 2
    if length is None or len(data) - at != length:
        return None
    return Request(line[1].decode(), (content_type or b"").decode(), data[at:])


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
