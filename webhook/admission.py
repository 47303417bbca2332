"""The one function from AdmissionReview request to response, shared by server, CLI and tests.

``decide`` turns a parsed request into a Decision (the domain answer: findings, patch, why);
``respond`` renders a Decision as an AdmissionReview; ``review`` does both from raw bytes and
turns every malformed request into a clear answer instead of an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from . import inject
from .errors import InjectionError, NamespaceUnavailable, PodShapeError, ReviewError
from .pods import Pod, parse_pod
from .policy import NamespaceLabels, PolicySet, no_namespace_labels
from .review import AdmissionRequest, allowed, denied, errored, parse_review
from .rules import Finding, evaluate

log = logging.getLogger("podgate")

Webhook = Literal["validate", "mutate"]


@dataclass(frozen=True)
class Context:
    """What a decision depends on besides the request: the policies and namespace labels."""

    policies: PolicySet
    namespace_labels: NamespaceLabels = no_namespace_labels


@dataclass
class Decision:
    """The domain answer to one request, before it is rendered for the wire."""

    allowed: bool
    reason: str  # why: "evaluated", "not a Pod", "exempt: ...", "injected", ...
    findings: list[Finding] = field(default_factory=list)
    message: str | None = None  # the denial message
    code: int = 403
    patch: list[dict[str, Any]] | None = None
    policy: str | None = None
    pod: str | None = None  # namespace/name for logs

    @property
    def injected(self) -> bool:
        return bool(self.patch)

    @property
    def warnings(self) -> list[str]:
        return [f.violation.message for f in self.findings if f.action == "warn"]

    def rules_fired(self) -> list[str]:
        return [f.violation.rule for f in self.findings]


def _skip_reason(request: AdmissionRequest) -> str | None:
    """Requests podgate answers with a plain allow, without looking at the object."""
    if not request.is_pod:
        return f"not a Pod ({request.kind})"
    if request.sub_resource:
        return f"subresource {request.sub_resource}"
    if request.operation not in ("CREATE", "UPDATE"):
        return f"operation {request.operation}"
    return None


def _shape_error(exc: PodShapeError, which: str = "object") -> Decision:
    return Decision(False, "malformed object", code=400,
                    message=f"podgate cannot check this Pod: request.{which}{exc.path}: {exc.message}")


def decide(request: AdmissionRequest, webhook: Webhook, ctx: Context) -> Decision:
    """Evaluate one request for the validating or the mutating webhook."""
    skip = _skip_reason(request)
    if skip is not None:
        return Decision(True, skip)
    if request.operation == "UPDATE" and webhook == "mutate":
        return Decision(True, "injection happens on CREATE only")
    try:
        pod = parse_pod(request.object, request.namespace, detailed=webhook == "validate")
    except PodShapeError as exc:
        return _shape_error(exc)
    where = f"{pod.namespace}/{pod.display_name}"
    try:
        labels = ctx.namespace_labels(pod.namespace)
    except NamespaceUnavailable as exc:
        return Decision(False, "namespace labels unavailable", message=str(exc), code=503, pod=where)
    policy = ctx.policies.governing(pod.namespace, labels)
    exemption = policy.exemption(pod)
    if exemption is not None:
        return Decision(True, f"exempt: {exemption}", policy=policy.name, pod=where)
    if webhook == "mutate":
        return _mutate(pod, policy, labels, where)
    findings = evaluate(policy.subject(pod, labels), policy.actions)
    if request.operation == "UPDATE" and findings:
        findings = _new_findings(findings, request, policy, labels)
    denials = [f.violation.message for f in findings if f.action == "deny"]
    if denials:
        message = f'pod "{where}" breaks {len(denials)} podgate rule{"s" if len(denials) > 1 else ""}:\n' \
                  + "\n".join(denials)
        return Decision(False, "denied", findings, message, policy=policy.name, pod=where)
    return Decision(True, "evaluated", findings, policy=policy.name, pod=where)


def _new_findings(findings: list[Finding], request: AdmissionRequest, policy: Any, labels: Any) -> list[Finding]:
    """On UPDATE, keep only what the old object did not already have: Pods admitted before podgate
    (or before a policy change) can still be labelled and annotated."""
    try:
        old: Pod = parse_pod(request.old_object, request.namespace)
    except PodShapeError:
        return findings
    before = {f.violation for f in evaluate(policy.subject(old, labels), policy.actions)}
    return [f for f in findings if f.violation not in before]


def _mutate(pod: Pod, policy: Any, labels: Any, where: str) -> Decision:
    try:
        plan = inject.plan(pod, policy, labels)
    except InjectionError as exc:
        return Decision(False, "invalid injection override", message=f'pod "{where}": {exc}', code=400,
                        policy=policy.name, pod=where)
    except PodShapeError as exc:
        return _shape_error(exc)
    if plan.skip is not None:
        return Decision(True, f"not injected: {plan.skip}", policy=policy.name, pod=where)
    reason = "probes rewritten in containers added since injection" if plan.reinvoked else "injected"
    return Decision(True, reason, patch=plan.patch, policy=policy.name, pod=where)


def respond(request: AdmissionRequest, decision: Decision) -> dict[str, Any]:
    """Render a Decision as the AdmissionReview the API server expects."""
    if not decision.allowed:
        return denied(request, decision.message or decision.reason, decision.warnings, decision.code)
    patch = orjson.dumps(decision.patch) if decision.patch else None
    return allowed(request, decision.warnings, patch)


@dataclass
class Outcome:
    """A full answer: the response to send and, when the request was understood, its decision."""

    response: dict[str, Any] | None  # None: no AdmissionReview can be built; send an HTTP error
    decision: Decision | None = None
    request: AdmissionRequest | None = None
    error: ReviewError | None = None

    @property
    def http_status(self) -> int:
        return self.error.status if self.response is None and self.error else 200


def review(body: bytes | Mapping[str, Any], webhook: Webhook, ctx: Context) -> Outcome:
    """Raw AdmissionReview request -> Outcome. Never raises for bad input.

    A request that names itself (has a uid) is always answered with an AdmissionReview, denying
    with the reason when it cannot be evaluated, so the user sees why in kubectl.
    """
    try:
        request = parse_review(body)
    except ReviewError as exc:
        if exc.uid is None:
            return Outcome(None, error=exc)
        return Outcome(errored(exc.api_version, exc.uid, f"podgate cannot read this request: {exc.message}"),
                       error=exc)
    try:
        decision = decide(request, webhook, ctx)
    except Exception:  # a bug must not become a 500: fail closed, with a reason, and log it
        log.exception("internal error evaluating request %s", request.uid)
        decision = Decision(False, "internal error", code=500,
                            message="podgate hit an internal error evaluating this Pod; see its logs")
    return Outcome(respond(request, decision), decision, request)
