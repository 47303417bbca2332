"""The ``podgate`` command: the check JSON contract on tricky Pods, review, lint, usage errors.

Reading files, directories, stdin and the whole corpus is tested in test_check.py."""

from __future__ import annotations

import io
import shutil
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from webhook.cli.commands import main

from .conftest import APISERVER_REVIEWS, REPO

TRICKY = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata: {name: tricky, namespace: shop}
    spec:
      initContainers:
      - {name: early-sidecar, image: e, restartPolicy: Always, ports: [{containerPort: 7000}]}
      - {name: setup, image: s, ports: [{containerPort: 7000}, {containerPort: 7100}]}
      - {name: late-sidecar, image: l, restartPolicy: Always, ports: [{containerPort: 7100}]}
      containers:
      - name: app
        image: a
        ports: [{containerPort: 8080}, {containerPort: 53, protocol: UDP}, {containerPort: 9000, hostPort: 9000}]
        readinessProbe: {httpGet: {path: /, port: http}}
        livenessProbe: {tcpSocket: {port: 9090}}
      - name: metrics
        image: m
        ports: [{containerPort: 8080, protocol: TCP}, {containerPort: 9090, name: http}, {containerPort: 53, protocol: TCP}]
      - name: third
        image: t
        ports: [{containerPort: 8080}, {containerPort: 9001, hostPort: 9000, hostIP: 10.1.2.3}]
      - name: fourth
        image: f
        ports: [{containerPort: 9002, hostPort: 9000, hostIP: 10.9.9.9}]
    ---
    apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly, namespace: shop}
    spec:
      schedule: "@daily"
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: Never
              securityContext: {runAsUser: 1337}
              containers:
              - {name: job, image: j, securityContext: {runAsUser: 1000}}
              - {name: helper, image: h}
    """)


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    try:
        code = main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def strip_messages(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "violations": [{k: v for k, v in v.items() if k != "message"} for v in result["violations"]]}


def test_check_json_reports_exactly_the_design_violations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pods.yaml").write_text(TRICKY)
    (tmp_path / "ns.yaml").write_text("shop: {podgate.io/mesh: enabled}\n")
    code, out, _ = run(capsys, "check", "--no-inject", "-o", "json", "--namespace-labels",
                       str(tmp_path / "ns.yaml"), str(tmp_path / "pods.yaml"))
    assert code == 1
    first, second = (strip_messages(r) for r in json.loads(out)["results"])
    assert {k: v for k, v in first.items() if k != "violations"} == {
        "source": str(tmp_path / "pods.yaml"), "document": 0, "kind": "Pod", "namespace": "shop", "name": "tricky",
        "allowed": False, "injected": False}
    assert first["violations"] == [
        # the sidecar declared before "setup" runs alongside it; the one declared after does not
        {"rule": "port-collision", "action": "deny", "containers": ["early-sidecar", "setup"], "port": 7000,
         "protocol": "TCP"},
        # three containers on one port: three pairs; 53/UDP vs 53/TCP is no collision
        {"rule": "port-collision", "action": "deny", "containers": ["app", "metrics"], "port": 8080, "protocol": "TCP"},
        {"rule": "port-collision", "action": "deny", "containers": ["app", "third"], "port": 8080, "protocol": "TCP"},
        {"rule": "port-collision", "action": "deny", "containers": ["metrics", "third"], "port": 8080,
         "protocol": "TCP"},
        # an empty hostIP overlaps every address; two specific addresses do not overlap
        {"rule": "host-port-collision", "action": "deny", "containers": ["app", "third"], "port": 9000,
         "protocol": "TCP", "host_ip": "10.1.2.3"},
        {"rule": "host-port-collision", "action": "deny", "containers": ["app", "fourth"], "port": 9000,
         "protocol": "TCP", "host_ip": "10.9.9.9"},
        # a named probe port resolves only in its own container
        {"rule": "probe-port-missing", "action": "deny", "containers": ["app"], "port_name": "http"},
        {"rule": "probe-port-foreign", "action": "warn", "containers": ["app", "metrics"], "port": 9090},
        {"rule": "missing-proxy", "action": "deny", "containers": []},
        {"rule": "proxy-udp-port", "action": "warn", "containers": ["app"], "port": 53, "protocol": "UDP"},
    ]
    assert second["kind"] == "CronJob" and second["name"] == "nightly"
    # the container-level runAsUser wins over the Pod's; "helper" inherits the proxy's UID from the Pod.
    # The Pod is meshed because policy selects it, even before the proxy is there (--no-inject).
    assert second["violations"] == [
        {"rule": "proxy-uid-conflict", "action": "deny", "containers": ["helper"], "uid": 1337},
        {"rule": "missing-proxy", "action": "deny", "containers": []}]


def test_check_with_injection_sees_the_injected_pod(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pods.yaml").write_text(TRICKY + "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
                                        "  labels: {podgate.io/mesh: enabled}\n")
    code, out, _ = run(capsys, "check", "-o", "json", str(tmp_path / "pods.yaml"))
    results = json.loads(out)["results"]
    assert code == 1 and [r["injected"] for r in results] == [True, True]
    cron = strip_messages(results[1])
    assert cron["violations"] == [{"rule": "proxy-uid-conflict", "action": "deny", "containers": ["helper"],
                                   "uid": 1337}]
    rules = {v["rule"] for v in results[0]["violations"]}
    assert "missing-proxy" not in rules


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check", str(tmp_path / "missing.yaml"))[0] == 2
    assert run(capsys, "check", "--policies", str(tmp_path), str(REPO / "policies"))[0] == 2
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2


def test_review_prints_the_server_response(capsys: pytest.CaptureFixture[str]) -> None:
    request = next(APISERVER_REVIEWS.glob("0004_*"))
    code, out, _ = run(capsys, "review", str(request))
    assert code == 0 and json.loads(out)["response"]["allowed"] is True
    code, _, err = run(capsys, "review", "-", stdin="{nope")
    assert code == 2 and "not valid JSON" in err


def test_policy_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "lint", str(REPO / "policies"))
    assert code == 0 and out.endswith(": 0 errors, 0 warnings\n")
    (tmp_path / "p.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
                                     "spec: {rules: {port-collision: block}}\n")
    code, out, _ = run(capsys, "policy", "lint", str(tmp_path))
    assert code == 1 and "p.yaml:4: error: /spec/rules/port-collision: 'block' is not one of" in out


def test_console_script_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "webhook.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("podgate ")


def test_review_takes_yaml_and_the_webhook_of_a_recorded_mutate_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    import yaml

    recorded = APISERVER_REVIEWS / "0001_mutate_CREATE_default_single.request.json"
    code, out, err = run(capsys, "review", str(recorded))
    assert code == 0, err
    assert "answered as the mutate webhook (from the file name" in err
    as_json = json.loads(out)
    # the mutating webhook's answer: a patch for a Pod in a meshed namespace, or at least no validation
    assert "patchType" in as_json["response"] or as_json["response"]["allowed"] is True

    # the same request in YAML (suites accept it): the same answer
    as_yaml = tmp_path / "0001_mutate.request.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(recorded.read_text())))
    code, out, err = run(capsys, "review", str(as_yaml))
    assert code == 0, err
    assert json.loads(out) == as_json

    # a mutate request with a patch, in YAML, answered as mutate without --webhook
    pod_req = json.loads(recorded.read_text())
    pod_req["request"]["object"].setdefault("metadata", {}).setdefault("annotations", {})["podgate.io/inject"] = "true"
    meshed = tmp_path / "meshed-mutate.yaml"
    meshed.write_text(yaml.safe_dump(pod_req))
    code, out, _ = run(capsys, "review", str(meshed))
    answer = json.loads(out)["response"]
    assert code == 0 and answer["patchType"] == "JSONPatch"
    assert any(op["path"].startswith("/spec") for op in json.loads(base64.b64decode(answer["patch"])))
    # --webhook still decides
    code, out, err = run(capsys, "review", "--webhook", "validate", str(meshed))
    assert "answered as" not in err and "patch" not in json.loads(out)["response"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: admission.k8s.io/v1\nkind: [\n")
    code, _, err = run(capsys, "review", str(bad))
    assert code == 2 and f"{bad}:3: invalid JSON/YAML" in err and "Traceback" not in err


def test_check_reports_policy_errors_as_lint_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a}]}\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
                                     "spec:\n  rules: {port-collision: block}\n")
    _, lint_out, _ = run(capsys, "policy", "lint", str(policies))
    [lint_line] = [line for line in lint_out.splitlines() if ": error: " in line]
    assert lint_line.startswith(f"{policies / 'p.yaml'}:5: error: /spec/rules/port-collision")
    for command in (["check", str(pod)], ["inject", str(pod)], ["review", str(APISERVER_REVIEWS / "0002_validate_CREATE_default_single.request.json")]):
        code, _, err = run(capsys, command[0], "--policies", str(policies), *command[1:])
        assert code == 2
        assert lint_line in err.splitlines(), err  # the same line, with the line number

    # a directory of manifests is told so, in one line, not as a schema error per field
    manifests = tmp_path / "manifests"
    shutil.copytree(REPO / "tests" / "data" / "suites" / "rules" / "manifests", manifests)
    code, _, err = run(capsys, "check", "--policies", str(manifests), str(pod))
    assert code == 2
    assert err.splitlines() == [
        f"podgate: {manifests}: this does not look like a policy directory: it holds CronJob, Namespace, Deployment, "
        "no Policy or MeshProfile (podgate policy files have apiVersion podgate.io/v1alpha1); --policies names the "
        "directory of those"]
