"""Kubernetes manifests on disk: find the Pods and Pod templates in files, and put injected ones back.

Used by ``podgate check`` and ``podgate inject``. Reads multi-document YAML or JSON, ``List``
objects, directories (recursively) and stdin; workloads contribute their Pod template.

Empty documents (a ``---`` with nothing after it, comments only) and null items of a ``List``
are skipped; every other document or item becomes a Document, including those that are not
Kubernetes objects at all (``Document.problem`` says what is wrong with them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import PodgateError, PodShapeError
from ..files import INPUT_FILE_MAX, InputFileError, read_text
from ..pods import pod_name
from ..workloads import WORKLOAD_KINDS, WorkloadKind, template_pod, with_template_pod, workload_kind
from ..yamlpos import YamlDocument, error_line, error_text, load_documents, node_at

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(PodgateError):
    """A file cannot be read or parsed; the message names the file (and line)."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.line = line


@dataclass
class Document:
    """One object of a manifest file (a List contributes one Document per item)."""

    source: str
    index: int  # document number in the file (items of a List share it)
    obj: Any
    item: int | None = None  # index in the List's items, for an object that comes from a List
    parent: dict[str, Any] | None = None  # that List, for writing it back whole (podgate inject)
    line: int | None = None  # 1-based line where the document (or List item) starts
    node: yaml.Node | None = field(default=None, repr=False, compare=False)  # its YAML, for line_at
    root: yaml.Node | None = field(default=None, repr=False, compare=False)  # the whole document's (a List's)

    def line_at(self, pointer: str, into_pod: bool = False) -> int | None:
        """The line of the field at JSON pointer ``pointer`` (in the Pod made from the template,
        with ``into_pod``), or of the deepest field along it; the document's line without YAML."""
        if self.node is None:
            return self.line
        path: list[Any] = [int(p) if p.isdigit() else p.replace("~1", "/").replace("~0", "~")
                           for p in pointer.split("/")[1:]]
        if into_pod and self.workload is not None:
            path = [*self.workload.template_path, *path]
        return node_at(self.node, path, keys=True).start_mark.line + 1

    @property
    def where(self) -> str:
        """``document N`` (``document N, item M`` inside a List), for messages."""
        return f"document {self.index}" + (f", item {self.item}" if self.item is not None else "")

    @property
    def problem(self) -> str | None:
        """Why this document is not a Kubernetes object (None: it is one, of whatever kind)."""
        obj = self.obj
        if not isinstance(obj, dict):
            return f"not a Kubernetes object: {_describe(obj)}, not a mapping with apiVersion and kind"
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            what = "no kind" if kind is None else f"kind must be a non-empty string, got {_describe(kind)}"
            spec = obj.get("spec")
            if isinstance(spec, dict) and "containers" in spec:
                return f"not a Kubernetes object: {what} (it looks like a Pod: add apiVersion: v1 and kind: Pod)"
            keys = ", ".join(map(str, list(obj)[:4])) + (", ..." if len(obj) > 4 else "")
            return f"not a Kubernetes object: {what} (a mapping with keys {keys})" if obj \
                else f"not a Kubernetes object: {what} (an empty mapping)"
        if _is_list(obj) and obj.get("items") is not None and not isinstance(obj["items"], list):
            return f"{kind} items must be a list, got {_describe(obj['items'])}"
        served = "" if kind == "Pod" else WORKLOAD_KINDS[kind].group if kind in WORKLOAD_KINDS else None
        group = self.group
        if served is not None and group is not None and group != served and _kubernetes_group(group):
            # a custom resource of that name has a group of its own (with a dot): it is skipped
            return (f"{kind} of apiVersion {obj['apiVersion']}: the API server serves no {kind} there and would "
                    f"refuse it (a {kind} is apiVersion {served + '/' if served else ''}v1)")
        return None

    @property
    def kind(self) -> str:
        kind = self.obj.get("kind") if isinstance(self.obj, dict) else None
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def display_name(self) -> str:
        """The name podgate shows everywhere (webhook.pods.pod_name): ``metadata.name``, else
        ``<generateName><generated>`` for an object the API server names, else ``<unnamed>``."""
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        return pod_name(meta if isinstance(meta, dict) else {})

    def namespace(self, default: str) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) and ns else default

    @property
    def group(self) -> str | None:
        """The API group of ``apiVersion`` (``""``: the core group, ``v1``); None without one."""
        api_version = self.obj.get("apiVersion") if isinstance(self.obj, dict) else None
        return api_version.rpartition("/")[0] if isinstance(api_version, str) and api_version else None

    @property
    def is_pod(self) -> bool:
        return self.kind == "Pod" and self.group in (None, "")

    @property
    def has_pod(self) -> bool:
        return self.is_pod or self.workload is not None

    @property
    def workload(self) -> WorkloadKind | None:
        """The workload kind of the object (None: a Pod, or no object with a Pod template). A kind
        of another API group is not one (a custom resource named Deployment); an object without
        apiVersion is read by its kind alone."""
        group = self.group
        if group is None:
            found = WORKLOAD_KINDS.get(self.kind)
            group = found.group if found is not None else ""
        return workload_kind(group, self.kind)

    def pod(self, namespace: str) -> Any:
        """The Pod (for a workload: a Pod made from its template, webhook.workloads) as the API
        server would see it; None for a workload whose template is missing or not an object."""
        if self.workload is None:
            return self.obj
        try:
            return template_pod(self.obj, self.workload, namespace)
        except PodShapeError:
            return None

    def with_pod(self, pod: Any) -> Any:
        """The object with its Pod (template) replaced by ``pod``; other fields untouched."""
        if self.workload is None:
            return pod
        return with_template_pod(self.obj, self.workload, pod)


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    what = names.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float, str)):
        text = repr(value)
        what += f" ({text[:40] + '...' if len(text) > 40 else text})"
    return what


