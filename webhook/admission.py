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
from .bypass import Requester, requester
from .echo import echo
from .errors import InjectionError, NamespaceUnavailable, PodShapeError, ReviewError, WouldWait
from .pods import Pod, ephemeral_names, new_ephemeral_containers, parse_pod
from .policy import NamespaceLabels, Policy, PolicySet, no_namespace_labels
from .review import AdmissionRequest, allowed, denied, errored, parse_review
from .rules import Finding, evaluate
from .selectors import Labels
from .workloads import WorkloadKind, owner_that_checks, template_pod, workload_kind

log = logging.getLogger("podgate")

Webhook = Literal["validate", "mutate"]
REINVOKED = "probes rewritten in containers added since injection"  # the reason of a reinvocation's patch


@dataclass(frozen=True)
class Context:
    """What a decision depends on besides the request: the policies and namespace labels, and
    whether the Pods are being admitted or already run (``running``: podgate audit)."""

    policies: PolicySet
    namespace_labels: NamespaceLabels = no_namespace_labels
    # The requests are of Pods that already run, read from the cluster: who created them is not
    # known (the meshBypass section judged it at admission, so it is not judged again), and a
    # missing proxy is fixed by a restart.
    running: bool = False


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
    pod: str | None = None  # namespace/name for logs (of the workload, for a workload)
    prefix: str = ""  # a workload's messages name it and its template: 'deployment "shop/web" spec.template: '
    injects: bool = False  # a workload: /mutate would inject the Pods it makes
    made_pod: Any = None  # a workload: the Pod it makes, as /mutate would inject it (for check)

    @property
    def injected(self) -> bool:
        return bool(self.patch)

    @property
    def warnings(self) -> list[str]:
        return [self.prefix + f.violation.message for f in self.findings if f.action == "warn"]

    def rules_fired(self) -> list[str]:
        return [f.violation.rule for f in self.findings]


def _skip_reason(request: AdmissionRequest, webhook: Webhook) -> str | None:
    """Requests podgate answers with a plain allow, without looking at the object."""
    if not request.is_pod:
        return f"not a Pod ({echo(request.kind)})"
    if request.sub_resource and not (request.sub_resource == "ephemeralcontainers" and webhook == "validate"):
        return f"subresource {echo(request.sub_resource)}"
    if request.operation not in ("CREATE", "UPDATE"):
        return f"operation {request.operation}"
    return None


def _shape_error(exc: PodShapeError, which: str = "object", what: str = "this Pod") -> Decision:
    return Decision(False, "malformed object", code=400,
                    message=f"podgate cannot check {what}: request.{which}{exc.path}: {exc.message}")


def _real_requester(request: AdmissionRequest, ctx: Context) -> Requester | None:
    """Who sent the request, unless it is a controller acting for whoever made the owning object
    (webhook.bypass), or the Pod already runs (``Context.running``): then the policy's meshBypass
    section does not judge it."""
    who = requester(request.user)
    return None if who.is_controller or ctx.running else who


def _where(namespace: str, name: str) -> str:
    """namespace/name for messages and logs, bounded (webhook.echo): a forged request may carry
    a megabyte of name."""
    return f"{echo(namespace)}/{echo(name)}"


def _denial_message(where: str, denials: list[str]) -> str:
    return f'pod "{where}" breaks {len(denials)} podgate rule{"s" if len(denials) > 1 else ""}:\n' + "\n".join(denials)


def _governing(pod: Pod, ctx: Context, where: str | None) -> tuple[Policy, Labels | None] | Decision:
    """The policy that governs the Pod and its namespace's labels; or the answer when there is
    none to give (the labels are unknown: retry; the policy exempts the Pod: allow)."""
    try:
        labels = ctx.namespace_labels(pod.namespace)
    except NamespaceUnavailable as exc:
        return Decision(False, "namespace labels unavailable", message=str(exc), code=503, pod=where)
    policy = ctx.policies.governing(pod.namespace, labels)
    exemption = policy.exemption(pod)
    if exemption is not None:
        return Decision(True, f"exempt: {exemption}", policy=policy.name, pod=where)
    return policy, labels


def _verdict(findings: list[Finding], policy: Policy, where: str) -> Decision:
    denials = [f.violation.message for f in findings if f.action == "deny"]
    if denials:
        return Decision(False, "denied", findings, _denial_message(where, denials), policy=policy.name, pod=where)
    return Decision(True, "evaluated", findings, policy=policy.name, pod=where)


