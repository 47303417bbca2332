"""``podgate inject``: manifests in, the same manifests out with the mesh proxy injected.

Like ``istioctl kube-inject``: Pods and the Pod templates of workloads get what ``/mutate`` adds
(its patch, applied by ``offline.admit``), and every file is printed as it came, comments,
quoting, key order and document separators included, but for what the injection changed
(``roundtrip``): a reviewed diff of input and output shows the injection and nothing else. A List
stays one List. A file or object that cannot be injected is reported and printed
unchanged while the rest still goes out; the exit code then says so, so that a pipeline with
``set -o pipefail`` stops before it applies a manifest that lacks its proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..admission import Context
from ..namespaces import StaticNamespaceLabels
from ..policy import PolicySet
from .check import InputError, nothing_found, read_manifests
from ..workloads import WORKLOAD_KINDS
from .manifests import Document, Manifest
from .offline import admit, pod_review
from .roundtrip import edit


@dataclass
class InjectRun:
    """What one ``inject`` run prints: each file's text, what failed, and what was left alone."""

    files: list[str] = field(default_factory=list)  # each file as printed: as it came, injected documents edited
    errors: list[InputError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # objects with a Pod that were not injected, and why

    @property
    def text(self) -> str:
        """The files as one stream of YAML documents (a JSON document is YAML too)."""
        out: list[str] = []
        for part in filter(None, self.files):
            if out:
                if not out[-1].endswith("\n"):
                    out.append("\n")
                if not part.startswith("---"):
                    out.append("...\n" if part.startswith("%") else "---\n")  # directives end the last document
            out.append(part)
        return "".join(out)


def _read(paths: Sequence[str], run: InjectRun) -> list[Manifest]:
    files = list(read_manifests(paths, run.errors))
    if not any(f.documents for f in files) and not run.errors:
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
    namespace = doc.namespace(default_namespace)
    who = f"{doc.source} [{doc.where}] {doc.kind} {namespace}/{doc.display_name}"  # as check names it
    if not doc.has_pod:
        if _looks_like_workload(doc.obj):  # e.g. an OpenShift DeploymentConfig, a custom resource named Deployment
            what = doc.kind if doc.kind not in WORKLOAD_KINDS else f"{doc.kind} of apiVersion {doc.obj['apiVersion']}"
            run.notes.append(f"{who}: not injected: podgate reads Pods and the Pod templates of "
                             f"{', '.join(WORKLOAD_KINDS)}, not {what}")
        return doc.obj
    name = f"{doc.kind} {namespace}/{doc.display_name}"
    pod = doc.pod(namespace)
    if pod is None:
        run.errors.append(InputError.at(doc, f"{name}: no Pod template"))
        return doc.obj
    result = admit(pod_review(pod, namespace, uid="podgate-inject"), "mutate", ctx)
    if result.error or not result.allowed:
        run.errors.append(InputError.at(doc, f"{name}: {result.error or result.status.get('message', 'denied')}"))
        return doc.obj
    if result.injected:
        return doc.with_pod(result.object)
    reason = result.decision.reason if result.decision else "not injected"
    run.notes.append(f"{who}: {reason}")
    return doc.obj


def _printed(manifest: Manifest, changed: dict[int, tuple[yaml.Node, Any, Any]]) -> str:
    """The file's text with each changed document (number -> its node, old and new object) edited."""
    text, out, at = manifest.text, [], 0
    for root, old, new in sorted(changed.values(), key=lambda c: c[0].start_mark.index):
        out += [text[at:root.start_mark.index], edit(text, root, old, new)]
        at = root.end_mark.index
    out.append(text[at:])
    return "".join(out)


def run(paths: Sequence[str], policies: PolicySet, labels: StaticNamespaceLabels, namespace: str) -> InjectRun:
    """Inject every Pod and Pod template under ``paths``; Namespace objects among them add labels."""
    result = InjectRun()
    files = _read(paths, result)
    labels.add_namespaces(d.obj for f in files for d in f.documents)
    ctx = Context(policies, labels)
    for manifest in files:
        changed: dict[int, tuple[yaml.Node, Any, Any]] = {}  # document number -> its node, old, new
        for doc in manifest.documents:
            obj = _inject(doc, ctx, namespace, result)
            if obj is doc.obj or doc.root is None:
                continue
            if doc.parent is None or doc.item is None:
                changed[doc.index] = (doc.root, doc.obj, obj)
                continue
            if doc.index not in changed:  # a List: printed whole, its other items as they came
                changed[doc.index] = (doc.root, doc.parent, {**doc.parent, "items": list(doc.parent["items"])})
            changed[doc.index][2]["items"][doc.item] = obj
        if manifest.documents:
            result.files.append(_printed(manifest, changed))
    return result
