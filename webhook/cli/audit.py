"""``podgate audit``: the cluster's running Pods under today's policies.

Admission sees a Pod once, when it is created. A namespace meshed later, a Pod created while the
mutating webhook was down, a mesh profile changed since (a new proxy image), a rule tightened:
none of that shows on Pods already running. The audit reads every live Pod from the API server
and runs it through the validate step of ``/validate`` (``admission.review``) under the
namespace's labels as they are now; ``missing-proxy`` and ``stale-proxy`` say which workloads to
restart. Who created a Pod is not recorded on it, so the meshBypass section (which judged that
identity at admission) is not judged again. It streams: Pods are read a page at a time, namespace by namespace, and what is kept is
a namespace's findings (for its PolicyReport), never the Pods themselves.

It changes nothing in the cluster unless asked to write PolicyReports (``policyreports.py``).
Exit codes as ``check``: 0 nothing at deny level, 1 deny-level findings, 2 errors.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
import yaml

from ..admission import Context, review
from ..policy import PolicySet
from ..rules import Finding
from ..status import STATUS_ANNOTATION
from .check import EXIT_DENIED, EXIT_OK, EXIT_USAGE
from .cluster import Cluster, ClusterError, Owner
from .offline import pod_review
from .policyreports import NamespaceFindings, ReportWriter, policy_report

FINISHED = ("Succeeded", "Failed")  # a Pod that ran to completion runs no proxy to restart
PROXY_RULES = ("missing-proxy", "stale-proxy")
MAX_NAMED_PODS = 3  # Pods named in a workload's line (the others are counted)


@dataclass(frozen=True)
class LivePod:
    namespace: str
    name: str
    uid: str | None


@dataclass
class PodResult:
    """One live Pod, evaluated: its owner and findings, or why podgate could not evaluate it."""

    pod: LivePod
    owner: Owner | None
    findings: list[Finding] = field(default_factory=list)
    injected: bool = False
    error: str | None = None

    @property
    def allowed(self) -> bool:
        return self.error is None and not any(f.action == "deny" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """The fields of ``check -o json`` (without a file to name), plus ``owner``."""
        out: dict[str, Any] = {"kind": "Pod", "namespace": self.pod.namespace, "name": self.pod.name,
                               "owner": (self.owner or Owner("Pod", self.pod.name)).to_json(),
                               "allowed": self.allowed, "injected": self.injected,
                               "violations": [f.to_json() for f in self.findings]}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Workload:
    """The Pods of one workload that have findings, summed up for one line of text."""

    namespace: str
    owner: Owner | None  # None: a Pod without a (living) controller
    pods: int = 0
    with_findings: list[str] = field(default_factory=list)  # Pod names
    rules: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # rule -> (action, pods, a message)
    errors: list[str] = field(default_factory=list)

    def add(self, result: PodResult) -> None:
        self.pods += 1
        if result.findings or result.error:
            self.with_findings.append(result.pod.name)
        if result.error:
            self.errors.append(f"pod {result.pod.name}: {result.error}")
        for f in result.findings:
            action, count, message = self.rules.get(f.violation.rule, (f.action, 0, f.violation.message))
            self.rules[f.violation.rule] = (action, count + 1, message)

    @property
    def label(self) -> str:
        if self.owner is None:
            return f"Pod {self.namespace}/{self.with_findings[0] if self.with_findings else '?'}"
        return f"{self.owner.kind} {self.namespace}/{self.owner.name}"

    def restart_hint(self) -> str:
        """What makes the workload's Pods get the current proxy."""
        ns, owner = self.namespace, self.owner
        if owner is None:
            return ("delete the pod and create it again from its manifest (a copy of the running pod "
                    "keeps what it runs)")
        if owner.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            return f"kubectl rollout restart {owner.kind.lower()}/{owner.name} -n {ns}"
        if owner.kind == "CronJob":
            return "its next scheduled Job gets the current proxy"
        if owner.kind == "Job":
            return "the Job's pods keep their proxy until they finish; run the Job again to get the current one"
        if owner.kind in ("ReplicaSet", "ReplicationController"):
            names = " ".join(self.with_findings[:MAX_NAMED_PODS])
            more = f" (and {len(self.with_findings) - MAX_NAMED_PODS} more)" if len(self.with_findings) > \
                MAX_NAMED_PODS else ""
            return f"kubectl delete pod -n {ns} {names}{more} (the {owner.kind} recreates them)"
        return f"restart the {owner.kind} {owner.name}'s pods"


