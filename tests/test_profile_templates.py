"""A MeshProfile's injection templates are Kubernetes objects, checked as the API server would
check the Pods they end up in: a typo there must stop the policy load (and lint, check, inject,
test, a server's reload), naming the file and the JSON path, not every meshed Pod at deploy time."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pytest
import yaml

from referencing import Registry, Resource

from webhook.admission import Context, decide
from webhook.cli.commands import main
from webhook.errors import PolicyError
from webhook.cli.offline import pod_review
from webhook.policy import default_policy_dir, load_policy_set, schema_validator
from webhook.review import parse_review
from webhook.store import PolicyStore

from . import k8s_schema
from .conftest import CORPUS, REPO

BUNDLED = default_policy_dir()
MESH = (BUNDLED / "mesh-proxy.yaml").read_text()
PROFILES = sorted(p.name for p in BUNDLED.glob("*.yaml") if "kind: MeshProfile" in p.read_text())
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}
C = "mesh-proxy.yaml: /spec/injection/container"
R = "mesh-proxy.yaml: /spec/injection/redirect"
V = "mesh-proxy.yaml: /spec/injection/volumes"
PROBE = "httpGet: {path: /healthz/ready, port: 15021}\n        periodSeconds: 1"

# (edit of the bundled mesh-proxy.yaml: old text, new text; the whole error the loader reports)
BROKEN = [
    pytest.param("      args: [\"proxy\"", "      imagePullPolicy: Sometimes\n      args: [\"proxy\"",
                 f"{C}/imagePullPolicy: 'Sometimes' is not one of ['Always', 'IfNotPresent', 'Never']",
                 id="enum-image-pull-policy"),
    pytest.param("        runAsGroup: 1337", "        runAsGroup: 1337\n        runAsUser: \"1337\"",
                 f"{C}/securityContext/runAsUser: '1337' is not of type 'integer'", id="uid-as-string"),
    pytest.param('limits: {cpu: "2", memory: 1Gi}', "limits: {cpu: lots, memory: 1Gi}",
                 f"{C}/resources/limits/cpu: 'lots' is not a Kubernetes quantity (e.g. 500m, 1Gi)", id="quantity"),
    pytest.param("requests: {cpu: 100m,", "requests: {cpu: -100m,",
                 f"{C}/resources/requests/cpu: '-100m' is negative: a quantity here must be 0 or more",
                 id="negative-quantity"),
    pytest.param("requests: {cpu: 100m,", "requests: {cpus: 100m,",
                 f"{C}/resources/requests: 'cpus' is not a resource name: cpu, memory, ephemeral-storage, "
                 "hugepages-<size>, or a domain-prefixed extended resource", id="resource-name"),
    pytest.param("      readinessProbe:", "      livenessprobe:\n        tcpSocket: {port: 15021}\n      readinessProbe:",
                 f"{C}: Additional properties are not allowed ('livenessprobe' was unexpected); "
                 "did you mean 'livenessProbe'?", id="unknown-field"),
    pytest.param("containerPort: 15090,", "containerPort: 70000,",
                 f"{C}/ports/1/containerPort: 70000 is greater than the maximum of 65535", id="port-range"),
    pytest.param("containerPort: 15021, protocol: TCP", "containerPort: 15021, protocol: tcp",
                 f"{C}/ports/0/protocol: 'tcp' is not one of ['TCP', 'UDP', 'SCTP']", id="protocol"),
    pytest.param(PROBE, PROBE.replace("15021", "70000"),
                 f"{C}/startupProbe/httpGet/port: 70000 is greater than the maximum of 65535", id="probe-port-range"),
    pytest.param(PROBE, PROBE.replace("15021", '"15021"'),
                 f"{C}/startupProbe/httpGet/port: '15021' is neither a port number nor a port name (at most 15 "
                 "lowercase letters, digits and single '-' between them, with at least one letter)",
                 id="probe-port-number-as-string"),
    pytest.param(PROBE, "periodSeconds: 1",
                 f"{C}/startupProbe: a probe takes exactly one of exec, httpGet, tcpSocket, grpc", id="probe-handler"),
    pytest.param("periodSeconds: 1\n", "periodSeconds: -1\n",
                 f"{C}/startupProbe/periodSeconds: -1 is less than the minimum of 0", id="probe-negative"),
    pytest.param("fieldPath: status.podIP}", "fieldPath: status.podIp}",
                 f"{C}/env/2/valueFrom/fieldRef/fieldPath: 'status.podIp' is not a field an environment variable "
                 "can read: one of metadata.name, metadata.namespace, metadata.uid, spec.nodeName, "
                 "spec.serviceAccountName, status.hostIP, status.hostIPs, status.podIP, status.podIPs, "
                 "metadata.labels['KEY'], metadata.annotations['KEY']", id="env-field-path"),
    pytest.param("valueFrom: {fieldRef: {fieldPath: metadata.name}}",
                 "valueFrom: {fieldRef: {fieldPath: metadata.name}, secretKeyRef: {name: s, key: k}}",
                 f"{C}/env/0/valueFrom: valueFrom takes exactly one of configMapKeyRef, fieldRef, fileKeyRef, "
                 "resourceFieldRef, secretKeyRef", id="env-two-sources"),
    pytest.param("      - name: POD_NAME\n", "      - value: x\n",
                 f"{C}/env/0: 'name' is a required property", id="env-required-name"),
    pytest.param("    container:\n", "    container:\n      workingDir:\n",
                 f"{C}/workingDir: empty (null), expected 'string': give a value or leave the key out", id="null"),
    pytest.param("    container:\n", "    container:\n      name: proxy\n",
                 f"{C}/name: the proxy container is named by spec.proxy.name: leave name out here", id="proxy-name"),
    pytest.param("      securityContext:\n        runAsUser: 0",
                 "      imagePullPolicy: sometimes\n      securityContext:\n        runAsUser: 0",
                 f"{R}/imagePullPolicy: 'sometimes' is not one of ['Always', 'IfNotPresent', 'Never']",
                 id="redirect-enum"),
    pytest.param("        runAsUser: 0\n", "        runAsUser: -1\n",
                 f"{R}/securityContext/runAsUser: -1 is less than the minimum of 0", id="redirect-uid-range"),
    pytest.param("      securityContext:\n        runAsUser: 0",
                 "      readinessProbe: {tcpSocket: {port: 15006}}\n      securityContext:\n        runAsUser: 0",
                 f"{R}/readinessProbe: the traffic-redirect init container runs to completion before the Pod "
                 "starts: it takes no probes, lifecycle hooks or restartPolicy", id="redirect-probe"),
    pytest.param("limits: {cpu: 100m, memory: 64Mi}", "limits: {cpu: 100m, memory: 64Mi}\n      tty: yes",
                 f"{R}/tty: 'yes' is not of type 'boolean'", id="redirect-yaml-1.1-boolean"),
    pytest.param("        emptyDir: {}", "        emptydir: {}",
                 f"{V}/0: Additional properties are not allowed ('emptydir' was unexpected); did you mean 'emptyDir'?",
                 id="volume-source-misspelt"),
    pytest.param("        emptyDir: {}", "        emptyDir: {}\n        configMap: {name: c}",
                 f"{V}/0: a volume takes one source (emptyDir, configMap, secret, projected, ...), not several",
                 id="volume-two-sources"),
    pytest.param("        emptyDir: {}", "        emptyDir: {medium: memory}",
                 f"{V}/0/emptyDir/medium: 'memory' is not a medium: \"\", Memory or HugePages", id="volume-medium"),
    pytest.param("expirationSeconds: 43200", "expirationSeconds: 60",
                 f"{V}/1/projected/sources/0/serviceAccountToken/expirationSeconds: 60 is less than the minimum of 600",
                 id="token-expiry"),
    pytest.param("{audience: mesh, expirationSeconds: 43200, path: mesh-token}", "{audience: mesh}",
                 f"{V}/1/projected/sources/0/serviceAccountToken: 'path' is a required property", id="token-path"),
    pytest.param("{name: mesh-metrics,", "{name: mesh-proxy-metrics,",
                 f"{C}/ports/1/name: 'mesh-proxy-metrics' is not a port name (at most 15 lowercase letters, digits "
                 "and single '-' between them, with at least one letter)", id="port-name-too-long"),
    # What the API server compares across fields: checked after the schema, with the same paths.
    pytest.param("{name: mesh-metrics,", "{name: mesh-health,",
                 f"{C}/ports/1/name: 'mesh-health' is given twice in the proxy container (also ports/0): the API "
                 "server refuses the Pod", id="duplicate-port-name"),
    pytest.param("mountPath: /var/run/secrets/mesh/tokens", "mountPath: /var/lib/mesh-proxy",
                 f"{C}/volumeMounts/1/mountPath: '/var/lib/mesh-proxy' is given twice in the proxy container (also "
                 "volumeMounts/0): the API server refuses the Pod", id="duplicate-mount-path"),
    pytest.param("requests: {cpu: 100m, memory: 128Mi}", "requests: {cpu: 100m, memory: 2Gi}",
                 f"{C}/resources/requests/memory: '2Gi' is more than the memory limit '1Gi': the API server refuses "
                 "the Pod", id="request-above-limit"),
    pytest.param("requests: {cpu: 10m, memory: 16Mi}", "requests: {cpu: 1, memory: 16Mi}",
                 f"{R}/resources/requests/cpu: 1 is more than the cpu limit '100m': the API server refuses the Pod",
                 id="redirect-request-above-limit"),
    pytest.param('maxCPU: "2"', 'maxCPU: "4"',
                 "mesh-proxy.yaml: /spec/injection/overrides/maxCPU: '4' is more than the proxy's cpu limit '2': the "
                 "API server refuses a Pod that asks for more", id="override-above-limit"),
    pytest.param("      name: mesh-init", "      name: mesh-proxy",
                 f"{R}/name: 'mesh-proxy' is also the proxy's name (spec.proxy.name): two containers of a Pod cannot "
                 "share a name", id="redirect-named-like-the-proxy"),
    pytest.param("      - name: mesh-proxy-token\n", "      - name: mesh-proxy-data\n",
                 f"{V}/1/name: 'mesh-proxy-data' is given twice in the profile's volumes (also volumes/0): the API "
                 "server refuses the Pod", id="duplicate-volume"),
]


def broken(tmp_path: Path, old: str, new: str) -> Path:
    assert MESH.count(old) >= 1, old
    (tmp_path / "mesh-proxy.yaml").write_text(MESH.replace(old, new, 1))
    (tmp_path / "default.yaml").write_text((BUNDLED / "default.yaml").read_text())
    return tmp_path


def load_error(directory: Path) -> str:
    with pytest.raises(PolicyError) as err:
        load_policy_set(directory)
    return str(err.value).replace(f"{directory}/", "")


@pytest.mark.parametrize(("old", "new", "message"), BROKEN)
def test_a_broken_template_stops_the_load_naming_file_and_path(tmp_path: Path, old: str, new: str,
                                                                message: str) -> None:
    assert load_error(broken(tmp_path, old, new)) == message


def test_every_problem_of_a_profile_is_reported_at_once(tmp_path: Path) -> None:
    text = MESH.replace("containerPort: 15090,", "containerPort: 0,").replace("emptyDir: {}", "emptyDir: []")
    (tmp_path / "mesh-proxy.yaml").write_text(text)
    assert load_error(tmp_path).splitlines() == [
        f"{C}/ports/1/containerPort: 0 is less than the minimum of 1",
        f"{V}/0/emptyDir: [] is not of type 'object'"]


@pytest.mark.parametrize(("old", "new", "path", "text"), [
    pytest.param("      readinessProbe:", "      livenessprobe:\n        tcpSocket: {port: 15021}\n      readinessProbe:",
                 "/spec/injection/container/livenessprobe", "livenessprobe:", id="unknown-field-points-at-the-key"),
    pytest.param("      args: [\"proxy\"", "      imagePullPolicy: Sometimes\n      args: [\"proxy\"",
                 "/spec/injection/container/imagePullPolicy", "imagePullPolicy: Sometimes", id="enum"),
    pytest.param("        emptyDir: {}", "        emptyDir: {}\n        secret: {secretName: s}",
                 "/spec/injection/volumes/0", "- name: mesh-proxy-data", id="volume"),
])
def test_lint_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, path: str,
                             text: str) -> None:
    directory = broken(tmp_path, old, new)
    assert main(["policy", "lint", str(directory)]) == 1
    out = capsys.readouterr().out
    line = next(i for i, t in enumerate((directory / "mesh-proxy.yaml").read_text().splitlines(), 1) if text in t)
    assert f"{directory}/mesh-proxy.yaml:{line}: error: {path}: " in out


def test_lint_warns_about_a_mount_of_a_volume_the_profile_does_not_add(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    directory = broken(tmp_path, "- {name: mesh-proxy-token,", "- {name: mesh-token,")
    assert main(["policy", "lint", str(directory)]) == 0
    line = next(i for i, t in enumerate((directory / "mesh-proxy.yaml").read_text().splitlines(), 1) if "mesh-token," in t)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{directory}/mesh-proxy.yaml:{line}: warning: /spec/injection/container/volumeMounts/1/name: volume "
        "'mesh-token' is not in spec.injection.volumes: every Pod this profile injects must bring it, or the API "
        "server refuses the Pod")


def test_a_volume_without_a_source_is_an_empty_dir_and_lint_says_so(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The API server defaults a volume with only a name to an emptyDir (Istio's templates rely on
    it), so it is no error; lint points it out, in case a source was forgotten."""
    directory = broken(tmp_path, "      - name: mesh-proxy-data\n        emptyDir: {}", "      - name: mesh-proxy-data")
    load_policy_set(directory)
    assert main(["policy", "lint", str(directory)]) == 0
    line = next(i for i, t in enumerate((directory / "mesh-proxy.yaml").read_text().splitlines(), 1)
                if "- name: mesh-proxy-data" in t)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{directory}/mesh-proxy.yaml:{line}: warning: /spec/injection/volumes/0: volume 'mesh-proxy-data' has no "
        "source: Kubernetes makes it an emptyDir (write emptyDir: {} to say so, or give the source you meant)")


