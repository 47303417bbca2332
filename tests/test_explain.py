"""``podgate explain`` and docs/rules.md come from the rule registry and cannot drift from it."""

from __future__ import annotations

import pytest

from webhook.cli.commands import main
from webhook.cli.explain import markdown
from webhook.rules import RULES

from .conftest import REPO


def test_rules_doc_is_current() -> None:
    doc = REPO / "docs" / "rules.md"
    assert doc.read_text() == markdown(), \
        "docs/rules.md is stale: regenerate it with `podgate explain --markdown > docs/rules.md`"


def test_every_rule_is_documented_in_full() -> None:
    for r in RULES.values():
        assert r.summary and r.why and r.fix and r.example, r.id
        assert f"## {r.id}\n" in markdown()


@pytest.mark.parametrize("rule_id", list(RULES))
def test_explain_rule(capsys: pytest.CaptureFixture[str], rule_id: str) -> None:
    assert main(["explain", rule_id]) == 0
    out = capsys.readouterr().out
    r = RULES[rule_id]
    assert out.startswith(f"{rule_id} (default action: {r.default_action})\n")
    flat = " ".join(out.split())
    for text in (r.summary, r.why, r.fix, r.example):
        assert " ".join(text.split()) in flat
    assert f"spec.rules.{rule_id}: deny | warn | audit | off" in out


def test_explain_lists_the_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[: len(RULES)]] == list(RULES)


def test_explain_unknown_rule_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "port-colision"]) == 2
    assert 'unknown rule "port-colision"; did you mean "port-collision"?' in capsys.readouterr().err