def _kubernetes_group(group: str) -> bool:
    """A group of Kubernetes itself (apps, batch, extensions, networking.k8s.io, ...); a custom
    resource's group is a domain of its owner's (example.com)."""
    return "." not in group or group.endswith(".k8s.io")


def _is_list(obj: dict[str, Any]) -> bool:
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List")


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
            raise ManifestError(f"{raw}: no such file or directory", raw)


@dataclass
class Manifest:
    """One file as read: its name in messages, its text, and its Documents."""

    source: str
    text: str
    documents: list[Document]


def read_documents(source: str) -> list[Document]:
    """Parse one file (or ``-`` for stdin) into Documents, expanding ``List`` objects.

    Empty documents and null List items are left out; anything else is kept, so that a caller
    can report what is not a Kubernetes object (``Document.problem``)."""
    return read_manifest(source).documents


def read_manifest(source: str) -> Manifest:
    """``read_documents``, with the text the Documents were read from."""
    label = "<stdin>" if source == "-" else source
    try:
        text = read_text(source, INPUT_FILE_MAX)
        parsed = load_documents(text)
    except InputFileError as exc:
        raise ManifestError(f"{label}: cannot read: {exc}", label) from None
    except yaml.YAMLError as exc:
        line = error_line(exc)
        where = f"{label}:{line}" if line else label
        raise ManifestError(f"{where}: invalid YAML/JSON: {error_text(exc)}", label, line) from None
    return Manifest(label, text, documents(label, parsed))


def documents(label: str, parsed: Sequence[YamlDocument]) -> list[Document]:
    """The Documents of a file already parsed (``load_documents``), as ``read_documents`` gives them."""
    return [d for doc in parsed for d in _expand(label, doc.index, doc.data, doc.node)]


def _expand(label: str, index: int, obj: Any, node: yaml.Node) -> list[Document]:
    """One document: itself, or the non-null items of a List (each with its line; a List without
    any is itself the document)."""
    line = node.start_mark.line + 1
    if not (isinstance(obj, dict) and _is_list(obj) and isinstance(obj.get("items"), list)):
        return [Document(label, index, obj, line=line, node=node, root=node)]
    item_nodes: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "items" and isinstance(value, yaml.SequenceNode):
                item_nodes = value.value
    if len(item_nodes) != len(obj["items"]):
        item_nodes = []
    items = [Document(label, index, item, item=i, parent=obj, line=item_nodes[i].start_mark.line + 1 if item_nodes
                      else line, node=item_nodes[i] if item_nodes else None, root=node)
             for i, item in enumerate(obj["items"]) if item is not None]
    return items or [Document(label, index, obj, line=line, root=node)]  # an empty List is still an object


def dump_documents(objects: Sequence[Any]) -> str:
    """Multi-document YAML, keys in their original order."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False, allow_unicode=True)
