"""HTTP routes: read the body, hand it to ``admission.review``, log, and send the answer.

The API server's requests (a POST of a JSON body that has arrived whole) do not go through
Flask at all: ``DirectAdmission`` sits in front of the Flask app and answers them as a plain WSGI
callable. Flask's request context, URL matching and Response object cost several times what the
review itself does, on every Pod creation. Everything else (the other routes, chunked or partly
received bodies, a wrong method or media type, errors) goes to the Flask views, which answer
those cases as before; both paths answer through ``_answer``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import HTTP_STATUS_CODES

from ..admission import Context, Outcome, Webhook, review
from ..errors import ReviewError, WouldWait
from ..policy import NamespaceLabels
from ..review import allowed, dumps, parse_review
from . import metrics
from .budget import query_budget
from .state import State, error_body, json_error
from .worker import CLOSE_KEY, DEADLINE_KEY

bp = Blueprint("admission", __name__)
# Registered only with Settings.bench_baseline (PODGATE_BENCH_BASELINE=1): never in production.
baseline_bp = Blueprint("baseline", __name__)
log = logging.getLogger("podgate.decision")
errors = logging.getLogger("podgate")


def _state() -> State:
    return current_app.extensions["podgate"]


def _held_length(environ: dict[str, Any]) -> int | None:
    """The body's length if the server already holds the whole body, so reading it cannot block
    (None: it may not have arrived, or its length is not known up front).

    The usual admission request arrives in one piece with its headers, so the deadline needs no
    socket timeout; setting one and restoring it would be two system calls per request, each
    giving up the GIL, and getting it back from the other threads costs more than the review.
    Anything unusual (chunked, partly received, another server) takes the guarded path.
    """
    stream = environ.get("wsgi.input")
    if isinstance(stream, io.BytesIO):  # a test client's, or a body another server read ahead
        length = environ.get("CONTENT_LENGTH")
        return int(length) if isinstance(length, str) and length.isdigit() else None
    reader = getattr(stream, "reader", None)  # gunicorn's Body, over a length reader
    length = getattr(reader, "length", None)
    buf = getattr(getattr(reader, "unreader", None), "buf", None)
    if type(length) is not int or not isinstance(buf, io.BytesIO):
        return None
    with buf.getbuffer() as held:
        return length if held.nbytes >= length else None


class MalformedBody(Exception):
    """The body's framing is broken (a bad chunk size, a chunk without its CRLF, a bad trailer)."""


def _read_body(deadline: float) -> bytes | None:
    """The body, read within the deadline and the size cap (None: the client was too slow).

    A client that trickles its body must not hold a worker thread past the time the API server
    would wait anyway: gunicorn hands us its socket, and every read gets the time that is left.
    Reading in a loop also enforces the cap on chunked bodies (Werkzeug's ``get_data`` stops
    silently at MAX_CONTENT_LENGTH; its stream raises 413 on the read after it).
    """
    environ = request.environ
    sock = None if _held_length(environ) is not None else environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock is not None else None
    stream = request.stream  # over MAX_CONTENT_LENGTH by Content-Length: 413 here, nothing read
    body = bytearray()
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and sock is not None:  # a body held whole is read, however late
                return None
            if sock is not None:
                sock.settimeout(remaining)
            try:
                chunk = stream.read(64 * 1024)
            except ParseException as exc:  # gunicorn's chunked-body parser
                environ[CLOSE_KEY] = True  # where the next request would start is unknown
                raise MalformedBody(str(exc)[:200]) from None
            except ClientDisconnected:
                if time.perf_counter() >= deadline - 0.05:
                    return None  # the socket timed out
                raise
            if not chunk:
                return bytes(body)
            body += chunk
    finally:
        if sock is not None:
            sock.settimeout(previous)