def decide(request: AdmissionRequest, webhook: Webhook, ctx: Context) -> Decision:
    """Evaluate one request for the validating or the mutating webhook."""
    workload = workload_kind(request.group, request.kind)
    if workload is not None:
        return _decide_workload(request, workload, webhook, ctx)
    skip = _skip_reason(request, webhook)
    if skip is not None:
        return Decision(True, skip)
    if request.sub_resource == "ephemeralcontainers":
        return _decide_ephemeral(request, ctx)
    if request.operation == "UPDATE" and webhook == "mutate":
        return Decision(True, "injection happens on CREATE only")
    try:
        pod = parse_pod(request.object, request.namespace, detailed=webhook == "validate")
    except PodShapeError as exc:
        return _shape_error(exc)
    where = _where(pod.namespace, pod.display_name)
    governing = _governing(pod, ctx, where)
    if isinstance(governing, Decision):
        return governing
    policy, labels = governing
    if webhook == "mutate":
        return _mutate(pod, policy, labels, where)
    refusal = _opt_in_refusal(pod, policy, request, where)
    if refusal is not None:
        return refusal
    who = _real_requester(request, ctx)
    findings = evaluate(policy.subject(pod, labels, who, running=ctx.running), policy.actions)
    if request.operation == "UPDATE" and findings:
        findings = _new_findings(findings, request, policy, labels, who)
    return _verdict(findings, policy, where)


def _opt_in_refusal(pod: Pod, policy: Policy, request: AdmissionRequest, where: str) -> Decision | None:
    """/validate denies the opt-in annotation that /mutate refuses ("TRUE"): otherwise, with the
    mutating webhook failing open, such a Pod would be admitted without its proxy. An UPDATE that
    keeps the value an old Pod already had is let through, as its other old findings are."""
    if policy.mesh is None:
        return None
    try:
        inject.check_opt_in(pod, policy.mesh)
    except InjectionError as exc:
        if request.operation == "UPDATE":
            old = request.old_object.get("metadata") if isinstance(request.old_object, dict) else None
            old_annotations = old.get("annotations") if isinstance(old, dict) else None
            if isinstance(old_annotations, dict) \
                    and old_annotations.get(policy.mesh.annotation) == pod.annotations.get(policy.mesh.annotation):
                return None
        return Decision(False, "invalid injection override", message=f'pod "{where}": {exc}', code=400,
                        policy=policy.name, pod=where)
    return None


def _new_findings(findings: list[Finding], request: AdmissionRequest, policy: Policy, labels: Labels | None,
                  who: Requester | None) -> list[Finding]:
    """On UPDATE, keep only what the old object did not already have: Pods admitted before podgate
    (or before a policy change) can still be labelled and annotated."""
    try:
        old: Pod = parse_pod(request.old_object, request.namespace)
    except PodShapeError:
        return findings
    before = {f.violation for f in evaluate(policy.subject(old, labels, who), policy.actions)}
    return [f for f in findings if f.violation not in before]


def _mutate(pod: Pod, policy: Policy, labels: Labels | None, where: str) -> Decision:
    try:
        plan = inject.plan(pod, policy, labels)
    except InjectionError as exc:
        return Decision(False, "invalid injection override", message=f'pod "{where}": {exc}', code=400,
                        policy=policy.name, pod=where)
    except PodShapeError as exc:
        return _shape_error(exc)
    if plan.skip is not None:
        return Decision(True, f"not injected: {plan.skip}", policy=policy.name, pod=where)
    reason = REINVOKED if plan.reinvoked else "injected"
    return Decision(True, reason, patch=plan.patch, policy=policy.name, pod=where)


# --- ephemeral containers (kubectl debug) ------------------------------------------------------

def _decide_ephemeral(request: AdmissionRequest, ctx: Context) -> Decision:
    """An ``ephemeralcontainers`` UPDATE: the containers it adds, against the rules that apply to
    ephemeral containers. What the Pod had before is not judged again."""
    if request.old_object is None:
        return Decision(False, "malformed object", code=400,
                        message="podgate cannot check this ephemeral container update: request.oldObject is missing "
                                "(the Pod before the update: which ephemeral containers are new)")
    try:
        before = ephemeral_names(request.old_object)
    except PodShapeError as exc:
        return _shape_error(exc, "oldObject")
    try:
        pod = parse_pod(request.object, request.namespace)
        added = new_ephemeral_containers(pod, before)
    except PodShapeError as exc:
        return _shape_error(exc)
    where = _where(pod.namespace, pod.display_name)
    if not added:
        return Decision(True, "no ephemeral container added", pod=where)
    governing = _governing(pod, ctx, where)
    if isinstance(governing, Decision):
        return governing
    policy, labels = governing
    findings = evaluate(policy.subject(pod, labels, _real_requester(request, ctx), ephemeral=added), policy.actions)
    return _verdict(findings, policy, where)