def test_check_inject_and_test_refuse_a_broken_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p").mkdir()
    directory = broken(tmp_path / "p", "    container:\n", "    container:\n      imagePullPolicy: Sometimes\n")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(POD))
    (tmp_path / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\nname: t\npolicies: p\n"
        "cases:\n  - {name: web, manifest: pod.yaml, expect: {allowed: true}}\n")
    for argv in (["check", "--policies", str(directory), str(manifest)],
                 ["inject", "--policies", str(directory), str(manifest)], ["test", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert re.search(rf"{re.escape(str(directory))}/mesh-proxy.yaml:\d+: error: /spec/injection/container/"
                         r"imagePullPolicy: 'Sometimes' is not one of", err, re.M), err


def test_a_running_server_keeps_the_last_good_set(tmp_path: Path) -> None:
    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path)
    store = PolicyStore(tmp_path)
    assert store.load()
    good = store.current
    (tmp_path / "mesh-proxy.yaml").write_text(MESH.replace("emptyDir: {}", "emptyDir: {sizeLimit: lots}"))
    store.poll()
    assert store.current is good
    assert "mesh-proxy.yaml: /spec/injection/volumes/0/emptyDir/sizeLimit: 'lots' is not a Kubernetes quantity" \
        in (store.last_error or "")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("mode", ["native", "classic"])
def test_every_bundled_profile_injects_a_pod_the_api_server_accepts(tmp_path: Path, profile: str, mode: str) -> None:
    doc = yaml.safe_load((BUNDLED / profile).read_text())
    doc["spec"]["injection"]["mode"] = mode
    (tmp_path / profile).write_text(yaml.safe_dump(doc))
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: all}\n"
        f"spec:\n  mesh:\n    profile: {doc['metadata']['name']}\n    podSelector: {{}}\n")
    decision = decide(parse_review(pod_review(POD, "shop")), "mutate", Context(load_policy_set(tmp_path)))
    assert decision.injected, decision.message
    k8s_schema.check(jsonpatch.apply_patch(POD, decision.patch))


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return [without_nulls(v) for v in value] if isinstance(value, list) else value


