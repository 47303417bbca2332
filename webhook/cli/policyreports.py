"""PolicyReports (wgpolicyk8s.io/v1alpha2) from an audit: one per namespace, as Kyverno and
Kubewarden write them and Policy Reporter shows them.

A report holds one result per (Pod, rule) that fired: ``fail`` for a deny-level finding, ``warn``
for warn and audit, ``error`` for a Pod podgate could not evaluate. ``summary.pass`` counts the
Pods evaluated with no finding. podgate names its report ``podgate`` and labels it
``app.kubernetes.io/managed-by: podgate``; it only ever reads, updates or empties reports with
that label, so a report of the same name made by someone else is left alone (and said so).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .cluster import Cluster, ClusterError, Conflict, NotFound

REPORT_NAME = "podgate"
MANAGED_BY = ("app.kubernetes.io/managed-by", "podgate")
SELECTOR = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
RESULT = {"deny": "fail", "warn": "warn", "audit": "warn"}
SEVERITY = {"deny": "high", "warn": "medium", "audit": "info"}
MAX_MESSAGE = 1024  # a result's message; etcd keeps a whole report under 1.5 MB


@dataclass
class NamespaceFindings:
    """What a namespace's report says: the Pods with results, the count of clean Pods."""

    namespace: str
    results: list[dict[str, Any]] = field(default_factory=list)
    passed: int = 0

    def add_pod(self, pod: Any, owner: Any, findings: Iterable[Any], error: str | None) -> None:
        """Record one audited Pod: its findings (rule, action, message) or its error."""
        resource = {"apiVersion": "v1", "kind": "Pod", "namespace": self.namespace, "name": pod.name}
        if pod.uid:
            resource["uid"] = pod.uid
        properties = {"ownerKind": owner.kind, "ownerName": owner.name} if owner else {}
        now = {"seconds": int(time.time()), "nanos": 0}
        if error is not None:
            self.results.append({"policy": "podgate", "rule": "evaluation", "result": "error", "source": "podgate",
                                 "message": error[:MAX_MESSAGE], "resources": [resource],
                                 "properties": properties, "timestamp": now})
            return
        found = False
        for f in findings:
            found = True
            self.results.append({
                "policy": "podgate", "rule": f.violation.rule, "result": RESULT[f.action],
                "severity": SEVERITY[f.action], "source": "podgate", "category": "podgate",
                "scored": f.action != "audit", "message": f.violation.message[:MAX_MESSAGE],
                "resources": [resource], "properties": {**properties, "action": f.action}, "timestamp": now})
        if not found:
            self.passed += 1


def policy_report(findings: NamespaceFindings) -> dict[str, Any]:
    counts = {"pass": findings.passed, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    for result in findings.results:
        counts[result["result"]] += 1
    return {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": findings.namespace,
                         "labels": {MANAGED_BY[0]: MANAGED_BY[1]}},
            "results": findings.results, "summary": counts}


def is_ours(report: Any) -> bool:
    labels = (report.get("metadata") or {}).get("labels") if isinstance(report, dict) else None
    return isinstance(labels, dict) and labels.get(MANAGED_BY[0]) == MANAGED_BY[1]


class ReportWriter:
    """Creates, updates and empties podgate's PolicyReports in the namespaces an audit covers."""

    def __init__(self, cluster: Cluster, namespace: str | None) -> None:
        self.cluster = cluster
        # podgate's reports as they are now: emptied at the end where the audit found nothing
        self.existing: dict[str, dict[str, Any]] = {
            r["metadata"]["namespace"]: r for r in cluster.policy_reports(namespace, SELECTOR)
            if r.get("metadata", {}).get("name") == REPORT_NAME and is_ours(r)}
        self.written: dict[str, str] = {}  # namespace -> created | updated | emptied
        self.problems: list[str] = []

    def write(self, findings: NamespaceFindings) -> None:
        report = policy_report(findings)
        namespace = findings.namespace
        current = self.existing.pop(namespace, None)
        if current is None and not findings.results:
            return  # clean, and no report of ours to empty
        try:
            self._put(namespace, report, current)
        except NotFound as exc:
            if exc.kind == "namespaces":
                return  # the namespace was deleted during the audit: nothing to report there
            raise ClusterError(f"cannot write PolicyReport {namespace}/{REPORT_NAME}: {exc}") from None

    def _put(self, namespace: str, report: dict[str, Any], current: dict[str, Any] | None) -> None:
        for _ in range(3):  # a report changed under us (another audit run): read it again, retry
            if current is None:
                try:
                    self.cluster.create_report(namespace, report)
                    self.written[namespace] = "created"
                    return
                except Conflict:
                    current = self.cluster.get_report(namespace, REPORT_NAME)
                    if current is None:
                        continue
                    if not is_ours(current):
                        self.problems.append(
                            f"PolicyReport {namespace}/{REPORT_NAME} exists but was not made by podgate (no "
                            f"{SELECTOR} label): left alone, and this namespace's findings are not written")
                        return
            report["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                self.cluster.update_report(namespace, report)
                self.written[namespace] = "updated" if report["results"] else "emptied"
                return
            except Conflict:
                current = self.cluster.get_report(namespace, REPORT_NAME)
                if current is not None and not is_ours(current):
                    self.problems.append(f"PolicyReport {namespace}/{REPORT_NAME} is no longer labelled {SELECTOR}: "
                                         f"left alone")
                    return
            except NotFound as exc:
                if exc.kind == "namespaces":
                    raise
                current = None  # deleted meanwhile: create it
        raise ClusterError(f"PolicyReport {namespace}/{REPORT_NAME} keeps changing while podgate writes it")

    def finish(self) -> None:
        """Empty podgate's reports in namespaces the audit covered and found no Pods in."""
        for namespace in sorted(self.existing):
            self.write(NamespaceFindings(namespace))
