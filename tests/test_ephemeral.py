"""Ephemeral containers (``kubectl debug``): the API server sends an UPDATE of the Pod with
``subResource: ephemeralcontainers``; podgate judges the containers it adds against the rules that
apply to them. Driven by the two requests a real kube-apiserver 1.36 sent (0015, 0016)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from webhook.admission import Context, review
from webhook.namespaces import StaticNamespaceLabels

from .test_workloads import MESHED, answer, recorded

FIRST = "0015_validate_UPDATE_Pod-ephemeralcontainers"  # adds "debugger", runAsUser 1337 (--custom)
SECOND = "0016_validate_UPDATE_Pod-ephemeralcontainers"  # adds "netshoot", NET_ADMIN (--profile=netadmin)


@pytest.fixture
def shop(default_policies: Any) -> Context:
    return Context(default_policies, MESHED)


def debugger(body: dict[str, Any]) -> dict[str, Any]:
    return body["request"]["object"]["spec"]["ephemeralContainers"][0]


def test_an_ephemeral_container_as_the_proxy_uid_in_a_meshed_pod_is_denied(shop: Context) -> None:
    outcome = review(recorded(FIRST), "validate", shop)
    response = outcome.response["response"]
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"] == (
        'pod "shop/web-7c477f8cd6-ltzwt" breaks 1 podgate rule:\n[proxy-uid-conflict] ephemeral container '
        '"debugger" runs as UID 1337, the UID of the mesh proxy "mesh-proxy": its traffic bypasses the proxy; '
        'set another runAsUser for "debugger"')
    # the Pod's own containers collide on 8080 and it has no proxy: not this request's business
    assert outcome.decision.rules_fired() == ["proxy-uid-conflict"]


def test_an_ephemeral_container_as_another_uid_is_allowed(shop: Context) -> None:
    body = copy.deepcopy(recorded(FIRST))
    debugger(body)["securityContext"]["runAsUser"] = 1000
    assert answer(body, shop)["allowed"] is True


def test_an_ephemeral_container_inherits_the_pods_uid(shop: Context) -> None:
    body = copy.deepcopy(recorded(FIRST))
    del debugger(body)["securityContext"]["runAsUser"]
    assert answer(body, shop)["allowed"] is True
    body["request"]["object"]["spec"]["securityContext"] = {"runAsUser": 1337}
    assert "[proxy-uid-conflict] ephemeral container \"debugger\"" in answer(body, shop)["status"]["message"]


def test_only_the_containers_added_are_judged(shop: Context) -> None:
    """0016 adds netshoot next to the debugger admitted before (as if podgate had been off then)."""
    assert answer(recorded(SECOND), shop)["allowed"] is True


def test_a_helper_name_does_not_make_an_ephemeral_container_the_meshs_own(shop: Context) -> None:
    body = copy.deepcopy(recorded(FIRST))
    debugger(body)["name"] = "mesh-init"  # the redirect's name: exempt as an init container, not here
    assert answer(body, shop)["allowed"] is False


def test_a_pod_outside_the_mesh_may_debug_as_any_uid(default_policies: Any) -> None:
    assert answer(recorded(FIRST), Context(default_policies, StaticNamespaceLabels({})))["allowed"] is True


def test_the_mutating_webhook_allows_ephemeral_updates_plainly(shop: Context) -> None:
    response = answer(recorded(FIRST), shop, "mutate")
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize(("mangle", "message"), [
    pytest.param(lambda r: r.pop("oldObject"), "podgate cannot check this ephemeral container update: "
                 "request.oldObject is missing", id="no-old-object"),
    pytest.param(lambda r: r.update(oldObject=None), "request.oldObject is missing", id="old-object-null"),
    pytest.param(lambda r: r["oldObject"].pop("spec"), "request.oldObject/spec: expected an object",
                 id="old-object-without-spec"),
    pytest.param(lambda r: r["oldObject"]["spec"].update(ephemeralContainers={}),
                 "request.oldObject/spec/ephemeralContainers: expected a list", id="old-ephemeral-a-map"),
    pytest.param(lambda r: r["object"]["spec"].update(ephemeralContainers="debugger"),
                 "request.object/spec/ephemeralContainers: expected a list", id="ephemeral-a-string"),
    pytest.param(lambda r: r["object"]["spec"]["ephemeralContainers"][0]["securityContext"].update(runAsUser="root"),
                 "request.object/spec/ephemeralContainers/0/securityContext/runAsUser: expected a user ID",
                 id="uid-a-string"),
    pytest.param(lambda r: r["object"]["spec"]["ephemeralContainers"][0]["securityContext"].update(
        capabilities={"add": "NET_ADMIN"}),
                 "request.object/spec/ephemeralContainers/0/securityContext/capabilities/add: expected a list",
                 id="capabilities-a-string"),
    pytest.param(lambda r: r["object"]["spec"]["ephemeralContainers"][0].pop("name"),
                 "request.object/spec/ephemeralContainers/0/name: a container needs a name", id="no-name"),
])
def test_a_malformed_ephemeral_update_is_denied_naming_the_field(shop: Context, mangle: Any, message: str) -> None:
    body = copy.deepcopy(recorded(FIRST))
    mangle(body["request"])
    response = answer(body, shop)
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert message in response["status"]["message"]
