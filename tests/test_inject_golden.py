"""Injection golden files, in the spirit of Istio's testdata/inject.

Each ``X.yaml`` is a Pod; ``X.yaml.injected`` is the Pod after the JSON Patch that /mutate
returns has been applied with jsonpatch, as the API server would. ``X.policies/`` gives a case
its own policy directory (``revision-*.yaml`` cases share ``revision.policies/``: a case
``A-B.yaml`` without its own takes the one of its longest prefix ``A``); ``X.error`` holds the
expected denial. Every result is validated against the Kubernetes Pod schema (strict), injected
twice (nothing changes the second time), and validated by podgate itself. Regenerate with ``REFRESH_GOLDEN=true``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from webhook.admission import Context, decide
from webhook.namespaces import StaticNamespaceLabels
from webhook.cli.offline import pod_review
from webhook.policy import PolicySet, load_policy_set
from webhook.review import AdmissionRequest, parse_review

from . import k8s_schema
from .conftest import DATA

INJECT = DATA / "inject"
REFRESH = os.environ.get("REFRESH_GOLDEN") == "true"
CASES = sorted(INJECT.glob("*.yaml"))
LABELS = StaticNamespaceLabels({
    "meshed": {"podgate.io/mesh": "enabled"},
    "canary": {"podgate.io/mesh": "enabled", "podgate.io/rev": "canary"},
    "misspelt": {"podgate.io/mesh": "enabled", "podgate.io/rev": "canery"},
    "rev-only": {"podgate.io/rev": "canary"},
})


def policy_dir(case: Path) -> Path | None:
    """The case's own policies, else those of its family (the longest ``-`` prefix), else None:
    the bundled ones."""
    parts = case.stem.split("-")
    for n in range(len(parts), 0, -1):
        candidate = case.with_name("-".join(parts[:n]) + ".policies")
        if candidate.is_dir():
            return candidate
    return None


@functools.cache
def policies_for(case: Path) -> PolicySet:
    return load_policy_set(policy_dir(case))


def request_for(pod: dict[str, Any]) -> AdmissionRequest:
    return parse_review(pod_review(pod, pod["metadata"].get("namespace", "default")))


def mutate(pod: dict[str, Any], policies: PolicySet) -> Any:
    return decide(request_for(pod), "mutate", Context(policies, LABELS))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_injection_golden(case: Path) -> None:
    pod = yaml.safe_load(case.read_text())
    policies = policies_for(case)
    decision = mutate(pod, policies)
    error = case.with_suffix(".error")
    if error.exists():
        assert decision.allowed is False and decision.code == 400
        assert error.read_text().strip() in decision.message
        return
    assert decision.allowed, decision.message
    got = jsonpatch.apply_patch(pod, decision.patch) if decision.patch else pod
    golden = case.with_name(case.name + ".injected")
    if REFRESH:
        golden.write_text(yaml.safe_dump(got, sort_keys=False))
    assert got == yaml.safe_load(golden.read_text())
    k8s_schema.check(got)
    again = mutate(got, policies)
    assert again.allowed and not again.patch, f"second injection changed the Pod: {again.patch}"
    verdict = decide(request_for(got), "validate", Context(policies, LABELS))
    assert verdict.allowed, verdict.message


def test_no_stale_goldens() -> None:
    wanted = {c.name + ".injected" for c in CASES}
    assert {p.name for p in INJECT.glob("*.injected")} <= wanted


@pytest.mark.parametrize("case", [c for c in CASES if not c.with_suffix(".error").exists()], ids=lambda p: p.stem)
def test_proxy_placement(case: Path) -> None:
    """Redirect first, native proxy right after it, then the Pod's own init containers in order."""
    pod = yaml.safe_load(case.read_text())
    golden = yaml.safe_load(case.with_name(case.name + ".injected").read_text())
    status = (golden["metadata"].get("annotations") or {}).get("podgate.io/status")
    own_init = [c["name"] for c in pod["spec"].get("initContainers") or []]
    own_app = [c["name"] for c in pod["spec"].get("containers") or []]
    if status is None:
        assert golden == pod
        return
    if "podgate.io/status" in (pod["metadata"].get("annotations") or {}):  # reinvoked: nothing moves
        names = [[c["name"] for c in p["spec"].get(key) or []] for p in (pod, golden)
                 for key in ("initContainers", "containers")]
        assert names[:2] == names[2:]
        return
    record = yaml.safe_load(status)
    init = [c["name"] for c in golden["spec"].get("initContainers") or []]
    assert init == record["initContainers"] + own_init
    profile = policies_for(case).governing(pod["metadata"]["namespace"], None).mesh.profile
    held = profile.injector.hold and own_app  # classic with hold: the proxy first among the containers
    apps = record["containers"] + own_app if held else own_app + record["containers"]
    assert [c["name"] for c in golden["spec"]["containers"]] == apps
    proxy = profile.proxy
    native = [c for c in golden["spec"].get("initContainers", []) if c["name"] == proxy.name]
    for container in native:
        assert container["restartPolicy"] == "Always"
    (proxy_container,) = [c for c in golden["spec"].get("initContainers", []) + golden["spec"]["containers"]
                          if c["name"] == proxy.name]
    for container in golden["spec"].get("initContainers", []) + golden["spec"]["containers"]:
        assert "" not in (container.get("args") or []), f'{container["name"]}: an empty argument'
    security = proxy_container["securityContext"]
    assert security["runAsUser"] == proxy.uid and security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert record["profile"] and len(record["hash"]) == 16


