"""``podgate audit`` against the stand-in API server, over real HTTP with the real kubernetes client:
missing and stale proxies per workload, tightened rules on running Pods, pagination, 410 Gone,
RBAC refusals, server errors, owners, and PolicyReports written, updated, emptied (never someone
else's), checked against the PolicyReport CRD's schema."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from webhook.admission import Context
from webhook.cli import audit
from webhook.cli.cluster import Cluster, ClusterError
from webhook.cli.commands import main
from webhook.cli.offline import admit, pod_review
from webhook.namespaces import StaticNamespaceLabels
from webhook.policy import PolicySet, default_policy_dir, load_policy_set
from webhook.server.nscache import api_connection

from .conftest import DATA
from .stand_in_apiserver import StandInAPIServer

MESHED = {"podgate.io/mesh": "enabled"}
CRD = DATA / "crds" / "wgpolicyk8s.io_policyreports.yaml"


def report_schema() -> dict[str, Any]:
    crd = next(d for d in yaml.safe_load_all(CRD.read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2")
    return version["schema"]["openAPIV3Schema"]


REPORT_VALIDATOR = jsonschema.Draft7Validator(report_schema())


@pytest.fixture
def api() -> Iterator[StandInAPIServer]:
    server = StandInAPIServer().start()
    server.set("default", {"kubernetes.io/metadata.name": "default"})
    yield server
    server.stop()


def app_pod(name: str, namespace: str, *, owner: tuple[str, str, str] | None = None,
            ports: tuple[int, ...] = (8080,), **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {"app": name.rsplit("-", 2)[0]}}
    if owner is not None:
        api_version, kind, owner_name = owner
        meta["ownerReferences"] = [{"apiVersion": api_version, "kind": kind, "name": owner_name, "uid": "x",
                                    "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                     "ports": [{"containerPort": p} for p in ports]}], **spec},
            "status": {"phase": "Running"}}


def colliding_pod(name: str, namespace: str) -> dict[str, Any]:
    """A Pod whose two containers listen on the same port: port-collision, deny."""
    pod = app_pod(name, namespace)
    pod["spec"]["containers"].append({"name": "metrics", "image": "registry.example/metrics:1",
                                      "ports": [{"containerPort": 8080}]})
    return pod


def deployment(api: StandInAPIServer, namespace: str, name: str, pods: int, *, policies: PolicySet | None = None,
               **pod_spec: Any) -> list[dict[str, Any]]:
    """A Deployment, its ReplicaSet and Pods; injected by ``policies`` when given (as the webhook
    would have done at creation)."""
    api.put("deployments", {"metadata": {"name": name, "namespace": namespace}})
    rs = f"{name}-5d8f9c"
    api.put("replicasets", {"metadata": {"name": rs, "namespace": namespace, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": "x", "controller": True}]}})
    made = []
    for i in range(pods):
        pod = app_pod(f"{rs}-{i:05d}", namespace, owner=("apps/v1", "ReplicaSet", rs), **pod_spec)
        if policies is not None:
            pod = inject(pod, namespace, policies, api.namespaces[namespace])
        made.append(api.put("pods", pod))
    return made


def inject(pod: dict[str, Any], namespace: str, policies: PolicySet, labels: dict[str, str]) -> dict[str, Any]:
    ctx = Context(policies, StaticNamespaceLabels({namespace: labels}))
    result = admit(pod_review(pod, namespace), "mutate", ctx)
    assert result.injected, result.mutation
    return copy.deepcopy(result.object)


def cluster(api: StandInAPIServer, **kwargs: Any) -> Cluster:
    kwargs.setdefault("backoff", 0.01)
    return Cluster(api_connection(api.url), **kwargs)


def run(api: StandInAPIServer, policies: PolicySet, *, page_size: int = 500, **options: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = audit.run(cluster(api, page_size=page_size), policies, audit.Options(**options), out, err)
    return code, out.getvalue(), err.getvalue()


def results(api: StandInAPIServer, policies: PolicySet, **options: Any) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(api, policies, output="json", **options)
    return code, json.loads(out)


def profile_changed(tmp_path: Path) -> PolicySet:
    """The bundled policies with a new proxy image in the mesh profile."""
    target = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    profile = target / "mesh-proxy.yaml"
    text = profile.read_text()
    assert "mesh-proxy:1.0.0" in text
    profile.write_text(text.replace("mesh-proxy:1.0.0", "mesh-proxy:1.1.0"))
    return load_policy_set(target)


# --- what the audit finds ----------------------------------------------------------------------

def test_a_namespace_meshed_after_its_pods_started_yields_missing_proxy_per_workload(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 3)
    deployment(api, "shop", "cart", 2)
    code, out, _ = run(api, default_policies)
    assert code == 1
    lines = out.splitlines()
    web = next(line for line in lines if line.startswith("Deployment shop/web:"))
    assert web == ("Deployment shop/web: 3 pods, 3 with findings; fix: kubectl rollout restart deployment/web -n shop")
    assert any(line.startswith("Deployment shop/cart: 2 pods") for line in lines)
    detail = lines[lines.index(web) + 1]
    assert detail.startswith("  deny  missing-proxy (3 pods): [missing-proxy]")
    assert "restart it" in detail and "check that podgate's mutating webhook" not in detail
    assert lines[-1].startswith("5 pods audited in 2 namespaces: 5 at deny level")


def test_json_has_the_fields_of_check_plus_owner(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 1)
    code, doc = results(api, default_policies)
    assert code == 1
    [result] = doc["results"]
    assert result["owner"] == {"kind": "Deployment", "name": "web"}
    assert {"kind", "namespace", "name", "allowed", "injected", "violations"} <= set(result)
    assert result["name"] == "web-5d8f9c-00000" and result["allowed"] is False and result["injected"] is False
    [violation] = result["violations"]
    assert violation["rule"] == "missing-proxy" and violation["action"] == "deny"
    assert doc["summary"]["pods"] == 1 and doc["summary"]["denied"] == 1 and doc["errors"] == []


def test_injected_pods_under_the_same_profile_are_clean(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 2, policies=default_policies)
    code, doc = results(api, default_policies)
    assert code == 0
    assert [r["violations"] for r in doc["results"]] == [[], []]
    assert all(r["injected"] for r in doc["results"])


def test_a_profile_change_yields_stale_proxy_for_exactly_the_pods_injected_with_the_old_hash(
        api: StandInAPIServer, default_policies: PolicySet, tmp_path: Path) -> None:
    api.set("shop", MESHED)
    changed = profile_changed(tmp_path)
    old = default_policies.default.mesh.profile.proxy.profile_hash
    new = changed.default.mesh.profile.proxy.profile_hash
    assert old and new and old != new
    deployment(api, "shop", "old", 2, policies=default_policies)  # before the change
    deployment(api, "shop", "new", 3, policies=changed)  # restarted since
    code, doc = results(api, changed)
    assert code == 0  # stale-proxy warns by default
    stale = {r["name"] for r in doc["results"] if any(v["rule"] == "stale-proxy" for v in r["violations"])}
    assert stale == {f"old-5d8f9c-{i:05d}" for i in range(2)}
    message = next(v["message"] for r in doc["results"] for v in r["violations"])
    assert f'mesh profile "mesh-proxy" (hash {old}, now {new})' in message and "restart" in message
    _, out, _ = run(api, changed)
    assert "Deployment shop/old: 2 pods, 2 with findings; fix: kubectl rollout restart deployment/old -n shop" in out
    assert "shop/new" not in out
    # and under the old policies, it is the other way round
    _, doc = results(api, default_policies)
    assert {r["name"] for r in doc["results"] if r["violations"]} == {f"new-5d8f9c-{i:05d}" for i in range(3)}


def test_a_tightened_rule_shows_on_the_running_pods(api: StandInAPIServer, default_policies: PolicySet,
                                                    tmp_path: Path) -> None:
    pod = app_pod("api-1", "default", ports=())
    pod["spec"]["containers"] = [
        {"name": "app", "image": "a", "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "sidecar", "image": "b", "ports": [{"name": "http", "containerPort": 9090}]}]
    api.put("pods", pod)
    code, doc = results(api, default_policies)
    assert code == 0 and doc["results"][0]["violations"][0]["action"] == "warn"
    target = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    default = target / "default.yaml"
    default.write_text(default.read_text().replace("duplicate-port-name: warn", "duplicate-port-name: deny"))
    code, doc = results(api, load_policy_set(target))
    assert code == 1
    assert doc["results"][0]["violations"][0] | {"message": ""} == {
        "rule": "duplicate-port-name", "action": "deny", "message": "", "containers": ["app", "sidecar"],
        "port_name": "http"}


def test_owners_are_followed_up_the_chain_and_a_missing_owner_is_the_pod_itself(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("jobs", MESHED)
    api.put("cronjobs", {"metadata": {"name": "nightly", "namespace": "jobs"}})
    api.put("jobs", {"metadata": {"name": "nightly-29000", "namespace": "jobs", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "x", "controller": True}]}})
    api.put("pods", app_pod("nightly-29000-abcde", "jobs", owner=("batch/v1", "Job", "nightly-29000")))
    # a ReplicaSet whose Deployment was deleted with --cascade=orphan
    api.put("replicasets", {"metadata": {"name": "orphan-77", "namespace": "jobs", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orphan", "uid": "x", "controller": True}]}})
    api.put("pods", app_pod("orphan-77-aaaaa", "jobs", owner=("apps/v1", "ReplicaSet", "orphan-77")))
    api.put("pods", app_pod("gone-1", "jobs", owner=("apps/v1", "ReplicaSet", "gone-5c")))  # owner deleted
    api.put("pods", app_pod("sts-0", "jobs", owner=("apps/v1", "StatefulSet", "sts")))  # not stored: gone
    api.put("pods", app_pod("rollout-1", "jobs", owner=("argoproj.io/v1alpha1", "Rollout", "canary")))
    _, doc = results(api, default_policies)
    owners = {r["name"]: r["owner"] for r in doc["results"]}
    assert owners == {
        "nightly-29000-abcde": {"kind": "CronJob", "name": "nightly"},
        "orphan-77-aaaaa": {"kind": "ReplicaSet", "name": "orphan-77"},
        "gone-1": {"kind": "Pod", "name": "gone-1"},
        "sts-0": {"kind": "Pod", "name": "sts-0"},
        "rollout-1": {"kind": "Rollout", "name": "canary"}}  # a kind podgate does not read: as referenced
    _, out, _ = run(api, default_policies)
    assert "CronJob jobs/nightly: 1 pod, 1 with findings; fix: its next scheduled Job gets the current proxy" in out
    assert "ReplicaSet jobs/orphan-77: 1 pod, 1 with findings; fix: kubectl delete pod -n jobs orphan-77-aaaaa" in out
    assert "Pod jobs/gone-1: 1 pod, 1 with findings; fix: delete the pod and create it again" in out


def test_finished_pods_are_skipped_and_a_pod_podgate_cannot_read_is_an_error_for_that_pod(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    done = colliding_pod("done-1", "default")
    done["status"]["phase"] = "Succeeded"
    api.put("pods", done)
    broken = app_pod("broken-1", "default")
    broken["spec"]["containers"][0]["ports"] = "8080"
    api.put("pods", broken)
    api.put("pods", app_pod("fine-1", "default"))
    code, out, err = run(api, default_policies)
    assert code == 2
    assert "podgate: default/broken-1: podgate cannot check this Pod: pod /spec/containers/0/ports" in err
    assert "1 finished pods skipped" in out and out.splitlines()[-1].startswith("2 pods audited")


def test_one_namespace_only_and_an_unknown_namespace(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 1)
    api.put("pods", colliding_pod("x-1", "default"))
    _, doc = results(api, default_policies, namespace="default")
    assert [r["name"] for r in doc["results"]] == ["x-1"]
    with pytest.raises(ClusterError, match='namespace "nope" not found'):
        run(api, default_policies, namespace="nope")


# --- the API: pages, 410, 403, 5xx, unreachable ------------------------------------------------

def test_pods_are_read_a_page_at_a_time(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 7)
    _, doc = results(api, default_policies, page_size=3)
    assert len(doc["results"]) == 7 and len({r["name"] for r in doc["results"]}) == 7
    pod_lists = [p for p in api.requests if "/namespaces/shop/pods" in p]
    assert len(pod_lists) == 3 and all("limit=3" in p for p in pod_lists)
    assert sum("continue=" in p for p in pod_lists) == 2


def test_a_410_gone_mid_list_restarts_the_list_without_repeating_pods(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 7)
    api.expire_continue = 1
    c = cluster(api, page_size=3)
    out = io.StringIO()
    audit.run(c, default_policies, audit.Options(output="json"), out, io.StringIO())
    names = [r["name"] for r in json.loads(out.getvalue())["results"]]
    assert names == sorted(names) and len(names) == 7 == len(set(names))
    assert c.list_restarts == 1
    shop = [p for p in api.requests if "/namespaces/shop/pods" in p]
    assert len(shop) == 5  # page 1, the expired page 2, the restart's pages 1, 2, 3


@pytest.mark.parametrize(("verb", "resource", "expected"), [
    ("list", "namespaces", "cannot list namespaces at the cluster scope: add list on namespaces"),
    ("list", "pods", 'cannot list pods in the namespace "default": add list on pods'),
    ("get", "replicasets", 'cannot get replicasets.apps in the namespace "default": add get on replicasets.apps'),
])
def test_an_rbac_refusal_names_the_verb_and_resource_to_grant(
        api: StandInAPIServer, default_policies: PolicySet, capsys: pytest.CaptureFixture[str],
        verb: str, resource: str, expected: str) -> None:
    deployment(api, "default", "web", 1)
    api.forbidden.add((verb, resource, None))
    assert main(["audit", "--kube-api", api.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"podgate: {expected}"), err


def test_a_write_refusal_names_the_verb_too(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.put("pods", colliding_pod("x-1", "default"))
    api.forbidden.add(("create", "policyreports", None))
    with pytest.raises(ClusterError, match='cannot create policyreports.wgpolicyk8s.io in the namespace "default": '
                                           'add create on policyreports.wgpolicyk8s.io'):
        run(api, default_policies, write_reports=True)


def test_server_errors_are_retried_then_end_the_audit_with_the_status(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.put("pods", app_pod("x-1", "default"))
    api.fail("list", "pods", 503, times=2)
    code, _, _ = run(api, default_policies)
    assert code == 0
    api.fail("list", "pods", 500, times=50)
    with pytest.raises(ClusterError, match=r'cannot list pods in the namespace "default": the API server answered '
                                           r"HTTP 500 5 times \(stand-in fault: HTTP 500\)"):
        run(api, default_policies)


def test_an_audit_that_cannot_go_on_still_prints_a_whole_json_document(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", {})
    api.put("pods", colliding_pod("x-1", "default"))
    api.forbidden.add(("list", "pods", "shop"))
    out = io.StringIO()
    with pytest.raises(ClusterError, match='cannot list pods in the namespace "shop"'):
        audit.run(cluster(api), default_policies, audit.Options(output="json"), out, io.StringIO())
    doc = json.loads(out.getvalue())
    assert [r["name"] for r in doc["results"]] == ["x-1"]
    assert doc["errors"][0].startswith('cannot list pods in the namespace "shop": add list on pods')


def test_an_unreachable_api_is_exit_2_with_the_address(default_policies: PolicySet,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    stopped = StandInAPIServer().start()
    url = stopped.url
    stopped.stop()
    c = Cluster(api_connection(url), backoff=0.0, retries=1)
    with pytest.raises(ClusterError, match=f"cannot reach the API server at {url} to list namespaces"):
        audit.run(c, default_policies, audit.Options(), io.StringIO(), io.StringIO())


def test_a_namespace_deleted_mid_scan_is_skipped(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("a-team", MESHED)
    api.set("b-team", MESHED)
    deployment(api, "a-team", "web", 1)
    deployment(api, "b-team", "web", 1)
    api.after_page = lambda resource, pages: api.delete("b-team") if resource == "pods" and "b-team" in \
        api.namespaces else None
    code, doc = results(api, default_policies, write_reports=True)
    assert [r["namespace"] for r in doc["results"]] == ["a-team"]
    assert doc["summary"]["reports"] == {"a-team": "created"} and code == 1


# --- PolicyReports -----------------------------------------------------------------------------

def reports(api: StandInAPIServer) -> dict[str, dict[str, Any]]:
    """The reports named like podgate's, by namespace."""
    return {r["metadata"]["namespace"]: r for r in api.objects("policyreports") if r["metadata"]["name"] == "podgate"}