# --- workloads: their Pod template, as /mutate would inject it, then as /validate judges it ---

@dataclass
class _Judged:
    """A template's findings under its governing policy, and whether /mutate injects its Pods."""

    findings: list[Finding]
    policy: Policy
    injected: bool
    pod: Any  # the Pod the workload makes, after /mutate's patch


def _judge_template(obj: Any, kind: WorkloadKind, namespace: str, ctx: Context, who: Requester | None,
                    which: str, what: str) -> Decision | _Judged:
    """The Pod the workload's controller would create, through /mutate (the patch applied as the
    API server applies it) and then the validate rules: exactly the path of the Pod itself. A
    Decision is the final answer (malformed, exempt, an injection /mutate refuses)."""
    template_at = "/" + "/".join(kind.template_path)
    try:
        raw = template_pod(obj, kind, namespace)  # its errors name the field from the workload's top
    except PodShapeError as exc:
        return _shape_error(exc, which, what)
    try:
        pod = parse_pod(raw, namespace, detailed=False)
    except PodShapeError as exc:  # a field of the Pod: under the template
        return _shape_error(PodShapeError(template_at + exc.path, exc.message), which, what)
    governing = _governing(pod, ctx, None)
    if isinstance(governing, Decision):
        return governing
    policy, labels = governing
    try:
        plan = inject.plan(pod, policy, labels)
        if plan.patch:
            raw = inject.apply_patch(raw, plan.patch)  # the request's object stays as sent
        pod = parse_pod(raw, namespace)
    except InjectionError as exc:
        return Decision(False, "invalid injection override", code=400, policy=policy.name,
                        message=f"{what} {kind.template_field}: podgate's mutating webhook would refuse its Pods: {exc}")
    except PodShapeError as exc:
        return _shape_error(PodShapeError(template_at + exc.path, exc.message), which, what)
    return _Judged(evaluate(policy.subject(pod, labels, who), policy.actions), policy, bool(plan.patch), raw)


def _decide_workload(request: AdmissionRequest, kind: WorkloadKind, webhook: Webhook, ctx: Context) -> Decision:
    """A Deployment, StatefulSet, ... : denied for what its Pods would be denied for, at apply time."""
    if webhook == "mutate":
        return Decision(True, f"not a Pod ({kind.kind}): podgate injects the Pods it makes")
    if request.sub_resource:
        return Decision(True, f"subresource {echo(request.sub_resource)}")  # scale, status: no template change
    if request.operation not in ("CREATE", "UPDATE"):
        return Decision(True, f"operation {request.operation}")
    obj = request.object
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = request.namespace or (meta.get("namespace") if isinstance(meta, dict) else None) or "default"
    if not isinstance(namespace, str):
        namespace = "default"
    where = _where(namespace, name if isinstance(name, str) and name else request.name or "<unnamed>")
    what = f'{kind.kind.lower()} "{where}"'
    who = requester(request.user)
    if who.is_controller and (owner := owner_that_checks(obj, kind)) is not None:
        return Decision(True, f"owned by {owner}, whose template was checked", pod=where)
    judged = _judge_template(obj, kind, namespace, ctx, None if who.is_controller else who, "object", what)
    if isinstance(judged, Decision):
        judged.pod = where
        return judged
    findings = judged.findings
    if request.operation == "UPDATE" and findings and request.old_object is not None:
        old = _judge_template(request.old_object, kind, namespace, ctx, None if who.is_controller else who,
                              "oldObject", what)
        if isinstance(old, _Judged):
            before = {f.violation for f in old.findings}
            findings = [f for f in findings if f.violation not in before]
    prefix = f"{what} {kind.template_field}: "
    denials = [prefix + f.violation.message for f in findings if f.action == "deny"]
    decision = Decision(not denials, "denied" if denials else "evaluated", findings, "\n".join(denials) or None,
                        policy=judged.policy.name, pod=where, prefix=prefix, injects=judged.injected,
                        made_pod=judged.pod)
    return decision


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
    with the reason when it cannot be evaluated, so the user sees why in kubectl. The one
    exception that passes is WouldWait, raised only by lookups that were asked not to wait.
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
    except WouldWait:
        raise
    except Exception:  # a bug must not become a 500: fail closed, with a reason, and log it
        log.exception("internal error evaluating request %s", request.uid)
        decision = Decision(False, "internal error", code=500,
                            message="podgate hit an internal error evaluating this Pod; see its logs")
    return Outcome(respond(request, decision), decision, request)
