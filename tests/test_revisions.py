"""Profile revisions: which profile a Pod gets (golden cases in tests/data/inject/revision-*),
which profile the rules judge it by (the one it was injected with), what needs a restart, and
what the loader and lint say of revisions that do not add up."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from webhook.admission import Context, decide
from webhook.cli.lint import lint
from webhook.cli.offline import pod_review
from webhook.errors import PolicyError
from webhook.namespaces import StaticNamespaceLabels
from webhook.pods import parse_pod
from webhook.policy import PolicySet, load_policy_set
from webhook.review import parse_review
from webhook.revisions import REVISION_LABEL, proxy_state

from .conftest import DATA

POLICIES = DATA / "inject" / "revision.policies"
LABELS = StaticNamespaceLabels({
    "stable-ns": {"podgate.io/mesh": "enabled"},
    "canary-ns": {"podgate.io/mesh": "enabled", REVISION_LABEL: "canary"},
})


def pod(namespace: str, port: int = 8080, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": namespace, "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1",
                                     "ports": [{"containerPort": port}]}]}}


def mutate(obj: dict[str, Any], policies: PolicySet) -> dict[str, Any]:
    decision = decide(parse_review(pod_review(obj, obj["metadata"]["namespace"])), "mutate", Context(policies, LABELS))
    assert decision.allowed and decision.patch, decision.message or decision.reason
    return jsonpatch.apply_patch(obj, decision.patch)


def validate(obj: dict[str, Any], policies: PolicySet) -> Any:
    return decide(parse_review(pod_review(obj, obj["metadata"]["namespace"])), "validate", Context(policies, LABELS))


def status(obj: dict[str, Any]) -> str:
    return obj["metadata"]["annotations"]["podgate.io/status"]


@pytest.fixture(scope="module")
def stable_default() -> PolicySet:
    return load_policy_set(POLICIES)


@pytest.fixture(scope="module")
def canary_default(tmp_path_factory: pytest.TempPathFactory) -> PolicySet:
    """The same profiles after the canary became the default revision."""
    tmp = tmp_path_factory.mktemp("canary-default")
    for f in POLICIES.iterdir():
        shutil.copy(f, tmp)
    policy = tmp / "policy.yaml"
    policy.write_text(policy.read_text().replace("revision: stable", "revision: canary"))
    return load_policy_set(tmp)


def test_a_new_pod_is_judged_by_its_revisions_proxy(stable_default: PolicySet) -> None:
    """15010 is reserved by the canary proxy only: the same app is fine under stable, denied
    under canary (by namespace label or by the Pod's own label)."""
    assert validate(mutate(pod("stable-ns", 15010), stable_default), stable_default).allowed
    for obj in (pod("canary-ns", 15010), pod("stable-ns", 15010, {REVISION_LABEL: "canary"})):
        verdict = validate(mutate(obj, stable_default), stable_default)
        assert not verdict.allowed
        assert verdict.rules_fired() == ["proxy-port-conflict"]
        assert "15010/TCP" in verdict.message


def test_an_injected_pod_is_judged_by_the_profile_it_was_injected_with(stable_default: PolicySet,
                                                                        canary_default: PolicySet) -> None:
    """Injected by stable; then its namespace moves to canary, or canary becomes the default: until
    it is restarted it runs stable's proxy, so stable's reserved ports judge it."""
    injected = mutate(pod("stable-ns", 15010), stable_default)
    assert '"revision":"stable"' in status(injected)
    moved = copy.deepcopy(injected)
    moved["metadata"]["namespace"] = "canary-ns"
    assert validate(moved, stable_default).allowed
    assert validate(injected, canary_default).allowed
    # created now, the same Pod gets the canary and is judged by it
    fresh = mutate(pod("stable-ns", 15010), canary_default)
    assert '"revision":"canary"' in status(fresh) and "mesh-proxy:1.1.0" in str(fresh)
    assert not validate(fresh, canary_default).allowed


def with_status(obj: dict[str, Any], record: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["annotations"]["podgate.io/status"] = record
    return out


def test_a_status_from_before_revisions_or_of_a_gone_profile(stable_default: PolicySet,
                                                            canary_default: PolicySet) -> None:
    """No revision recorded: judged by the recorded profile while it is loaded, else by the
    default revision's; a recorded revision whose profile is gone: that revision's profile now."""
    injected = mutate(pod("canary-ns", 15010), stable_default)  # the canary proxy: 15010 is its port
    assert not validate(injected, stable_default).allowed
    old = '{"profile":"mesh-proxy-canary","hash":"0123456789abcdef","initContainers":["mesh-init","mesh-proxy"]}'
    assert not validate(with_status(injected, old), stable_default).allowed  # recorded profile still loaded
    gone = old.replace("mesh-proxy-canary", "mesh-proxy-2023")
    assert validate(with_status(injected, gone), stable_default).allowed  # the default: stable
    assert not validate(with_status(injected, gone), canary_default).allowed  # the default: canary
    renamed = gone.replace('"hash"', '"revision":"canary","hash"')
    assert not validate(with_status(injected, renamed), stable_default).allowed  # canary's profile now
    for junk in ("not json", "[1, 2]", '{"profile": 7}', "{" * 100_000):
        verdict = validate(with_status(injected, junk), stable_default)  # judged by its revision: canary
        assert not verdict.allowed and verdict.rules_fired() == ["proxy-port-conflict"]


def state(obj: dict[str, Any], policies: PolicySet) -> Any:
    p = parse_pod(obj)
    namespace = obj["metadata"]["namespace"]
    return proxy_state(p, LABELS(namespace), policies.governing(namespace, LABELS(namespace)).mesh)


def stale_warnings(obj: dict[str, Any], policies: PolicySet) -> list[str]:
    """What ``stale-proxy`` says of the Pod at /validate (as ``podgate audit`` runs it)."""
    return [f.violation.message for f in validate(obj, policies).findings if f.violation.rule == "stale-proxy"]


def test_what_needs_a_restart(stable_default: PolicySet, canary_default: PolicySet, tmp_path: Path) -> None:
    """``stale-proxy`` names the revision: the profile of the Pod's revision changed, or its
    revision now points at another profile (the default moved, or a label)."""
    injected = mutate(pod("stable-ns"), stable_default)
    old = stable_default.default.mesh.profile.injector.profile_hash
    canary = canary_default.default.mesh.profile.injector.profile_hash
    current = state(injected, stable_default)
    assert current.wanted.revision == "stable" and current.wanted.source == "policy default"
    assert current.injected.revision == "stable" and current.stale is None
    assert stale_warnings(injected, stable_default) == []
    assert state(pod("stable-ns"), stable_default).stale is None  # not injected by podgate: nothing to say
    prefix = '[stale-proxy] pod "web" runs the proxy "mesh-proxy" injected from '
    suffix = ": restart the pod's workload so that it gets the current proxy"
    # the default moved to canary
    assert stale_warnings(injected, canary_default) == [
        f'{prefix}mesh profile "mesh-proxy" (revision "stable", hash {old}), but its policy\'s default revision '
        f'"canary" now uses mesh profile "mesh-proxy-canary" (hash {canary}){suffix}']
    # the namespace's label now points elsewhere
    relabelled = copy.deepcopy(injected)
    relabelled["metadata"]["namespace"] = "canary-ns"
    assert stale_warnings(relabelled, stable_default) == [
        f'{prefix}mesh profile "mesh-proxy" (revision "stable", hash {old}), but revision "canary" (the '
        f'namespace\'s label podgate.io/rev) now gives mesh profile "mesh-proxy-canary" (hash {canary}){suffix}']
    # the Pod's label wins over the namespace's: pinned to stable, nothing to restart
    relabelled["metadata"]["labels"] = {REVISION_LABEL: "stable"}
    assert stale_warnings(relabelled, stable_default) == []
    # the stable profile itself changed (a new image): same revision, another hash
    for f in POLICIES.iterdir():
        shutil.copy(f, tmp_path)
    profile = tmp_path / "mesh-proxy.yaml"
    profile.write_text(profile.read_text().replace("mesh-proxy:1.0.0", "mesh-proxy:1.0.1"))
    changed = load_policy_set(tmp_path)
    new = changed.default.mesh.profile.injector.profile_hash
    assert stale_warnings(injected, changed) == [
        f'{prefix}an older version of mesh profile "mesh-proxy" (revision "stable", hash {old}, now {new}){suffix}']
    # a revision label that names no profile any more
    typo = copy.deepcopy(injected)
    typo["metadata"]["labels"] = {REVISION_LABEL: "nightly"}
    assert stale_warnings(typo, stable_default) == [
        f'{prefix}mesh profile "mesh-proxy" (revision "stable", hash {old}), but revision "nightly" (the pod\'s '
        f"label podgate.io/rev) names no loaded mesh profile{suffix}"]


def write(tmp: Path, name: str, text: str) -> None:
    (tmp / name).write_text(text)


POLICY = """apiVersion: podgate.io/v1alpha1
kind: Policy
metadata:
  name: default
spec:
  mesh:
    {key}: {value}
    namespaceSelector:
      matchLabels: {{podgate.io/mesh: enabled}}
"""


def test_a_profiles_revision_is_its_name_unless_it_says_otherwise(tmp_path: Path) -> None:
    shutil.copy(POLICIES / "mesh-proxy-canary.yaml", tmp_path)
    shutil.copy(DATA.parent.parent / "policies" / "mesh-proxy.yaml", tmp_path)
    write(tmp_path, "policy.yaml", POLICY.format(key="profile", value="mesh-proxy"))
    mesh = load_policy_set(tmp_path).default.mesh
    assert sorted(mesh.revisions) == ["canary", "mesh-proxy"]
    assert mesh.profile.revision == "mesh-proxy" and mesh.revisions["canary"].name == "mesh-proxy-canary"


def test_dangling_and_duplicate_revisions_are_refused_with_file_and_line(tmp_path: Path) -> None:
    for f in ("mesh-proxy.yaml", "mesh-proxy-canary.yaml"):
        shutil.copy(POLICIES / f, tmp_path)
    write(tmp_path, "policy.yaml", POLICY.format(key="revision", value="nightly"))
    with pytest.raises(PolicyError, match='/spec/mesh/revision: no mesh profile for revision "nightly" '
                                          r"\(known revisions: canary, stable\)"):
        load_policy_set(tmp_path)
    report = lint(tmp_path)
    assert [str(p) for p in report.problems] == [
        f'{tmp_path / "policy.yaml"}:7: error: /spec/mesh/revision: no mesh profile for revision "nightly" '
        "(known revisions: canary, stable)"]
    # two profiles claiming one revision
    write(tmp_path, "policy.yaml", POLICY.format(key="revision", value="stable"))
    canary = tmp_path / "mesh-proxy-canary.yaml"
    canary.write_text(canary.read_text().replace("revision: canary", "revision: stable"))
    with pytest.raises(PolicyError, match="mesh-proxy.yaml: /spec/revision: revision 'stable' is also the revision "
                                          "of MeshProfile 'mesh-proxy-canary'"):
        load_policy_set(tmp_path)
    [problem] = lint(tmp_path).problems  # on the later file (name order)
    assert (problem.file, problem.line, problem.path) == (str(tmp_path / "mesh-proxy.yaml"), 8, "/spec/revision")
    # profile and revision together: which one would be meant?
    write(tmp_path, "policy.yaml", POLICY.format(key="revision", value="stable\n    profile: mesh-proxy"))
    [problem] = [p for p in lint(tmp_path).problems if p.file.endswith("policy.yaml")]
    assert problem.line == 6 and "give exactly one of profile" in problem.message
