"""``podgate test``: suites of recorded requests and manifests, each with what podgate must answer.

A suite is a ``podgate-test.yaml`` file (format: docs/testing.md, schema: policies/suite.schema.json).
Every case goes through ``offline.admit``, i.e. ``admission.review``, the function the server
uses; there is no second evaluation path. A malformed suite is a SuiteError naming every
problem with file, line and JSON path (exit 2); a case whose answer differs from its expectation
fails (exit 1).

Each file a suite names is read and parsed once however many cases pick from it (a manifest of
5,000 Pods behind 5,000 cases is one parse, and each case finds its object by index).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from ..admission import Context
from ..errors import PodgateError
from ..files import INPUT_FILE_MAX, InputFileError, read_text
from ..namespaces import StaticNamespaceLabels
from ..policy import PolicySet, schema_problems
from ..rules import RULES
from ..yamlpos import YamlDocument, error_line, error_text, json_pointer, load_documents, schema_error_path
from .explain import unknown_rule_message
from .lint import load_policies
from .manifests import Document, ManifestError, documents, read_documents
from .offline import Admission, Step, admit, pod_review, webhook_from_name

SUITE_NAMES = ("podgate-test.yaml", "podgate-test.yml")
SCHEMA_FILE = "suite.schema.json"
API_VERSION = "podgate.io/v1alpha1"


class SuiteError(PodgateError):
    """A suite (or a file it names) is malformed: exit code 2. ``problems`` holds each problem
    found, one line each (the message is all of them)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or message.splitlines()


def find_suites(target: str | Path) -> list[Path]:
    """A suite file, or every podgate-test.yaml under a directory (recursively, in path order)."""
    path = Path(target)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SuiteError(f"{path}: no such file or directory")
    found = sorted(p for name in SUITE_NAMES for p in path.rglob(name) if p.is_file())
    if not found:
        raise SuiteError(f"{path}: no test suite found (a file named {SUITE_NAMES[0]})")
    return found


@dataclass
class Case:
    """One case, resolved: the AdmissionReview to send, the step, and what must come back."""

    name: str
    suite: Path
    line: int
    step: Step
    body: dict[str, Any]
    expect: dict[str, Any]
    labels: dict[str, dict[str, str]]
    patched: Any = None  # the golden object, when expect.patched is given
    patched_file: Path | None = None
    # what the case sends, for --init to recognise a case it would write again: the input file
    # (resolved), document, List item, webhook and namespace; None for an inline object
    input_key: InputKey | None = None


InputKey = tuple[str, Path, int | None, int | None, str, str]


@dataclass
class Suite:
    path: Path
    name: str
    policies: Path | None  # None: the bundled policies
    cases: list[Case]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # the suite's namespaceLabels


def _where(path: Path, doc: YamlDocument, at: list[Any]) -> str:
    return f"{path}:{doc.line(at)}: {json_pointer(at)}"


def _read_structured(path: Path, what: str, where: str) -> list[Any]:
    """All documents of a JSON or YAML file a suite refers to."""
    return [d.data for d in _parse_structured(path, what, where)]