# --- every array and object the patch adds to may be missing, null or empty in the Pod -----------

BARE_SPECS = {
    "no-containers": {},
    "null-containers": {"containers": None},
    "empty-containers": {"containers": []},
    "null-init-and-volumes": {"containers": [{"name": "app", "image": "example/app:1"}],
                              "initContainers": None, "volumes": None},
    "empty-init-and-volumes": {"containers": [{"name": "app", "image": "example/app:1"}],
                               "initContainers": [], "volumes": []},
}
BARE_METADATA = {
    "no-annotations": {"name": "bare", "namespace": "meshed"},
    "null-annotations": {"name": "bare", "namespace": "meshed", "annotations": None},
    "empty-annotations": {"name": "bare", "namespace": "meshed", "annotations": {}},
}


@pytest.mark.parametrize("policies", ["default", "classic"])
@pytest.mark.parametrize("spec", BARE_SPECS.values(), ids=BARE_SPECS)
@pytest.mark.parametrize("metadata", BARE_METADATA.values(), ids=BARE_METADATA)
def test_the_patch_applies_to_whatever_the_pod_lacks(policies: str, spec: dict[str, Any],
                                                     metadata: dict[str, Any]) -> None:
    """RFC 6902 cannot append to an array that is not there (``/spec/containers/-`` on a Pod
    without containers): such arrays, and the annotations object, are added whole."""
    import copy

    policy_set = policies_for(INJECT / f"{policies}.yaml")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": copy.deepcopy(metadata), "spec": copy.deepcopy(spec)}
    decision = mutate(pod, policy_set)
    assert decision.allowed and decision.patch, decision.message
    got = jsonpatch.apply_patch(pod, decision.patch)  # raises where the API server would refuse
    proxy = policy_set.governing("meshed", None).mesh.profile.proxy.name
    where = "containers" if policies == "classic" else "initContainers"
    assert proxy in [c["name"] for c in got["spec"][where]]
    assert [v["name"] for v in got["spec"]["volumes"]] == ["mesh-proxy-data", "mesh-proxy-token"]
    assert "podgate.io/status" in got["metadata"]["annotations"]
    assert not mutate(got, policy_set).patch


# --- the served /mutate and `podgate inject` agree with the golden files, byte for byte ---------

