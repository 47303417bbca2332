"""``check`` for CI: SARIF (code scanning annotations) and JUnit XML (test report tabs).

Both say what ``check -o json`` says, in the shape a CI system shows: a SARIF result per
violation, at the file and line of its object, with the rule's documentation in the tool's
rule table; a JUnit test case per object, failed when it was denied (or warned, with
``--fail-on warn``), in error when podgate could not check it. Files or documents that could not
be read are SARIF tool notifications and JUnit errors, so a report is never silently short.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from .. import __version__
from ..rules import RULES
from .check import CheckResult, InputError, Report, failed

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {"deny": "error", "warn": "warning", "audit": "note"}
FAIL_ON = ("deny", "warn")

def _location(source: str | None, line: int | None) -> list[dict[str, Any]]:
    if not source:
        return []
    physical: dict[str, Any] = {"artifactLocation": {"uri": source}}
    if line:
        physical["region"] = {"startLine": line}
    return [{"physicalLocation": physical}]


def _rule_descriptor(rule_id: str) -> dict[str, Any]:
    rule = RULES[rule_id]
    return {"id": rule.id, "name": rule.id, "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.why},
            "help": {"text": f"{rule.fix} (podgate explain {rule.id}; docs/rules.md)"},
            "defaultConfiguration": {"level": _LEVELS.get(rule.default_action, "none")}}


def sarif(report: Report) -> dict[str, Any]:
    """SARIF 2.1.0, one run: GitHub code scanning, GitLab and Azure DevOps read it."""
    results = []
    for r in report.results:
        for finding in r.findings:
            v = finding.violation
            results.append({
                "ruleId": v.rule, "level": _LEVELS.get(finding.action, "none"),
                "message": {"text": f"{r.document.kind} {r.namespace}/{r.name}: {v.message}"},
                "locations": _location(r.document.source, r.document.line),
                "properties": finding.to_json(),
            })
        if not r.allowed and not r.findings and not r.error and r.decision and r.decision.message:
            results.append({"ruleId": "denied", "level": "error",
                             "message": {"text": f"{r.document.kind} {r.namespace}/{r.name}: {r.decision.message}"},
                             "locations": _location(r.document.source, r.document.line)})
    used = sorted({res["ruleId"] for res in results if res["ruleId"] in RULES})
    rules = [_rule_descriptor(rule_id) for rule_id in used]
    if any(res["ruleId"] == "denied" for res in results):
        rules.append({"id": "denied", "shortDescription": {"text": "denied without a rule (e.g. a malformed Pod)"}})
    notifications = [{"level": "error", "message": {"text": e.message}, "locations": _location(e.source, e.line)}
                     for e in report.errors]
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "podgate", "version": __version__, "rules": rules}},
        "invocations": [{"executionSuccessful": not report.errors, "toolExecutionNotifications": notifications}],
        "results": results,
    }]}


def junit(report: Report, fail_on: str = "deny") -> str:
    """JUnit XML: a test suite per file, a test case per object, errors for what was not checked."""
    by_file: dict[str, list[CheckResult]] = {}
    for r in report.results:
        by_file.setdefault(r.document.source, []).append(r)
    # objects podgate could not read are also in report.errors: their test case says it already
    in_results = {(r.document.source, r.document.index, r.document.item) for r in report.results if r.error}
    unplaced: list[InputError] = []
    errors_by_file: dict[str, list[InputError]] = {}
    for e in report.errors:
        if e.source is None:
            unplaced.append(e)
        elif (e.source, e.document, e.item) not in in_results:  # a file or document that could not be read
            errors_by_file.setdefault(e.source, []).append(e)
    root = ElementTree.Element("testsuites", name="podgate check")
    for source in [*by_file, *(s for s in errors_by_file if s not in by_file)]:
        results = by_file.get(source, [])
        file_errors = errors_by_file.get(source, [])
        suite = ElementTree.SubElement(root, "testsuite", name=source, file=source,
                                       tests=str(len(results) + len(file_errors)),
                                       failures=str(sum(failed(r, fail_on) and not r.error for r in results)),
                                       errors=str(sum(bool(r.error) for r in results) + len(file_errors)))
        for r in results:
            case = ElementTree.SubElement(suite, "testcase", classname=source, file=source,
                                          name=f"{r.document.kind} {r.namespace}/{r.name} ({r.document.where})",
                                          line=str(r.document.line or 0))
            lines = [f"{f.action} {f.violation.message}" for f in r.findings]
            if r.error:
                ElementTree.SubElement(case, "error", message=r.error).text = r.error
            elif failed(r, fail_on):
                message = lines[0] if lines else (r.decision.message if r.decision else "denied")
                ElementTree.SubElement(case, "failure", message=message).text = "\n".join(lines) or message
            elif lines:
                ElementTree.SubElement(case, "system-out").text = "\n".join(lines)
        for e in file_errors:
            name = source if e.document is None else f"{source} (document {e.document})"
            case = ElementTree.SubElement(suite, "testcase", classname=source, file=source, name=name,
                                          line=str(e.line or 0))
            ElementTree.SubElement(case, "error", message=e.message).text = e.message
    if unplaced:
        suite = ElementTree.SubElement(root, "testsuite", name="podgate check", tests=str(len(unplaced)),
                                       failures="0", errors=str(len(unplaced)))
        for e in unplaced:
            case = ElementTree.SubElement(suite, "testcase", classname="podgate check", name="input")
            ElementTree.SubElement(case, "error", message=e.message).text = e.message
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
