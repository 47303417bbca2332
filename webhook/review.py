"""The protocol layer: AdmissionReview bytes in, AdmissionReview dicts out.

It knows the wire format (admission.k8s.io v1 and v1beta1) and nothing about rules. Requests
are checked here, so a malformed one is a ReviewError with a message (HTTP 4xx), never a crash
further down.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .echo import echo
from .errors import ReviewError

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
# kubectl prints each warning on one line; the API server may truncate longer ones.
MAX_WARNING_LENGTH = 256
MAX_WARNINGS_TOTAL = 4096


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The fields of ``request`` that podgate uses."""

    api_version: str
    uid: str
    kind: str  # request.kind.kind
    group: str
    resource: str
    sub_resource: str
    operation: Operation
    namespace: str | None
    name: str | None
    object: Any
    old_object: Any
    dry_run: bool
    user: Mapping[str, Any]

    @property
    def is_pod(self) -> bool:
        return self.group == "" and self.kind == "Pod"


def _field(obj: Mapping[str, Any], key: str, kind: type, path: str, uid: str | None = None,
           required: bool = False) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise ReviewError(f"{path}/{key} is required", uid=uid)
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ReviewError(f"{path}/{key} must be {'an object' if kind is dict else kind.__name__}", uid=uid)
    return value


def parse_review(body: bytes | str | Mapping[str, Any]) -> AdmissionRequest:
    """Check and unpack an AdmissionReview request; raise ReviewError saying what is wrong."""
    if isinstance(body, Mapping):
        review: Any = body
    else:
        if not body:
            raise ReviewError("empty body: expected an AdmissionReview JSON object")
        try:
            review = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ReviewError(f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("body must be a JSON object (an AdmissionReview)")
    kind, api_version = review.get("kind"), review.get("apiVersion")
    if kind != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {kind!r}")
    if api_version not in API_VERSIONS:
        raise ReviewError(f"apiVersion must be one of {', '.join(API_VERSIONS)}, got {echo(repr(api_version))}")
    request = _field(review, "request", dict, "", required=True)
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("/request/uid is required (a non-empty string)")
    try:
        return _unpack(request, uid, api_version)
    except ReviewError as exc:
        exc.api_version = api_version  # answer in the version asked
        raise


def _unpack(request: Mapping[str, Any], uid: str, api_version: str) -> AdmissionRequest:
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise ReviewError(f"/request/operation must be one of {', '.join(OPERATIONS)}, "
                          f"got {echo(repr(operation))}", uid=uid)
    kind_ref = _field(request, "kind", dict, "/request", uid, required=True)
    resource_ref = _field(request, "resource", dict, "/request", uid) or {}
    group = kind_ref.get("group") or ""
    object_kind = kind_ref.get("kind")
    if not isinstance(object_kind, str) or not isinstance(group, str):
        raise ReviewError("/request/kind must name a group and kind", uid=uid)
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        kind=object_kind,
        group=group,
        resource=str(resource_ref.get("resource") or ""),
        sub_resource=_field(request, "subResource", str, "/request", uid) or "",
        operation=operation,
        namespace=_field(request, "namespace", str, "/request", uid) or None,
        name=_field(request, "name", str, "/request", uid) or None,
        object=request.get("object"),
        old_object=request.get("oldObject"),
        dry_run=bool(_field(request, "dryRun", bool, "/request", uid)),
        user=_field(request, "userInfo", dict, "/request", uid) or {},
    )


def short_warning(text: str) -> str:
    """One warning kubectl shows whole; the full text goes to the log."""
    if len(text) <= MAX_WARNING_LENGTH:
        return text
    return text[: MAX_WARNING_LENGTH - 1].rstrip() + "…"


def build_response(api_version: str, uid: str, *, allowed: bool, message: str | None = None,
                   code: int = 403, warnings: list[str] | None = None,
                   patch: bytes | None = None) -> dict[str, Any]:
    """The one place that shapes an AdmissionReview response (echoing apiVersion and uid)."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "message": message or "denied by podgate"}
    if warnings:
        kept, total = [], 0
        for warning in map(short_warning, warnings):
            total += len(warning)
            if total > MAX_WARNINGS_TOTAL:
                break
            kept.append(warning)
        response["warnings"] = kept
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(patch).decode("ascii")
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def allowed(request: AdmissionRequest, warnings: list[str] | None = None,
            patch: bytes | None = None) -> dict[str, Any]:
    return build_response(request.api_version, request.uid, allowed=True, warnings=warnings, patch=patch)


def denied(request: AdmissionRequest, message: str, warnings: list[str] | None = None,
           code: int = 403) -> dict[str, Any]:
    return build_response(request.api_version, request.uid, allowed=False, message=message, code=code,
                          warnings=warnings)


def errored(api_version: str, uid: str, message: str, code: int = 400) -> dict[str, Any]:
    """A request we could not evaluate (malformed object, internal fault): denied with the reason."""
    return build_response(api_version, uid, allowed=False, message=message, code=code)


def dumps(review: Mapping[str, Any]) -> bytes:
    return orjson.dumps(review)
