"""Namespace labels, which an AdmissionRequest does not carry.

Offline (``check``, ``inject``, tests) they come from a file or from Namespace objects in the
input; a server without API access reads the same file. What the file says of a namespace wins
over a Namespace object in the input: the file is what the user asked for by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import PodgateError
from .files import INPUT_FILE_MAX, InputFileError, read_text
from .selectors import Labels
from .yamlpos import error_line, error_text, load_documents


class NamespaceLabelsError(PodgateError):
    """The namespace-labels file cannot be used."""


class StaticNamespaceLabels:
    """A fixed map namespace -> labels; callable as a NamespaceLabels lookup."""

    def __init__(self, labels: Mapping[str, Labels] | None = None) -> None:
        self.labels: dict[str, Labels] = dict(labels or {})
        self.given: frozenset[str] = frozenset()  # namespaces a Namespace object may not redefine

    def __call__(self, namespace: str) -> Labels | None:
        return self.labels.get(namespace)

    def add_namespaces(self, objects: Iterable[Any]) -> None:
        """Take labels from Namespace objects (e.g. found next to the Pods being checked), except
        for the namespaces the labels file names."""
        for obj in objects:
            if isinstance(obj, dict) and obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
                meta = obj.get("metadata") or {}
                name = meta.get("name")
                labels = meta.get("labels") or {}
                if isinstance(name, str) and isinstance(labels, dict) and name not in self.given:
                    self.labels[name] = {str(k): str(v) for k, v in labels.items()}


def load_namespace_labels(path: str | Path) -> StaticNamespaceLabels:
    """Read ``{namespace: {label: value}}`` or Namespace objects (YAML/JSON, multi-document)."""
    try:
        docs = [d.data for d in load_documents(read_text(path, INPUT_FILE_MAX))]
    except InputFileError as exc:
        raise NamespaceLabelsError(f"{path}: cannot read namespace labels: {exc}") from None
    except yaml.YAMLError as exc:
        line = error_line(exc)
        raise NamespaceLabelsError(f"{path}{f':{line}' if line else ''}: cannot read namespace labels: "
                                   f"invalid YAML: {error_text(exc)}") from None
    result = StaticNamespaceLabels()
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") in ("Namespace", "List", "NamespaceList"):
            result.add_namespaces(doc.get("items") or [doc])
            continue
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise NamespaceLabelsError(f"{path}: expected a map of namespace -> labels, or Namespace objects")
        for name, labels in doc.items():
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                raise NamespaceLabelsError(f"{path}: labels of namespace {name!r} must be strings")
            result.labels[str(name)] = labels
    result.given = frozenset(result.labels)
    return result