@pytest.mark.skipif(not (CORPUS / "manifests").is_dir(), reason="../shared/corpus is not beside the checkout")
def test_nothing_the_api_server_accepts_is_refused(corpus_manifests: list[tuple[Path, Any]]) -> None:
    """Every container and volume of the corpus Pods that pass the strict Pod schema passes the
    bundled schema too (the extra checks are the API server's, not podgate's taste), nulls left
    out: the API server reads them as absent, a template must leave the field out instead."""
    schema = json.loads((BUNDLED / "kubernetes.schema.json").read_text())
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    check = {kind: jsonschema.Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/io.k8s.api.core.v1.{kind}"},
                                                   registry=registry) for kind in ("Container", "Volume")}
    seen: Counter[str] = Counter()
    refused = []
    for path, docs in corpus_manifests:
        for doc in docs or ():
            pod = doc.pod("corpus") if doc.has_pod else None
            if not isinstance(pod, dict) or not k8s_schema.is_valid({**pod, "apiVersion": "v1", "kind": "Pod"}):
                continue
            spec = without_nulls(pod["spec"])
            parts = [("Container", c) for c in [*spec.get("initContainers", []), *spec.get("containers", [])]]
            for kind, part in parts + [("Volume", v) for v in spec.get("volumes", [])]:
                seen[kind] += 1
                refused += [f"{path.relative_to(CORPUS)}: {kind} {part.get('name')}: {e.message}"
                            for e in check[kind].iter_errors(part)]
    assert not refused, "\n".join(refused)
    assert seen["Container"] > 900 and seen["Volume"] > 1000, seen


def test_the_bundled_kubernetes_schema_is_what_the_script_generates() -> None:
    """scripts/kubernetes_schema.py --check: regenerate from kubernetes-validate and compare."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "kubernetes_schema.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pod_checks_use_the_kubernetes_version_of_the_bundled_schema() -> None:
    bundled = json.loads((BUNDLED / "kubernetes.schema.json").read_text())
    assert bundled["x-kubernetes-version"] == k8s_schema.VERSION
    jsonschema.Draft202012Validator.check_schema(bundled)  # the loader checks only policy.schema.json


def test_schemas_compile_once() -> None:
    assert schema_validator() is schema_validator()
