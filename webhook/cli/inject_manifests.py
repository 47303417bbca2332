"""``podgate inject``: manifests in, the same manifests out with the mesh proxy injected.

Like ``istioctl kube-inject``: Pods and the Pod templates of workloads get what ``/mutate`` adds
(its patch, applied by ``offline.admit``), every other document and field is printed as it came,
and a List stays one List. A file or object that cannot be injected is reported and printed
unchanged while the rest still goes out; the exit code then says so, so that a pipeline with
``set -o pipefail`` stops before it applies a manifest that lacks its proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..admission import Context
from ..namespaces import StaticNamespaceLabels
from ..policy import PolicySet
from .check import InputError, nothing_found, read_files
from ..workloads import WORKLOAD_KINDS
from .manifests import Document
from .offline import admit, pod_review


@dataclass
class InjectRun:
    """What one ``inject`` run prints: the documents, what failed, and what was left alone."""

    objects: list[Any] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # objects with a Pod that were not injected, and why


def _read(paths: Sequence[str], run: InjectRun) -> list[list[Document]]:
    files = list(read_files(paths, run.errors))
    if not any(files) and not run.errors:
        run.errors.append(InputError(nothing_found(paths, len(files))))
    return files


def _looks_like_workload(obj: Any) -> bool:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    template = spec.get("template") if isinstance(spec, dict) else None
    return isinstance(template, dict) and isinstance(template.get("spec"), dict)


def _inject(doc: Document, ctx: Context, default_namespace: str, run: InjectRun) -> Any:
    """The document with its Pod injected, or as it came (saying why where it has a Pod)."""
    if (problem := doc.problem) is not None:
        run.errors.append(InputError.at(doc, problem))
        return doc.obj
    if not doc.has_pod:
        if _looks_like_workload(doc.obj):  # e.g. an OpenShift DeploymentConfig, a custom resource named Deployment
            what = doc.kind if doc.kind not in WORKLOAD_KINDS else f"{doc.kind} of apiVersion {doc.obj['apiVersion']}"
            run.notes.append(f"{doc.source} [{doc.where}] {doc.kind} {doc.display_name}: not injected: podgate "
                             f"reads Pods and the Pod templates of {', '.join(WORKLOAD_KINDS)}, not {what}")
        return doc.obj
    namespace = doc.namespace(default_namespace)
    who = f"{doc.kind} {namespace}/{doc.display_name}"
    pod = doc.pod(namespace)
    if pod is None:
        run.errors.append(InputError.at(doc, f"{who}: no Pod template"))
        return doc.obj
    result = admit(pod_review(pod, namespace, uid="podgate-inject"), "mutate", ctx)
    if result.error or not result.allowed:
        run.errors.append(InputError.at(doc, f"{who}: {result.error or result.status.get('message', 'denied')}"))
        return doc.obj
    if result.injected:
        return doc.with_pod(result.object)
    reason = result.decision.reason if result.decision else "not injected"
    run.notes.append(f"{doc.source} [{doc.where}] {doc.kind} {doc.display_name}: {reason}")
    return doc.obj


def run(paths: Sequence[str], policies: PolicySet, labels: StaticNamespaceLabels, namespace: str) -> InjectRun:
    """Inject every Pod and Pod template under ``paths``; Namespace objects among them add labels."""
    result = InjectRun()
    files = _read(paths, result)
    labels.add_namespaces(d.obj for docs in files for d in docs)
    ctx = Context(policies, labels)
    for docs in files:
        lists: dict[int, list[Any]] = {}  # document number -> the items of that List, as printed
        for doc in docs:
            obj = _inject(doc, ctx, namespace, result)
            if doc.parent is None or doc.item is None:
                result.objects.append(obj)
                continue
            items = lists.get(doc.index)
            if items is None:
                items = lists[doc.index] = list(doc.parent["items"])
                result.objects.append({**doc.parent, "items": items})
            items[doc.item] = obj
    return result