def _parse_structured(path: Path, what: str, where: str) -> list[YamlDocument]:
    """``_read_structured``, with each document's YAML (for manifests: ``manifests.documents``)."""
    try:
        return load_documents(read_text(path, INPUT_FILE_MAX))
    except InputFileError as exc:
        if not path.exists():
            raise SuiteError(f"{where}: {what} {path} does not exist") from None
        raise SuiteError(f"{where}: cannot read {what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        line = error_line(exc)
        raise SuiteError(f"{path}{f':{line}' if line else ''}: invalid JSON/YAML: {error_text(exc)}") from None


class _Manifests:
    """The manifest files of one suite, each read once: its Pods and workloads by document and
    List item, so that a case picks its object without another parse or a scan of the file."""

    def __init__(self) -> None:
        self._files: dict[Path, dict[int, list[Document]] | ManifestError] = {}

    def by_document(self, file: Path) -> dict[int, list[Document]]:
        key = file.resolve()
        if key not in self._files:
            try:
                found: dict[int, list[Document]] = {}
                for d in read_documents(str(file)):
                    if d.has_pod:
                        found.setdefault(d.index, []).append(d)
                self._files[key] = found
            except ManifestError as exc:
                self._files[key] = exc
        got = self._files[key]
        if isinstance(got, ManifestError):
            raise got
        return got


def load_suite(path: Path, update_golden: bool = False) -> Suite:
    """Read and check a suite file and everything it names; raise SuiteError naming every
    problem found (each case is checked, as lint checks each document).

    With ``update_golden`` a missing golden file is not an error: the run writes it.
    """
    try:
        docs = load_documents(read_text(path, INPUT_FILE_MAX))
    except InputFileError as exc:
        raise SuiteError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        line = error_line(exc)
        raise SuiteError(f"{path}{f':{line}' if line else ''}: invalid YAML: {error_text(exc)}") from None
    if len(docs) != 1:
        raise SuiteError(f"{path}: expected one YAML document (a TestSuite), found {len(docs)}")
    doc = docs[0]
    errors = schema_problems(doc.data, SCHEMA_FILE)
    if errors:
        raise SuiteError("\n".join(f"{_where(path, doc, schema_error_path(best))}: {message}"
                                   for best, message in errors))
    data = doc.data
    problems = list(_unknown_rules(path, doc))
    base = path.parent
    policies = (base / data["policies"]).resolve() if data.get("policies") else None
    if policies is not None and not policies.is_dir():
        problems.append(f"{_where(path, doc, ['policies'])}: policy directory {policies} does not exist")
    labels = data.get("namespaceLabels") or {}
    cases, names, manifests = [], set(), _Manifests()
    for i, raw in enumerate(data["cases"]):
        if raw["name"] in names:
            problems.append(f"{_where(path, doc, ['cases', i, 'name'])}: case name {raw['name']!r} is used twice")
        names.add(raw["name"])
        try:
            cases.append(_load_case(path, doc, i, raw, labels, update_golden, manifests))
        except SuiteError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SuiteError("\n".join(problems), problems)
    return Suite(path, data.get("name") or str(path), policies, cases, labels)


def _unknown_rules(path: Path, doc: YamlDocument) -> Iterator[str]:
    """Rule IDs in expectations that no rule has: such an expectation can never fail (doesNotFire)
    or never pass (fires), so it is a malformed suite, named like a schema error. The rule
    registry is the one list of rule IDs."""
    for i, case in enumerate(doc.data["cases"]):
        expect = case["expect"]
        for key in ("rules", "fires", "doesNotFire"):
            for j, rule_id in enumerate(expect.get(key, [])):
                if rule_id not in RULES:
                    yield f"{_where(path, doc, ['cases', i, 'expect', key, j])}: {unknown_rule_message(rule_id)}"
        for j, violation in enumerate(expect.get("violations", [])):
            if violation["rule"] not in RULES:
                yield (f"{_where(path, doc, ['cases', i, 'expect', 'violations', j, 'rule'])}: "
                       f"{unknown_rule_message(violation['rule'])}")


def _load_case(path: Path, doc: YamlDocument, i: int, raw: Mapping[str, Any],
               suite_labels: Mapping[str, Any], update_golden: bool, manifests: _Manifests) -> Case:
    base = path.parent
    at = ["cases", i]
    where = _where(path, doc, at)
    key: InputKey | None = None
    step = raw.get("webhook", "validate" if "request" in raw else "admit")
    if "request" in raw:
        key = ("request", (base / raw["request"]).resolve(), None, None, step, "")
        found = _read_structured(base / raw["request"], "request file", _where(path, doc, at + ["request"]))
        if len(found) != 1 or not isinstance(found[0], dict):
            raise SuiteError(f"{_where(path, doc, at + ['request'])}: {raw['request']} must hold one "
                             "AdmissionReview object")
        body, default_step = found[0], "validate"
        if body.get("kind") != "AdmissionReview" and "error" not in raw["expect"]:
            raise SuiteError(f"{_where(path, doc, at + ['request'])}: {raw['request']} is a "
                             f"{body.get('kind') or 'object without kind'}, not an AdmissionReview "
                             "(use manifest: for a Pod or workload, or expect.error for a request podgate must reject)")
    else:
        namespace = raw.get("namespace", "default")
        if "manifest" in raw:
            picked = _manifest_object(manifests, base / raw["manifest"], raw.get("document"), raw.get("item"),
                                      _where(path, doc, at + ["manifest"]))
            key = ("manifest", (base / raw["manifest"]).resolve(), picked.index, picked.item, step, namespace)
            obj = picked.obj
        else:
            obj = raw["object"]
        body, default_step = _manifest_review(obj, namespace, where), "admit"
    expect = dict(raw["expect"])
    case = Case(raw["name"], path, doc.line(at), raw.get("webhook", default_step), body, expect,
                {**suite_labels, **(raw.get("namespaceLabels") or {})}, input_key=key)
    golden = expect.get("patched")
    if isinstance(golden, str):
        case.patched_file = base / golden
        if update_golden and not case.patched_file.exists():
            return case
        found = _read_structured(case.patched_file, "golden file", _where(path, doc, at + ["expect", "patched"]))
        if len(found) != 1:
            raise SuiteError(f"{_where(path, doc, at + ['expect', 'patched'])}: {golden} must hold one object")
        case.patched = found[0]
    elif golden is not None:
        case.patched = golden
    return case


def _manifest_object(manifests: _Manifests, file: Path, index: int | None, item: int | None,
                     where: str) -> Document:
    """The one Pod or workload of a manifest file that ``document``/``item`` pick."""
    try:
        by_document = manifests.by_document(file)
    except ManifestError as exc:
        raise SuiteError(f"{where}: {exc}") from None
    if index is not None:
        docs = by_document.get(index, [])
    else:
        docs = [d for found in by_document.values() for d in found]
    if item is not None:
        docs = [d for d in docs if d.item == item]
    if len(docs) != 1:
        which = " ".join(filter(None, [f"document {index}" if index is not None else "",
                                       f"item {item}" if item is not None else ""]))
        which = f"{which} of {file}" if which else str(file)
        if index is None:
            hint = "; pick one with document: N"
        elif item is None and len({d.item for d in docs}) > 1:
            hint = "; it is a List: pick one with item: N"
        else:
            hint = ""
        raise SuiteError(f"{where}: {which} must hold exactly one Pod or workload, found {len(docs)}{hint}")
    return docs[0]


def _manifest_review(obj: Any, namespace: str, where: str) -> dict[str, Any]:
    doc = Document("", 0, obj)
    if not doc.has_pod:
        raise SuiteError(f"{where}: the manifest is a {doc.kind or 'object without kind'}, not a Pod or workload")
    ns = doc.namespace(namespace)
    pod = doc.pod(ns)
    if pod is None:
        raise SuiteError(f"{where}: {doc.kind} {doc.name!r} has no Pod template")
    return pod_review(pod, ns, uid=f"podgate-test-{doc.name or 'object'}")


# --- running ----------------------------------------------------------------------------------

@dataclass
class CaseResult:
    case: Case
    admission: Admission
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"name": self.case.name, "line": self.case.line, "passed": self.passed, "failures": self.failures,
                "allowed": self.admission.allowed, "rules": fired_rules(self.admission)}


