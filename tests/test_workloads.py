"""Workloads at /validate: a Deployment (StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
Job, CronJob) is judged by the Pod its controller would make, as /mutate would inject it; driven by
what a real kube-apiserver 1.36 sent (tests/data/reviews/workloads) and by those envelopes with
other templates."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest

from webhook.admission import Context, review
from webhook.cli.commands import main
from webhook.namespaces import StaticNamespaceLabels
from webhook.policy import load_policy_set
from webhook.rules import RULES
from webhook.workloads import WORKLOAD_KINDS, template_pod

from .conftest import DATA
from .test_rules import ctr, port

WORKLOADS = DATA / "reviews" / "workloads"
MESHED = StaticNamespaceLabels({"shop": {"podgate.io/mesh": "enabled"}})


def recorded(prefix: str) -> dict[str, Any]:
    matches = sorted(WORKLOADS.glob(f"{prefix}*.request.json"))
    assert len(matches) == 1, matches
    return json.loads(matches[0].read_text())


@pytest.fixture
def shop(default_policies: Any) -> Context:
    return Context(default_policies, MESHED)


def answer(body: Any, ctx: Context, webhook: str = "validate") -> dict[str, Any]:
    outcome = review(orjson.dumps(body), webhook, ctx)
    assert outcome.response is not None, outcome.error
    return outcome.response["response"]


def workload(kind: str, spec: dict[str, Any], *, namespace: str = "shop", annotations: dict[str, str] | None = None,
             restart: str | None = None, user: dict[str, Any] | None = None, operation: str = "CREATE",
             old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recorded Deployment CREATE (kubectl apply by kubernetes-admin) with its object replaced
    by a ``kind`` whose Pod template is ``spec``."""
    body = copy.deepcopy(recorded("0001_validate_CREATE_Deployment"))
    w = WORKLOAD_KINDS[kind]
    template: dict[str, Any] = {"metadata": {"labels": {"app": "w"}}, "spec": copy.deepcopy(spec)}
    if annotations:
        template["metadata"]["annotations"] = annotations
    if restart:
        template["spec"]["restartPolicy"] = restart
    obj: dict[str, Any] = {"apiVersion": f"{w.group}/v1" if w.group else "v1", "kind": kind,
                           "metadata": {"name": "w", "namespace": namespace}, "spec": {}}
    node = obj
    for key in w.template_path[:-1]:
        node = node.setdefault(key, {})
    node[w.template_path[-1]] = template
    req = body["request"]
    req.update(kind={"group": w.group, "version": "v1", "kind": kind}, namespace=namespace, name="w", object=obj,
               operation=operation, oldObject=old,
               resource={"group": w.group, "version": "v1", "resource": kind.lower() + "s"})
    if user is not None:
        req["userInfo"] = user
    return body


# --- the recorded requests --------------------------------------------------------------------

def test_a_deployment_with_a_port_collision_is_denied_naming_the_deployment(shop: Context) -> None:
    response = answer(recorded("0001_validate_CREATE_Deployment_shop_web"), shop)
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"] == (
        'deployment "shop/web" spec.template: [port-collision] containers "app" and "metrics" both listen on '
        "8080/TCP in the pod's shared network namespace; give one of them another containerPort")


@pytest.mark.parametrize("prefix", ["0003_validate_CREATE_ReplicaSet", "0023_validate_UPDATE_ReplicaSet",
                                    "0026_validate_UPDATE_ReplicaSet"])
def test_the_replica_sets_of_a_deployment_are_not_evaluated(shop: Context, prefix: str) -> None:
    """The deployment controller's ReplicaSets carry the same colliding template: not judged again."""
    body = recorded(prefix)
    outcome = review(body, "validate", shop)
    assert outcome.decision is not None and outcome.decision.reason.startswith('owned by Deployment "web"')
    assert outcome.response["response"]["allowed"] is True and not outcome.decision.findings


