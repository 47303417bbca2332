"""Who may switch the mesh off (a Policy's meshBypass section), judged by the identity in
``request.userInfo`` where that identity is real: the userInfo shapes are those a real
kube-apiserver 1.36 sent (tests/data/reviews/workloads): kubectl as kubernetes-admin, and the
kube-system controllers that create ReplicaSets, Pods and Jobs for it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from webhook.admission import Context, review
from webhook.bypass import requester
from webhook.errors import PolicyError
from webhook.policy import load_policy_set

from .test_workloads import MESHED, answer, governed_policies, recorded, workload
from .test_rules import ctr

ADMIN = recorded("0001_validate_CREATE_Deployment")["request"]["userInfo"]  # kubernetes-admin, system:masters
RS_CONTROLLER = recorded("0008_validate_CREATE_Pod")["request"]["userInfo"]
STS_CONTROLLER = recorded("0007_validate_CREATE_Pod")["request"]["userInfo"]
OPT_OUT = "0024_validate_UPDATE_Deployment"  # kubectl annotates web's template podgate.io/inject: "false"


def member(user: dict[str, Any], group: str = "platform-admins") -> dict[str, Any]:
    return {**user, "groups": [*user["groups"], group]}


def service_account(namespace: str, name: str) -> dict[str, Any]:
    """userInfo as the API server fills it for a ServiceAccount token (shape of RS_CONTROLLER)."""
    return {"username": f"system:serviceaccount:{namespace}:{name}", "uid": "5c1b7c62",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=0f6e"]}}


def as_user(body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["request"]["userInfo"] = user
    return body


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Context:
    directory = tmp_path_factory.mktemp("platform-admins")
    return Context(governed_policies(directory, "meshBypass: {allow: [{groups: [platform-admins]}]}"), MESHED)


def test_the_recorded_identities_read_as_they_are() -> None:
    assert not requester(ADMIN).is_controller and requester(ADMIN).groups == {"system:masters", "system:authenticated"}
    for user in (RS_CONTROLLER, STS_CONTROLLER, recorded("0003_validate_CREATE_ReplicaSet")["request"]["userInfo"],
                 recorded("0014_validate_CREATE_Pod")["request"]["userInfo"]):
        assert requester(user).is_controller, user["username"]
    assert requester(service_account("ci", "deployer")).service_account == "ci/deployer"
    assert not requester(service_account("ci", "deployer")).is_controller
    assert requester({"username": 7, "groups": "x"}) == requester({})  # wrong types count as absent


def test_without_the_section_anyone_may_opt_out(default_policies: Any) -> None:
    """The bundled policies have no meshBypass section: upgrading changes nothing."""
    assert answer(recorded(OPT_OUT), Context(default_policies, MESHED))["allowed"] is True


def test_a_deployment_opted_out_by_another_user_is_denied(governed: Context) -> None:
    response = answer(recorded(OPT_OUT), governed)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'deployment "shop/web" spec.template: [unauthorized-mesh-bypass] podgate.io/inject: "false" switches the '
        'mesh off for pod "web-<generated>", and the policy\'s meshBypass section does not allow "kubernetes-admin" '
        'to do that in namespace "shop"; remove the annotation, or have it set by an identity the section allows')


def test_a_deployment_opted_out_by_a_member_is_allowed(governed: Context) -> None:
    assert answer(as_user(recorded(OPT_OUT), member(ADMIN)), governed)["allowed"] is True


def test_pods_made_by_controllers_are_not_judged_by_the_section(governed: Context) -> None:
    """0007: the statefulset controller creates db-0 from a template that opts out; its identity is
    not the person's, so the section says nothing (the StatefulSet was judged when applied)."""
    outcome = review(recorded("0007_validate_CREATE_Pod_shop_db-0"), "validate", governed)
    assert "unauthorized-mesh-bypass" not in outcome.decision.rules_fired()
    assert outcome.decision.rules_fired() == ["probe-port-missing"]


