"""YAML with positions: map a JSON path inside a parsed document back to its file line.

jsonschema reports where an error is as a path of keys and indices; a person editing the file
wants a line number. PyYAML's composer keeps the start mark of every node, so both are read
from one parse: the data (for the schema) and the node tree (for the lines). Duplicate keys,
which PyYAML silently resolves to the last one, are found on the same tree.

Every parse here is bounded, whoever wrote the text: nesting deeper than ``MAX_DEPTH`` (which
would exhaust Python's stack in the composer, the schema check or the JSON encoder) and aliases
that expand to more than the file itself holds (a "billion laughs", which costs nothing to parse
and everything to check, print or dump) are YAML errors with a line, like a syntax error; so is
a control character (PyYAML refuses it while the loader is built, before any line is known).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
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


# Kubernetes objects and policies are under 20 levels deep; 100 leaves room and stays far from
# Python's recursion limit (1000 frames) and orjson's (254 levels).
MAX_DEPTH = 100
# What aliases may add, in characters and nodes, beyond what the file holds: at least this much,
# at most as much again as the file's own size.
MIN_ALIAS_BUDGET = 1024 * 1024


class BoundsError(yaml.MarkedYAMLError):
    """A YAML stream beyond podgate's bounds (nesting, alias expansion) or with a control character."""


class _Bounded:
    """Composer checks, mixed into a loader class: depth, alias expansion, recursive aliases."""

    def __init__(self, stream: str) -> None:
        try:
            super().__init__(stream)  # type: ignore[call-arg]
        except yaml.reader.ReaderError as exc:
            raise _control_character(stream, exc) from None
        self._depth = 0
        self._open: set[str] = set()  # anchors whose node is being composed
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (size, height)
        self._alias_budget = max(MIN_ALIAS_BUDGET, len(stream))

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[attr-defined]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)  # type: ignore[attr-defined]
            if target is not None:
                if event.anchor in self._open:
                    raise BoundsError(problem=f"alias *{event.anchor} refers to a node that contains it",
                                      problem_mark=event.start_mark)
                size, height = _measure(target, self._measured)
                self._alias_budget -= size
                if self._alias_budget < 0:
                    raise BoundsError(problem="aliases expand to more than the file holds (at least "
                                      f"{MIN_ALIAS_BUDGET} characters): write the values out, or use fewer aliases",
                                      problem_mark=event.start_mark)
                if self._depth + height > MAX_DEPTH:
                    raise BoundsError(problem=f"nested deeper than {MAX_DEPTH} levels (through alias "
                                      f"*{event.anchor})", problem_mark=event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[misc]
        if self._depth >= MAX_DEPTH:
            raise BoundsError(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1
            self._open.discard(anchor)  # type: ignore[arg-type]


def _measure(node: yaml.Node, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(characters + nodes, levels) of a node as its constructed value would be, aliases expanded;
    once per node (the recursion is as deep as the node is high: at most MAX_DEPTH)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    if isinstance(node, yaml.ScalarNode):
        result = (1 + len(node.value), 1)
    else:
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        measured = [_measure(child, memo) for child in children]
        result = (1 + sum(s for s, _ in measured), 1 + max((h for _, h in measured), default=0))
    memo[id(node)] = result
    return result


def _control_character(text: str, exc: yaml.reader.ReaderError) -> BoundsError:
    """A ReaderError (no line, a message over two lines) as an error with a line and column."""
    at = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, at)
    column = at - (text.rfind("\n", 0, at) + 1)
    mark = yaml.Mark(exc.name, at, line, column, None, None)
    what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
    return BoundsError(problem=f"control character {what} (column {column + 1}) is not allowed in YAML or JSON text",
                       problem_mark=mark)


@lru_cache(maxsize=8)
def bounded(loader_class: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """``loader_class`` with the bounds of this module."""
    return type(f"Bounded{loader_class.__name__}", (_Bounded, loader_class), {})


def load_documents(text: str, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader) -> list[YamlDocument]:
    """Parse a YAML (or JSON) stream, within the bounds above; empty documents are skipped.
    Raises yaml.YAMLError (BoundsError for what is beyond the bounds)."""
    out = []
    loader = bounded(loader_class)(text)
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


_HELM = re.compile(r"\{\{-?\s*[.$a-z(/\"-]")  # {{ .Values.x }}, {{- if ... }}, {{ include "..." }}, {{/* */}}


def error_text(exc: yaml.YAMLError) -> str:
    """The problem, on one line, and what it usually means: a tab where YAML wants spaces (with
    its line and column), a Helm template that was never rendered."""
    text = " ".join(str(getattr(exc, "problem", None) or exc).split())
    mark = getattr(exc, "problem_mark", None)
    buffer = getattr(mark, "buffer", None)
    if mark is not None and "'\\t'" in text:
        text += f" (a tab at line {mark.line + 1}, column {mark.column + 1}: YAML indents with spaces, not tabs)"
    if isinstance(buffer, str) and (found := _HELM.search(buffer)):
        line = buffer.count("\n", 0, found.start()) + 1
        text += (f" (this looks like an unrendered Helm template: {{{{ ... }}}} on line {line}; run helm template "
                 "first, e.g. helm template RELEASE CHART | podgate check -)")
    return text


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
