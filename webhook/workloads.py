"""Workloads: the objects that make Pods from a template, and the Pod each of them would make.

The server (``/validate`` on a Deployment), ``podgate check`` and ``podgate inject`` all read a
workload's Pod template here, so they agree on where it is, on what a malformed one is, and on
which workloads are left to their owner (a ReplicaSet of a Deployment, a Job of a CronJob: the
owner was checked, and its controller must not be blocked in the middle of a rollout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PodShapeError


@dataclass(frozen=True, slots=True)
class WorkloadKind:
    """A kind of object with a Pod template: its API group and where the template is."""

    kind: str
    group: str
    template_path: tuple[str, ...]
    skip_when_owned_by: str | None = None  # a controller kind that checks this kind's template itself

    @property
    def template_field(self) -> str:
        """``spec.template`` or ``spec.jobTemplate.spec.template``: for messages."""
        return ".".join(self.template_path)


WORKLOAD_KINDS: dict[str, WorkloadKind] = {w.kind: w for w in (
    WorkloadKind("Deployment", "apps", ("spec", "template")),
    WorkloadKind("StatefulSet", "apps", ("spec", "template")),
    WorkloadKind("DaemonSet", "apps", ("spec", "template")),
    WorkloadKind("ReplicaSet", "apps", ("spec", "template"), skip_when_owned_by="Deployment"),
    WorkloadKind("ReplicationController", "", ("spec", "template")),
    WorkloadKind("Job", "batch", ("spec", "template"), skip_when_owned_by="CronJob"),
    WorkloadKind("CronJob", "batch", ("spec", "jobTemplate", "spec", "template")),
)}
# The API group each workload kind is served by: a "Deployment" of another group is not one.
WORKLOAD_GROUPS: frozenset[tuple[str, str]] = frozenset((w.group, w.kind) for w in WORKLOAD_KINDS.values())


def workload_kind(group: str, kind: str) -> WorkloadKind | None:
    """The workload kind of an AdmissionRequest's ``kind`` (None: not a workload podgate reads)."""
    found = WORKLOAD_KINDS.get(kind)
    return found if found is not None and found.group == group else None


def _pointer(path: Sequence[str]) -> str:
    return "".join(f"/{part}" for part in path)


def template(obj: Any, kind: WorkloadKind) -> Mapping[str, Any]:
    """The Pod template of a workload object; PodShapeError naming the field when it is missing
    or not an object (a CronJob without ``jobTemplate``, a ``template`` that is a string)."""
    node = obj
    for depth, key in enumerate(kind.template_path):
        if not isinstance(node, dict):
            raise PodShapeError(_pointer(kind.template_path[:depth]), "expected an object")
        node = node.get(key)
        if node is None:
            raise PodShapeError(_pointer(kind.template_path[:depth + 1]), "is missing: the workload has no Pod template")
    if not isinstance(node, dict):
        raise PodShapeError(_pointer(kind.template_path), "expected an object (a Pod template)")
    return node


def template_pod(obj: Any, kind: WorkloadKind, namespace: str) -> dict[str, Any]:
    """The Pod the workload's controller would create from its template, as the API server would
    send it to the webhooks: the template's metadata and spec, in the workload's namespace, named
    by ``generateName`` (controllers never set ``name``). Raises PodShapeError as ``template``."""
    tmpl = template(obj, kind)
    raw_meta = tmpl.get("metadata")
    if raw_meta is not None and not isinstance(raw_meta, dict):
        raise PodShapeError(_pointer(kind.template_path) + "/metadata", "expected an object")
    metadata = dict(raw_meta or {})
    metadata.setdefault("namespace", namespace)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if "name" not in metadata and isinstance(name, str) and name:
        metadata.setdefault("generateName", f"{name}-")  # what the controller will do
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": tmpl.get("spec")}


def with_template_pod(obj: dict[str, Any], kind: WorkloadKind, pod: Mapping[str, Any]) -> dict[str, Any]:
    """The workload with its template replaced by ``pod`` (from ``template_pod``, then changed);
    the other fields untouched, and only the dicts along the template's path copied."""
    tmpl = template(obj, kind)
    own = tmpl.get("metadata") or {}
    # namespace and generateName were added by template_pod; they are not part of the template
    metadata = {k: v for k, v in pod["metadata"].items() if k in own or k not in ("namespace", "generateName")}
    return _replace_at(obj, kind.template_path, {**tmpl, "metadata": metadata, "spec": pod["spec"]})


def _replace_at(obj: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    if not path:
        return value
    head, *rest = path
    return {**obj, head: _replace_at(obj[head], rest, value)}


def owner_that_checks(obj: Any, kind: WorkloadKind) -> str | None:
    """``Deployment "web"`` when the workload's controller (ownerReferences, ``controller: true``)
    is the kind that was checked in its place; None otherwise (also for malformed references)."""
    if kind.skip_when_owned_by is None or not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    if not isinstance(refs, list):
        return None
    owner = WORKLOAD_KINDS[kind.skip_when_owned_by]
    for ref in refs:
        if not isinstance(ref, dict) or ref.get("controller") is not True or ref.get("kind") != owner.kind:
            continue
        api_version = ref.get("apiVersion")
        if isinstance(api_version, str) and api_version.partition("/")[0] == owner.group:
            name = ref.get("name")
            return f'{kind.skip_when_owned_by} "{name}"' if isinstance(name, str) else kind.skip_when_owned_by
    return None
