"""Kubernetes manifests on disk: find the Pods and Pod templates in files, and put injected ones back.

Used by ``podgate check`` and ``podgate inject``. Reads multi-document YAML or JSON, ``List``
objects, directories (recursively) and stdin; workloads contribute their Pod template.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import PodgateError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# kind -> path of the Pod template inside the object
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ManifestError(PodgateError):
    """A file cannot be read or parsed; the message names the file (and line)."""


@dataclass
class Document:
    """One object of a manifest file (a List contributes one Document per item)."""

    source: str
    index: int  # document number in the file (items of a List share it)
    obj: Any

    @property
    def kind(self) -> str:
        kind = self.obj.get("kind") if isinstance(self.obj, dict) else None
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""

    def namespace(self, default: str) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) and ns else default

    @property
    def has_pod(self) -> bool:
        return self.kind == "Pod" or self.kind in TEMPLATE_PATHS

    def pod(self, namespace: str) -> Any:
        """The Pod (for a workload: a Pod made from its template) as the API server would see it."""
        if self.kind == "Pod":
            return self.obj
        template = _template(self.obj, self.kind)
        if not isinstance(template, dict):
            return None
        metadata = dict(template.get("metadata") or {})
        metadata.setdefault("namespace", namespace)
        if "name" not in metadata and self.name:
            metadata.setdefault("generateName", f"{self.name}-")  # what the controller will do
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec")}

    def with_pod(self, pod: Any) -> Any:
        """The object with its Pod (template) replaced by ``pod``; other fields untouched."""
        if self.kind == "Pod":
            return pod
        template = _template(self.obj, self.kind)
        own = template.get("metadata") or {}
        # namespace and generateName were added by pod(); they are not part of the template
        metadata = {k: v for k, v in pod["metadata"].items() if k in own or k not in ("namespace", "generateName")}
        return _replace_at(self.obj, TEMPLATE_PATHS[self.kind], {**template, "metadata": metadata, "spec": pod["spec"]})


def _template(obj: Any, kind: str) -> Any:
    for key in TEMPLATE_PATHS[kind]:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _replace_at(obj: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with ``obj[path...]`` replaced, copying only the dicts along the path."""
    if not path:
        return value
    head, *rest = path
    return {**obj, head: _replace_at(obj[head], rest, value)}


def iter_files(paths: Sequence[str]) -> Iterator[str]:
    """Files named on the command line; directories are searched recursively for manifests."""
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            yield from (str(p) for p in found)
        elif path.exists():
            yield raw
        else:
            raise ManifestError(f"{raw}: no such file or directory")


def read_documents(source: str) -> list[Document]:
    """Parse one file (or ``-`` for stdin) into Documents, expanding ``List`` objects."""
    label = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{label}: cannot read: {exc}") from exc
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        raise ManifestError(f"{where}: invalid YAML/JSON: {getattr(exc, 'problem', None) or exc}") from exc
    out = []
    for index, obj in enumerate(docs):
        if obj is None:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("kind"), str) and obj["kind"].endswith("List") \
                and isinstance(obj.get("items"), list):
            out.extend(Document(label, index, item) for item in obj["items"])
        else:
            out.append(Document(label, index, obj))
    return out


def dump_documents(objects: Sequence[Any]) -> str:
    """Multi-document YAML, keys in their original order."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False, allow_unicode=True)
