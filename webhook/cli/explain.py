"""``podgate explain``: the rule registry as text for the terminal and as docs/rules.md.

Both come from the same ``summary``/``why``/``fix``/``example`` fields of each registered rule,
so the documentation cannot drift from the code (a test regenerates docs/rules.md and compares).
"""

from __future__ import annotations

import difflib
import textwrap

from ..rules import RULES, Rule

WIDTH = 100


def unknown_rule_message(rule_id: str) -> str:
    close = difflib.get_close_matches(rule_id, list(RULES), n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown rule "{rule_id}"{hint} (known rules: podgate explain)'


def _para(title: str, text: str) -> str:
    return f"{title}\n" + textwrap.fill(text, WIDTH, initial_indent="  ", subsequent_indent="  ")


def rule_text(r: Rule) -> str:
    """What ``podgate explain RULE`` prints."""
    parts = [f"{r.id} (default action: {r.default_action})", textwrap.fill(r.summary, WIDTH),
             _para("Why it matters:", r.why), _para("How to fix it:", r.fix)]
    if r.example:
        parts.append(_para("Example:", r.example))
    parts.append(_para("Policy:", f"spec.rules.{r.id}: deny | warn | audit | off"))
    return "\n\n".join(parts) + "\n"


def rule_list() -> str:
    """What ``podgate explain`` prints with no rule: one line per rule."""
    width = max(len(r) for r in RULES)
    lines = [f"{r.id.ljust(width)}  {r.default_action.ljust(4)}  {r.summary}" for r in RULES.values()]
    return "\n".join(lines) + "\n\npodgate explain RULE shows why a rule matters and how to fix what it finds.\n"


def markdown() -> str:
    """docs/rules.md, generated: ``podgate explain --markdown > docs/rules.md``."""
    out = ["# podgate rules", "",
           "<!-- Generated from the rule registry (webhook/rules) by `podgate explain --markdown`; do not edit. -->",
           "",
           "Every rule has a stable ID, used in messages, policy files (`spec.rules`), metrics and",
           "`podgate check -o json`. A policy gives each rule an action: `deny` (the Pod is rejected),",
           "`warn` (kubectl shows a warning), `audit` (logged and counted only) or `off`.",
           "The same text is printed by `podgate explain RULE`.", "",
           "| rule | default | checks |", "|---|---|---|"]
    out += [f"| [`{r.id}`](#{r.id}) | {r.default_action} | {r.summary} |" for r in RULES.values()]
    for r in RULES.values():
        out += ["", f"## {r.id}", "", f"Default action: **{r.default_action}**.", "", r.summary, "",
                f"**Why it matters.** {r.why}", "", f"**How to fix it.** {r.fix}"]
        if r.example:
            out += ["", f"**Example.** {r.example}"]
    return "\n".join(out) + "\n"