def test_policyreport_output_validates_against_the_crd_schema(api: StandInAPIServer,
                                                              default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 2)
    api.put("pods", app_pod("clean-1", "shop", **{"automountServiceAccountToken": True}))
    api.put("pods", colliding_pod("ports-1", "default"))
    code, out, _ = run(api, default_policies, output="policyreport")
    assert code == 1
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["metadata"]["namespace"] for d in docs] == ["default", "shop"]
    for doc in docs:
        REPORT_VALIDATOR.validate(doc)
        assert doc["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and doc["kind"] == "PolicyReport"
        assert doc["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "podgate"}
    shop = docs[1]
    assert shop["summary"] == {"pass": 0, "fail": 3, "warn": 0, "error": 0, "skip": 0}
    first = shop["results"][0]
    assert first["policy"] == "podgate" and first["rule"] == "missing-proxy" and first["result"] == "fail"
    assert first["severity"] == "high"
    assert first["resources"] == [{"apiVersion": "v1", "kind": "Pod", "namespace": "shop",
                                   "name": "clean-1", "uid": "uid-pods-shop-clean-1"}]
    assert {r["properties"].get("ownerName") for r in shop["results"]} == {None, "web"}


def test_the_schema_check_can_fail() -> None:
    bad = {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport", "metadata": {},
           "results": [{"policy": "podgate", "result": "denied"}], "summary": {"fail": "1"}}
    errors = sorted(e.message for e in REPORT_VALIDATOR.iter_errors(bad))
    assert len(errors) == 2, errors


def test_write_reports_creates_updates_and_empties_and_leaves_others_alone(
        api: StandInAPIServer, default_policies: PolicySet, tmp_path: Path) -> None:
    api.set("shop", MESHED)
    api.set("legacy", MESHED)
    api.set("quiet", {})
    shop = deployment(api, "shop", "web", 2)
    deployment(api, "legacy", "old", 1)
    api.put("pods", app_pod("ok-1", "quiet"))
    theirs = api.put("policyreports", {"metadata": {"name": "polr-ns-shop", "namespace": "shop",
                                                    "labels": {"app.kubernetes.io/managed-by": "kyverno"}},
                                       "results": [{"policy": "require-labels", "result": "fail"}]})
    # a report of podgate's name that someone else made
    squatter = api.put("policyreports", {"metadata": {"name": "podgate", "namespace": "legacy"}, "results": []})
    before = {(r["metadata"]["namespace"], r["metadata"]["name"]): copy.deepcopy(r)
              for r in (theirs, squatter)}

    code, out, err = run(api, default_policies, write_reports=True)
    assert code == 2  # findings not written for "legacy": said on stderr
    assert "PolicyReport legacy/podgate exists but was not made by podgate" in err
    ours = reports(api)
    assert set(ours) == {"shop", "legacy"} and ours["legacy"] == before[("legacy", "podgate")]
    assert ours["shop"]["summary"]["fail"] == 2 and "quiet" not in ours  # clean: nothing to create
    assert "PolicyReports created 1" in out
    for r in ours.values():
        REPORT_VALIDATOR.validate(r)

    # one Pod restarted with the proxy: the report is updated in place
    api.remove("pods", "shop", shop[0]["metadata"]["name"])
    version = ours["shop"]["metadata"]["resourceVersion"]
    assert run(api, default_policies, write_reports=True)[0] == 2
    updated = api.get("policyreports", "shop", "podgate")
    assert updated["summary"]["fail"] == 1 and updated["metadata"]["resourceVersion"] != version
    assert updated["metadata"]["uid"] == ours["shop"]["metadata"]["uid"]

    # the namespace became clean (its last Pod gone): the report is emptied, not left stale
    api.remove("pods", "shop", shop[1]["metadata"]["name"])
    api.remove("policyreports", "legacy", "podgate")
    code, out, _ = run(api, default_policies, write_reports=True)
    assert code == 1  # legacy's Pod still lacks the proxy
    emptied = api.get("policyreports", "shop", "podgate")
    assert emptied["results"] == [] and emptied["summary"]["fail"] == 0
    assert api.get("policyreports", "legacy", "podgate")["summary"]["fail"] == 1
    assert "PolicyReports created 1, emptied 1" in out
    # the other engine's report was never touched
    assert api.get("policyreports", "shop", "polr-ns-shop") == before[("shop", "polr-ns-shop")]
    writes = [(m, p) for m, p in api.calls if m in ("POST", "PUT", "DELETE")]
    assert all(p.rstrip("/").endswith("/policyreports") or p.endswith("/policyreports/podgate") for _, p in writes)


def test_nothing_is_written_without_write_reports(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    deployment(api, "shop", "web", 1)
    for output in ("text", "json", "policyreport"):
        run(api, default_policies, output=output)
    assert [m for m, _ in api.calls if m != "GET"] == []


def test_write_reports_without_the_crd_says_how_to_get_it(api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.crd_installed = False
    with pytest.raises(ClusterError, match="has no PolicyReport resource .*policyReports.installCRD=true"):
        run(api, default_policies, write_reports=True)


# --- on a terminal -----------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_line_on_a_terminal_only(api: StandInAPIServer, default_policies: PolicySet) -> None:
    deployment(api, "default", "web", 5)
    ticks = iter(range(1000))
    err = Terminal()
    auditor = audit.Auditor(cluster(api), default_policies, audit.Options(), io.StringIO(), err, progress=True,
                            clock=lambda: float(next(ticks)))
    auditor.run()
    assert "\raudited 1 pods" in err.getvalue() and err.getvalue().endswith("\r\033[K")
    plain = io.StringIO()
    audit.run(cluster(api), default_policies, audit.Options(), io.StringIO(), plain)
    assert "audited" not in plain.getvalue()


# --- streaming ---------------------------------------------------------------------------------

class Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def test_memory_is_bounded_by_the_page_not_the_cluster(default_policies: PolicySet) -> None:
    """Five times the Pods in one namespace, the same page size: the audit's peak of traced memory
    stays about where it was (what it keeps of a Pod is a count, unless the Pod has findings)."""
    import tracemalloc

    peaks = []
    for n in (40, 200):
        server = StandInAPIServer().start()
        try:
            server.set("default", {})
            deployment(server, "default", "web", n)
            c = cluster(server, page_size=20)
            tracemalloc.start()
            try:
                audit.run(c, default_policies, audit.Options(write_reports=False), Discard(), Discard())
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
        finally:
            server.stop()
    small, large = peaks
    assert large < small * 1.5, (small, large)


def test_an_approved_opt_out_is_not_judged_again_by_who_made_the_pod(
        api: StandInAPIServer, tmp_path: Path) -> None:
    """A running Pod does not say who created it: the meshBypass section judged that identity at
    admission (a Deployment's, or nobody's for the Pods its controller makes), so the audit does
    not report its opt-out as an unauthorized bypass (it would name the audit's own user)."""
    from .test_workloads import governed_policies

    policies = governed_policies(tmp_path, "meshBypass: {allow: [{groups: [platform-admins]}]}")
    api.set("shop", MESHED)
    for pod in deployment(api, "shop", "legacy", 2):
        pod["metadata"]["annotations"] = {"podgate.io/inject": "false"}
        api.put("pods", pod)
    direct = app_pod("debug-1", "shop", ports=(9090,))
    direct["metadata"]["annotations"] = {"podgate.io/inject": "false"}
    api.put("pods", direct)
    excluded = inject(app_pod("api-1", "shop"), "shop", policies, MESHED)
    excluded["metadata"]["annotations"]["podgate.io/exclude-inbound-ports"] = "8080"
    api.put("pods", excluded)
    code, doc = results(api, policies)
    assert [v["rule"] for r in doc["results"] for v in r["violations"]] == []
    assert code == 0 and doc["summary"]["denied"] == 0
    code, out, _ = run(api, policies)
    assert code == 0 and "unauthorized-mesh-bypass" not in out and "podgate-offline" not in out
    # the audit still finds what does not depend on who made the Pod
    api.put("pods", colliding_pod("clash-1", "shop") | {"metadata": {
        "name": "clash-1", "namespace": "shop", "annotations": {"podgate.io/inject": "false"}}})
    _, doc = results(api, policies)
    assert {r["name"]: [v["rule"] for v in r["violations"]] for r in doc["results"] if r["violations"]} == {
        "clash-1": ["port-collision"]}


def test_a_proxy_that_is_a_classic_init_container_is_not_fixed_by_a_restart(
        api: StandInAPIServer, default_policies: PolicySet) -> None:
    api.set("shop", MESHED)
    pod = app_pod("web-1", "shop")
    pod["spec"]["initContainers"] = [{"name": "mesh-proxy", "image": "registry.example/proxy:1"}]
    api.put("pods", pod)
    _, doc = results(api, default_policies)
    [violation] = doc["results"][0]["violations"]
    assert violation["rule"] == "missing-proxy" and "is a classic init container" in violation["message"]
    assert "restart" not in violation["message"]
