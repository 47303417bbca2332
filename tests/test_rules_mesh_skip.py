"""``evaluate`` skips the mesh rules for a Pod that neither is nor must be meshed: that is only
right if every mesh rule finds nothing there, on any Pod. Checked on Pods built to tempt them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from webhook.pods import parse_pod
from webhook.policy import PolicySet
from webhook.rules import RULES, Subject

from .conftest import APISERVER_REVIEWS
from .test_rules import ctr, pod, port

MESH_RULES = [r for r in RULES.values() if r.mesh]

TEMPTING = [
    pod(ctr("app", port(15001), port(15090), port(53, "UDP"), uid=1337, liveness=("tcpSocket", 15021))),
    pod(ctr("app", port(8080)), hostNetwork=True),
    pod(ctr("app", port(8080)), automountServiceAccountToken=False, restartPolicy="Never"),
    pod(ctr("app", port(15006, name="mesh")), init=(ctr("mesh-init", uid=1337),)),
    pod(ctr("mesh-init", port(15001)), ctr("app", port(9090, "UDP")), restartPolicy="OnFailure"),
    # a classic init container named like the proxy exits before the apps start: not the proxy
    pod(ctr("app", port(15001), uid=1337), init=(ctr("mesh-proxy", port(15021), uid=1337),), restartPolicy="Never"),
]


def test_the_mesh_rules_are_the_ones_that_guard_the_proxy() -> None:
    assert {r.id for r in MESH_RULES} == {
        "proxy-port-conflict", "proxy-uid-conflict", "missing-proxy", "proxy-udp-port", "mesh-host-network",
        "proxy-no-identity", "proxy-blocks-completion", "stale-proxy"}


def recorded_pods() -> list[Any]:
    pods = []
    for path in sorted(APISERVER_REVIEWS.glob("*.json")):
        obj = json.loads(path.read_text())["request"].get("object")
        if isinstance(obj, dict) and obj.get("kind") == "Pod":
            pods.append(obj)
    return pods


@pytest.mark.parametrize("raw", TEMPTING + recorded_pods())
def test_mesh_rules_find_nothing_outside_the_mesh(default_policies: PolicySet, raw: Any) -> None:
    subject = Subject(parse_pod(raw, "default"), default_policies.default.mesh.profile.proxy, mesh_required=False)
    if subject.meshed:
        pytest.skip("carries the proxy: meshed")
    for r in MESH_RULES:
        assert list(r.check(subject)) == [], r.id