@dataclass
class Summary:
    pods: int = 0
    finished: int = 0  # Succeeded or Failed: not evaluated
    namespaces: int = 0
    denied: int = 0  # Pods with a deny-level finding
    warned: int = 0
    errors: int = 0  # Pods podgate could not evaluate
    reports: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"namespaces": self.namespaces, "pods": self.pods, "finished": self.finished,
                "denied": self.denied, "warned": self.warned, "errors": self.errors,
                "reports": dict(sorted(self.reports.items()))}


def _live_pod(obj: dict[str, Any], namespace: str) -> LivePod:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else "?"
    uid = meta.get("uid") if isinstance(meta.get("uid"), str) else None
    return LivePod(namespace, name, uid)


def evaluate_pod(obj: dict[str, Any], namespace: str, ctx: Context, owner: Owner | None) -> PodResult:
    """The validate step of ``/validate`` on a live Pod, as if it were being created now, but as
    a Pod that already runs (``Context.running``): who created it is not judged (the meshBypass
    section did that at admission), and a missing proxy is fixed by a restart."""
    pod = _live_pod(obj, namespace)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    result = PodResult(pod, owner, injected=STATUS_ANNOTATION in annotations)
    outcome = review(pod_review(obj, namespace, uid=pod.uid or "podgate-audit"), "validate", ctx)
    decision = outcome.decision
    if decision is None:
        result.error = outcome.error.message if outcome.error else "podgate cannot read this pod"
        return result
    if decision.reason in ("malformed object", "internal error", "namespace labels unavailable"):
        result.error = (decision.message or decision.reason).replace("request.object", "pod ", 1)
        return result
    result.findings = decision.findings
    return result


@dataclass
class Options:
    namespace: str | None = None  # None: all namespaces
    output: str = "text"  # text | json | policyreport
    write_reports: bool = False
    exit_zero: bool = False  # deny-level findings do not fail the run (scheduled runs write reports)


