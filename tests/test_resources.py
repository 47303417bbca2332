"""Effective Pod requests (Kubernetes 1.29+ sidecar formula) and what ``check -o json`` shows of
them for an injected Pod. Expected figures are worked out by hand in each case's comment."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from webhook.cli.commands import main
from webhook.resources import format_quantity, formatted, pod_requests


def c(name: str, cpu: str | None = None, memory: str | None = None, *, sidecar: bool = False,
      limits: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": name}
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    if requests or limits:
        out["resources"] = {**({"requests": requests} if requests else {}), **({"limits": limits} if limits else {})}
    if sidecar:
        out["restartPolicy"] = "Always"
    return out


def pod(containers: list[Any], init: list[Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": containers, **({"initContainers": init} if init else {}), **spec}}


CASES = [
    # apps only: the sum
    pytest.param(pod([c("a", "250m", "64Mi"), c("b", "100m", "64Mi")]), {"cpu": "350m", "memory": "128Mi"},
                 id="apps-sum"),
    # a classic init container bigger than the apps: it alone
    pytest.param(pod([c("a", "250m", "64Mi")], [c("migrate", "1", "512Mi")]), {"cpu": "1", "memory": "512Mi"},
                 id="classic-init-dominates"),
    # a sidecar adds to the apps and to the init container after it: max(250+100, 1000+100) = 1100m
    pytest.param(pod([c("a", "250m", "64Mi")], [c("proxy", "100m", "128Mi", sidecar=True), c("migrate", "1", "512Mi")]),
                 {"cpu": "1100m", "memory": "640Mi"}, id="sidecar-before-init"),
    # a sidecar after the init container does not run with it: max(250+100, 1000) = 1
    pytest.param(pod([c("a", "250m", "64Mi")], [c("migrate", "1", "512Mi"), c("proxy", "100m", "128Mi", sidecar=True)]),
                 {"cpu": "1", "memory": "512Mi"}, id="sidecar-after-init"),
    # only a limit: the request defaults to it; overhead on top: 500m + 100m
    pytest.param(pod([c("a", limits={"cpu": "500m"})], overhead={"cpu": "100m"}), {"cpu": "600m"}, id="limit-default"),
    # a value that is not a quantity counts as nothing
    pytest.param(pod([c("a", "lots", "1Gi"), "not a container"]), {"memory": "1Gi"}, id="bad-values"),
    pytest.param({"spec": None}, {}, id="no-spec"),
]


@pytest.mark.parametrize(("p", "expected"), CASES)
def test_pod_requests(p: dict[str, Any], expected: dict[str, str]) -> None:
    assert formatted(pod_requests(p)) == expected


@pytest.mark.parametrize(("name", "value", "text"), [
    ("cpu", Decimal("0.1"), "100m"), ("cpu", Decimal("2"), "2"), ("cpu", Decimal("0.0001"), "1m"),
    ("memory", Decimal(128 * 2**20), "128Mi"), ("memory", Decimal(1000), "1000"), ("memory", Decimal(0), "0"),
    ("ephemeral-storage", Decimal(2**30), "1Gi"),
])
def test_quantities_read_as_kubernetes_writes_them(name: str, value: Decimal, text: str) -> None:
    assert format_quantity(name, value) == text


def test_check_json_shows_what_the_proxy_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bundled profile: redirect 10m/16Mi (classic init), proxy 100m/128Mi (native sidecar, after
    the redirect, before migrate). With proxy: max(250m + 100m, 1 + 100m) = 1100m, max(64Mi + 128Mi,
    512Mi + 128Mi) = 640Mi; without: 1 and 512Mi."""
    manifest = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop", "annotations": {"podgate.io/inject": "true"}},
                "spec": pod([c("app", "250m", "64Mi")], [c("migrate", "1", "512Mi")])["spec"]}
    plain = {**manifest, "metadata": {"name": "plain", "namespace": "shop"}}
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all([manifest, plain]))
    assert main(["check", "-o", "json", str(path)]) == 0
    injected, not_injected = json.loads(capsys.readouterr().out)["results"]
    assert injected["injected"] is True
    assert injected["effective_requests"] == {"cpu": "1100m", "memory": "640Mi"}
    assert injected["proxy_requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert "effective_requests" not in not_injected and "proxy_requests" not in not_injected
