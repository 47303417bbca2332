"""The Helm chart, rendered by the Helm SDK for several value sets and checked object by object.

Every object must pass the Kubernetes schemas in strict mode (unknown fields fail); the tests
then assert what the chart promises: the webhooks never see kube-system or podgate's own
namespace, the caBundle matches the certificate the server gets, the Pod runs under the
restricted Pod Security profile, RBAC is read-only on Namespaces only, and the container
command is one ``podgate serve`` accepts.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import functools
import io
import json
import re
from pathlib import Path
from typing import Any

import helm_python as hp
import kubernetes_validate
from cel_expr_python import cel
from helm_python import _native as helm_native
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes_validate.utils import SchemaNotFoundError

from webhook.admission import Context, review
from webhook.cli.arguments import existing_dir, existing_file, existing_path
from webhook.cli.commands import build_parser as podgate_parser
from webhook.inject import STATUS_ANNOTATION
from webhook.namespaces import StaticNamespaceLabels
from webhook.pods import MIRROR_ANNOTATION
from webhook.policy import load_policy_set
from webhook.workloads import WORKLOAD_KINDS

from .conftest import APISERVER_REVIEWS, REPO, recorded, review_for

CHART = REPO / "charts" / "podgate"
NAMESPACE = "podgate-system"
RELEASE = "podgate"
KUBE_VERSIONS = ("1.30", "1.37")  # matchConditions are GA from 1.30
CRDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
        ("monitoring.coreos.com/v1", "ServiceMonitor")}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certs": {"mode": "certManager"}},
    "cert-manager-issuer": {"certs": {"mode": "certManager",
                                      "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}},
    "user-secret": {"certs": {"mode": "secret", "secret": {"name": "my-webhook-tls", "caBundle": "<CA>"}}},
    "ha": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9},
           "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"],
                             "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
           "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
           "podDisruptionBudget": {"maxUnavailable": 1}, "priorityClassName": "system-cluster-critical",
           "policies": {"files": {"team-a.yaml": "apiVersion: podgate.io/v1alpha1\nkind: Policy\n"
                                                 "metadata: {name: team-a}\nspec:\n  match:\n"
                                                 "    namespaces: [team-a]\n"}}},
    "client-certificates": {"server": {"clientCA": {"secretName": "apiserver-client-ca"}},
                            "serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}},
    "no-network-policy": {"networkPolicy": {"enabled": False}},
    "server-options": {"server": {"maxRequests": 5000, "drainSeconds": 12.5, "gracefulTimeoutSeconds": 40}},
    "recording": {"server": {"record": {"enabled": True, "maxBytes": 1048576, "userInfo": True}}},
    "recording-to-a-claim": {"server": {"record": {"enabled": True,
                                                   "volume": {"persistentVolumeClaim": {"claimName": "recorded"}}}}},
    "kubernetes-shapes": {
        "server": {"extraEnv": [{"name": "LOG_FORMAT", "value": "json"},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token",
                                                                                 "optional": True}}},
                                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                                   "divisor": "1Mi"}}}],
                   "record": {"enabled": True, "volume": {"ephemeral": {"volumeClaimTemplate": {
                       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}}}}},
        "webhook": {"namespaceSelectorExpressions": [{"key": "podgate.io/skip", "operator": "DoesNotExist"},
                                                     {"key": "tier", "operator": "In", "values": ["web", "api"]}],
                    "validating": {"objectSelector": {"matchExpressions": [
                        {"key": "podgate.io/skip", "operator": "NotIn", "values": ["true"]}]}},
                    "mutating": {"objectSelector": {"matchLabels": {"mesh": "yes"}}}},
        "resources": {"requests": {"cpu": 0.5, "memory": "128Mi", "ephemeral-storage": "1Gi"},
                      "limits": {"cpu": 2, "memory": "0.25Gi"}},
        "podDisruptionBudget": {"maxUnavailable": "50%"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"},
                        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                                       "matchLabelKeys": ["pod-template-hash"], "minDomains": 2,
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "podgate"}}}
                                      for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")],
        "networkPolicy": {"enabled": True, "ingressFrom": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            {"namespaceSelector": {"matchLabels": {"name": "monitoring"}},
             "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}]},
        "podLabels": {"team": "platform"},
    },
    "audit": {"audit": {"enabled": True, "timeZone": "Europe/Berlin", "extraArgs": ["--request-timeout=60"]},
              "policyReports": {"installCRD": True}, "networkPolicy": {"enabled": True}},
    "minimal": {"replicaCount": 1, "podDisruptionBudget": {"enabled": False}, "namespaceLabels": {"fromAPI": False},
                "serviceAccount": {"create": False}, "server": {"metrics": False},
                "webhook": {"matchConditions": False, "mutating": {"enabled": False}}},
}

def build_parser() -> argparse.ArgumentParser:
    """podgate's parser with the existence checks of paths left out: the chart's commands name
    the container's mounts (/etc/podgate/...), which this machine does not have."""
    parser = podgate_parser()
    pending = [parser]
    while pending:
        for action in pending.pop()._actions:
            if action.type in (existing_dir, existing_file, existing_path):
                action.type = None
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
    return parser



@pytest.fixture(scope="session")
def ca_pem() -> str:
    from webhook.server.certs import make_ca

    cert, _ = make_ca("test CA")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def chart() -> hp.Chart:
    return hp.Chart.load(str(CHART))


def _values(name: str, ca_pem: str) -> dict[str, Any]:
    values = copy.deepcopy(VALUE_SETS[name])
    if name == "user-secret":
        values["certs"]["secret"]["caBundle"] = ca_pem
    return values


_rendered: dict[str, list[dict[str, Any]]] = {}

# What discovery shows in a cluster with the Prometheus Operator's CRDs (the chart checks for it).
PROMETHEUS_OPERATOR = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor")


IMAGE = "registry.example.com/podgate"  # the chart has no default: there is no published image


def with_image(values: dict[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(values)
    values.setdefault("image", {}).setdefault("repository", IMAGE)
    return values


def render_manifests(chart: hp.Chart, values: dict[str, Any], *, api_versions: tuple[str, ...] = PROMETHEUS_OPERATOR,
                     kube_version: str | None = None, image: bool = True) -> dict[str, str]:
    """``chart.render`` with the capabilities ``helm template --api-versions/--kube-version`` set:
    the Helm C library takes them as render options, helm_python's Chart.render does not pass them.
    Without ``kube_version`` the library's default (a recent Kubernetes) applies. ``image``: give
    image.repository unless the values do."""
    if image:
        values = with_image(values)
    options: dict[str, Any] = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True,
                               "api_versions": list(api_versions)}
    if kube_version is not None:
        options["kube_version"] = kube_version
    return json.loads(helm_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options)))


def render(chart: hp.Chart, values: dict[str, Any], **capabilities: Any) -> list[dict[str, Any]]:
    manifests = render_manifests(chart, values, **capabilities)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


@pytest.fixture(params=sorted(VALUE_SETS), scope="module")
def rendered(request, chart, ca_pem) -> tuple[str, list[dict[str, Any]]]:
    name = request.param
    if name not in _rendered:
        _rendered[name] = render(chart, _values(name, ca_pem))
    return name, _rendered[name]


def objects(chart: hp.Chart, ca_pem: str, name: str) -> list[dict[str, Any]]:
    if name not in _rendered:
        _rendered[name] = render(chart, _values(name, ca_pem))
    return _rendered[name]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def kinds(objs: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objs}


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# --- every object is valid ---------------------------------------------------------------------

def test_every_object_passes_the_kubernetes_schema_strictly(rendered):
    _, objs = rendered
    checked = 0
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): "
                            f"{list(exc.path)}: {exc.message}")
            except SchemaNotFoundError:
                pytest.fail(f"no schema for {obj['apiVersion']} {obj['kind']}: add it to CRDS if it is a CRD")
        checked += 1
    assert checked >= 5


def test_every_object_is_namespaced_to_the_release_or_cluster_scoped(rendered):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                      "ValidatingWebhookConfiguration", "CustomResourceDefinition"}
    for obj in rendered[1]:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