def _admit(webhook: Webhook) -> Response:
    started = time.perf_counter()
    if request.mimetype != "application/json":
        return json_error(415, f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
    state = _state()
    deadline = started + query_budget(request.query_string, state.settings.request_timeout)
    # the connection's own deadline runs from its accept: TLS handshake and headers count too
    deadline = min(deadline, request.environ.get(DEADLINE_KEY, deadline))
    try:
        body = _read_body(deadline)
    except MalformedBody as exc:
        return json_error(400, f"malformed request body: {exc}")
    if body is None:
        request.environ[CLOSE_KEY] = True  # the rest of the body may still come: never read it
        log.warning("request body not received in time", extra={"fields": {"webhook": webhook}})
        # the worker closes the connection (CLOSE_KEY): draining the rest would hold the thread
        return json_error(408, "the request body did not arrive within the time budget")
    status, payload = _answer(state, webhook, body, started)
    return Response(payload, status=status, mimetype="application/json")


Report = Callable[[Webhook, Outcome, float], None]


def _answer(state: State, webhook: Webhook, body: bytes, started: float,
            labels: NamespaceLabels | None = None, report: Report | None = None) -> tuple[int, bytes]:
    """Review the body, record and report it: the HTTP status and body of the answer.

    ``labels``: the namespace labels lookup, if not the state's own (one that must not wait);
    ``report``: what takes the outcome, if not the state's reporter.
    """
    policies = state.store.current  # one read: the whole request sees one policy set
    assert policies is not None  # create_app refuses to start without one
    outcome = review(body, webhook, Context(policies, labels or state.namespace_labels))
    if state.recorder is not None and outcome.request is not None:
        state.recorder.record(webhook, body, outcome.request)
    (report or state.reporter.report)(webhook, outcome, time.perf_counter() - started)
    if outcome.response is None:
        assert outcome.error is not None
        return outcome.error.status, error_body(outcome.error.status, outcome.error.message)
    return 200, dumps(outcome.response)


WEBHOOKS: dict[str, Webhook] = {"/validate": "validate", "/mutate": "mutate"}
StartResponse = Callable[..., Any]


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class DirectAdmission:
    """``/validate`` and ``/mutate`` for a JSON body the server holds whole, in front of Flask.

    ``answer`` is the same for the worker's event loop, which has read the request itself
    (lane.py): it never waits (an uncached namespace is left to a thread, and so is recording,
    which writes a file), and says None for whatever is not an admission request it can answer.
    Its answers are reported in ``idle``, once they are sent.
    """

    def __init__(self, app: Flask) -> None:
        self.flask = app.wsgi_app
        self.state: State = app.extensions["podgate"]
        self.max_body = app.config["MAX_CONTENT_LENGTH"] or float("inf")
        self.baseline = self.state.settings.bench_baseline  # /baseline is answered here too, as /validate
        self._unreported: list[tuple[Webhook, Outcome, float]] = []  # answered by ``answer``

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        webhook = WEBHOOKS.get(environ.get("PATH_INFO", ""))
        if webhook is None or environ.get("REQUEST_METHOD") != "POST" \
                or (length := _held_length(environ)) is None or length > self.max_body \
                or _media_type(environ.get("CONTENT_TYPE", "")) != "application/json":
            return self.flask(environ, start_response)
        status, payload = self._respond(webhook, environ["wsgi.input"].read(length))
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def answer(self, path: str, content_type: str, body: bytes) -> tuple[str, bytes] | None:
        """The status line and JSON body for a whole POST of ``body`` to ``path``, answered without
        waiting (None: this is the Flask app's to answer, or a thread's, as it might wait)."""
        if len(body) > self.max_body or _media_type(content_type) != "application/json":
            return None
        if path == "/baseline" and self.baseline:
            status, payload = _baseline_answer(body)
            return _status_line(status), payload
        webhook = WEBHOOKS.get(path)
        if webhook is None or self.state.recorder is not None:
            return None
        try:
            return self._respond(webhook, body, self.state.labels_without_waiting, self._unreported_append)
        except WouldWait:
            return None

    def _unreported_append(self, webhook: Webhook, outcome: Outcome, seconds: float) -> None:
        self._unreported.append((webhook, outcome, seconds))

    def idle(self) -> float | None:
        """Report what ``answer`` answered, now that it is sent (the worker's event loop calls
        this before it waits for more, and when it stops). How soon to call again, if at all."""
        if self._unreported:
            report = self.state.reporter.report
            for webhook, outcome, seconds in self._unreported:
                report(webhook, outcome, seconds, wait=False)
            self._unreported.clear()
        return self.state.reporter.drain()

    def _respond(self, webhook: Webhook, body: bytes, labels: NamespaceLabels | None = None,
                 report: Report | None = None) -> tuple[str, bytes]:
        started = time.perf_counter()
        try:
            status, payload = _answer(self.state, webhook, body, started, labels, report)
        except WouldWait:
            raise
        except Exception:  # as the Flask app's handler: logged, and a 500 without the details
            errors.exception("unhandled error")
            status, payload = 500, error_body(500, "internal error; see podgate's logs")
        return _status_line(status), payload


def _status_line(status: int) -> str:
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


@bp.post("/validate")
def validate() -> Response:
    return _admit("validate")


@bp.post("/mutate")
def mutate() -> Response:
    return _admit("mutate")


@baseline_bp.post("/baseline")
def baseline() -> Response:
    """The benchmark's yardstick: the HTTP and JSON work any webhook must do, and nothing else.

    Same checks, body read, AdmissionReview parse and response rendering as /validate, but no
    policy, no rules, no log line: what /validate costs beyond this is what podgate costs.
    """
    if request.mimetype != "application/json":
        return json_error(415, f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
    status, payload = _baseline_answer(request.get_data(cache=False))
    return Response(payload, status=status, mimetype="application/json")


def _baseline_answer(body: bytes) -> tuple[int, bytes]:
    try:
        req = parse_review(body)
    except ReviewError as exc:
        return exc.status, error_body(exc.status, exc.message)
    return 200, dumps(allowed(req))


@bp.get("/healthz")
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


def metrics_view() -> Response:
    """Prometheus exposition, summed over all gunicorn workers (registered when metrics are on)."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/readyz")
def readyz() -> Response:
    ready, detail = _state().readiness()
    return Response(detail + "\n", status=200 if ready else 503, mimetype="text/plain")
