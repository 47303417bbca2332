"""Prometheus metrics: one call per admission decision, and hooks for the policy store and
the namespace cache.

Under gunicorn every worker is its own process, so the values live in prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set up by ``runner.prepare_metrics_dir``
before any worker starts) and ``/metrics`` sums them across workers. Without that variable (the
Flask test client, ``podgate review``) the same metrics are plain in-process values.

Label values come from small fixed sets (webhook, operation, result, rule, action, reason) so
the series count stays bounded whatever Pods arrive; nothing about a Pod's content is a label.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..admission import REINVOKED
from ..workloads import workload_kind
from . import metrics_files
from .metrics_files import MULTIPROC_ENV

if TYPE_CHECKING:
    from ..admission import Outcome


REQUESTS = Counter("podgate_admission_requests_total",
                   "Admission requests answered, by webhook, operation and result "
                   "(allowed, denied, invalid: a malformed request or object, error: podgate failed).",
                   ["webhook", "operation", "result"])
LATENCY = Histogram("podgate_admission_duration_seconds",
                    "Time from reading a request to having its answer, by webhook.",
                    ["webhook"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
VIOLATIONS = Counter("podgate_violations_total",
                     "Rule violations found, by rule and the action the policy gave it (deny, warn, audit).",
                     ["rule", "action"])
UNKNOWN_KINDS = Counter("podgate_unknown_kinds_total",
                        "Requests for kinds podgate does not read, allowed unchecked, by webhook and kind "
                        "(group/Kind; kinds beyond the first 64 a worker sees are counted as other).",
                        ["webhook", "kind"])
INJECTIONS = Counter("podgate_injections_total",
                     "Mutating decisions on Pods: result injected, reinvoked (probes of containers added since "
                     "injection rewritten) or skipped, with the reason for a skip.",
                     ["result", "reason"])
POLICY_RELOADS = Counter("podgate_policy_reloads_total",
                         "Policy set loads (at start and on change), by result (success, failure); "
                         "counted in every worker.", ["result"])
POLICY_LAST_RELOAD_OK = Gauge("podgate_policy_last_reload_success",
                              "1 if the last policy load succeeded in every live worker, else 0 "
                              "(a failed reload keeps serving the last good set).",
                              multiprocess_mode="livemin")
NAMESPACE_CACHE_EVENTS = Counter("podgate_namespace_cache_events_total",
                                 "Namespace-label cache events by kind (e.g. relist, watch-restart, error, miss).",
                                 ["event"])

# Skip reasons from ``inject.skip_reason`` and ``admission.decide`` are sentences for people
# (with policy and profile names in them); the label is the fixed name of the sentence's start.
_SKIP_PREFIXES = (
    ("policy ", "no-mesh"),
    ("mirror pod", "mirror-pod"),
    ("hostNetwork", "host-network"),
    ("Windows pod", "windows"),
    ("already injected", "already-injected"),
    ("already has a", "proxy-present"),
    ("opted out", "opted-out"),
    ("not selected", "not-selected"),
    ("mesh profile ", "no-template"),
    ("exempt:", "exempt"),
    ("injection happens on CREATE only", "not-create"),
    ("not a Pod", "not-a-pod"),
    ("subresource", "subresource"),
    ("operation", "operation"),
)

# Bound children, so the hot path is one dict lookup per metric instead of ``labels()``.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


MAX_KIND_LABELS = 64
MAX_KIND_LENGTH = 128
_kind_labels: set[str] = set()


def kind_label(group: str, kind: str) -> str:
    """The label of a request's kind: whoever can reach the webhook chooses it, so the set of
    values is bounded (and each value's length)."""
    label = (f"{group}/{kind}" if group else kind)[:MAX_KIND_LENGTH] or "<none>"
    if label in _kind_labels:
        return label
    if len(_kind_labels) >= MAX_KIND_LABELS:
        return "other"
    _kind_labels.add(label)
    return label


def skip_label(reason: str) -> str:
    """The metric label for a decision's skip reason."""
    reason = reason.removeprefix("not injected: ")
    for prefix, label in _SKIP_PREFIXES:
        if reason.startswith(prefix):
            return label
    return "other"


def result_label(outcome: Outcome) -> str:
    decision = outcome.decision
    if decision is None:
        return "invalid"
    if decision.reason == "internal error":
        return "error"
    if decision.reason == "malformed object":
        return "invalid"
    return "allowed" if decision.allowed else "denied"


Sample = tuple[tuple[Any, ...], Any, float]  # counters to add 1 to, latency histogram, seconds


def sample(webhook: str, outcome: Outcome, seconds: float) -> Sample:
    """What one answered request counts, resolved to metric children: it holds nothing of
    the request, so it can wait for ``record`` in a batch without keeping the Pod alive."""
    req, decision = outcome.request, outcome.decision
    operation = req.operation if req is not None and req.operation in _OPERATIONS else "unknown"
    counters = [_child(REQUESTS, webhook, operation, result_label(outcome))]
    if req is not None and not req.is_pod and workload_kind(req.group, req.kind) is None:
        counters.append(_child(UNKNOWN_KINDS, webhook, kind_label(req.group, req.kind)))
    if decision is not None:
        for finding in decision.findings:
            counters.append(_child(VIOLATIONS, finding.violation.rule, finding.action))
        if webhook == "mutate" and decision.allowed:
            if decision.injected and decision.reason == REINVOKED:
                counters.append(_child(INJECTIONS, "reinvoked", "probes-rewritten"))
            elif decision.injected:
                counters.append(_child(INJECTIONS, "injected", ""))
            else:
                counters.append(_child(INJECTIONS, "skipped", skip_label(decision.reason)))
    return tuple(counters), _child(LATENCY, webhook), seconds


def record(batch: Iterable[Sample]) -> None:
    """Count answered requests (``report.Reporter`` calls this per batch): each counter once,
    by how many of the batch it counts, as every increment of a multiprocess value takes a
    lock and writes to its file."""
    counts: collections.Counter[Any] = collections.Counter()
    for counters, latency, seconds in batch:
        counts.update(counters)
        latency.observe(seconds)
    for counter, n in counts.items():
        counter.inc(n)


_OPERATIONS = frozenset(("CREATE", "UPDATE", "DELETE", "CONNECT"))


def policy_reloaded(ok: bool, detail: str = "") -> None:
    """``PolicyStore(on_reload=...)``: count every load attempt and remember the last result."""
    _child(POLICY_RELOADS, "success" if ok else "failure").inc()
    POLICY_LAST_RELOAD_OK.set(1 if ok else 0)


_namespace_gauges: tuple[Gauge, Gauge] | None = None
_namespace_lock = threading.Lock()


def set_namespace_cache(synced: bool, namespaces: int) -> None:
    """For the namespace-label cache: report whether it is in sync and how many namespaces it holds.

    The gauges appear on the first call, so a server without a cache (static labels) does not
    report a cache that never syncs.
    """
    global _namespace_gauges
    if _namespace_gauges is None:
        with _namespace_lock:
            if _namespace_gauges is None:
                _namespace_gauges = (
                    Gauge("podgate_namespace_cache_synced",
                          "1 when the namespace-label cache of every live worker is in sync with the API.",
                          multiprocess_mode="livemin"),
                    Gauge("podgate_namespace_cache_namespaces",
                          "Namespaces held in the namespace-label cache (the largest of the live workers).",
                          multiprocess_mode="livemax"))
    synced_gauge, size_gauge = _namespace_gauges
    synced_gauge.set(1 if synced else 0)
    size_gauge.set(namespaces)


def namespace_cache_event(event: str) -> None:
    """For the namespace-label cache: count an event (use a small fixed set of names)."""
    _child(NAMESPACE_CACHE_EVENTS, event).inc()


def exposition() -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: all workers' values in multiprocess mode."""
    if directory := os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()  # never the default one: it would add this worker's own values
        registry.register(metrics_files.DirectoryCollector(directory))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