def fired_rules(result: Admission) -> list[str]:
    return sorted({f.violation.rule for f in result.findings})


def _listing(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _yaml(obj: Any) -> list[str]:
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True).splitlines()


def object_diff(expected: Any, actual: Any, label: str) -> str:
    """A unified diff of two objects as sorted YAML, the way a reviewer reads a golden file."""
    lines = difflib.unified_diff(_yaml(expected), _yaml(actual), f"expected ({label})", "actual", lineterm="", n=3)
    return "\n".join(lines)


def check_case(case: Case, result: Admission) -> list[str]:
    """Every difference between what the case expects and what podgate answered."""
    e, out = case.expect, []
    if result.error is not None:
        if "error" not in e:
            return [f"the request was rejected: {result.error}"]
        if e["error"] not in result.error:
            out.append(f"error: expected text {e['error']!r}, got {result.error!r}")
        return out
    if "error" in e:
        out.append(f"error: expected the request to be rejected ({e['error']!r}), but it was answered")
    message = result.status.get("message", "")
    if "allowed" in e and e["allowed"] != result.allowed:
        got = "allowed" if result.allowed else f"denied: {message}"
        out.append(f"allowed: expected {str(e['allowed']).lower()}, got {str(result.allowed).lower()} ({got})")
    if "code" in e and e["code"] != result.status.get("code"):
        out.append(f"code: expected {e['code']}, got {result.status.get('code')}")
    for text in [e["message"]] if isinstance(e.get("message"), str) else e.get("message", []):
        if text not in message:
            out.append(f"message: expected text {text!r}, got {message!r}" if message
                       else f"message: expected text {text!r}, but there is no denial message")
    fired = fired_rules(result)
    if "rules" in e and sorted(e["rules"]) != fired:
        missing = sorted(set(e["rules"]) - set(fired))
        extra = sorted(set(fired) - set(e["rules"]))
        detail = "; ".join(filter(None, [f"did not fire: {', '.join(missing)}" if missing else "",
                                          f"also fired: {', '.join(extra)}" if extra else ""]))
        out.append(f"rules: expected {_listing(sorted(e['rules']))}, got {_listing(fired)} ({detail})")
    if missing := [r for r in e.get("fires", []) if r not in fired]:
        out.append(f"fires: expected {', '.join(missing)} to fire; fired: {_listing(fired)}")
    if unwanted := [r for r in e.get("doesNotFire", []) if r in fired]:
        messages = [f.violation.message for f in result.findings if f.violation.rule in unwanted]
        out.append(f"doesNotFire: {', '.join(unwanted)} fired: " + " | ".join(messages))
    findings = [f.to_json() for f in result.findings]
    for want in e.get("violations", []):
        if not any(_matches(want, got) for got in findings):
            out.append(f"violations: none matches {json.dumps(want, sort_keys=True)}; got "
                       + (json.dumps([{k: v for k, v in f.items() if k != "message"} for f in findings])
                          if findings else "no violations"))
    if "warnings" in e:
        out.extend(_check_warnings(e["warnings"], result.warnings))
    if "injected" in e and e["injected"] != result.injected:
        why = result.mutation.decision.reason if result.mutation and result.mutation.decision else "not called"
        out.append(f"injected: expected {str(e['injected']).lower()}, got {str(result.injected).lower()} "
                   f"(mutating webhook: {why})")
    if "patched" in e and case.patched != result.object:
        label = str(case.patched_file) if case.patched_file else "inline"
        out.append("patched: the object after the patch differs from the golden one:\n"
                   + object_diff(case.patched, result.object, label))
    return out


