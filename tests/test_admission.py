"""Request -> response through ``admission.review``, driven by AdmissionReviews a real
kube-apiserver 1.36 sent (tests/data/reviews/apiserver), and by those envelopes with other Pods."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import orjson
import pytest

from webhook.admission import Context, review

from .conftest import APISERVER_REVIEWS, recorded, review_for
from .test_rules import ctr, pod, port

RECORDED = sorted(APISERVER_REVIEWS.glob("*.json"))


def answer(body: Any, ctx: Context, webhook: str = "validate") -> dict[str, Any]:
    outcome = review(orjson.dumps(body), webhook, ctx)  # type: ignore[arg-type]
    assert outcome.response is not None, outcome.error
    return outcome.response


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem.removesuffix(".request"))
def test_recorded_requests_are_answered_in_kind(path: Any, ctx: Context) -> None:
    """Every recorded request gets a well-formed answer echoing uid and apiVersion; none of these
    Pods breaks a rule under the bundled policies, so all are allowed without warnings."""
    body = json.loads(path.read_text())
    webhook = "mutate" if "_mutate_" in path.name else "validate"
    response = answer(body, ctx, webhook)
    assert response["apiVersion"] == body["apiVersion"]
    assert response["kind"] == "AdmissionReview"
    assert response["response"]["uid"] == body["request"]["uid"]
    assert response["response"]["allowed"] is True
    assert "warnings" not in response["response"]
    assert "patch" not in response["response"]  # namespace "default" is not meshed


def test_denial_carries_403_and_every_violation(ctx: Context) -> None:
    body = review_for(pod(ctr("app", port(8080), port(9090, name="m")), ctr("metrics", port(8080), port(9091, name="m")),
                          ctr("third", port(8080))))
    response = answer(body, ctx)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert message.startswith('pod "default/p" breaks 3 podgate rules:')
    for pair in ('"app" and "metrics"', '"app" and "third"', '"metrics" and "third"'):
        assert pair in message
    assert response["warnings"] == [
        '[duplicate-port-name] containers "app" and "metrics" both name a port "m"; a Service targetPort "m" is '
        "ambiguous: rename one of them"]


def test_warnings_only_allows(ctx: Context) -> None:
    body = review_for(pod(ctr("a", port(1, name="x")), ctr("b", port(2, name="x"))))
    response = answer(body, ctx)["response"]
    assert response["allowed"] is True
    assert len(response["warnings"]) == 1


def test_warnings_are_short_enough_for_kubectl(ctx: Context) -> None:
    long = "c" * 60
    body = review_for(pod(ctr(long + "1", port(1, name="x" * 15)), ctr(long + "2", port(2, name="x" * 15))))
    warnings = answer(body, ctx)["response"]["warnings"]
    assert warnings and all(len(w) <= 256 for w in warnings)
    assert warnings[0].endswith("…")


def test_v1beta1_is_answered_in_v1beta1(ctx: Context) -> None:
    body = review_for(pod(ctr("a", port(80)), ctr("b", port(80))), api_version="admission.k8s.io/v1beta1")
    response = answer(body, ctx)
    assert response["apiVersion"] == "admission.k8s.io/v1beta1"
    assert response["response"]["allowed"] is False


def test_generate_name_pod_without_namespace_uses_request_namespace(ctx: Context) -> None:
    """Controller-made Pods have only generateName at mutation time and may lack metadata.namespace."""
    body = copy.deepcopy(recorded("0015_mutate_CREATE"))
    obj = body["request"]["object"]
    assert "name" not in obj["metadata"] and obj["metadata"]["generateName"] == "gen-"
    del obj["metadata"]["namespace"]
    body["request"]["namespace"] = "team-a"
    obj["spec"]["containers"] = [ctr("one", port(80)), ctr("two", port(80))]
    response = answer(body, ctx)["response"]
    assert response["allowed"] is False
    assert response["status"]["message"].startswith('pod "team-a/gen-<generated>" breaks 1 podgate rule:')


def test_update_reports_only_new_violations(ctx: Context) -> None:
    """A Pod admitted before podgate can still be labelled: old violations are not held against it."""
    old = pod(ctr("a", port(80)), ctr("b", port(80)))
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "x"}
    assert answer(review_for(new, operation="UPDATE", old=old), ctx)["response"]["allowed"] is True
    worse = copy.deepcopy(new)
    worse["spec"]["containers"].append(ctr("c", port(80)))
    response = answer(review_for(worse, operation="UPDATE", old=old), ctx)["response"]
    assert response["allowed"] is False
    assert '"a" and "c"' in response["status"]["message"] and '"a" and "b"' not in response["status"]["message"]


def test_recorded_label_update_is_allowed(ctx: Context) -> None:
    body = recorded("0018_validate_UPDATE")
    assert body["request"]["oldObject"] is not None
    assert answer(body, ctx)["response"]["allowed"] is True


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_allowed(ctx: Context, operation: str) -> None:
    body = review_for(pod(ctr("a", port(80)), ctr("b", port(80))), operation=operation)
    assert answer(body, ctx)["response"]["allowed"] is True


def test_recorded_delete_has_no_object(ctx: Context) -> None:
    body = recorded("0024_validate_DELETE")
    assert answer(body, ctx)["response"]["allowed"] is True


@pytest.mark.parametrize("sub", ["status", "binding", "eviction"])
def test_subresources_are_allowed(ctx: Context, sub: str) -> None:
    body = review_for(pod(ctr("a", port(80)), ctr("b", port(80))), sub_resource=sub)
    assert answer(body, ctx)["response"]["allowed"] is True


@pytest.mark.parametrize(("group", "kind"), [("", "ConfigMap"), ("example.com", "Widget"),
                                             ("apps.openshift.io", "DeploymentConfig"),
                                             ("extensions", "Deployment")])  # a Deployment of another group
def test_kinds_podgate_does_not_know_are_allowed(ctx: Context, group: str, kind: str) -> None:
    body = review_for(pod(ctr("a", port(80)), ctr("b", port(80))))
    body["request"]["kind"] = {"group": group, "version": "v1", "kind": kind}
    assert answer(body, ctx)["response"]["allowed"] is True


def test_dry_run_is_evaluated_like_any_request(ctx: Context) -> None:
    body = review_for(pod(ctr("a", port(80)), ctr("b", port(80))), dry_run=True)
    assert answer(body, ctx)["response"]["allowed"] is False


@pytest.mark.parametrize(("mangle", "fragment"), [
    (lambda o: o["spec"]["containers"][0].update(ports=[{"containerPort": "80"}]),
     "request.object/spec/containers/0/ports/0/containerPort: expected a port number, got a string"),
    (lambda o: o["spec"].update(containers={"name": "a"}), "request.object/spec/containers: expected a list"),
    (lambda o: o["spec"]["containers"][0].update(ports=[{"containerPort": 70000}]), "out of range"),
    (lambda o: o["spec"]["containers"][0].update(ports=[{"containerPort": 80, "protocol": "HTTP"}]),
     "protocol must be TCP, UDP or SCTP"),
    (lambda o: o.update(spec=None), "request.object/spec: expected an object, got null"),
    (lambda o: o["spec"]["containers"][0].update(securityContext={"runAsUser": True}), "runAsUser: expected a user ID"),
])
def test_malformed_object_is_denied_with_the_path(ctx: Context, mangle: Any, fragment: str) -> None:
    obj = pod(ctr("a", port(80)))
    mangle(obj)
    response = answer(review_for(obj), ctx)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert fragment in response["status"]["message"]


def test_mutate_in_meshed_namespace_returns_json_patch(ctx: Context) -> None:
    response = answer(review_for(pod(ctr("app", port(8080))), namespace="meshed"), ctx, "mutate")["response"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert [op["path"] for op in ops] == ["/spec/initContainers", "/spec/volumes",
                                          "/metadata/annotations"]


def test_mutate_reads_only_what_injection_needs(ctx: Context) -> None:
    """Ports, probes and UIDs are the validating webhook's: it checks the final Pod, after the
    mutation. A malformed port does not stop the injection; validation then names it."""
    obj = pod(ctr("app", port(80)))
    obj["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    mutated = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert mutated["allowed"] is True and mutated["patchType"] == "JSONPatch"
    validated = answer(review_for(obj, namespace="meshed"), ctx)["response"]
    assert validated["status"]["code"] == 400
    assert "/spec/containers/0/ports/0/containerPort: expected a port number" in validated["status"]["message"]


def test_mutate_rejects_an_invalid_override(ctx: Context) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/proxy-cpu": "lots"})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert response["allowed"] is False
    assert 'podgate.io/proxy-cpu: "lots" is not a Kubernetes quantity' in response["status"]["message"]


def test_mutate_and_validate_agree_on_a_classic_init_container_named_like_the_proxy(ctx: Context) -> None:
    """A classic init container named like the proxy is not the proxy: /mutate denies (asking for a
    rename) instead of skipping the Pod, and /validate reports the proxy missing."""
    obj = pod(ctr("app"), init=(ctr("mesh-proxy"),))
    mutated = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert mutated["allowed"] is False and mutated["status"]["code"] == 400
    assert "rename" in mutated["status"]["message"]
    validated = answer(review_for(obj, namespace="meshed"), ctx)["response"]
    assert validated["allowed"] is False
    assert "[missing-proxy]" in validated["status"]["message"]


@pytest.mark.parametrize("value", ["True", "yes", "1", "", " true"])
@pytest.mark.parametrize("namespace", ["default", "meshed"])
def test_mutate_denies_an_inject_annotation_that_is_neither_true_nor_false(ctx: Context, value: str,
                                                                          namespace: str) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/inject": value})
    response = answer(review_for(obj, namespace=namespace), ctx, "mutate")["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert f'annotation podgate.io/inject: "{value}" must be "true"' in response["status"]["message"]


@pytest.mark.parametrize("ports, port", [("15006", 15006), ("8080, 15001", 15001), ("15090", 15090),
                                         ("15021,9000", 15021)])
def test_mutate_denies_excluding_a_proxy_port_from_inbound_capture(ctx: Context, ports: str, port: int) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/exclude-inbound-ports": ports})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert f'includes {port}, a port of the mesh proxy "mesh-proxy"' in response["status"]["message"]


@pytest.mark.parametrize("value, allowed", [("1m", False), ("0.5", False), ("1500m", False), ("1.5Ki", True),
                                            ("1e3", True), ("256Mi", True)])
def test_proxy_memory_is_a_whole_number_of_bytes(ctx: Context, value: str, allowed: bool) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/proxy-memory": value})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert response["allowed"] is allowed, response.get("status")
    if not allowed:
        assert "is not a whole number of bytes" in response["status"]["message"]


@pytest.mark.parametrize("annotation, value, bound", [("podgate.io/proxy-memory", "1025Mi", "1Gi"),
                                                       ("podgate.io/proxy-cpu", "2001m", "2")])
def test_override_bounds_are_printed_as_the_policy_writes_them(ctx: Context, annotation: str, value: str,
                                                               bound: str) -> None:
    obj = pod(ctr("app"), annotations={annotation: value})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")["response"]
    assert response["status"]["message"].endswith(f'annotation {annotation}: "{value}" exceeds the policy maximum {bound}')