def test_a_pod_created_directly_is_judged_by_who_created_it(governed: Context) -> None:
    body = copy.deepcopy(recorded("0008_validate_CREATE_Pod"))
    body["request"]["object"]["metadata"]["annotations"] = {"podgate.io/inject": "false"}
    body["request"]["object"]["spec"]["containers"][1]["ports"][0]["containerPort"] = 9090
    assert answer(body, governed)["allowed"] is True  # the replicaset controller
    assert "[unauthorized-mesh-bypass]" in answer(as_user(body, ADMIN), governed)["status"]["message"]
    assert answer(as_user(body, member(ADMIN)), governed)["allowed"] is True


@pytest.mark.parametrize(("section", "user", "namespace", "allowed"), [
    ("{allow: [{serviceAccounts: [ci/deployer]}]}", service_account("ci", "deployer"), "shop", True),
    ("{allow: [{serviceAccounts: [ci/deployer]}]}", service_account("ci", "other"), "shop", False),
    ("{allow: [{serviceAccounts: [ci/deployer]}]}", service_account("other", "deployer"), "shop", False),
    ("{allow: [{users: [kubernetes-admin]}]}", ADMIN, "shop", True),
    ("{allow: [{users: [alice]}]}", ADMIN, "shop", False),
    ("{allow: [{namespaces: [shop]}]}", ADMIN, "shop", True),  # anyone, there
    ("{allow: [{namespaces: [legacy]}]}", ADMIN, "shop", False),
    ("{allow: [{groups: [system:masters], namespaces: [legacy]}]}", ADMIN, "shop", False),
    ("{allow: [{groups: [system:masters], namespaces: [shop]}]}", ADMIN, "shop", True),
    ("{allow: [{users: [alice]}, {groups: [system:masters]}]}", ADMIN, "shop", True),  # any grant
    ("{}", ADMIN, "shop", False),  # nobody
    ("{allow: []}", member(ADMIN), "shop", False),
])
def test_grants(tmp_path: Path, section: str, user: dict[str, Any], namespace: str, allowed: bool) -> None:
    ctx = Context(governed_policies(tmp_path, f"meshBypass: {section}"), MESHED)
    body = workload("Deployment", {"containers": [ctr("app")]}, namespace=namespace,
                    annotations={"podgate.io/inject": "false"}, user=user)
    assert answer(body, ctx)["allowed"] is allowed


@pytest.mark.parametrize("annotation", ["podgate.io/exclude-outbound-ports", "podgate.io/exclude-inbound-ports"])
def test_excluding_ports_from_the_redirect_is_a_bypass(governed: Context, annotation: str) -> None:
    body = workload("Deployment", {"containers": [ctr("app")]}, annotations={annotation: "5432"}, user=ADMIN)
    message = answer(body, governed)["status"]["message"]
    assert f'[unauthorized-mesh-bypass] {annotation}: "5432" switches the mesh off' in message
    assert answer(as_user(body, member(ADMIN)), governed)["allowed"] is True


def test_opting_out_outside_the_mesh_is_no_bypass(governed: Context) -> None:
    body = workload("Deployment", {"containers": [ctr("app")]}, namespace="default",
                    annotations={"podgate.io/inject": "false"}, user=ADMIN)
    assert answer(body, governed)["allowed"] is True


def test_a_controller_that_makes_a_workload_is_not_judged(governed: Context) -> None:
    body = workload("Deployment", {"containers": [ctr("app")]}, annotations={"podgate.io/inject": "false"},
                    user=recorded("0003_validate_CREATE_ReplicaSet")["request"]["userInfo"])
    assert answer(body, governed)["allowed"] is True


