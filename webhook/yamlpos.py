"""YAML with positions: map a JSON path inside a parsed document back to its file line.

jsonschema reports where an error is as a path of keys and indices; a person editing the file
wants a line number. PyYAML's composer keeps the start mark of every node, so both are read
from one parse: the data (for the schema) and the node tree (for the lines). Duplicate keys,
which PyYAML silently resolves to the last one, are found on the same tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from jsonpointer import escape


@dataclass
class YamlDocument:
    """One document of a YAML stream: its data and its node tree."""

    index: int
    data: Any
    node: yaml.Node

    def line(self, path: Sequence[Any]) -> int:
        """The 1-based line of the deepest node along ``path`` (the document start if none); for
        a key, the line of the key, which is where a block mapping or list under it begins."""
        return node_at(self.node, path, keys=True).start_mark.line + 1

    def duplicate_keys(self) -> Iterator[tuple[list[Any], int, int]]:
        """(path of the mapping + key, first line, repeated line) for every key given twice."""
        yield from _duplicates(self.node, [])


def load_documents(text: str, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader) -> list[YamlDocument]:
    """Parse a YAML (or JSON) stream; empty documents are skipped. Raises yaml.YAMLError."""
    out = []
    loader = loader_class(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
                out.append(YamlDocument(index, loader.construct_document(node), node))
            index += 1
    finally:
        loader.dispose()
    return out


def error_line(exc: yaml.YAMLError) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    return mark.line + 1 if mark is not None else None


def error_text(exc: yaml.YAMLError) -> str:
    return str(getattr(exc, "problem", None) or exc)


def node_at(node: yaml.Node, path: Sequence[Any], keys: bool = False) -> yaml.Node:
    """The node at ``path`` (or the deepest one along it); with ``keys``, the key node when the
    path ends at a mapping key."""
    key_node = None
    for key in path:
        child = key_node = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    child, key_node = v, k
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            child = node.value[key]
        if child is None:
            key_node = None
            break
        node = child
    return key_node if keys and key_node is not None else node


def _duplicates(node: yaml.Node, path: list[Any]) -> Iterator[tuple[list[Any], int, int]]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            if key is not None:
                if key in seen:
                    yield path + [key], seen[key], k.start_mark.line + 1
                else:
                    seen[key] = k.start_mark.line + 1
            yield from _duplicates(v, path + [key])
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(item, path + [i])


def json_pointer(path: Sequence[Any]) -> str:
    """RFC 6901 pointer for a path of keys and indices (``/`` for the root)."""
    return "/" + "/".join(escape(str(p)) for p in path) if path else "/"


def schema_error_path(error: Any) -> list[Any]:
    """Where a jsonschema error is, as precisely as a person needs it: for an unexpected key, the
    key itself (jsonschema reports the mapping that holds it)."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [k for k in error.instance if k not in known]
        if extra:
            path.append(extra[0])
    return path