class Auditor:
    """One audit run: read, evaluate, print (as it goes), write reports, decide the exit code."""

    def __init__(self, cluster: Cluster, policies: PolicySet, options: Options, out: TextIO,
                 err: TextIO, progress: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.policies = policies
        self.options = options
        self.out = out
        self.err = err
        self.progress = progress
        self.clock = clock
        self.summary = Summary()
        self.problems: list[str] = []
        self._labels: dict[str, dict[str, str]] = {}
        self._first_json = True
        self._started = clock()
        self._shown = 0.0

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        if self.options.output == "json":
            self.out.write('{"results": [')
        try:
            return self._run()
        except ClusterError as exc:  # the audit cannot go on: a script still gets a whole JSON document
            self._clear_progress()
            if self.options.output == "json":
                self._end_json([*self.problems, str(exc)])
            raise

    def _run(self) -> int:
        writer = ReportWriter(self.cluster, self.options.namespace) if self.options.write_reports else None
        for namespace in self._namespaces():
            findings = self._audit_namespace(namespace)
            if findings is None:
                continue
            self.summary.namespaces += 1
            if self.options.output == "policyreport" and (findings.results or findings.passed):
                self.out.write("---\n" + yaml.safe_dump(policy_report(findings), sort_keys=False))
            if writer is not None:
                writer.write(findings)
        if writer is not None:
            writer.finish()
            self.summary.reports = dict(writer.written)
            self.problems.extend(writer.problems)
        self._clear_progress()
        self._print_end()
        if self.problems or self.summary.errors:
            return EXIT_USAGE
        if self.summary.denied and not self.options.exit_zero:
            return EXIT_DENIED
        return EXIT_OK

    def _namespaces(self) -> Iterator[str]:
        """The namespaces to audit, their labels kept for the policies' selectors."""
        if self.options.namespace is not None:
            ns = self.cluster.namespace(self.options.namespace)
            if ns is None:
                raise ClusterError(f'namespace "{self.options.namespace}" not found')
            self._labels[self.options.namespace] = _labels(ns)
            yield self.options.namespace
            return
        names = []
        for ns in self.cluster.namespaces():
            name = (ns.get("metadata") or {}).get("name")
            if isinstance(name, str):
                self._labels[name] = _labels(ns)
                names.append(name)
        yield from names

    def _audit_namespace(self, namespace: str) -> NamespaceFindings | None:
        ctx = Context(self.policies, self._labels.get, running=True)
        findings = NamespaceFindings(namespace)
        workloads: dict[tuple[str, str] | str, Workload] = {}
        for page in self.cluster.pods(namespace):
            for obj in page:
                status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
                if status.get("phase") in FINISHED:
                    self.summary.finished += 1
                    continue
                meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
                owner = self.cluster.owner(namespace, meta.get("ownerReferences"))
                result = evaluate_pod(obj, namespace, ctx, owner)
                self._count(result)
                findings.add_pod(result.pod, owner, result.findings, result.error)
                key: tuple[str, str] | str = (owner.kind, owner.name) if owner else result.pod.name
                workload = workloads.get(key)
                if workload is None:
                    workload = workloads[key] = Workload(namespace, owner)
                workload.add(result)
                if self.options.output == "json":
                    self.out.write(("\n" if self._first_json else ",\n") + orjson.dumps(result.to_json()).decode())
                    self._first_json = False
                self._show_progress()
        if self.options.output == "text":
            self._print_workloads(workloads.values())
        return findings

    def _count(self, result: PodResult) -> None:
        self.summary.pods += 1
        if result.error:
            self.summary.errors += 1
            self.problems.append(f"{result.pod.namespace}/{result.pod.name}: {result.error}")
        elif not result.allowed:
            self.summary.denied += 1
        elif any(f.action == "warn" for f in result.findings):
            self.summary.warned += 1

    # --- output -----------------------------------------------------------------------------

    def _print_workloads(self, workloads: Any) -> None:
        for w in workloads:
            if not w.with_findings:
                continue
            self._clear_progress()
            pods = f"{w.pods} pod{'s' if w.pods != 1 else ''}"
            line = f"{w.label}: {pods}, {len(w.with_findings)} with findings"
            if any(rule in w.rules for rule in PROXY_RULES):
                line += f"; fix: {w.restart_hint()}"
            self.out.write(line + "\n")
            for rule, (action, count, message) in w.rules.items():
                self.out.write(f"  {action.ljust(5)} {rule} ({count} pod{'s' if count != 1 else ''}): {message}\n")
            for error in w.errors[:MAX_NAMED_PODS]:
                self.out.write(f"  error {error}\n")

    def _print_end(self) -> None:
        if self.options.output == "json":
            self._end_json(self.problems)
        elif self.options.output == "text":
            self.out.write(self.summary_line() + "\n")
        for problem in self.problems:
            self.err.write(f"podgate: {problem}\n")
        if self.options.output != "text":
            self.err.write(self.summary_line() + "\n")

    def _end_json(self, errors: list[str]) -> None:
        """Close the JSON document whose results were streamed."""
        self.out.write(f'\n], "errors": {orjson.dumps(errors).decode()}, '
                       f'"summary": {orjson.dumps(self.summary.to_json()).decode()}}}\n')

    def summary_line(self) -> str:
        s = self.summary
        text = (f"{s.pods} pod{'s' if s.pods != 1 else ''} audited in {s.namespaces} "
                f"namespace{'s' if s.namespaces != 1 else ''}: {s.denied} at deny level, {s.warned} warned, "
                f"{s.errors} not evaluated (errors)")
        if s.finished:
            text += f"; {s.finished} finished pods skipped"
        if s.reports:
            counts: dict[str, int] = {}
            for what in s.reports.values():
                counts[what] = counts.get(what, 0) + 1
            text += "; PolicyReports " + ", ".join(f"{what} {n}" for what, n in sorted(counts.items()))
        return text

    def _show_progress(self) -> None:
        if not self.progress:
            return
        now = self.clock()
        if now - self._shown < 0.25:
            return
        self._shown = now
        rate = self.summary.pods / max(now - self._started, 1e-9)
        self.err.write(f"\raudited {self.summary.pods} pods ({rate:.0f}/s)...\033[K")
        self.err.flush()

    def _clear_progress(self) -> None:
        if self.progress and self._shown:
            self.err.write("\r\033[K")
            self.err.flush()
            self._shown = 0.0


def _labels(ns: dict[str, Any]) -> dict[str, str]:
    labels = (ns.get("metadata") or {}).get("labels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def run(cluster: Cluster, policies: PolicySet, options: Options, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    return Auditor(cluster, policies, options, out, err, progress=err.isatty()).run()