def test_an_update_that_keeps_an_opt_out_is_allowed(governed: Context) -> None:
    """Someone outside the group changes the image of a Deployment that already opted out."""
    body = copy.deepcopy(recorded(OPT_OUT))
    body["request"]["oldObject"]["spec"]["template"] = copy.deepcopy(body["request"]["object"]["spec"]["template"])
    body["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:3"
    assert answer(body, governed)["allowed"] is True


def test_an_ephemeral_container_that_can_rewrite_the_redirect_needs_a_grant(governed: Context) -> None:
    """0016: kubectl debug --profile=netadmin adds NET_ADMIN and NET_RAW."""
    body = recorded("0016_validate_UPDATE_Pod-ephemeralcontainers")
    message = answer(body, governed)["status"]["message"]
    assert '[unauthorized-mesh-bypass] ephemeral container "netshoot" adds NET_ADMIN, NET_RAW' in message
    assert answer(as_user(body, member(ADMIN)), governed)["allowed"] is True


def test_opt_out_where_the_policy_forbids_it_is_missing_proxy_not_a_bypass(tmp_path: Path) -> None:
    governed_policies(tmp_path, "meshBypass: {}")
    default = tmp_path / "default.yaml"
    default.write_text(default.read_text().replace("allowOptOut: true", "allowOptOut: false"))
    ctx = Context(load_policy_set(tmp_path), MESHED)
    pod = copy.deepcopy(recorded("0008_validate_CREATE_Pod"))
    pod["request"]["object"]["metadata"]["annotations"] = {"podgate.io/inject": "false"}
    pod["request"]["object"]["spec"]["containers"][1]["ports"][0]["containerPort"] = 9090
    assert review(as_user(pod, ADMIN), "validate", ctx).decision.rules_fired() == ["missing-proxy"]


@pytest.mark.parametrize(("section", "error"), [
    ("{allow: [{serviceAccounts: [deployer]}]}",
     "/spec/meshBypass/allow/0/serviceAccounts/0: 'deployer' is not namespace/name (e.g. ci/deployer)"),
    ("{allow: [{}]}", "/spec/meshBypass/allow/0: {} should be non-empty"),
    ("{allow: [{group: [x]}]}", "/spec/meshBypass/allow/0: Additional properties are not allowed ('group' was "
                                "unexpected); did you mean 'groups'?"),
    ("{allowed: []}", "/spec/meshBypass: Additional properties are not allowed ('allowed' was unexpected); did you "
                      "mean 'allow'?"),
    ("{allow: [{namespaces: [Shop]}]}", "/spec/meshBypass/allow/0/namespaces/0"),
    ("{allow: {groups: [x]}}", "/spec/meshBypass/allow: {'groups': ['x']} is not of type 'array'"),
])
def test_a_malformed_section_is_a_policy_error_with_its_path(tmp_path: Path, section: str, error: str) -> None:
    with pytest.raises(PolicyError) as caught:
        governed_policies(tmp_path, f"meshBypass: {section}")
    assert error in str(caught.value), str(caught.value)


def test_a_section_without_a_mesh_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
                                     "spec:\n  meshBypass: {}\n")
    with pytest.raises(PolicyError, match="/spec/meshBypass: the policy has no mesh"):
        load_policy_set(tmp_path)


def test_check_judges_a_bypass_as_the_identity_given_with_as(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """podgate check cannot know who will apply a manifest: by default it judges the bypass as an
    identity no grant names (podgate-offline); --as and --as-group say who will (kubectl's flags)."""
    from webhook.cli.commands import main

    policies = tmp_path / "policies"
    policies.mkdir()
    governed_policies(policies, "meshBypass: {allow: [{groups: [platform-admins]}]}")
    manifest = tmp_path / "app.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {podgate.io/mesh: enabled}}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {}\n"
        "  template:\n    metadata: {annotations: {podgate.io/inject: 'false'}}\n"
        "    spec: {containers: [{name: app, image: app}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: debug, namespace: shop, annotations: {podgate.io/inject: 'false'}}\n"
        "spec: {containers: [{name: app, image: app}]}\n")

    def check(*flags: str) -> tuple[int, str]:
        code = main(["check", "--policies", str(policies), *flags, str(manifest)])
        return code, capsys.readouterr().out

    code, out = check()
    assert code == 1 and out.count("[unauthorized-mesh-bypass]") == 2
    assert 'does not allow "podgate-offline" to do that in namespace "shop"' in out
    code, out = check("--as", "alice")
    assert code == 1 and out.count('does not allow "alice" to do that') == 2
    code, out = check("--as", "alice", "--as-group", "developers", "--as-group", "platform-admins")
    assert code == 0 and "unauthorized-mesh-bypass" not in out
    code, out = check("--as", "system:serviceaccount:ci:deployer")
    assert code == 1 and 'does not allow "system:serviceaccount:ci:deployer"' in out
    assert main(["check", "--policies", str(policies), "--as-group", "platform-admins", str(manifest)]) == 2
    assert "--as-group goes with --as" in capsys.readouterr().err
