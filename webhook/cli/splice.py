"""Change a YAML document by editing its text where PyYAML's nodes say each value is.

The first way ``podgate inject`` puts an injected object back (``roundtrip`` is the second): only
the lines of what changed are written; every other character of the file stays, whatever its
indentation, quoting or comments. What the injection does is small and regular (keys added to
block mappings, items inserted into block lists, a scalar set, a key removed), and those are the
edits made here; anything else (a flow collection that changes, a block scalar, an anchor in the
document) is ``Unsupported``, and the caller takes the round-trip parser instead.

New values are written in block style in the document's own indentation (``indentation``), their
strings plain where YAML reads them back as the same string, else quoted.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

_PLAIN = re.compile(r"(?!-\Z|---)[A-Za-z0-9_./-][A-Za-z0-9_./=@+-]*(:[A-Za-z0-9_./=@+-]+)*\Z")  # no ": ", " #", leading "-"
_RESOLVER = yaml.resolver.Resolver()
_KEY_LINE = re.compile(r"^( *)(- +)*[^\s#-][^#]*:\s*(#.*)?$")  # "key:" with its value on the next lines
_ITEM = re.compile(r"^( *)-( +)\S")


class Unsupported(Exception):
    """An edit this module does not make; the document goes to the round-trip parser."""


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types (1 is not True, "1" is not 1), keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def indentation(text: str) -> tuple[int, int]:
    """(mapping indent, offset of a list's dash under its key) as the text writes them; (2, 0)
    where it does not say."""
    mapping = offset = None
    previous: tuple[int, bool] | None = None  # (column of the key, its value on the next lines)
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        column = len(line) - len(stripped)
        if previous is not None and previous[1]:
            if stripped.startswith("-"):
                offset = column - previous[0] if offset is None else offset
            elif mapping is None:
                mapping = column - previous[0]
        if mapping is not None and offset is not None:
            break
        item = _ITEM.match(line)
        key_column = column if item is None else column + 1 + len(item.group(2))
        previous = (key_column, _KEY_LINE.match(line) is not None)
    mapping = mapping if mapping and mapping > 0 else 2
    offset = offset if offset is not None and offset >= 0 else 0
    return mapping, offset


def pairs(old: list[Any], new: list[Any]) -> dict[int, int]:
    """Which new item (index) is which old one, in a run of a list that changed: by a ``name``
    both have, else by place when as many came as went; in order (one that moved is new)."""
    def name(item: Any) -> Any:
        return item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None

    old_names = [name(v) for v in old]
    out: dict[int, int] = {}
    if any(n is not None for n in old_names):
        last = -1
        for j, item in enumerate(new):
            n = name(item)
            if n is not None and n in old_names and old_names.index(n) > last:
                last = out[j] = old_names.index(n)
        return out
    return {i: i for i in range(len(old))} if len(old) == len(new) else {}


def list_changes(old: list[Any], new: list[Any]) -> list[tuple[int, int, int, int]]:
    """The runs of ``old`` (i1, i2) that become runs of ``new`` (j1, j2); unchanged items are in none."""
    def key(value: Any) -> bytes:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
        except TypeError:  # an integer beyond 64 bits
            return repr(value).encode()

    matcher = difflib.SequenceMatcher(None, [key(v) for v in old], [key(v) for v in new], autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


@dataclass
class _Edit:
    start: int
    end: int
    text: str


class _Splicer:
    def __init__(self, text: str, mapping: int, offset: int) -> None:
        self.text = text
        self.mapping = mapping
        self.offset = offset
        self.edits: list[_Edit] = []

    # --- where things are ---------------------------------------------------------------------

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def alone(self, index: int) -> bool:
        """Only indentation before ``index`` on its line."""
        return self.text[self.line_start(index):index].strip(" ") == ""

    def after(self, node: yaml.Node) -> tuple[int, str]:
        """Where a line after ``node`` starts (its trailing comment kept), and what must come
        first there (a newline, at the end of a text without one)."""
        end = node.end_mark.index
        start = self.line_start(end)  # a block collection or scalar ends where the next token is
        if self.text[start:end].strip(" ") == "":
            return start, ""
        newline = self.text.find("\n", end)
        return (newline + 1, "") if newline != -1 else (len(self.text), "\n")

    def dash(self, item: yaml.Node) -> int:
        """The index of the ``-`` of a block list item (alone on its line but for indentation)."""
        at = item.start_mark.index - 1
        while at >= 0 and self.text[at] == " ":
            at -= 1
        if at < 0 or self.text[at] != "-" or not self.alone(at):
            raise Unsupported("list item not on a line of its own")
        return at

    def column(self, index: int) -> int:
        return index - self.line_start(index)

    # --- what to write ------------------------------------------------------------------------

    def pair(self, key: Any, value: Any, column: int) -> str:
        head = " " * column + scalar(key) + ":"
        if isinstance(value, dict) and value:
            return head + "\n" + self.block(value, column + self.mapping)
        if isinstance(value, list) and value:
            return head + "\n" + self.block(value, column + self.offset)
        return f"{head} {scalar(value)}\n"

    def item(self, value: Any, column: int) -> str:
        if isinstance(value, (dict, list)) and value:
            inner = self.block(value, column + 2)
            return " " * column + "- " + inner[column + 2:]
        return " " * column + f"- {scalar(value)}\n"

    def block(self, value: dict[Any, Any] | list[Any], column: int) -> str:
        if isinstance(value, dict):
            return "".join(self.pair(k, v, column) for k, v in value.items())
        return "".join(self.item(v, column) for v in value)

    # --- edits --------------------------------------------------------------------------------

    def change(self, node: yaml.Node, old: Any, new: Any) -> None:
        if same(old, new):
            return
        if node.tag not in _DEFAULT_TAGS or node.value is None:
            raise Unsupported("a tagged node")
        if isinstance(node, yaml.MappingNode) and isinstance(old, dict) and isinstance(new, dict):
            self.mapping_node(node, old, new)
        elif isinstance(node, yaml.SequenceNode) and isinstance(old, list) and isinstance(new, list):
            self.sequence_node(node, old, new)
        elif isinstance(node, yaml.ScalarNode) and node.style in (None, "", "'", '"') \
                and (not isinstance(new, (dict, list)) or not new) and node.start_mark.line == node.end_mark.line:
            self.edits.append(_Edit(node.start_mark.index, node.end_mark.index, scalar(new, node.style)))
        else:
            raise Unsupported(f"{type(node).__name__} to {type(new).__name__}")

    def mapping_node(self, node: yaml.MappingNode, old: dict[Any, Any], new: dict[Any, Any]) -> None:
        keys = [k.value if isinstance(k, yaml.ScalarNode) and k.tag == _STR else None for k, _ in node.value]
        if not node.value or keys != list(old):  # merge keys, repeated keys, keys that are not strings
            raise Unsupported("a mapping with keys that are not plain strings")
        at = dict(zip(keys, node.value))
        if node.flow_style:  # {path: /ready, port: 8080}: its values change, nothing else
            if list(new) != keys:
                raise Unsupported("keys added to a flow mapping")
            for key, value in new.items():
                self.change(at[key][1], old[key], value)
            return
        column = self.column(node.value[0][0].start_mark.index)
        outer = self.mapping, self.offset
        self.local_style(node, column)  # for this mapping and what is in it; the outer one after
        for key in old:
            if key not in new:
                first, value = at[key]
                if not self.alone(first.start_mark.index):
                    raise Unsupported("a key that does not start its line")
                start, prefix = self.after(value)
                self.edits.append(_Edit(self.line_start(first.start_mark.index), start, prefix))
        previous: Any = None
        pending: list[str] = []
        for key, value in [*new.items(), (None, None)]:  # the sentinel writes what is pending
            if key is not None and key not in old:
                pending.append(self.pair(key, value, column))
                continue
            if pending:
                if previous is None:
                    first = node.value[0][0].start_mark.index
                    if not self.alone(first):
                        raise Unsupported("a key before the first of a list item")
                    start, prefix = self.line_start(first), ""
                else:
                    start, prefix = self.after(at[previous][1])
                self.edits.append(_Edit(start, start, prefix + "".join(pending)))
                pending = []
            if key is not None:
                self.value(*at[key], old[key], value, column)
                previous = key
        self.mapping, self.offset = outer

    def local_style(self, node: yaml.MappingNode, column: int) -> None:
        """The indentation of new values as this mapping's own block values have it, where they
        say (a file may indent one list otherwise than the next)."""
        for _, value in node.value:
            if isinstance(value, yaml.SequenceNode) and not value.flow_style and value.value:
                self.offset = max(0, self.column(self.dash(value.value[0])) - column)
            elif isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
                self.mapping = max(1, self.column(value.value[0][0].start_mark.index) - column)

    def value(self, key: yaml.Node, node: yaml.Node, old: Any, new: Any, column: int) -> None:
        """The value of a key of a block mapping (at ``column``) changed; ``metadata: {}`` may
        become a block mapping."""
        inline = isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.flow_style and not node.value \
            or isinstance(node, yaml.ScalarNode) and node.style in (None, "", "'", '"')
        if not (inline and isinstance(new, (dict, list)) and new and node.start_mark.line == node.end_mark.line
                and key.end_mark.line == node.start_mark.line and node.tag in _DEFAULT_TAGS):
            self.change(node, old, new)
            return
        start = node.start_mark.index
        while self.text[start - 1] == " ":
            start -= 1
        block = self.block(new, column + (self.mapping if isinstance(new, dict) else self.offset))
        self.edits.append(_Edit(start, node.end_mark.index, "\n" + block.rstrip("\n")))

    def sequence_node(self, node: yaml.SequenceNode, old: list[Any], new: list[Any]) -> None:
        if not node.value or len(node.value) != len(old):
            raise Unsupported("an empty list")
        if node.flow_style:  # [a, b]: its items change, nothing else
            if len(new) != len(old):
                raise Unsupported("items added to a flow list")
            for item, was, value in zip(node.value, old, new):
                self.change(item, was, value)
            return
        column = self.column(self.dash(node.value[0]))
        for i1, i2, j1, j2 in list_changes(old, new):
            matched = pairs(old[i1:i2], new[j1:j2])
            kept = set(matched.values())
            for i in range(i1, i2):
                if i - i1 not in kept:
                    start, prefix = self.after(node.value[i])
                    self.edits.append(_Edit(self.line_start(self.dash(node.value[i])), start, prefix))
            pending: list[str] = []
            for j in range(j1, j2):
                if (i := matched.get(j - j1)) is None:
                    pending.append(self.item(new[j], column))
                    continue
                self.insert_before(node, i1 + i, pending)
                pending = []
                self.change(node.value[i1 + i], old[i1 + i], new[j])
            self.insert_before(node, i2, pending)

    def insert_before(self, node: yaml.SequenceNode, index: int, items: list[str]) -> None:
        """New items before item ``index`` of the list (after its last item, past the end)."""
        if not items:
            return
        if index < len(node.value):
            start, prefix = self.line_start(self.dash(node.value[index])), ""
        else:
            start, prefix = self.after(node.value[-1])
        self.edits.append(_Edit(start, start, prefix + "".join(items)))

    def result(self, start: int, end: int) -> str:
        out, at = [], start
        # by place; at one place, what is inserted there before what is removed from there on
        # (sorted() keeps the order in which insertions at one place were made)
        for e in sorted(self.edits, key=lambda e: (e.start, e.end > e.start)):
            if e.start < at or e.end > end:
                raise Unsupported("edits that overlap")
            out += [self.text[at:e.start], e.text]
            at = e.end
        out.append(self.text[at:end])
        return "".join(out)


_STR = "tag:yaml.org,2002:str"
_DEFAULT_TAGS = {_STR, "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:int",
                 "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
                 "tag:yaml.org,2002:timestamp"}


def scalar(value: Any, style: str | None = None) -> str:
    """A scalar as YAML writes it on one line; a string in ``style`` (a quote) where given."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list)) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    if not isinstance(value, str):
        raise Unsupported(f"a {type(value).__name__} value")
    if style == '"' or not value.isprintable():  # JSON's escapes, and YAML's for what JSON leaves as it is
        return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                       for c in json.dumps(value, ensure_ascii=False))
    if style != "'" and _PLAIN.match(value) and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    return "'" + value.replace("'", "''") + "'"


def splice(text: str, node: yaml.Node, old: Any, new: Any) -> str:
    """The text of the document at ``node`` (which PyYAML read from ``text`` as ``old``) edited
    to say ``new``. Raises Unsupported."""
    start, end = node.start_mark.index, node.end_mark.index
    if "&" in text[start:end]:
        raise Unsupported("anchors")  # an alias's node has the text of its anchor: edits would land there
    body = text[start:end]
    splicer = _Splicer(text, *indentation(body))
    splicer.change(node, old, new)
    return splicer.result(start, end)
