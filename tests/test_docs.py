"""Every example in README.md and docs/*.md runs here, so the docs cannot go stale.

Fenced blocks are recognised by their info string:
- ```yaml policy: a policy document; it must load (with the bundled mesh profile) and lint without errors;
- ```yaml suite: a test suite; it must pass the suite schema;
- ```yaml file=PATH: written to PATH in the doc's workspace before the blocks after it run;
- ```console: each ``$ podgate ...`` line runs (bash, in the workspace) and its output (stdout and
  stderr, as a terminal shows them) must equal the lines under it;
- ```bash lines that start with ``podgate`` must at least parse with podgate's argument parser
  (``podgate serve`` cannot run inside a doc example).
Each doc gets its own workspace: a copy of docs/examples/ plus the bundled policies in policies/.
``UPDATE_DOCS=1 pytest tests/test_docs.py`` rewrites the outputs of console blocks in place
(review the diff like code).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from webhook.cli.commands import build_parser
from webhook.cli.lint import lint
from webhook.policy import load_policy_set
from webhook.policy import schema_validator
from webhook.cli.suite import SCHEMA_FILE as SUITE_SCHEMA

from .conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = REPO / "docs" / "examples"
UPDATE = os.environ.get("UPDATE_DOCS") == "1"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.S | re.M)


@dataclass
class Block:
    doc: Path
    line: int
    info: list[str]
    text: str
    start: int  # offset of the body in the doc
    end: int

    @property
    def lang(self) -> str:
        return self.info[0] if self.info else ""

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"

    def attr(self, name: str) -> str | None:
        for item in self.info[1:]:
            key, _, value = item.partition("=")
            if key == name:
                return value or "true"
        return None


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text()
    return [Block(doc, text.count("\n", 0, m.start()) + 1, m.group(1).split(), m.group(2), m.start(2), m.end(2))
            for m in FENCE.finditer(text)]


def all_blocks(predicate) -> list[Block]:  # type: ignore[no-untyped-def]
    return [b for doc in DOCS for b in blocks(doc) if predicate(b)]


def podgate_console(block: Block) -> bool:
    commands = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    return block.lang == "console" and bool(commands) and all(c.startswith("podgate ") for c in commands)


def workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    shutil.copytree(EXAMPLES, ws)
    (ws / "policies").mkdir(exist_ok=True)
    for f in ("default.yaml", "mesh-proxy.yaml"):
        shutil.copy(REPO / "policies" / f, ws / "policies" / f)
    return ws


def run_console(block: Block, ws: Path) -> str:
    """The block with each command's real output under it."""
    out: list[str] = []
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "NO_COLOR": "1",
           "COLUMNS": "100"}
    for line in block.text.splitlines():
        if not line.startswith("$ "):
            continue
        out.append(line)
        proc = subprocess.run(["bash", "-c", line[2:] + " 2>&1"], cwd=ws, env=env, capture_output=True, text=True,
                              timeout=120)
        out.extend(proc.stdout.rstrip("\n").splitlines())
    return "\n".join(out) + "\n"


def _normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


DOCS_WITH_EXAMPLES = [d for d in DOCS if any(podgate_console(b) or b.attr("file") for b in blocks(d))]


@pytest.mark.parametrize("doc", DOCS_WITH_EXAMPLES, ids=lambda d: d.name)
def test_console_examples_run(doc: Path, tmp_path: Path) -> None:
    """The blocks of one doc run in order in one workspace: files written, commands run."""
    ws = workspace(tmp_path)
    text = doc.read_text()
    updates = []
    failures = []
    for block in blocks(doc):
        if (target := block.attr("file")) is not None:
            path = ws / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
        elif podgate_console(block):
            got = run_console(block, ws)
            if _normal(got) != _normal(block.text):
                updates.append((block, got))
                failures.append(f"{block.id}: expected\n{block.text}\ngot\n{got}")
    if UPDATE and updates:
        for block, got in reversed(updates):
            text = text[:block.start] + got + text[block.end:]
        doc.write_text(text)
        return
    assert not failures, "\n\n".join(failures) + "\n(UPDATE_DOCS=1 rewrites the outputs; review the diff)"


POLICY_BLOCKS = all_blocks(lambda b: b.lang == "yaml" and b.attr("policy"))


@pytest.mark.parametrize("block", POLICY_BLOCKS, ids=lambda b: b.id)
def test_policy_examples_load_and_lint(block: Block, tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(block.text) if d]
    assert docs and all(d.get("kind") in ("Policy", "MeshProfile") for d in docs)
    if not any(d["kind"] == "MeshProfile" and d["metadata"]["name"] == "mesh-proxy" for d in docs):
        shutil.copy(REPO / "policies" / "mesh-proxy.yaml", tmp_path / "mesh-proxy.yaml")
    (tmp_path / "z-example.yaml").write_text(block.text)
    load_policy_set(tmp_path)
    report = lint(tmp_path)
    assert report.errors == 0, "\n".join(map(str, report.problems))


SUITE_BLOCKS = all_blocks(lambda b: b.lang == "yaml" and b.attr("suite"))


@pytest.mark.parametrize("block", SUITE_BLOCKS, ids=lambda b: b.id)
def test_suite_examples_match_the_schema(block: Block) -> None:
    errors = [e.message for e in schema_validator(SUITE_SCHEMA).iter_errors(yaml.safe_load(block.text))]
    assert not errors


BASH_LINES = [(b, line) for b in all_blocks(lambda b: b.lang in ("bash", "sh", ""))
              for line in b.text.splitlines() if line.startswith("podgate ")]


@pytest.mark.parametrize(("block", "line"), BASH_LINES, ids=[f"{b.id}:{i}" for i, (b, _) in enumerate(BASH_LINES)])
def test_command_lines_parse(block: Block, line: str) -> None:
    command = line.split("#", 1)[0]
    if "[" in command or "..." in command:  # a synopsis, not a command
        return
    build_parser().parse_args(shlex.split(command)[1:])


def test_there_are_examples() -> None:
    assert DOCS_WITH_EXAMPLES and POLICY_BLOCKS and SUITE_BLOCKS
