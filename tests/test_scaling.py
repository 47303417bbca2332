"""No rule is quadratic in containers or ports: counted, not timed.

The cost of one review is measured as the number of lines of podgate code it executes (a line
tracer over ``webhook/``), which is exact and the same on every machine. Ten times the
listeners or containers must cost at most 12 times as many lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import webhook
from webhook.admission import Context, review

from .conftest import review_for

PACKAGE = str(Path(webhook.__file__).parent)
GROWTH = 12.0


def lines_executed(fn: Callable[[], Any]) -> int:
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(PACKAGE) else None

    sys.settrace(global_)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def wide_pod(containers: int, ports_each: int, meshed: bool = False, injected: bool = False) -> dict[str, Any]:
    """Distinct ports, a named and a numbered probe per container: every rule runs, none fires."""
    cs = []
    for i in range(containers):
        ports = [10000 + i * ports_each + j for j in range(ports_each)]
        cs.append({"name": f"c{i}", "image": "app",
                   "ports": [{"name": f"p{p}", "containerPort": p} for p in ports],
                   "readinessProbe": {"httpGet": {"path": "/", "port": f"p{ports[0]}"}},
                   "livenessProbe": {"tcpSocket": {"port": ports[0]}}})
    init = []
    if injected:
        init = [{"name": "mesh-proxy", "image": "proxy", "restartPolicy": "Always",
                 "ports": [{"containerPort": 15090, "name": "mesh-metrics"}]}]
    annotations = {"podgate.io/inject": "true"} if meshed else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "wide", "namespace": "default", "annotations": annotations},
            "spec": {"initContainers": init, "containers": cs}}


def cost(ctx: Context, webhook_name: str, pod: dict[str, Any]) -> int:
    body = review_for(pod)
    outcome = review(body, webhook_name, ctx)  # warm caches (cached properties, imports) first
    decision = outcome.decision
    assert decision is not None and decision.reason not in ("malformed object", "internal error"), outcome
    return lines_executed(lambda: review(body, webhook_name, ctx))


@pytest.mark.parametrize("webhook_name", ["validate", "mutate"])
@pytest.mark.parametrize("shape", [
    pytest.param(lambda n: wide_pod(n // 10, 10), id="listeners-10-per-container"),
    pytest.param(lambda n: wide_pod(n, 1), id="containers-1-port-each"),
    pytest.param(lambda n: wide_pod(1, n), id="ports-in-one-container"),
    pytest.param(lambda n: wide_pod(n // 10, 10, meshed=True), id="meshed-opt-in"),
    pytest.param(lambda n: wide_pod(n // 10, 10, meshed=True, injected=True), id="meshed-with-proxy"),
])
def test_cost_grows_linearly(ctx: Context, webhook_name: str, shape: Callable[[int], dict[str, Any]]) -> None:
    small, large = cost(ctx, webhook_name, shape(100)), cost(ctx, webhook_name, shape(1000))
    assert large <= GROWTH * small, f"100 -> 1000: {small} -> {large} lines ({large / small:.1f}x)"


def test_the_counter_sees_the_work(ctx: Context) -> None:
    """Guard against a tracer that counts nothing: more ports must mean more lines."""
    small, large = cost(ctx, "validate", wide_pod(10, 10)), cost(ctx, "validate", wide_pod(100, 10))
    assert small > 100 and large > 5 * small


def test_mutate_does_not_read_listeners(ctx: Context) -> None:
    """Injection reads container names only: its cost follows containers, not ports."""
    few, many = cost(ctx, "mutate", wide_pod(10, 1, meshed=True)), cost(ctx, "mutate", wide_pod(10, 100, meshed=True))
    assert many == few
