"""Every example in README.md and docs/*.md runs here, so the docs cannot go stale.

Fenced blocks are recognised by their info string:
- ```yaml policy: a policy document; it must load (with the bundled mesh profile) and lint without errors;
- ```yaml suite: a test suite; it must pass the suite schema;
- ```yaml file=PATH: written to PATH in the doc's workspace before the blocks after it run;
- ```console: each ``$ podgate ...`` line runs (bash, in the workspace) and its output (stdout and
  stderr, as a terminal shows them) must equal the lines under it;
- ```bash lines that start with ``podgate`` must at least parse with podgate's argument parser
  (``podgate serve`` cannot run inside a doc example).
Each doc gets its own workspace: a copy of docs/examples/ plus the bundled policies in policies/;
a doc with a ```bash setup block makes it with those lines, as a reader pastes them (run from the
top of the checkout, a scratch directory under the test's TMPDIR).
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


def workspace(tmp: Path, doc: Path | None = None) -> Path:
    setup = [b for b in blocks(doc) if b.lang == "bash" and b.attr("setup")] if doc else []
    if setup:
        scratch = tmp / "scratch"
        scratch.mkdir()
        proc = subprocess.run(["bash", "-e", "-c", setup[0].text + "\npwd"], cwd=REPO, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "TMPDIR": str(scratch)})
        assert proc.returncode == 0, f"{setup[0].id}: the setup lines fail:\n{proc.stderr}"
        ws = Path(proc.stdout.splitlines()[-1])
        assert ws.is_relative_to(scratch), f"{setup[0].id}: the setup must work in a scratch directory, not {ws}"
        return ws
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
    ws = workspace(tmp_path, doc)
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


def test_the_policy_guide_sets_up_a_scratch_directory_and_names_every_example_file() -> None:
    """A reader pastes the guide's commands: they must not write into the checkout, and every file
    of docs/examples/ is one the guide talks about."""
    guide = REPO / "docs" / "policy-guide.md"
    assert [b for b in blocks(guide) if b.lang == "bash" and b.attr("setup")], "no ```bash setup block"
    text = guide.read_text()
    for path in EXAMPLES.rglob("*"):
        if path.is_file() and path.parent == EXAMPLES:
            assert path.name in text, f"docs/examples/{path.name} is never mentioned in the policy guide"


def _json_md_rows(heading: str) -> list[list[str]]:
    text = (REPO / "docs" / "json.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")][1:]


def test_no_doc_cites_a_file_the_repository_does_not_have() -> None:
    """The JSON contract used to be cited from DESIGN.md, which is not in the repository."""
    readmes = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("*/README.md"), *REPO.glob("charts/*/README.md")]
    for doc in readmes:
        assert "DESIGN.md" not in doc.read_text(), doc
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc}: links to {target}, which does not exist"


def test_json_md_documents_every_rule_and_the_fields_it_reports(tmp_path: Path) -> None:
    from webhook.rules import RULES

    from .test_rules import CASES, MESH_CASES

    fields: dict[str, set[str]] = {}
    for rules, _, other in _json_md_rows("`violations`: one entry per finding"):
        for rule in re.findall(r"`([a-z-]+)`", rules):
            fields[rule] = set(re.findall(r"`([a-z_]+)`", other))
    assert set(fields) == set(RULES)
    for case in [*CASES, *MESH_CASES]:
        for rule, _, extra in case.values[1]:
            assert set(extra) <= fields[rule], (rule, extra, case.id)

    # the keys of a real run are the documented ones
    result_keys = {re.sub(r"`", "", k) for row in _json_md_rows("`results`: one entry per Pod or workload")
                   for k in row[0].split(", ")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 3}\n")
    proc = subprocess.run([sys.executable, "-m", "webhook.cli", "check", "-o", "json", "--namespace-labels",
                           str(EXAMPLES / "namespaces.yaml"), str(EXAMPLES), str(bad)],
                          capture_output=True, text=True, timeout=60)
    report = yaml.safe_load(proc.stdout)
    assert set(report) == {"results", "errors", "summary"}
    for result in report["results"]:
        assert set(result) <= result_keys, set(result) - result_keys
    assert set(report["summary"]) == {"files", "objects", "denied", "warned", "errors"}


def synopsis() -> str:
    """Every command's usage line, from the parser itself (at 100 columns), under its one-line help."""
    import argparse

    def subcommands(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                for name, sub in action.choices.items():
                    yield helps.get(name) or "", sub

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        lines = []
        for help_text, sub in subcommands(build_parser()):
            for inner_help, leaf in list(subcommands(sub)) or [(help_text, sub)]:
                usage = leaf.format_usage().removeprefix("usage: ").replace(" [-h]", "")
                lines.append(f"# {inner_help}")
                lines += [line[len("usage: "):] if line.startswith(" " * 7) else line
                          for line in usage.rstrip("\n").splitlines()]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(lines) + "\n"


def test_readme_synopsis_is_the_parsers() -> None:
    """The README's command synopsis is every command with every option --help has."""
    readme = REPO / "README.md"
    [block] = [b for b in blocks(readme) if b.lang == "text" and b.attr("synopsis")]
    want = synopsis()
    if UPDATE and block.text != want:
        text = readme.read_text()
        readme.write_text(text[:block.start] + want + text[block.end:])
        return
    assert block.text == want, "the README synopsis is stale: UPDATE_DOCS=1 pytest tests/test_docs.py rewrites it"


def test_the_docs_name_every_kind_check_reads() -> None:
    from webhook.workloads import WORKLOAD_KINDS

    for doc in (REPO / "README.md", REPO / "docs" / "policy-guide.md"):
        text = " ".join(doc.read_text().split())
        [sentence] = [m for m in re.findall(r"Pod templates of [^.]*\.", text)][:1]
        for kind in WORKLOAD_KINDS:
            assert kind in sentence, f"{doc.name}: the kinds check reads lack {kind}: {sentence}"


def test_make_serve_installs_only_what_serving_needs(tmp_path: Path) -> None:
    """On a fresh machine `make serve` installs the package alone, `make test` the test extras too."""
    def plan(target: str) -> str:
        proc = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    serve = plan("serve")
    assert "pip install --quiet -e ." in serve and "[test]" not in serve and "podgate serve" in serve
    test = plan("test")
    assert "pip install --quiet -e '.[test]'" in test and "pytest" in test

    # and serving imports nothing that only the test extras bring
    test_only = ["pytest", "hypothesis", "trustme", "helm_python", "kubernetes_validate", "importlinter"]
    code = ("import sys\n"
            f"blocked = {test_only!r}\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in blocked: raise ImportError('test extra: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from webhook.cli.commands import build_parser\n"
            "import webhook.server.runner, webhook.server.worker\n"
            "from webhook.server.app import create_app\n"
            "from webhook.server.settings import Settings\n"
            "create_app(Settings(reload_interval=0))\n"
            "build_parser().parse_args(['serve'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
