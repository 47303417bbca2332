"""Edit one document of a manifest in place: what changed goes in, everything else stays as written.

``podgate inject`` prints each file as it came and replaces only the text of the documents it
injected; this module makes that text. The document is read again with a round-trip YAML parser
(ruamel.yaml), which keeps comments, key order, quoting and indentation, and only what differs
between the object as it was and as it is to be printed is changed in that tree: a key added,
removed or set, an item inserted into or removed from a list (a list's unchanged items keep
their place and their comments). A JSON document is printed as JSON in its own indentation.

Bounds: only text that ``webhook.yamlpos`` already parsed within its bounds comes here (one
document of a file that parsed whole), so this parse meets the same nesting depth and alias
budget; aliases stay aliases in the round-trip tree (nothing is expanded), and a shared node is
copied before it is changed, so that the change does not reach the other places that name it.
Whatever is printed is parsed once more and compared with the object it must be: should the
edited text say anything else (a construct the round trip does not keep), the document is
printed whole, as plain YAML, instead.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import re
from functools import lru_cache
from typing import Any

import orjson
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import ScalarString

from ..yamlpos import load_documents
from .manifests import dump_documents
from .splice import Unsupported, indentation, list_changes, pairs, same, splice

_WIDTH = 1 << 30  # never fold a line that was not folded


def edit(file_text: str, node: yaml.Node, old: Any, new: Any) -> str:
    """The text of the document at ``node`` (which PyYAML read from ``file_text`` as ``old``)
    changed to say ``new``: as written wherever the two agree."""
    text = file_text[node.start_mark.index:node.end_mark.index]
    if same(old, new):
        return text
    body = text.rstrip()
    tail = text[len(body):]
    if body.startswith(("{", "[")) and (edited := _edit_json(body, new)) is not None:
        return edited + tail
    try:
        spliced = splice(file_text, node, old, new)
        if _says(spliced, new):
            return spliced
    except Unsupported:
        pass
    try:
        candidates = _edit_yaml(body, old, new)
    except Exception:  # noqa: BLE001 - any construct the round trip cannot take: print it plainly
        candidates = []
    edited = next((c for c in candidates if _says(c, new)), None)
    return (edited if edited is not None else dump_documents([new]).rstrip("\n")) + tail


def _says(text: str, expected: Any) -> bool:
    """``text`` is one YAML document that says ``expected``. Text without anchors (the edits of
    podgate's own, from a document within the bounds) is parsed by libyaml where PyYAML has it."""
    try:
        if "&" in text or "*" in text or not yaml.__with_libyaml__:
            docs = [d.data for d in load_documents(text)]
        else:
            docs = [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d is not None]
    except yaml.YAMLError:
        return False
    return len(docs) == 1 and same(docs[0], expected)


# --- JSON ---------------------------------------------------------------------------------------

def _edit_json(body: str, new: Any) -> str | None:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # YAML in flow style
    lines = body.splitlines()
    if len(lines) == 1:
        return json.dumps(new, ensure_ascii=False)
    indent = next((len(line) - len(line.lstrip(" ")) for line in lines[1:] if line.strip()), 2) or 2
    return json.dumps(new, indent=indent, ensure_ascii=False)


# --- YAML ---------------------------------------------------------------------------------------

class _Representer(RoundTripRepresenter):
    """Writes null as ``null``, as Kubernetes tools do (``creationTimestamp: null``), not as nothing."""

    def represent_none(self, data: Any) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:null", "null")


_Representer.add_representer(type(None), _Representer.represent_none)
_NULL = re.compile(r"[:-] +null *(#.*)?$", re.MULTILINE)


@lru_cache(maxsize=16)
def _yaml(mapping: int, offset: int, null: bool) -> YAML:
    rt = YAML(typ="rt")
    if null:
        rt.Representer = _Representer
    rt.preserve_quotes = True
    rt.width = _WIDTH
    rt.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return rt


def _dump(rt: YAML, tree: Any) -> str:
    out = io.StringIO()
    rt.dump(tree, out)
    return out.getvalue().rstrip()


def _edit_yaml(body: str, old: Any, new: Any) -> list[str]:
    """The edited document, best first: the round trip's own text where it writes the document
    as it came; else the changes it makes laid into the text as it came (a document whose
    indentation varies, trailing spaces, flow lists spaced otherwise); else its own text."""
    rt = _yaml(*indentation(body), _NULL.search(body) is not None)
    tree = rt.load(body)
    before = _dump(rt, tree)
    shared = _shared(tree) if "&" in body else set()
    after = _dump(rt, _patch(tree, old, new, shared))
    if before == body:
        return [after]
    merged = _merge(body, before, after)
    return [after] if merged is None else [merged, after]


def _merge(original: str, before: str, after: str) -> str | None:
    """``original`` with the lines changed from ``before`` to ``after``, where ``before`` writes
    those lines and the ones around them as ``original`` does (None where it does not)."""
    o, b, a = original.splitlines(), before.splitlines(), after.splitlines()
    to_o: dict[int, int] = {}  # line of before -> the same line of original
    lines = difflib.SequenceMatcher(None, [x.rstrip() for x in o], [x.rstrip() for x in b], autojunk=False)
    for block in lines.get_matching_blocks():
        to_o.update((block.b + k, block.a + k) for k in range(block.size))
    out: list[str] = []
    at = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, b, a, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if i2 > i1:  # lines replaced or removed: each must be in original, one after the other
            if any(k not in to_o for k in range(i1, i2)) or to_o[i2 - 1] - to_o[i1] != i2 - 1 - i1:
                return None
            start, end = to_o[i1], to_o[i2 - 1] + 1
        else:  # lines inserted: between two lines that follow each other in original
            above = to_o.get(i1 - 1, None) if i1 > 0 else -1
            below = to_o.get(i1, None) if i1 < len(b) else len(o)
            if above is None or below is None or below != above + 1:
                return None
            start = end = below
        if start < at:
            return None
        out += o[at:start] + a[j1:j2]
        at = end
    return "\n".join(out + o[at:])


def _shared(tree: Any) -> set[int]:
    """ids of the mappings and lists that an alias names: they appear more than once."""
    seen: set[int] = set()
    twice: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in seen:
            twice.add(id(node))
            continue
        seen.add(id(node))
        stack.extend(node.values() if isinstance(node, dict) else node)
    return twice


def _own(node: Any, shared: set[int]) -> Any:
    """``node``, or a copy without its anchor when an alias also names it (the copy is changed)."""
    if id(node) not in shared:
        return node
    copied = copy.deepcopy(node)
    anchor = getattr(copied, "anchor", None)
    if anchor is not None:
        anchor.value = None
    return copied


def _patch(node: Any, old: Any, new: Any, shared: set[int]) -> Any:
    """``node`` (the round-trip tree of ``old``) changed to say ``new``: the node to put in its place."""
    if same(old, new):
        return node
    if isinstance(old, dict) and isinstance(new, dict) and isinstance(node, CommentedMap) \
            and list(node) == list(old):
        node = _own(node, shared)
        for key in [k for k in old if k not in new]:
            del node[key]
        position = 0
        for key, value in new.items():
            if key in old:
                node[key] = _patch(node[key], old[key], value, shared)
                position = list(node).index(key) + 1
            else:
                node.insert(position, key, value)
                position += 1
        return node
    if isinstance(old, list) and isinstance(new, list) and isinstance(node, CommentedSeq) \
            and len(node) == len(old):
        node = _own(node, shared)
        _patch_list(node, old, new, shared)
        return node
    if isinstance(node, ScalarString) and isinstance(new, str):
        return type(node)(new)  # the same quoting
    return new


def _patch_list(node: CommentedSeq, old: list[Any], new: list[Any], shared: set[int]) -> None:
    """Unchanged items stay (with their comments); changed ones are patched where they can be
    paired (by name, or by place in a run of as many), the rest removed or inserted."""
    for i1, i2, j1, j2 in reversed(list_changes(old, new)):
        matched = pairs(old[i1:i2], new[j1:j2])
        for i in reversed(range(i1, i2)):
            if i - i1 not in matched.values():
                del node[i]
        at = i1
        for j in range(j1, j2):
            if (i := matched.get(j - j1)) is not None:
                node[at] = _patch(node[at], old[i1 + i], new[j], shared)
            else:
                node.insert(at, new[j])
            at += 1