def test_a_replica_set_that_only_claims_an_owner_is_evaluated(shop: Context) -> None:
    """An ownerReference is written by whoever creates the object: a user's ReplicaSet that names a
    Deployment as its controller is judged like any other (only the controller's is skipped)."""
    body = copy.deepcopy(recorded("0003_validate_CREATE_ReplicaSet"))
    body["request"]["userInfo"] = recorded("0001_validate_CREATE_Deployment")["request"]["userInfo"]
    body["request"]["object"]["spec"]["template"]["spec"]["containers"].append(
        ctr("clash", port(8080)) | {"image": "x"})
    response = answer(body, shop)
    assert response["allowed"] is False and response["status"]["message"].startswith(
        'replicaset "shop/web-7c477f8cd6" spec.template: [port-collision]')


def test_a_job_of_a_cronjob_is_not_evaluated(shop: Context) -> None:
    body = workload("Job", {"containers": [ctr("a", port(80)), ctr("b", port(80))]}, restart="Never",
                    user=recorded("0003_validate_CREATE_ReplicaSet")["request"]["userInfo"] | {
                        "username": "system:serviceaccount:kube-system:cronjob-controller"})
    body["request"]["object"]["metadata"]["ownerReferences"] = [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": "u", "controller": True}]
    outcome = review(body, "validate", shop)
    assert outcome.decision.reason.startswith('owned by CronJob "report"')
    # the same Job made by a person is judged
    del body["request"]["userInfo"]
    assert answer(body, shop)["allowed"] is False


def test_updates_report_only_what_the_old_template_did_not_have(shop: Context) -> None:
    """0017 changes the image of the Deployment whose template already collided: allowed; the same
    update that adds the collision is denied."""
    body = recorded("0017_validate_UPDATE_Deployment")
    assert answer(body, shop)["allowed"] is True
    fixed = copy.deepcopy(body)
    fixed["request"]["oldObject"]["spec"]["template"]["spec"]["containers"][1]["ports"][0]["containerPort"] = 9090
    assert answer(fixed, shop)["status"]["message"].startswith('deployment "shop/web" spec.template: [port-collision]')


def test_dry_run_is_answered_the_same(shop: Context) -> None:
    dry = recorded("0030_validate_CREATE_Deployment_shop_dry_dryrun")
    assert dry["request"]["dryRun"] is True
    wet = copy.deepcopy(dry)
    wet["request"]["dryRun"] = False
    assert answer(dry, shop) == answer(wet, shop)
    assert answer(dry, shop)["allowed"] is False


def test_the_mutating_webhook_leaves_workloads_alone(shop: Context) -> None:
    response = answer(recorded("0001_validate_CREATE_Deployment"), shop, "mutate")
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize("sub", ["scale", "status"])
def test_workload_subresources_are_allowed(shop: Context, sub: str) -> None:
    body = copy.deepcopy(recorded("0001_validate_CREATE_Deployment"))
    body["request"].update(subResource=sub, operation="UPDATE")
    assert answer(body, shop)["allowed"] is True


def test_a_job_with_a_classic_proxy_warns_at_the_job() -> None:
    policies = load_policy_set(DATA / "inject" / "classic.policies")  # mode: classic, namespace "meshed"
    body = workload("Job", {"containers": [ctr("migrate")]}, namespace="meshed", restart="Never")
    outcome = review(body, "validate", Context(policies))
    response = outcome.response["response"]
    assert response["allowed"] is True and outcome.decision.injects
    assert response["warnings"] == [
        'job "meshed/w" spec.template: [proxy-blocks-completion] the mesh proxy "mesh-proxy" is a regular container in '
        "a pod with restartPolicy Never: it never exits, so the pod never completes; inject it as a native sidecar "
        "(mode: native)"]


# --- every rule on every workload kind --------------------------------------------------------

PROXY = {"name": "mesh-proxy", "image": "proxy", "securityContext": {"runAsUser": 1337}}
# rule -> a Pod template (in meshed "shop") that breaks it and nothing that also denies
BREAKS: dict[str, dict[str, Any]] = {
    "port-collision": {"containers": [ctr("a", port(80)), ctr("b", port(80))]},
    "host-port-collision": {"containers": [ctr("a", port(80, host=80)), ctr("b", port(81, host=80))]},
    "duplicate-port-name": {"containers": [ctr("a", port(80, name="http")), ctr("b", port(81, name="http"))]},
    "probe-port-missing": {"containers": [ctr("a", port(80), readiness=("tcpSocket", "web"))]},
    "probe-port-foreign": {"containers": [ctr("a", port(80)), ctr("b", readiness=("tcpSocket", 80))]},
    "proxy-port-conflict": {"containers": [ctr("a", port(15001))]},
    "proxy-uid-conflict": {"containers": [ctr("a", uid=1337)]},
    "missing-proxy": {"containers": [ctr("a")]},  # under a profile that only guards the proxy (guard_only)
    "proxy-udp-port": {"containers": [ctr("dns", port(53, "UDP"))]},
    "mesh-host-network": {"containers": [ctr("a")], "hostNetwork": True},
    "proxy-no-identity": {"containers": [ctr("a")], "automountServiceAccountToken": False},
    "proxy-blocks-completion": {"containers": [ctr("a"), PROXY], "_restart": "Never"},
    "stale-proxy": {"containers": [ctr("a"), PROXY], "_annotations": {"podgate.io/status": json.dumps(
        {"profile": "mesh-proxy", "hash": "0000000000000000", "initContainers": [], "containers": ["mesh-proxy"],
         "volumes": []})}},
    "unauthorized-mesh-bypass": {"containers": [ctr("a")], "_annotations": {"podgate.io/inject": "false"}},
}


def test_every_rule_has_a_workload_case() -> None:
    assert set(BREAKS) == set(RULES)


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """The bundled policies with a meshBypass section: only group platform-admins may opt out."""
    directory = tmp_path_factory.mktemp("governed")
    return Context(governed_policies(directory, "meshBypass: {allow: [{groups: [platform-admins]}]}"), MESHED)


def governed_policies(directory: Path, section: str) -> Any:
    for path in (Path(__file__).parent.parent / "policies").glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    default = directory / "default.yaml"
    default.write_text(default.read_text().replace("  mesh:\n", f"  {section}\n  mesh:\n", 1))
    return load_policy_set(directory)


@pytest.fixture(scope="module")
def guard_only(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """The bundled policies with a mesh profile that has no injection: /mutate adds no proxy, so a
    meshed template reaches the rules without one."""
    directory = tmp_path_factory.mktemp("guard-only")
    governed_policies(directory, "meshBypass: {}")
    profile = directory / "mesh-proxy.yaml"
    profile.write_text(profile.read_text().split("  injection:\n")[0])
    return Context(load_policy_set(directory), MESHED)


@pytest.mark.parametrize("kind", sorted(WORKLOAD_KINDS))
@pytest.mark.parametrize("rule_id", sorted(BREAKS))
def test_each_rule_fires_at_each_workload_kind(governed: Context, guard_only: Context, kind: str,
                                               rule_id: str) -> None:
    if rule_id == "missing-proxy":
        governed = guard_only
    spec = dict(BREAKS[rule_id])
    annotations = spec.pop("_annotations", None)
    restart = spec.pop("_restart", None) or ("Never" if kind in ("Job", "CronJob") else None)
    body = workload(kind, spec, annotations=annotations, restart=restart)
    outcome = review(body, "validate", governed)
    decision, response = outcome.decision, outcome.response["response"]
    assert rule_id in decision.rules_fired(), decision
    w = WORKLOAD_KINDS[kind]
    prefix = f'{kind.lower()} "shop/w" {w.template_field}: [{rule_id}]'
    texts = response["status"]["message"].split("\n") if not response["allowed"] else response.get("warnings", [])
    assert any(t.startswith(prefix) for t in texts), texts
    assert response["allowed"] is (RULES[rule_id].default_action != "deny")
    # the same template as a Pod the controller creates: the same rule fires there (but the
    # controller's identity is no one's, so the bypass is judged at the workload only)
    pod = template_pod(body["request"]["object"], w, "shop")
    pod_body = copy.deepcopy(recorded("0008_validate_CREATE_Pod"))  # from the replicaset-controller
    pod_body["request"]["object"] = _after_mutation(pod, governed)
    pod_fired = review(pod_body, "validate", governed).decision.rules_fired()
    assert (rule_id in pod_fired) is (rule_id != "unauthorized-mesh-bypass"), pod_fired


def _after_mutation(pod: dict[str, Any], ctx: Context) -> Any:
    """The Pod as the API server sends it to /validate: after /mutate's patch."""
    body = copy.deepcopy(recorded("0005_mutate_CREATE_Pod"))
    body["request"]["object"] = pod
    patch = review(body, "mutate", ctx).response["response"].get("patch")
    return jsonpatch.apply_patch(pod, json.loads(base64.b64decode(patch))) if patch else pod


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(("mangle", "field"), [
    pytest.param(lambda o: o["spec"].update(template="nginx"), "request.object/spec/template: expected an object",
                 id="template-a-string"),
    pytest.param(lambda o: o["spec"].update(template=None), "request.object/spec/template: is missing",
                 id="template-null"),
    pytest.param(lambda o: o.update(spec=[]), "request.object/spec: expected an object", id="spec-a-list"),
    pytest.param(lambda o: o["spec"]["template"].update(metadata="x"),
                 "request.object/spec/template/metadata: expected an object", id="template-metadata-a-string"),
    pytest.param(lambda o: o["spec"]["template"]["spec"].update(containers={}),
                 "request.object/spec/template/spec/containers: expected a list", id="containers-a-map"),
    pytest.param(lambda o: o["spec"]["template"].pop("spec"), "request.object/spec/template/spec: expected an object",
                 id="template-without-spec"),
])
def test_a_malformed_template_is_denied_naming_the_field(shop: Context, mangle: Any, field: str) -> None:
    body = copy.deepcopy(recorded("0001_validate_CREATE_Deployment"))
    mangle(body["request"]["object"])
    response = answer(body, shop)
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert response["status"]["message"] == f'podgate cannot check deployment "shop/web": {field}' \
        or response["status"]["message"].startswith(f'podgate cannot check deployment "shop/web": {field}')


def test_a_cronjob_without_job_template_is_denied_naming_the_field(shop: Context) -> None:
    body = copy.deepcopy(recorded("0012_validate_CREATE_CronJob"))
    del body["request"]["object"]["spec"]["jobTemplate"]
    response = answer(body, shop)
    assert response["status"] == {"code": 400, "message": 'podgate cannot check cronjob "shop/report": '
                                  "request.object/spec/jobTemplate: is missing: the workload has no Pod template"}


def test_a_workload_that_is_not_an_object_is_denied(shop: Context) -> None:
    body = copy.deepcopy(recorded("0001_validate_CREATE_Deployment"))
    body["request"]["object"] = ["not", "a", "deployment"]
    response = answer(body, shop)
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "request.object: expected an object" in response["status"]["message"]


def test_a_malformed_old_template_does_not_hide_a_finding(shop: Context) -> None:
    body = copy.deepcopy(recorded("0017_validate_UPDATE_Deployment"))
    body["request"]["oldObject"]["spec"]["template"] = "garbage"
    assert answer(body, shop)["status"]["message"].startswith('deployment "shop/web" spec.template: [port-collision]')


def test_podgate_review_answers_a_recorded_workload_request(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(WORKLOADS.glob("0001_*"))
    assert main(["review", str(path)]) == 1  # denied
    answer = json.loads(capsys.readouterr().out)["response"]
    assert answer["status"]["message"].startswith('deployment "shop/web" spec.template: [port-collision]')
    assert main(["review", str(next(WORKLOADS.glob("0003_*")))]) == 0  # the deployment controller's ReplicaSet