def test_chart_requires_the_kubernetes_version_its_objects_are_checked_against(chart):
    """matchConditions are GA from 1.30: Helm refuses to install the chart on an older cluster
    (helm template --kube-version 1.29.9 fails too; the Helm SDK's render, used here, does not
    check it), and 1.30 is the oldest schema every object is validated against."""
    oldest = min(KUBE_VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    assert oldest == "1.30"
    assert chart.metadata["kubeVersion"] == f">={oldest}.0-0"  # -0: provider builds, v1.30.4-eks-...


def test_helm_lint_is_clean():
    result = hp.lint(str(CHART), {}, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("values, where", [
    pytest.param({"webhook": {"validating": {"timeoutSeconds": 31}}}, "/webhook/validating/timeoutSeconds",
                 id="timeout-over-30"),
    pytest.param({"webhook": {"mutating": {"failurePolicy": "Open"}}}, "/webhook/mutating/failurePolicy",
                 id="failure-policy"),
    pytest.param({"certs": {"mode": "secret"}}, "/certs", id="secret-mode-without-secret"),
    pytest.param({"certs": {"mode": "vault"}}, "/certs/mode", id="unknown-cert-mode"),
    pytest.param({"replicas": 3}, "additional properties 'replicas'", id="misspelt-value"),
    pytest.param({"autoscaling": {"enabled": True, "minReplicas": 1}}, "/autoscaling/minReplicas",
                 id="hpa-below-two"),
    pytest.param({"policies": {"files": {"../x.yaml": "a"}}}, "'../x.yaml' does not match", id="policy-file-name"),
    pytest.param({"server": {"maxRequests": -1}}, "/server/maxRequests", id="negative-max-requests"),
    pytest.param({"server": {"record": {"enable": True}}}, "additional properties 'enable'", id="misspelt-record"),
    pytest.param({"server": {"record": {"sizeLimit": "lots"}}}, "/server/record/sizeLimit", id="record-size"),
    pytest.param({"server": {"record": {"volume": {"emptyDir": {}, "hostPath": {"path": "/"}}}}},
                 "/server/record/volume", id="record-two-volume-sources"),
    pytest.param({"server": {"drainSeconds": "5s"}}, "/server/drainSeconds", id="drain-as-duration"),
    pytest.param({"server": {"gracefulTimeoutSeconds": 2.5}}, "/server/gracefulTimeoutSeconds",
                 id="fractional-graceful-timeout"),
    # resources: the names and the quantities
    pytest.param({"resources": {"requests": {"cpuu": "100m"}}}, "additional properties 'cpuu'", id="resource-name"),
    pytest.param({"resources": {"limits": {"cpu": "lots"}}}, "/resources/limits/cpu", id="cpu-lots"),
    pytest.param({"resources": {"limits": {"memory": "1GB"}}}, "/resources/limits/memory", id="memory-1GB"),
    pytest.param({"resources": {"requests": {"memory": "-128Mi"}}}, "/resources/requests/memory",
                 id="negative-memory"),
    pytest.param({"resources": {"requests": {"cpu": -1}}}, "/resources/requests/cpu", id="negative-cpu-number"),
    pytest.param({"server": {"record": {"sizeLimit": "1gi"}}}, "/server/record/sizeLimit", id="record-size-case"),
    # Kubernetes-shaped values: their fields are checked
    pytest.param({"server": {"record": {"volume": {"hostPath": {"path": "/var/podgate"}}}}},
                 "additional properties 'hostPath'", id="record-hostpath"),
    pytest.param({"server": {"record": {"volume": {"persistentVolumeClaim": {"claimName": "r", "readOnly": True}}}}},
                 "/server/record/volume/persistentVolumeClaim/readOnly", id="record-read-only-claim"),
    pytest.param({"server": {"record": {"volume": {"persistentVolumeClaim": {"claim": "r"}}}}},
                 "/server/record/volume/persistentVolumeClaim", id="record-claim-misspelt"),
    pytest.param({"server": {"extraEnv": [{"name": "A", "valu": "1"}]}}, "additional properties 'valu'",
                 id="env-misspelt"),
    pytest.param({"server": {"extraEnv": [{"name": "A", "value": 1}]}}, "/server/extraEnv/0/value",
                 id="env-value-not-a-string"),
    pytest.param({"server": {"extraEnv": [{"name": "A", "value": "1", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}}}]}}, "/server/extraEnv/0/value", id="env-value-and-value-from"),
    pytest.param({"server": {"extraEnv": [{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]}},
                 "/server/extraEnv/0/valueFrom", id="env-two-sources"),
    pytest.param({"server": {"extraEnv": [{"name": "A", "valueFrom": {"secretRef": {"name": "s"}}}]}},
                 "additional properties 'secretRef'", id="env-unknown-source"),
    pytest.param({"webhook": {"namespaceSelectorExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}},
                 "/webhook/namespaceSelectorExpressions/0/operator", id="selector-operator"),
    pytest.param({"webhook": {"namespaceSelectorExpressions": [{"key": "a", "operator": "In"}]}},
                 "/webhook/namespaceSelectorExpressions/0", id="selector-in-without-values"),
    pytest.param({"webhook": {"namespaceSelectorExpressions": [{"key": "a", "operator": "Exists", "value": ["b"]}]}},
                 "additional properties 'value'", id="selector-requirement-misspelt"),
    pytest.param({"webhook": {"validating": {"objectSelector": {"matchLabel": {"a": "b"}}}}},
                 "additional properties 'matchLabel'", id="object-selector-misspelt"),
    pytest.param({"webhook": {"mutating": {"objectSelector": {"matchLabels": {"a": True}}}}},
                 "/webhook/mutating/objectSelector/matchLabels/a", id="object-selector-label-not-a-string"),
    pytest.param({"serviceMonitor": {"tlsConfig": {"caa": {"secret": {"name": "s", "key": "ca.crt"}}}}},
                 "additional properties 'caa'", id="service-monitor-tls-misspelt"),
    pytest.param({"serviceMonitor": {"tlsConfig": {"ca": {"secret": {"name": "s"}}}}},
                 "/serviceMonitor/tlsConfig/ca/secret", id="service-monitor-ca-without-key"),
    pytest.param({"tolerations": [{"key": "a", "operator": "Equals"}]}, "/tolerations/0/operator",
                 id="toleration-operator"),
    pytest.param({"networkPolicy": {"ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
                 "/networkPolicy/ingressFrom/0", id="peer-ip-block-and-selector"),
    pytest.param({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}]},
                 "/topologySpreadConstraints/0", id="spread-without-when-unsatisfiable"),
    # a PodDisruptionBudget that allows no disruption blocks node drains forever
    pytest.param({"podDisruptionBudget": {"maxUnavailable": 0}}, "/podDisruptionBudget/maxUnavailable",
                 id="pdb-zero"),
    pytest.param({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "/podDisruptionBudget/maxUnavailable",
                 id="pdb-zero-percent"),
    pytest.param({"podDisruptionBudget": {"maxUnavailable": "1"}}, "/podDisruptionBudget/maxUnavailable",
                 id="pdb-number-as-string"),
])
def test_schema_rejects_bad_values(chart, values, where):
    with pytest.raises(hp.HelmValuesError, match=re.escape(where)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize("quantity", ["100m", "0.5", "1", "2", ".5", "1.", "128Mi", "1Gi", "1.5Gi", "500k", "1e3",
                                      "1E-3", "+1", "250u", 0, 2, 0.25])
def test_schema_takes_kubernetes_quantities(chart, quantity):
    chart.validate_schema({"resources": {"requests": {"cpu": quantity, "memory": quantity},
                                         "limits": {"cpu": quantity, "memory": quantity}},
                           "server": {"record": {"sizeLimit": quantity}}})


@pytest.mark.parametrize("quantity", ["lots", "", "Mi", "1GB", "1gi", "1ki", "1 Gi", "1.2.3", "1Ki5", "-1", "1e",
                                      "0x10", "Infinity"])
def test_schema_refuses_what_is_not_a_kubernetes_quantity(chart, quantity):
    with pytest.raises(hp.HelmValuesError, match="/resources/limits/memory"):
        chart.validate_schema({"resources": {"limits": {"memory": quantity}}})


@pytest.mark.parametrize("values, message", [
    pytest.param({"autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 3}},
                 "autoscaling.maxReplicas (3) is less than autoscaling.minReplicas (4)", id="hpa-max-below-min"),
    pytest.param({"podLabels": {"app.kubernetes.io/name": "mine"}},
                 "podLabels must not set app.kubernetes.io/name", id="pod-labels-selector-name"),
    pytest.param({"podLabels": {"team": "a", "app.kubernetes.io/instance": "other"}},
                 "podLabels must not set app.kubernetes.io/instance", id="pod-labels-selector-instance"),
])
def test_values_the_schema_cannot_judge_fail_the_render_with_a_message(chart, values, message):
    """JSON Schema cannot compare two values, nor name a key in its message: the templates do."""
    with pytest.raises(hp.HelmRenderError, match=re.escape(message)):
        render(chart, values)


@pytest.mark.parametrize("values", [{}, {"image": {"repository": ""}}, {"image": {"tag": "0.1.0"}}],
                         ids=["defaults", "empty", "tag-only"])
def test_install_without_an_image_fails_with_a_message(chart, values):
    """No published image: rather than a Deployment that cannot pull its image while the
    validating webhook, failing closed, blocks Pods cluster-wide, a clear failure at install."""
    with pytest.raises(hp.HelmRenderError, match=re.escape("image.repository is required: there is no published")):
        render(chart, values, image=False)


def test_image_is_the_repository_with_the_app_version_or_the_tag(chart):
    assert container(render(chart, {}))["image"] == f"{IMAGE}:{chart.metadata['appVersion']}"
    given = render(chart, {"image": {"repository": "r.example/p", "tag": "dev"}})
    assert container(given)["image"] == "r.example/p:dev"


def test_equal_autoscaling_bounds_and_other_pod_labels_render(chart):
    objs = render(chart, {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 3},
                          "podLabels": {"app.kubernetes.io/part-of": "platform"}})
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == 3
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "platform" and labels["app.kubernetes.io/name"] == "podgate"


# values.schema.json's Kubernetes shapes, and the Kubernetes definitions they stand for
K8S_SHAPES = [
    ("/$defs/labelSelector", "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
    ("/$defs/envVar", "io.k8s.api.core.v1.EnvVar"),
    ("/$defs/toleration", "io.k8s.api.core.v1.Toleration"),
    ("/$defs/networkPolicyPeer", "io.k8s.api.networking.v1.NetworkPolicyPeer"),
    ("/$defs/topologySpreadConstraint", "io.k8s.api.core.v1.TopologySpreadConstraint"),
    ("/properties/server/properties/record/properties/volume", "io.k8s.api.core.v1.Volume"),  # less its name
]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("ours, theirs", K8S_SHAPES, ids=[s[0].rsplit("/", 1)[1] for s in K8S_SHAPES])
def test_kubernetes_shaped_values_allow_only_kubernetes_fields(ours, theirs, version):
    """Every field the chart's schema takes exists in the Kubernetes definition (down to nested
    objects), and every field Kubernetes requires, the schema requires too: a value that passes the
    schema is not refused by the API server for its shape."""
    import json

    from kubernetes_validate.utils import schema_contents

    chart_schema = json.loads((CHART / "values.schema.json").read_text())
    k8s = schema_contents(f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version)["$defs"]

    def resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = root[node["$ref"].rsplit("/", 1)[1]]
        return node

    def compare(mine: dict[str, Any], kube: dict[str, Any], path: str) -> None:
        mine, kube = resolve(mine, chart_schema["$defs"]), resolve(kube, k8s)
        if "items" in mine and "items" in kube:
            compare(mine["items"], kube["items"], f"{path}[]")
        if "properties" not in mine or "properties" not in kube:
            return
        assert mine.get("additionalProperties") is False, f"{path}: open object"
        unknown = set(mine["properties"]) - set(kube["properties"])
        assert not unknown, f"{path}: {unknown} not in the Kubernetes {version} definition"
        missing = set(kube.get("required", [])) - set(mine.get("required", []))
        if path == "volume":
            missing.discard("name")  # the chart names the volume
        assert not missing, f"{path}: Kubernetes requires {missing}"
        for key, sub in mine["properties"].items():
            compare(sub, kube["properties"][key], f"{path}.{key}")

    node: Any = chart_schema
    for part in ours.strip("/").split("/"):
        node = node[part]
    compare(node, k8s[theirs], ours.rsplit("/", 1)[1])


def test_every_schema_property_is_described():
    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            assert sub.get("description") or sub.get("properties"), f"{path}/{key} has no description"
            walk(sub, f"{path}/{key}")

    walk(json.loads((CHART / "values.schema.json").read_text()), "")


def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in ("resources",):
            out += leaf_paths(value, path)
        else:
            out.append(path)
    return out


def test_the_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in leaf_paths(values) if f"`{p}`" not in readme]
    assert missing == [], f"chart README.md values table lacks {missing}"


def test_the_readme_links_only_to_its_own_sections():
    readme = (CHART / "README.md").read_text()

    def slug(heading: str) -> str:  # GitHub's anchors: lower case, punctuation dropped, spaces to -
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert links and links <= anchors, links - anchors


# --- webhooks ---------------------------------------------------------------------------------

def webhooks(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(o["kind"], hook) for o in objs if o["kind"].endswith("WebhookConfiguration") for hook in o["webhooks"]]


def test_webhooks_never_see_kube_system_or_their_own_namespace(rendered):
    hooks = webhooks(rendered[1])
    assert hooks
    for kind, hook in hooks:
        expressions = hook["namespaceSelector"]["matchExpressions"]
        excluded = [e for e in expressions if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"]
        assert len(excluded) == 1, kind
        assert {"kube-system", NAMESPACE} <= set(excluded[0]["values"]), kind
        assert not hook["namespaceSelector"].get("matchLabels"), "labels could re-include a namespace"


def test_webhook_settings(rendered):
    name, objs = rendered
    service = one(objs, "Service")
    for kind, hook in webhooks(objs):
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert 1 <= hook["timeoutSeconds"] <= 10
        ref = hook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (service["metadata"]["name"], NAMESPACE)
        assert ref["port"] == service["spec"]["ports"][0]["port"]
        rule = hook["rules"][0]
        if hook["name"] == "validate-workloads.podgate.io":
            assert ref["path"] == "/validate" and hook["failurePolicy"] == "Fail"
            assert all(r["operations"] == ["CREATE", "UPDATE"] for r in hook["rules"])
            continue
        assert (rule["apiGroups"], rule["resources"], rule["apiVersions"]) == ([""], ["pods"], ["v1"])
        if kind == "MutatingWebhookConfiguration":
            assert len(hook["rules"]) == 1
            assert ref["path"] == "/mutate"
            assert rule["operations"] == ["CREATE"]
            assert hook["failurePolicy"] == "Ignore"  # validation, failing closed, checks the final Pod
            assert hook["reinvocationPolicy"] == "IfNeeded"
        else:
            assert ref["path"] == "/validate"
            assert rule["operations"] == ["CREATE", "UPDATE"]
            assert hook["rules"][1:] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                          "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"}]
            assert hook["failurePolicy"] == "Fail"
    service_port = service["spec"]["ports"][0]
    assert service_port["targetPort"] in [p["name"] for p in container(objs)["ports"]]


def test_mutating_match_conditions_skip_exactly_what_podgate_skips(chart, ca_pem):
    [(_, hook)] = [h for h in webhooks(objects(chart, ca_pem, "defaults")) if h[0].startswith("Mutating")]
    expressions = " ".join(c["expression"] for c in hook["matchConditions"])
    assert f"'{MIRROR_ANNOTATION}'" in expressions and "hostNetwork" in expressions
    # whether a Pod is injected depends on its proxy container, which the policy names, not on
    # the status annotation alone (a copied one is refused by /mutate)
    assert STATUS_ANNOTATION not in expressions
    assert all("matchConditions" not in h for _, h in webhooks(objects(chart, ca_pem, "minimal")))


# --- matchConditions, evaluated as kube-apiserver does (CEL) -----------------------------------
#
# cel-expr-python is the CEL C++ runtime with its type checker. kube-apiserver declares a webhook's
# `object` and `oldObject` as dyn (no schema) and `request` as an AdmissionRequest; a request is
# sent when every condition is true, skipped when one is false, and an error applies the
# failurePolicy (a test failure here).

@functools.cache
def _cel_env() -> Any:
    return cel.NewEnv(variables={"object": cel.Type.DYN, "oldObject": cel.Type.DYN,
                                 "request": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})


@functools.cache
def _cel_program(expression: str) -> Any:
    return _cel_env().compile(expression)


def sent(hook: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether kube-apiserver calls ``hook`` for this AdmissionRequest (its rules matching)."""
    data = {"object": request["object"], "oldObject": request.get("oldObject"), "request": request}
    for condition in hook.get("matchConditions", []):
        result = _cel_program(condition["expression"]).eval(data=data)
        assert result.type() == cel.Type.BOOL, f"matchCondition {condition['name']}: {result.value()}"
        if not result.value():
            return False
    return True


def default_hooks(chart: hp.Chart, ca_pem: str) -> dict[str, dict[str, Any]]:
    """mutate, validate (Pods) and validate-workloads, by the webhook's name."""
    return {hook["name"].removesuffix(".podgate.io"): hook for _, hook in webhooks(objects(chart, ca_pem, "defaults"))}


MESHED = {"team-a": {"podgate.io/mesh": "enabled"}}  # as tests/data/reviews/apiserver/podgate-test.yaml


def podgate_answer(request: dict[str, Any], webhook: str, policies: Any) -> Any:
    outcome = review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request},
                     webhook, Context(policies, StaticNamespaceLabels(MESHED)))
    assert outcome.decision is not None
    return outcome.decision


def test_match_conditions_compile_to_booleans(chart, ca_pem):
    hooks = default_hooks(chart, ca_pem)
    assert set(hooks) == {"mutate", "validate", "validate-workloads"}
    for hook in hooks.values():
        assert hook["matchConditions"]
        for condition in hook["matchConditions"]:
            assert _cel_program(condition["expression"]).return_type() == cel.Type.BOOL, condition["name"]


def test_recorded_requests_skipped_by_match_conditions_are_ones_podgate_allows_plainly(chart, ca_pem,
                                                                                     default_policies):
    """Every request a real kube-apiserver sent: where the conditions skip the call, podgate would
    have allowed it with no warning and no patch; the recorded UPDATEs, which relabel or annotate
    a Pod, are still sent."""
    hooks = default_hooks(chart, ca_pem)
    checked = {"sent": 0, "skipped": 0}
    for path in sorted(APISERVER_REVIEWS.glob("*.request.json")):
        request = json.loads(path.read_text())["request"]
        webhook = "mutate" if "_mutate_" in path.name else "validate"
        hook = hooks[webhook]
        if request["operation"] not in hook["rules"][0]["operations"]:
            continue  # the rules never send it
        if sent(hook, request):
            checked["sent"] += 1
            if request["operation"] == "UPDATE":
                assert webhook == "validate"
            continue
        checked["skipped"] += 1
        decision = podgate_answer(request, webhook, default_policies)
        assert decision.allowed and not decision.warnings and not decision.patch, path.name
    assert checked["sent"] >= 20
    updates = [p for p in APISERVER_REVIEWS.glob("*_validate_UPDATE_*.request.json")]
    assert updates and all(sent(hooks["validate"], json.loads(p.read_text())["request"]) for p in updates)


def _update(changes: dict[str, Any], old_changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A recorded UPDATE (a label added by kubectl label) with its Pods' metadata or spec changed."""
    request = copy.deepcopy(recorded("0018_validate_UPDATE")["request"])
    for obj, edits in ((request["object"], changes), (request["oldObject"], old_changes or {})):
        for dotted, value in edits.items():
            *parents, key = dotted.split(".")
            node = obj
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            if value is None:
                node.pop(key, None)
            elif isinstance(node, list):
                node[int(key)] = value
            else:
                node[key] = value
    return request


SAME_LABELS = {"metadata.labels": {"recorded-by": "recorder", "tier": "frontend"}}  # the object's labels
UPDATES = [  # (changes to the object, changes to the old object, sent)
    pytest.param({}, {**SAME_LABELS, "metadata.finalizers": ["batch.kubernetes.io/job-tracking"]}, False,
                 id="finalizer-removed"),
    pytest.param({"metadata.ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                                "uid": "u", "controller": True}]}, SAME_LABELS, False,
                 id="owner-reference-added"),
    pytest.param({"metadata.resourceVersion": "999"}, SAME_LABELS, False, id="resource-version-only"),
    pytest.param({"spec.containers.0.image": "nginx:1.27"}, SAME_LABELS, False, id="image-changed"),
    pytest.param({"metadata.annotations": {}}, SAME_LABELS, False, id="empty-annotations-as-none"),
    pytest.param({"metadata.labels": {"tier": "frontend", "recorded-by": "recorder"}}, SAME_LABELS, False,
                 id="labels-reordered"),
    pytest.param({}, {}, True, id="label-added"),
    pytest.param({"metadata.labels": None}, {}, True, id="labels-all-removed"),
    pytest.param({"metadata.labels": None}, {"metadata.labels": None}, False, id="no-labels-either-side"),
    pytest.param({"metadata.labels": {"recorded-by": "recorder", "tier": "backend"}}, SAME_LABELS, True,
                 id="label-value-changed"),
    pytest.param({"metadata.annotations": {"podgate.io/inject": "true"}}, SAME_LABELS, True,
                 id="annotation-added"),
    pytest.param({"metadata.annotations": {"podgate.io/inject": "true"}},
                 {**SAME_LABELS, "metadata.annotations": {"podgate.io/inject": "false"}}, True,
                 id="annotation-changed"),
    pytest.param({"metadata.annotations": None},
                 {**SAME_LABELS, "metadata.annotations": {"podgate.io/inject": "false"}}, True,
                 id="annotations-removed"),
]


@pytest.mark.parametrize("changes, old_changes, expected", UPDATES)
def test_validating_webhook_gets_only_updates_that_change_labels_or_annotations(chart, ca_pem, default_policies,
                                                                                changes, old_changes, expected):
    request = _update(changes, old_changes)
    assert sent(default_hooks(chart, ca_pem)["validate"], request) is expected
    if not expected:
        decision = podgate_answer(request, "validate", default_policies)
        assert decision.allowed and not decision.warnings


def test_creates_are_always_sent_to_the_validating_webhook(chart, ca_pem):
    hook = default_hooks(chart, ca_pem)["validate"]
    for path in sorted(APISERVER_REVIEWS.glob("*_validate_CREATE_*.request.json")):
        request = json.loads(path.read_text())["request"]
        assert request.get("oldObject") is None
        assert sent(hook, request), path.name


_label_maps = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["app", "tier", "podgate.io/exempt", "podgate.io/mesh"]),
    st.sampled_from(["a", "b", "true", "enabled"]), max_size=3))
_annotation_maps = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["podgate.io/inject", "example.com/note", "kubernetes.io/config.mirror"]),
    st.sampled_from(["true", "false", "x"]), max_size=2))