def _matches(want: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    for key, value in want.items():
        if key == "message":
            if value not in got.get("message", ""):
                return False
        elif got.get(key) != value:
            return False
    return True


def _check_warnings(expected: list[str], actual: list[str]) -> list[str]:
    if len(expected) != len(actual):
        shown = "".join(f"\n  - {w}" for w in actual) or " (none)"
        return [f"warnings: expected {len(expected)}, got {len(actual)}:{shown}"]
    return [f"warnings[{i}]: expected text {want!r}, got {got!r}"
            for i, (want, got) in enumerate(zip(expected, actual)) if want not in got]


@dataclass
class SuiteRun:
    """One suite file of a run: the results of its cases, or the problems that kept it from
    running (a malformed suite, or policies that do not load)."""

    path: Path
    suite: Suite | None = None
    cases: list[CaseResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    pending: Iterator[CaseResult] | None = None  # the cases not run yet

    def results(self) -> Iterator[CaseResult]:
        """Run the cases (once), each result yielded as soon as it is known and kept in ``cases``."""
        pending, self.pending = self.pending, None
        for result in pending or ():
            self.cases.append(result)
            yield result

    @property
    def name(self) -> str:
        return self.suite.name if self.suite else str(self.path)

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.path), "name": self.name, "cases": [r.to_json() for r in self.cases],
                "errors": self.problems}


