"""HTTP routes: read the body, hand it to ``admission.review``, log, and send the answer."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, request

from . import metrics
from .admission import Context, Outcome, Webhook, review
from .app import State, json_error
from .errors import ReviewError
from .review import allowed, dumps, parse_review

bp = Blueprint("admission", __name__)
# Registered only with Settings.bench_baseline (PODGATE_BENCH_BASELINE=1): never in production.
baseline_bp = Blueprint("baseline", __name__)
log = logging.getLogger("podgate.decision")


def _state() -> State:
    return current_app.extensions["podgate"]


def _admit(webhook: Webhook) -> Response:
    started = time.perf_counter()
    if request.mimetype != "application/json":
        return json_error(415, f"Content-Type must be application/json, got {request.mimetype or 'none'!r}")
    body = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before reading it whole
    state = _state()
    policies = state.store.current  # one read: the whole request sees one policy set
    assert policies is not None  # create_app refuses to start without one
    outcome = review(body, webhook, Context(policies, state.namespace_labels))
    if state.recorder is not None and outcome.request is not None:
        state.recorder.record(webhook, body, outcome.request)
    elapsed = time.perf_counter() - started
    _log(webhook, outcome, elapsed)
    metrics.observe(webhook, outcome, elapsed)
    if outcome.response is None:
        assert outcome.error is not None
        return json_error(outcome.error.status, outcome.error.message)
    return Response(dumps(outcome.response), mimetype="application/json")


def _log(webhook: Webhook, outcome: Outcome, seconds: float) -> None:
    req, decision = outcome.request, outcome.decision
    fields = {"webhook": webhook, "latency_ms": round(seconds * 1000, 3)}
    if req is not None:
        fields.update(uid=req.uid, operation=req.operation, namespace=req.namespace, dry_run=req.dry_run)
    if decision is not None:
        fields.update(allowed=decision.allowed, reason=decision.reason, pod=decision.pod, policy=decision.policy,
                      rules=decision.rules_fired(), injected=decision.injected)
        if decision.findings:
            fields["violations"] = [f.to_json() for f in decision.findings]
    elif outcome.error is not None:
        fields.update(allowed=False, reason="bad request", error=outcome.error.message)
    log.info("decision", extra={"fields": fields})


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
    try:
        req = parse_review(request.get_data(cache=False))
    except ReviewError as exc:
        return json_error(exc.status, exc.message)
    return Response(dumps(allowed(req)), mimetype="application/json")


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
