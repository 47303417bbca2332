"""How long a request may take: a share of the API server's ``?timeout=``, or of the default.

Apart from the views so that the worker's event loop (worker.py) can apply it to a request's
body while the request is still arriving, without importing the app and its metrics.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler used below)

# The API server appends ?timeout=10s (the webhook's timeoutSeconds, a Go duration) to the URL.
_GO_DURATION_PART = r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)"
GO_DURATION = re.compile(f"(?:{_GO_DURATION_PART})+")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
BUDGET_SHARE = 0.8  # of the caller's timeout: the rest is for the network and the API server


@lru_cache(maxsize=64)  # the API server sends the same ?timeout= every time: parse it once
def query_budget(query: bytes, default: float) -> float:
    """``request_budget`` of the query's ``timeout``, read as ``request.args.get("timeout")`` would."""
    pairs = parse_qsl(query.decode(errors="replace"), keep_blank_values=True, errors="werkzeug.url_quote")
    return request_budget(next((v for k, v in pairs if k == "timeout"), None), default)


def request_budget(timeout: str | None, default: float) -> float:
    """Seconds this request may take: a share of the API server's ``timeout`` (or the default)."""
    seconds = default
    if timeout and GO_DURATION.fullmatch(timeout):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_GO_DURATION_PART, timeout))
    return max(0.05, min(seconds, default) * BUDGET_SHARE)