def summary(runs: list[SuiteRun]) -> dict[str, int]:
    cases = [r for run in runs for r in run.cases]
    failed = sum(not r.passed for r in cases)
    return {"cases": len(cases), "passed": len(cases) - failed, "failed": failed,
            "malformed": sum(bool(run.problems) for run in runs)}


def junit_xml(runs: list[SuiteRun]) -> str:
    """JUnit XML, which CI systems (GitLab, Jenkins, GitHub test reporters) show per case; a suite
    that could not run is one test case with an ``error``, so that the report shows it."""
    root = ElementTree.Element("testsuites", name="podgate test")
    for run in runs:
        failed = sum(not r.passed for r in run.cases)
        node = ElementTree.SubElement(root, "testsuite", name=run.name, tests=str(len(run.cases) or 1),
                                      failures=str(failed), errors=str(int(bool(run.problems))), file=str(run.path))
        if run.problems:
            case = ElementTree.SubElement(node, "testcase", name="malformed suite", classname=run.name,
                                          file=str(run.path))
            error = ElementTree.SubElement(case, "error", message=run.problems[0])
            error.text = "\n".join(run.problems)
        for r in run.cases:
            case = ElementTree.SubElement(node, "testcase", name=r.case.name, classname=run.name,
                                          file=str(r.case.suite), line=str(r.case.line))
            if not r.passed:
                failure = ElementTree.SubElement(case, "failure", message=r.failures[0].splitlines()[0])
                failure.text = "\n".join(r.failures)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


class Runner:
    """Runs suites; policy directories are loaded once each.

    ``labels`` (``--namespace-labels``) are the namespace labels of the run; a suite's or a case's
    ``namespaceLabels`` win for the namespaces they name (the suite says what it tests)."""

    def __init__(self, policies_override: str | None = None, labels: Mapping[str, dict[str, str]] | None = None
                 ) -> None:
        self.override = Path(policies_override) if policies_override else None
        self.labels: dict[str, dict[str, str]] = dict(labels or {})
        self._sets: dict[Path | None, PolicySet] = {}

    def policies(self, suite: Suite) -> PolicySet:
        directory = self.override or suite.policies
        if directory not in self._sets:
            self._sets[directory] = load_policies(directory)
        return self._sets[directory]

    def run(self, suite: Suite, name_filter: str | None = None, update_golden: bool = False) -> Iterator[CaseResult]:
        """Run the cases (whose name contains ``name_filter``); ``update_golden`` rewrites golden
        files that differ from today's answer (review the diff like code) instead of failing."""
        policies = self.policies(suite)
        for case in suite.cases:
            if name_filter and name_filter not in case.name:
                continue
            ctx = Context(policies, StaticNamespaceLabels({**self.labels, **case.labels}))
            result = admit(case.body, case.step, ctx)
            if update_golden and case.patched_file is not None and case.patched != result.object:
                write_golden(case.patched_file, result.object)
                case.patched = result.object
            yield CaseResult(case, result, check_case(case, result))


def run_all(target: str | Path, runner: Runner, name_filter: str | None = None,
            update_golden: bool = False) -> Iterator[SuiteRun]:
    """Every suite under ``target``, one at a time: loaded, then ready to run (``results()``). A
    suite that is malformed, or whose policies do not load, comes with its problems and no
    cases; the others still run. A target with no suite at all is one such run."""
    try:
        paths = find_suites(target)
    except SuiteError as exc:
        yield SuiteRun(Path(target), problems=exc.problems)
        return
    for path in paths:
        run = SuiteRun(path)
        try:
            run.suite = load_suite(path, update_golden)
            runner.policies(run.suite)
        except SuiteError as exc:
            run.problems = exc.problems
        except PodgateError as exc:
            run.problems = [f"{path}: {line}" if i == 0 else line for i, line in enumerate(str(exc).splitlines())]
        else:
            run.pending = runner.run(run.suite, name_filter, update_golden)
        yield run


def write_golden(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True))


