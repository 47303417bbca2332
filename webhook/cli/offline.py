"""What the API server does with podgate's answers, offline: for ``check`` and ``test``.

The API server calls the mutating webhook, applies the JSON Patch it returns, then calls the
validating webhook with the patched object, and collects the warnings of both. (A workload goes
to the validating webhook only: it judges the template as /mutate would inject it, in the core.) ``admit`` does
the same with ``admission.review`` (the function the server uses) and jsonpatch (the patch is
applied as sent, base64 and all, so a wrong patch shows here as it would in a cluster).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonpatch
import orjson

from ..admission import Context, Decision, Outcome, review
from ..rules import Finding
from ..workloads import WorkloadKind

Step = Literal["validate", "mutate", "admit"]  # admit: mutate, apply the patch, validate
STEPS: tuple[Step, ...] = ("validate", "mutate", "admit")


def webhook_from_name(name: str) -> Literal["validate", "mutate"]:
    """The webhook a recorded request was sent to, from its file name (``serve --record`` names
    files ``NNNN_mutate_...`` or ``NNNN_validate_...``): mutate if the name says so."""
    return "mutate" if "mutate" in name else "validate"


# Who sends an offline request, unless told (check --as): a user that no meshBypass grant names.
OFFLINE_USER: Mapping[str, Any] = {"username": "podgate-offline"}


def pod_review(pod: Any, namespace: str, *, uid: str = "podgate-offline", dry_run: bool = True,
               user: Mapping[str, Any] = OFFLINE_USER) -> dict[str, Any]:
    """The AdmissionReview the API server would send for creating this Pod."""
    return object_review(pod, namespace, "", "Pod", uid=uid, dry_run=dry_run, user=user)


def workload_review(obj: Any, namespace: str, kind: WorkloadKind, *, uid: str = "podgate-offline",
                    user: Mapping[str, Any] = OFFLINE_USER) -> dict[str, Any]:
    """The AdmissionReview the API server would send for creating this workload (in the version
    the webhook asks for: the chart registers apps/v1 and batch/v1, matchPolicy Equivalent)."""
    return object_review(obj, namespace, kind.group, kind.kind, uid=uid, user=user)


def object_review(obj: Any, namespace: str, group: str, kind: str, *, uid: str = "podgate-offline",
                  dry_run: bool = True, user: Mapping[str, Any] = OFFLINE_USER) -> dict[str, Any]:
    """The AdmissionReview for ``user`` (``request.userInfo``) creating ``obj`` of ``group``/``kind``
    (version v1)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    ref = {"group": group, "version": "v1", "kind": kind}
    resource = {"group": group, "version": "v1", "resource": kind.lower() + "s"}
    request: dict[str, Any] = {
        "uid": uid, "kind": ref, "resource": resource, "requestKind": ref, "requestResource": resource,
        "operation": "CREATE", "namespace": namespace, "object": obj, "oldObject": None,
        "dryRun": dry_run, "userInfo": dict(user)}
    if isinstance(name, str) and name:
        request["name"] = name
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@dataclass
class Admission:
    """The end result of one request through the steps asked for."""

    step: Step
    mutation: Outcome | None = None
    validation: Outcome | None = None
    object: Any = None  # the request's object after the mutating patch (if any)
    patch: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the request was rejected without an AdmissionReview (HTTP 4xx)

    @property
    def last(self) -> Outcome | None:
        return self.validation or self.mutation

    @property
    def decision(self) -> Decision | None:
        """The decision that settled the request: validation's, or mutation's if it stopped there."""
        return self.last.decision if self.last else None

    @property
    def allowed(self) -> bool:
        last = self.last
        return bool(last and last.response and last.response["response"]["allowed"])

    @property
    def status(self) -> dict[str, Any]:
        last = self.last
        return (last.response or {}).get("response", {}).get("status", {}) if last else {}

    @property
    def injected(self) -> bool:
        return bool(self.patch)

    @property
    def warnings(self) -> list[str]:
        """Warnings of every webhook called, as kubectl shows them."""
        out: list[str] = []
        for outcome in (self.mutation, self.validation):
            if outcome is not None and outcome.response is not None:
                out.extend(outcome.response["response"].get("warnings") or ())
        return out

    @property
    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for outcome in (self.mutation, self.validation):
            if outcome is not None and outcome.decision is not None:
                out.extend(outcome.decision.findings)
        return out


def _with_object(body: Mapping[str, Any], obj: Any) -> dict[str, Any]:
    request = dict(body["request"])
    request["object"] = obj
    return {**body, "request": request}


def admit(body: Mapping[str, Any], step: Step, ctx: Context) -> Admission:
    """Run one AdmissionReview request through the mutating and/or validating webhook."""
    result = Admission(step)
    request = body.get("request") if isinstance(body, Mapping) else None
    result.object = request.get("object") if isinstance(request, Mapping) else None
    if step in ("mutate", "admit"):
        outcome = result.mutation = review(body, "mutate", ctx)
        if outcome.response is None:
            result.error = outcome.error.message if outcome.error else "rejected"
            return result
        answer = outcome.response["response"]
        if not answer["allowed"]:
            return result  # the API server stops at the first denial
        if answer.get("patch"):
            result.patch = orjson.loads(base64.b64decode(answer["patch"]))
            result.object = jsonpatch.apply_patch(result.object, result.patch)  # a copy: in_place=False
            body = _with_object(body, result.object)
    if step in ("validate", "admit"):
        outcome = result.validation = review(body, "validate", ctx)
        if outcome.response is None:
            result.error = outcome.error.message if outcome.error else "rejected"
    return result