_PODS = {
    "collision": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
                  {"name": "b", "image": "b", "ports": [{"containerPort": 80}]}],
    "proxy-less": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}],
    "uid-clash": [{"name": "app", "image": "app", "securityContext": {"runAsUser": 1337}},
                  {"name": "mesh-proxy", "image": "proxy", "securityContext": {"runAsUser": 1337}}],
}


@settings(max_examples=150, derandomize=True)
@given(pod=st.sampled_from(sorted(_PODS)), namespace=st.sampled_from(["default", "team-a"]),
       old_labels=_label_maps, old_annotations=_annotation_maps, new_labels=_label_maps,
       new_annotations=_annotation_maps, relabel=st.booleans(), finalizers=st.booleans(),
       image=st.sampled_from(["app", "app:2"]))
def test_updates_skipped_by_match_conditions_never_change_podgate_answer(
        chart, ca_pem, default_policies, pod, namespace, old_labels, old_annotations, new_labels, new_annotations,
        relabel, finalizers, image):
    """Whatever the Pod, its namespace and its metadata: an UPDATE is skipped exactly when neither
    labels nor annotations change (absent and empty are the same), and then podgate would have
    allowed it without a warning."""
    def pod_object(labels: Any, annotations: Any, extra: dict[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": "web", "namespace": namespace, "uid": "u1", **extra}
        if labels is not None:
            metadata["labels"] = labels
        if annotations is not None:
            metadata["annotations"] = annotations
        containers = copy.deepcopy(_PODS[pod])
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": {"containers": containers}}

    old = pod_object(old_labels, old_annotations, {"finalizers": ["example.com/hold"]} if finalizers else {})
    if relabel:
        new = pod_object(new_labels, new_annotations, {})
    else:
        new = pod_object(old_labels, old_annotations, {})
    new["spec"]["containers"][0]["image"] = image  # the one container field an UPDATE may change
    request = review_for(new, operation="UPDATE", namespace=namespace, old=old)["request"]
    changed = (new["metadata"].get("labels") or {}) != (old["metadata"].get("labels") or {}) \
        or (new["metadata"].get("annotations") or {}) != (old["metadata"].get("annotations") or {})
    assert sent(default_hooks(chart, ca_pem)["validate"], request) is changed
    if not changed:
        decision = podgate_answer(request, "validate", default_policies)
        assert decision.allowed and not decision.warnings, decision.message


PROXY = {"name": "mesh-proxy", "image": "proxy", "restartPolicy": "Always"}  # the bundled profile's proxy


@pytest.mark.parametrize("metadata, spec, expected, answer", [
    pytest.param({}, {}, True, "injected", id="plain-pod"),
    pytest.param({"annotations": {MIRROR_ANNOTATION: "x"}}, {}, False, None, id="mirror-pod"),
    pytest.param({}, {"hostNetwork": True}, False, None, id="host-network"),
    pytest.param({}, {"hostNetwork": False}, True, "injected", id="host-network-false"),
    pytest.param({"annotations": {STATUS_ANNOTATION: "{}"}}, {"initContainers": [PROXY]}, True, "not injected",
                 id="already-injected"),
    pytest.param({"annotations": {STATUS_ANNOTATION: "{}"}}, {}, True, "denied", id="status-copied-without-proxy"),
])
def test_mutating_match_conditions_skip_only_pods_podgate_never_injects(chart, ca_pem, default_policies,
                                                                        metadata, spec, expected, answer):
    """A Pod in a meshed namespace: what the conditions skip, podgate would leave alone."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", **metadata},
           "spec": {"containers": [{"name": "app", "image": "app"}], **spec}}
    request = review_for(pod, namespace="team-a")["request"]
    assert sent(default_hooks(chart, ca_pem)["mutate"], request) is expected
    decision = podgate_answer(request, "mutate", default_policies)
    if answer is None:
        assert decision.allowed and not decision.patch, decision.reason
    elif answer == "injected":
        assert decision.allowed and decision.patch, decision.reason
    elif answer == "not injected":
        assert decision.allowed and not decision.patch and decision.reason.startswith("not injected"), decision.reason
    else:
        assert not decision.allowed and STATUS_ANNOTATION in (decision.message or ""), decision.reason


# --- workloads and ephemeral containers -----------------------------------------------------------

WORKLOAD_REVIEWS = REPO / "tests" / "data" / "reviews" / "workloads"
SHOP = {"shop": {"podgate.io/mesh": "enabled"}}  # as tests/data/reviews/workloads/podgate-test.yaml


def test_the_workload_webhook_registers_exactly_the_kinds_podgate_reads(chart, ca_pem):
    hook = default_hooks(chart, ca_pem)["validate-workloads"]
    registered = {(group, resource) for rule in hook["rules"] for group in rule["apiGroups"]
                  for resource in rule["resources"]}
    assert registered == {(w.group, w.kind.lower() + "s") for w in WORKLOAD_KINDS.values()}
    assert all(rule["apiVersions"] == ["v1"] for rule in hook["rules"])


def test_workload_validation_can_be_turned_off(chart, ca_pem):
    values = {"certs": {"mode": "secret", "secret": {"name": "tls", "caBundle": ca_pem}},
              "webhook": {"validating": {"workloads": False}}}
    names = [hook["name"] for _, hook in webhooks(render(chart, with_image(values)))]
    assert names == ["mutate.podgate.io", "validate.podgate.io"]


def _recorded_workload_answer(request: dict[str, Any], policies: Any) -> Any:
    outcome = review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request},
                     "validate", Context(policies, StaticNamespaceLabels(SHOP)))
    assert outcome.decision is not None
    return outcome.decision


# file-name prefix -> sent to podgate by the default chart (recorded validate requests of workloads)
WORKLOADS_SENT = {
    "0001": True, "0002": True, "0004": True, "0009": True, "0012": True, "0030": True,  # CREATEs by kubectl
    "0003": False, "0018": False, "0025": False,  # the deployment controller's new ReplicaSets
    "0017": True,  # the image changed: a new template
    "0022": False,  # only the Deployment's own annotation changed
    "0023": False, "0026": False, "0027": False,  # scale steps of a rollout
    "0024": True,  # the template opts out
}


def test_recorded_workload_requests_skipped_are_ones_podgate_allows_plainly(chart, ca_pem, default_policies):
    hooks = default_hooks(chart, ca_pem)
    seen = set()
    for path in sorted(WORKLOAD_REVIEWS.glob("*_validate_*.request.json")):
        request = json.loads(path.read_text())["request"]
        prefix = path.name[:4]
        if request["kind"]["kind"] == "Pod":
            hook = hooks["validate"]
            assert hook["rules"][0]["resources"] == ["pods"]
        else:
            hook = hooks["validate-workloads"]
            seen.add(prefix)
            assert sent(hook, request) is WORKLOADS_SENT[prefix], path.name
        if not sent(hook, request):
            decision = _recorded_workload_answer(request, default_policies)
            assert decision.allowed and not decision.warnings, (path.name, decision.message)
    assert seen == set(WORKLOADS_SENT)


def test_ephemeral_container_updates_are_always_sent(chart, ca_pem):
    hook = default_hooks(chart, ca_pem)["validate"]
    for path in sorted(WORKLOAD_REVIEWS.glob("*_Pod-ephemeralcontainers_*.request.json")):
        request = json.loads(path.read_text())["request"]
        assert request["subResource"] == "ephemeralcontainers"
        # labels and annotations are those of the Pod before: the Pod condition alone would skip it
        assert request["object"]["metadata"]["labels"] == request["oldObject"]["metadata"]["labels"]
        assert sent(hook, request), path.name


def _workload_update(changes: dict[str, Any]) -> dict[str, Any]:
    request = copy.deepcopy(json.loads(next(WORKLOAD_REVIEWS.glob("0017_*")).read_text())["request"])
    request["oldObject"] = copy.deepcopy(request["object"])
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = request["object"]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[key] = value
    return request


@pytest.mark.parametrize("changes, expected", [
    pytest.param({"spec.replicas": 5}, False, id="scaled"),
    pytest.param({"metadata.annotations": {"note": "x"}}, False, id="deployment-annotated"),
    pytest.param({"spec.strategy": {"type": "Recreate"}}, False, id="strategy-changed"),
    pytest.param({"spec.template.spec.containers.1.ports": [{"containerPort": 9090}]}, True, id="ports-changed"),
    pytest.param({"spec.template.metadata.annotations": {"podgate.io/inject": "false"}}, True, id="template-opts-out"),
    pytest.param({"spec.template.metadata.labels": {"app": "web", "v": "2"}}, True, id="template-relabelled"),
])
def test_workload_updates_are_sent_when_the_template_changes(chart, ca_pem, default_policies, changes, expected):
    request = _workload_update(changes)
    assert sent(default_hooks(chart, ca_pem)["validate-workloads"], request) is expected
    if not expected:
        decision = _recorded_workload_answer(request, default_policies)
        assert decision.allowed and not decision.warnings


def test_cronjob_updates_are_sent_when_the_job_template_changes(chart, ca_pem):
    hook = default_hooks(chart, ca_pem)["validate-workloads"]
    request = copy.deepcopy(json.loads(next(WORKLOAD_REVIEWS.glob("0012_*")).read_text())["request"])
    request.update(operation="UPDATE", oldObject=copy.deepcopy(request["object"]))
    request["object"]["spec"]["schedule"] = "0 * * * *"
    assert not sent(hook, request)
    request["object"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 1000}
    assert sent(hook, request)


def test_a_replica_set_a_person_makes_is_sent_whatever_it_claims_as_owner(chart, ca_pem):
    hook = default_hooks(chart, ca_pem)["validate-workloads"]
    request = copy.deepcopy(json.loads(next(WORKLOAD_REVIEWS.glob("0003_*")).read_text())["request"])
    assert not sent(hook, request)  # the deployment controller's
    request["userInfo"] = json.loads(next(WORKLOAD_REVIEWS.glob("0001_*")).read_text())["request"]["userInfo"]
    assert sent(hook, request)
    request["userInfo"]["username"] = "system:serviceaccount:kube-system:deployment-controller"
    request["object"]["metadata"]["ownerReferences"][0]["apiVersion"] = "example.com/v1"  # not a Deployment
    assert sent(hook, request)


def test_minimal_installs_only_the_validating_webhook(chart, ca_pem):
    objs = objects(chart, ca_pem, "minimal")
    assert "MutatingWebhookConfiguration" not in kinds(objs)
    assert {"ClusterRole", "ServiceAccount", "PodDisruptionBudget"}.isdisjoint(kinds(objs))
    assert "--no-metrics" in container(objs)["command"]
    assert build_parser().parse_args(container(objs)["command"][1:]).kube_api is None
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --- certificates -----------------------------------------------------------------------------

def tls_volume_secret(objs: list[dict[str, Any]]) -> str:
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    [tls] = [v for v in pod["volumes"] if v["name"] == "tls"]
    return tls["secret"]["secretName"]


def ca_bundles(objs: list[dict[str, Any]]) -> list[str | None]:
    return [hook["clientConfig"].get("caBundle") for _, hook in webhooks(objs)]


def test_helm_generated_certificate_is_wired_to_the_webhooks(chart, ca_pem):
    objs = objects(chart, ca_pem, "defaults")
    secret = one(objs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == tls_volume_secret(objs)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(ca_bundles(objs)) == {secret["data"]["ca.crt"]}
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    key = serialization.load_pem_private_key(data["tls.key"], None)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert f"{RELEASE}.{NAMESPACE}.svc" in names  # the name the API server uses for the Service
    # a year (certs.helm.days): what a security review accepts for a key nothing renews by itself
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=364) < left <= dt.timedelta(days=366)
    assert ca.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=366)


def test_cert_manager_injects_the_ca_of_the_serving_certificate(chart, ca_pem):
    for name in ("cert-manager", "cert-manager-issuer"):
        objs = objects(chart, ca_pem, name)
        assert "Secret" not in kinds(objs)
        serving = one(objs, "Certificate", RELEASE)
        assert serving["spec"]["secretName"] == tls_volume_secret(objs)
        assert f"{RELEASE}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
        for obj in objs:
            if obj["kind"].endswith("WebhookConfiguration"):
                assert obj["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{RELEASE}"
        assert ca_bundles(objs) and not any(ca_bundles(objs))  # cainjector fills it in
        issuer = serving["spec"]["issuerRef"]
        if name == "cert-manager":
            ca_issuer = one(objs, "Issuer", issuer["name"])
            ca_cert = one(objs, "Certificate", f"{RELEASE}-ca")
            assert ca_issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
            assert ca_cert["spec"]["isCA"] is True
        else:
            assert issuer == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
            assert "Issuer" not in kinds(objs)


def test_user_provided_secret_is_mounted_and_its_ca_trusted(chart, ca_pem):
    objs = objects(chart, ca_pem, "user-secret")
    assert {"Secret", "Certificate"}.isdisjoint(kinds(objs))
    assert tls_volume_secret(objs) == "my-webhook-tls"
    assert set(ca_bundles(objs)) == {base64.b64encode(ca_pem.encode()).decode()}


# --- the Pod ----------------------------------------------------------------------------------

def assert_restricted(pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, and resources set."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged")
        assert not any(p.get("hostPort") for p in c.get("ports", []))
        assert set(c["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]


def test_pod_meets_the_restricted_pod_security_standard(rendered):
    objs = rendered[1]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert_restricted(pod)
    volumes = {"tls": {"secret"}, "policies": {"configMap"}, "tmp": {"emptyDir"}}  # no hostPath
    if rendered[0] == "client-certificates":
        volumes["client-ca"] = {"secret"}
    if rendered[0] == "recording":
        volumes["recorded"] = {"emptyDir"}
    if rendered[0] == "recording-to-a-claim":
        volumes["recorded"] = {"persistentVolumeClaim"}
    if rendered[0] == "kubernetes-shapes":
        volumes["recorded"] = {"ephemeral"}
    assert {v["name"]: set(v) - {"name"} for v in pod["volumes"]} == volumes


def test_container_command_is_one_podgate_serve_accepts(rendered):
    objs = rendered[1]
    c = container(objs)
    assert c["command"][:2] == ["podgate", "serve"]
    args = build_parser().parse_args(c["command"][1:])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert args.bind == "0.0.0.0:8443"
    assert args.policies == "/etc/podgate/policies" == mounts["policies"]
    assert Path(args.cert).parent == Path(args.key).parent == Path(mounts["tls"])
    assert (Path(args.cert).name, Path(args.key).name) == ("tls.crt", "tls.key")
    assert all(m["readOnly"] for m in c["volumeMounts"] if m["name"] not in ("tmp", "recorded"))
    if rendered[0] == "client-certificates":
        assert args.client_ca == f"{mounts['client-ca']}/ca.crt" and args.health_bind == "0.0.0.0:8081"
        assert [p["containerPort"] for p in c["ports"]] == [8443, 8081]
    else:
        assert args.client_ca is None and args.health_bind is None
        assert [p["containerPort"] for p in c["ports"]] == [8443]


def test_the_kubelet_waits_for_the_whole_shutdown(rendered):
    """SIGTERM starts the readiness drain, then gunicorn's graceful stop: the kubelet's SIGKILL
    (after terminationGracePeriodSeconds) must come after both, with time for the last reports."""
    from webhook.server.runner import ServerOptions

    pod = one(rendered[1], "Deployment")["spec"]["template"]["spec"]
    args = build_parser().parse_args(container(rendered[1])["command"][1:])
    drain = ServerOptions.drain_seconds if args.drain_seconds is None else args.drain_seconds
    graceful = ServerOptions.graceful_timeout if args.graceful_timeout is None else args.graceful_timeout
    assert pod["terminationGracePeriodSeconds"] >= drain + graceful + 5
    assert pod["terminationGracePeriodSeconds"] <= drain + graceful + 6  # and not much longer


def test_server_options_reach_the_command(chart, ca_pem):
    objs = objects(chart, ca_pem, "server-options")
    args = build_parser().parse_args(container(objs)["command"][1:])
    assert (args.max_requests, args.drain_seconds, args.graceful_timeout) == (5000, 12.5, 40)
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 13 + 40 + 5
    # helm --set server.drainSeconds=12.5 passes a string: taken as the number it spells
    as_set = render(chart, {"server": {**VALUE_SETS["server-options"]["server"], "drainSeconds": "12.5"}})
    assert one(as_set, "Deployment") == one(objs, "Deployment")


def test_unset_server_options_leave_the_server_defaults(chart, ca_pem):
    """Nothing set: no flag, so the server's own defaults apply, and the Pod is as it always was."""
    objs = objects(chart, ca_pem, "defaults")
    command = container(objs)["command"]
    added = ("--max-requests", "--drain-seconds", "--graceful-timeout", "--record")
    assert [a for a in command if a.startswith(added)] == []
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    explicit = {"server": {"maxRequests": 0, "drainSeconds": None, "gracefulTimeoutSeconds": None}}
    assert one(render(chart, explicit), "Deployment") == one(objs, "Deployment")


def test_recording_writes_to_a_volume_of_its_own(chart, ca_pem):
    for name in ("recording", "recording-to-a-claim"):
        objs = objects(chart, ca_pem, name)
        c = container(objs)
        args = build_parser().parse_args(c["command"][1:])
        [mount] = [m for m in c["volumeMounts"] if m["name"] == "recorded"]
        assert args.record == mount["mountPath"] and not mount.get("readOnly")  # the root filesystem is read-only
        [volume] = [v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "recorded"]
        if name == "recording":
            assert (args.record_max, args.record_max_bytes, args.record_user_info) == (1000, 1048576, True)
            assert volume["emptyDir"] == {"sizeLimit": "1Gi"}  # on disk: a Memory one counts against the limit
        else:
            assert (args.record_max, args.record_max_bytes, args.record_user_info) == (1000, 262144, False)
            assert volume["persistentVolumeClaim"] == {"claimName": "recorded"}


def test_probes_use_the_health_endpoints(rendered):
    """Over the webhook's HTTPS port; with client certificates required (the kubelet has none),
    over the plain-HTTP health port, which serves nothing but health and metrics."""
    c = container(rendered[1])
    port = {"port": "health", "scheme": "HTTP"} if rendered[0] == "client-certificates" \
        else {"port": "https", "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", **port}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", **port}
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", **port}


def test_client_certificates_move_metrics_to_the_health_port(chart, ca_pem):
    objs = objects(chart, ca_pem, "client-certificates")
    secrets = [v["secret"]["secretName"] for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
               if "secret" in v]
    assert "apiserver-client-ca" in secrets
    assert [p["name"] for p in one(objs, "Service")["spec"]["ports"]] == ["https", "health"]
    (endpoint,) = one(objs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("health", "http") and "tlsConfig" not in endpoint
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"] == [f"{RELEASE}-policies"]
    (ingress,) = one(objs, "NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == ["https", "health"]


def test_high_availability(rendered):
    name, objs = rendered
    deployment = one(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    if name == "minimal":
        return
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(objs, "PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["affinity"]["podAntiAffinity"]
    if name == "ha":
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        hpa = one(objs, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] == 3
    else:
        assert deployment["spec"]["replicas"] >= 2
        assert "HorizontalPodAutoscaler" not in kinds(objs)


def test_network_policy_and_service_monitor(chart, ca_pem):
    objs = objects(chart, ca_pem, "ha")
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "https", "protocol": "TCP"}]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in policy["spec"]["egress"][1]["to"]
    monitor = one(objs, "ServiceMonitor")
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("https", "/metrics", "https")
    assert endpoint["tlsConfig"]["ca"] == {"configMap": {"name": f"{RELEASE}-ca-bundle", "key": "ca.crt"}}
    assert endpoint["tlsConfig"]["serverName"] == f"{RELEASE}.{NAMESPACE}.svc"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert "--metrics" in container(objs)["command"]


def test_the_default_network_policy_opens_only_the_webhook_port(chart, ca_pem):
    """On by default: the API server and Prometheus reach the webhook port (/metrics is served
    there), no other port is open, and the Pod reaches only DNS and the API server."""
    objs = objects(chart, ca_pem, "defaults")
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "https", "protocol": "TCP"}] and "from" not in ingress
    https = {p["name"]: p for p in container(objs)["ports"]}["https"]
    assert one(objs, "Service")["spec"]["ports"][0]["targetPort"] in ("https", https["containerPort"])
    dns, api = policy["spec"]["egress"]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert "NetworkPolicy" not in kinds(objects(chart, ca_pem, "no-network-policy"))


@pytest.mark.parametrize("mode", ["helm", "certManager", "secret"])
def test_service_monitor_verifies_with_the_ca_of_each_certificate_mode(chart, ca_pem, mode):
    """Prometheus checks podgate's certificate against the CA the webhooks trust, found where each
    mode really keeps it: a Secret made by ``kubectl create secret tls`` has no ca.crt."""
    values: dict[str, Any] = {"serviceMonitor": {"enabled": True}, "certs": {"mode": mode}}
    if mode == "secret":
        values["certs"]["secret"] = {"name": "my-webhook-tls", "caBundle": ca_pem}
    objs = render(chart, values)
    [endpoint] = one(objs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"]["serverName"] == f"{RELEASE}.{NAMESPACE}.svc"
    ca = endpoint["tlsConfig"]["ca"]
    bundles = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-ca-bundle"]
    if mode == "certManager":
        # cert-manager writes the issuer's CA into ca.crt of the Certificate's Secret, and cainjector
        # copies that same ca.crt into the webhooks' caBundle
        assert ca == {"secret": {"name": tls_volume_secret(objs), "key": "ca.crt"}}
        assert one(objs, "Certificate", RELEASE)["spec"]["secretName"] == tls_volume_secret(objs)
        assert bundles == []
        return
    assert ca == {"configMap": {"name": f"{RELEASE}-ca-bundle", "key": "ca.crt"}}
    [bundle] = bundles
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(bundle, version, strict=True)
    pem = bundle["data"]["ca.crt"]
    assert set(ca_bundles(objs)) == {base64.b64encode(pem.encode()).decode()}  # what the webhooks trust
    if mode == "secret":
        assert pem == ca_pem and tls_volume_secret(objs) == "my-webhook-tls"
    else:
        secret = one(objs, "Secret")
        serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        serving.verify_directly_issued_by(x509.load_pem_x509_certificate(pem.encode()))


@pytest.mark.parametrize("api_versions, skip_check", [
    pytest.param(PROMETHEUS_OPERATOR[:1], False, id="group-version"),
    pytest.param(PROMETHEUS_OPERATOR[1:], False, id="group-version-kind"),
    pytest.param((), True, id="check-skipped"),
])
def test_service_monitor_renders_where_its_api_is_known(chart, api_versions, skip_check):
    objs = render(chart, {"serviceMonitor": {"enabled": True, "skipAPICheck": skip_check}}, api_versions=api_versions)
    assert one(objs, "ServiceMonitor")["apiVersion"] == "monitoring.coreos.com/v1"


def test_service_monitor_without_its_api_fails_with_a_message(chart):
    """A cluster without the Prometheus Operator's CRDs (or helm template, which knows no cluster):
    a clear failure at render time, not a failed apply halfway through an install."""
    with pytest.raises(hp.HelmRenderError, match=re.escape(
            "serviceMonitor.enabled: this cluster has no monitoring.coreos.com/v1 API")) as failure:
        render(chart, {"serviceMonitor": {"enabled": True}}, api_versions=())
    assert "serviceMonitor.skipAPICheck=true" in str(failure.value)
    assert "--api-versions monitoring.coreos.com/v1/ServiceMonitor" in str(failure.value)
    assert "ServiceMonitor" not in kinds(render(chart, {}, api_versions=()))  # only when enabled


def test_service_monitor_tls_config_given_is_used_as_is(chart):
    tls = {"ca": {"secret": {"name": "corp-ca", "key": "root.pem"}}, "serverName": "podgate.example",
           "minVersion": "TLS12"}
    objs = render(chart, {"serviceMonitor": {"enabled": True, "tlsConfig": tls}})
    [endpoint] = one(objs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == tls
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"] == [f"{RELEASE}-policies"]


# --- RBAC -------------------------------------------------------------------------------------

def test_rbac_is_read_only_on_namespaces_only(chart, ca_pem):
    objs = objects(chart, ca_pem, "defaults")
    role = one(objs, "ClusterRole")
    # list+watch feed the cache; get fetches a namespace created since the last list
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(objs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    args = build_parser().parse_args(container(objs)["command"][1:])
    assert (args.kube_api, args.namespace_fallback) == ("in-cluster", "deny")
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")]


# --- policies: one source of truth ------------------------------------------------------------

def test_policy_configmap_is_the_repository_policies(chart, ca_pem):
    """charts/podgate/policies links to policies/: the ConfigMap carries those files, unchanged."""
    assert (CHART / "policies").is_symlink() and (CHART / "policies").resolve() == (REPO / "policies").resolve()
    data = one(objects(chart, ca_pem, "defaults"), "ConfigMap", f"{RELEASE}-policies")["data"]
    repo = {p.name: p.read_text() for p in (REPO / "policies").glob("*.yaml")}
    assert repo and data == repo


def test_policy_configmap_loads_as_a_policy_set(chart, ca_pem, tmp_path):
    """What the server will read from the mounted ConfigMap (with an added file) is a valid set."""
    data = one(objects(chart, ca_pem, "ha"), "ConfigMap", f"{RELEASE}-policies")["data"]
    assert "team-a.yaml" in data
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    policies = load_policy_set(tmp_path)
    assert {p.name for p in policies.policies} >= {"default", "team-a"}


def test_the_readme_documents_every_metric():
    from prometheus_client import REGISTRY

    from webhook.server import metrics

    metrics.set_namespace_cache(True, 0)  # its gauges appear on first use
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("podgate_")}
    readme = (CHART / "README.md").read_text()
    assert names and [n for n in names if f"`{n}" not in readme] == []



@pytest.mark.parametrize(("validating", "mutating", "expected"), [
    (True, True, "are now checked (failurePolicy Fail) and injected where policy says (failurePolicy Fail)."),
    (True, False, "are now checked (failurePolicy Fail)."),
    (False, True, "are now injected where policy says (failurePolicy Fail)."),
    (False, False, "Both webhooks are off"),
])
def test_notes_say_what_the_enabled_webhooks_do(chart: hp.Chart, validating: bool, mutating: bool,
                                                expected: str) -> None:
    values = {"webhook": {"validating": {"enabled": validating, "failurePolicy": "Fail"},
                          "mutating": {"enabled": mutating, "failurePolicy": "Fail"}}}
    [notes] = [text for path, text in render_manifests(chart, values).items() if path.endswith("NOTES.txt")]
    text = " ".join(notes.split())
    assert expected in text, text
    assert "now and" not in text and "now." not in text


# --- the audit CronJob, its RBAC, the PolicyReport CRD -----------------------------------------

def audit_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]


def test_audit_and_the_crd_are_off_by_default(chart, ca_pem):
    objs = objects(chart, ca_pem, "defaults")
    assert {"CronJob", "CustomResourceDefinition"}.isdisjoint(kinds(objs))
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"] == [RELEASE]


def test_the_audit_cronjob_runs_an_audit_podgate_accepts_under_the_servers_policies(chart, ca_pem, tmp_path):
    objs = objects(chart, ca_pem, "audit")
    cron = one(objs, "CronJob")
    assert cron["spec"]["schedule"] == "17 * * * *" and cron["spec"]["timeZone"] == "Europe/Berlin"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = audit_pod(objs)["spec"]
    assert_restricted(pod)
    assert pod["restartPolicy"] == "Never"
    [c] = pod["containers"]
    assert c["command"][:2] == ["podgate", "audit"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert f"--policies={mounts['policies']}" in c["command"]
    # the parser checks that the directory exists: here, a stand-in for the mounted ConfigMap
    command = [a.replace(mounts["policies"], str(tmp_path)) for a in c["command"][1:]]
    args = build_parser().parse_args(command)
    assert (args.kube_api, args.write_reports, args.exit_zero) == ("in-cluster", True, True)
    assert args.namespace is None and args.request_timeout == 60 and args.page_size == 500
    server = one(objs, "Deployment")["spec"]["template"]["spec"]
    policies = {v["name"]: v for v in pod["volumes"]}["policies"]
    assert policies == {v["name"]: v for v in server["volumes"]}["policies"]  # the same ConfigMap
    assert pod["serviceAccountName"] == f"{RELEASE}-audit" != server["serviceAccountName"]


def test_audit_pods_are_never_selected_as_webhook_servers(chart, ca_pem):
    objs = objects(chart, ca_pem, "audit")
    labels = audit_pod(objs)["metadata"]["labels"]
    selectors = [one(objs, "Service")["spec"]["selector"],
                 one(objs, "Deployment")["spec"]["selector"]["matchLabels"],
                 one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 one(objs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    for selector in selectors:
        assert not all(labels.get(k) == v for k, v in selector.items()), selector


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(verb, group, resource) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_audit_role_grants_what_an_audit_asks_for(chart, ca_pem, default_policies, tmp_path):
    """Every (verb, group, resource) that ``podgate audit --write-reports`` sends the stand-in API
    server, on Pods of every owner kind, creating, updating and emptying reports, is in the
    ClusterRole; and the role grants nothing beyond reading workloads and writing PolicyReports."""
    from webhook.cli import audit
    from .test_audit import app_pod, cluster, deployment
    from .stand_in_apiserver import StandInAPIServer

    objs = objects(chart, ca_pem, "audit")
    role = one(objs, "ClusterRole", f"{RELEASE}-audit")
    binding = one(objs, "ClusterRoleBinding", f"{RELEASE}-audit")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-audit", "namespace": NAMESPACE}]
    api = StandInAPIServer().start()
    try:
        api.set("shop", {"podgate.io/mesh": "enabled"})
        api.set("gone", {})
        deployment(api, "shop", "web", 2)
        for kind, group, resource in (("StatefulSet", "apps", "statefulsets"), ("DaemonSet", "apps", "daemonsets"),
                                      ("Job", "batch", "jobs"), ("ReplicationController", "", "replicationcontrollers")):
            api.put(resource, {"metadata": {"name": kind.lower(), "namespace": "shop"}})
            version = f"{group}/v1" if group else "v1"
            api.put("pods", app_pod(f"{kind.lower()}-1", "shop", owner=(version, kind, kind.lower())))
        api.put("policyreports", {"metadata": {"name": "podgate", "namespace": "gone", "labels": {
            "app.kubernetes.io/managed-by": "podgate"}}, "results": []})
        for _ in range(2):  # creates, then updates
            audit.run(cluster(api), default_policies, audit.Options(write_reports=True, exit_zero=True),
                      io.StringIO(), io.StringIO())
    finally:
        api.stop()
    asked = api.verbs
    assert {("create", "wgpolicyk8s.io", "policyreports"), ("update", "wgpolicyk8s.io", "policyreports"),
            ("get", "batch", "jobs"), ("get", "apps", "deployments")} <= asked
    assert asked <= granted(role), asked - granted(role)
    writes = {(v, g, r) for v, g, r in granted(role) if v not in ("get", "list", "watch")}
    assert {r for _, _, r in writes} == {"policyreports"}


def test_the_crd_option_installs_the_policyreport_crd_and_keeps_it(chart, ca_pem):
    crd = one(objects(chart, ca_pem, "audit"), "CustomResourceDefinition")
    vendored = next(d for d in yaml.safe_load_all((REPO / "tests" / "data" / "crds" /
                                                   "wgpolicyk8s.io_policyreports.yaml").read_text()) if d)
    assert crd["spec"] == vendored["spec"]
    assert crd["metadata"]["name"] == "policyreports.wgpolicyk8s.io"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("values, where", [
    ({"audit": {"schedule": "hourly"}}, "/audit/schedule"),
    ({"audit": {"pageSize": 0}}, "/audit/pageSize"),
    ({"audit": {"enable": True}}, "additional properties 'enable'"),
    ({"audit": {"resources": {"limits": {"memory": "1GB"}, "requests": {}}}}, "/audit/resources/limits/memory"),
    ({"policyReports": {"installCRD": "yes"}}, "/policyReports/installCRD"),
])
def test_schema_rejects_bad_audit_values(chart, values, where):
    with pytest.raises(hp.HelmValuesError, match=re.escape(where)):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def test_defaults_agree_with_the_charts_own_advice(chart: hp.Chart) -> None:
    """One gunicorn worker per CPU the Pod may use (a worker is one Python process); a generated
    certificate that lives at most the 398 days public CAs may issue, and the notes say how long."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    cpu = str(values["resources"]["limits"]["cpu"])
    cpus = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert values["server"]["workers"] <= cpus, (values["server"]["workers"], cpu)
    assert values["certs"]["helm"]["days"] <= 398
    [notes] = [t for p, t in render_manifests(chart, {}).items() if p.endswith("NOTES.txt")]
    assert f"valid for {values['certs']['helm']['days']} days" in notes and "certs.helm.rotate=true" in notes