# --- writing cases (podgate test --init) ------------------------------------------------------

def _case_name(stem: str, taken: set[str]) -> str:
    base = stem.removesuffix(".request").removesuffix(".json") or "case"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def expectation(result: Admission, golden: str | None) -> dict[str, Any]:
    """What podgate answers now, as an ``expect`` block (the reviewer then decides it is right)."""
    if result.error is not None:
        return {"error": result.error}
    e: dict[str, Any] = {"allowed": result.allowed}
    if not result.allowed and result.status.get("code", 403) != 403:
        e["code"] = result.status.get("code")
    e["rules"] = fired_rules(result)
    # the rule tag, not the whole text: a reworded message should not fail every suite
    e["warnings"] = [w.split("]", 1)[0] + "]" if w.startswith("[") else w for w in result.warnings]
    if result.step != "validate" and result.mutation is not None:
        e["injected"] = result.injected
        if result.injected and golden is not None:
            e["patched"] = golden
    return e


def _step_for(path: Path, default: Step | None, is_request: bool) -> Step:
    if default is not None:
        return default
    if not is_request:
        return "admit"
    return webhook_from_name(path.name)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return ""


def _copy_in(path: Path, suite_dir: Path, sub: str) -> str:
    """The file's path relative to the suite, copying it in (under a free name) if it is outside."""
    ref = _relative(path, suite_dir)
    if ref:
        return ref
    data = path.read_bytes()
    target, n = suite_dir / sub / path.name, 2
    while target.exists() and target.read_bytes() != data:
        target, n = suite_dir / sub / f"{path.stem}-{n}{path.suffix}", n + 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return f"{sub}/{target.name}"


@dataclass
class _Input:
    """One case a file yields: the AdmissionReview, and where in the file it comes from."""

    body: dict[str, Any]
    doc: Document | None = None  # the manifest's object; None for a recorded request
    pick: bool = False  # the file holds several Pods or workloads: the case must say which

    @property
    def is_request(self) -> bool:
        return self.doc is None

    @property
    def document(self) -> int | None:
        return self.doc.index if self.doc else None

    @property
    def item(self) -> int | None:
        return self.doc.item if self.doc else None

    def label(self, path: Path) -> str:
        return str(path) if self.doc is None else f"{path} [{self.doc.where}]"


def _inputs(path: Path, namespace: str) -> list[_Input]:
    """The cases a file yields: one for a request, one per Pod or workload for a manifest."""
    parsed = _parse_structured(path, "file", str(path))  # once: a manifest's Documents come from it too
    if len(parsed) == 1 and isinstance(parsed[0].data, dict) and parsed[0].data.get("kind") == "AdmissionReview":
        return [_Input(parsed[0].data)]
    pods = [d for d in documents(str(path), parsed) if d.has_pod]
    if not pods:
        raise SuiteError(f"{path}: neither an AdmissionReview nor a manifest with a Pod or workload")
    many = len(pods) > 1
    return [_Input(_manifest_review(d.obj, namespace, f"{path}: {d.where}"), d, many)
            for d in pods]