SERVED_CASES = [c for c in CASES if policy_dir(c) is None and not c.with_suffix(".error").exists()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from .live_server import live_server

    tmp = tmp_path_factory.mktemp("inject-server")
    labels = tmp / "namespaces.yaml"
    labels.write_text(yaml.safe_dump(LABELS.labels))
    with live_server(tmp, "--namespace-labels", str(labels)) as srv:
        yield srv


@pytest.mark.parametrize("case", SERVED_CASES, ids=lambda p: p.stem)
def test_served_mutate_and_podgate_inject_agree(server: Any, case: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import base64
    import json

    from webhook.cli.commands import main

    pod = yaml.safe_load(case.read_text())
    body = pod_review(pod, pod["metadata"]["namespace"], dry_run=False)
    answer = server.session().post(f"{server.url}/mutate?timeout=10s", data=json.dumps(body),
                                   headers={"Content-Type": "application/json"}, timeout=10).json()["response"]
    served = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(answer["patch"]))) if "patch" in answer else pod
    assert served == yaml.safe_load(case.with_name(case.name + ".injected").read_text())
    labels = tmp_path / "namespaces.yaml"
    labels.write_text(yaml.safe_dump(LABELS.labels))
    assert main(["inject", "--namespace-labels", str(labels), str(case)]) == 0
    out = capsys.readouterr().out
    assert list(yaml.safe_load_all(out)) == [served]  # in the file's own formatting (test_inject_roundtrip.py)
    if served == pod:
        assert out == case.read_text()


def _redirect_args(pod: dict[str, Any], policies: PolicySet) -> list[str]:
    decision = mutate(pod, policies)
    assert decision.patch, decision.reason
    head = next(op for op in decision.patch if op["path"] == "/spec/initContainers")
    return head["value"][0]["args"]


def test_the_redirect_arguments_follow_each_pods_own_exclusions() -> None:
    """The filled-in redirect arguments are kept per pair of exclusion lists: a Pod never gets
    another Pod's, and Pods with ever new exclusions do not grow the table without bound."""
    policies = load_policy_set(None)

    def pod(annotations: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "meshed", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]}}

    plain = _redirect_args(pod({}), policies)
    excluding = _redirect_args(pod({"podgate.io/exclude-inbound-ports": "8081"}), policies)
    assert "8081" not in " ".join(plain) and "8081" in " ".join(excluding)
    assert _redirect_args(pod({}), policies) == plain
    for port in range(9000, 9100):
        assert str(port) in " ".join(_redirect_args(pod({"podgate.io/exclude-outbound-ports": str(port)}), policies))
    injector = policies.default.mesh.profile.injector  # type: ignore[union-attr]
    assert 2 <= len(injector.redirect_args) <= 64


REINVOKED = sorted(INJECT.glob("reinvoked-*.yaml"))


@pytest.mark.parametrize("case", REINVOKED, ids=lambda p: p.stem)
def test_reinvocation_rewrites_the_probes_of_the_new_containers_only(case: Path) -> None:
    """A Pod podgate injected, then another webhook added a container: only the new container's
    probes change, their originals join the proxy's env var, and the status now knows it."""
    import json

    pod = yaml.safe_load(case.read_text())
    got = yaml.safe_load(case.with_name(case.name + ".injected").read_text())
    before, after = (json.loads(p["metadata"]["annotations"]["podgate.io/status"]) for p in (pod, got))
    new = [c["name"] for key in ("initContainers", "containers") for c in pod["spec"].get(key) or []
           if c["name"] not in before["podContainers"] + before["initContainers"] + before["containers"]]
    assert new, "a reinvocation case adds a container"

    def by_name(p: dict[str, Any]) -> dict[str, Any]:
        return {c["name"]: c for key in ("initContainers", "containers") for c in p["spec"].get(key) or []}

    def originals(p: dict[str, Any]) -> dict[str, Any]:
        env = {e["name"]: e.get("value") for e in by_name(p)["mesh-proxy"].get("env") or []}
        return json.loads(env.get("PODGATE_APP_PROBES") or "{}")

    old, now = by_name(pod), by_name(got)
    for name, container in old.items():
        if name not in new and name != "mesh-proxy":
            assert now[name] == container, f"{name} was there at injection and must not change"
    if after == before:  # nothing to rewrite: the Pod comes back as it went in
        assert got == pod
        return
    assert set(after["podContainers"]) == set(before["podContainers"]) | set(new)
    assert {**before.get("probes", {}), **{n: after["probes"][n] for n in new}} == after["probes"]
    assert originals(got) == {**originals(pod), **{n: originals(got)[n] for n in new}}
    for name in new:
        for kind in after["probes"][name]:
            assert now[name][kind]["httpGet"]["port"] == 15020
            assert set(now[name][kind]) - {"httpGet"} == set(old[name][kind]) - {"httpGet", "tcpSocket", "grpc"}