def init_cases(sources: list[str], suite_dir: Path, runner: Runner, step: Step | None = None,
               namespace: str = "default") -> tuple[Path, list[dict[str, Any]], list[str]]:
    """Make a case for each recorded request, and for each Pod or workload of each manifest, with
    the expectation prefilled with today's answer.

    Files outside the suite directory are copied into it (requests/, manifests/); injected Pods
    get a golden file under golden/. An input the suite already has a case for (same file,
    document, List item, webhook and namespace) gets no second one. Labels that the run's
    ``--namespace-labels`` give the case's namespace, and the suite does not, go into the case's
    ``namespaceLabels``, so that the suite passes without the flag. Returns the suite file, the
    new cases (not yet written) and a line for each input skipped that way.

    Every input is read before anything is written: one bad file is a SuiteError naming every
    bad file, and leaves the suite directory as it was.
    """
    suite_file = next((suite_dir / n for n in SUITE_NAMES if (suite_dir / n).exists()), suite_dir / SUITE_NAMES[0])
    existing = load_suite(suite_file) if suite_file.exists() else None
    taken = {c.name for c in existing.cases} if existing else set()
    have: dict[InputKey, str] = {c.input_key: c.name for c in existing.cases if c.input_key} if existing else {}
    policies = runner.policies(existing) if existing else load_policies(runner.override)
    suite_labels = existing.labels if existing else {}
    ctx = Context(policies, StaticNamespaceLabels({**runner.labels, **suite_labels}))
    read: list[tuple[Path, list[_Input]]] = []
    problems: list[str] = []
    for source in sources:
        path = Path(source)
        try:
            if path.is_dir():
                raise SuiteError(f"{path}: is a directory; --init takes recorded requests and manifest files")
            read.append((path, _inputs(path, namespace)))
        except SuiteError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SuiteError("\n".join(problems), problems)
    new, skipped = [], []
    for path, inputs in read:
        is_request = inputs[0].is_request
        key, ref = ("request", _copy_in(path, suite_dir, "requests")) if is_request \
            else ("manifest", _copy_in(path, suite_dir, "manifests"))
        this_step = _step_for(path, step, is_request)
        for found in inputs:
            input_key: InputKey = (key, (suite_dir / ref).resolve(), found.document, found.item, this_step,
                                   "" if is_request else namespace)
            if input_key in have:
                skipped.append(f"{found.label(path)}: the suite already has case {have[input_key]!r} for it "
                               f"(webhook {this_step})")
                continue
            stem = path.stem
            if found.pick:
                stem += f"-{found.document}" + (f"-{found.item}" if found.item is not None else "")
            name = _case_name(stem, taken)
            have[input_key] = name
            result = admit(found.body, this_step, ctx)
            golden = None
            if result.injected:
                golden = f"golden/{name}.yaml"
                write_golden(suite_dir / golden, result.object)
            case: dict[str, Any] = {"name": name, key: ref}
            if found.pick:
                case["document"] = found.document
                if found.item is not None:
                    case["item"] = found.item
            if is_request or this_step != "admit":
                case["webhook"] = this_step
            if not is_request and namespace != "default":
                case["namespace"] = namespace
            request_ns = found.body["request"].get("namespace")
            if request_ns in runner.labels and suite_labels.get(request_ns) != runner.labels[request_ns]:
                case["namespaceLabels"] = {request_ns: runner.labels[request_ns]}
            case["expect"] = expectation(result, golden)
            new.append(case)
    return suite_file, new, skipped


def append_cases(suite_file: Path, cases: list[dict[str, Any]]) -> None:
    """Add cases to a suite file, keeping its comments and layout (a new file if there is none)."""
    if not cases:
        return
    dumped = yaml.safe_dump(cases, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    if not suite_file.exists():
        suite_file.parent.mkdir(parents=True, exist_ok=True)
        header = {"apiVersion": API_VERSION, "kind": "TestSuite", "name": suite_file.parent.name}
        suite_file.write_text(yaml.safe_dump(header, sort_keys=False) + "cases:\n" + dumped)
        return
    text = suite_file.read_text(encoding="utf-8")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)  # load_suite checked it
    key, node = root.value[-1]
    tail = text[node.end_mark.index:]
    at_end = all(not line.strip() or line.lstrip().startswith("#") for line in tail.splitlines())
    if key.value == "cases" and isinstance(node, yaml.SequenceNode) and at_end:
        if not node.value:  # "cases: []": the first cases replace the empty list
            head, indent = text[:node.start_mark.index].rstrip(" "), "  "
        elif not node.flow_style:
            head, indent = text[:node.end_mark.index], " " * node.start_mark.column
        else:
            head = None
        if head is not None:
            body = "".join(indent + line + "\n" for line in dumped.splitlines())
            head = head.rstrip("\n") + "\n"
            suite_file.write_text(head + body + tail.lstrip("\n"))
            return
    # cases is not a block list at the end of the file: rewrite it (comments are lost)
    data = yaml.safe_load(text)
    data["cases"] = list(data.get("cases") or []) + cases
    suite_file.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120))
