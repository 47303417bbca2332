"""``stale-proxy``: a running proxy injected from another version (or another) mesh profile, judged
from the profile hash that podgate.io/status records, at /validate as in ``podgate audit``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from webhook.admission import Context, review
from webhook.cli.offline import admit, pod_review
from webhook.status import STATUS_ANNOTATION
from webhook.namespaces import StaticNamespaceLabels
from webhook.policy import PolicySet

from .test_audit import profile_changed

LABELS = StaticNamespaceLabels({"shop": {"podgate.io/mesh": "enabled"}})


def injected(policies: PolicySet) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
           "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}
    result = admit(pod_review(pod, "shop"), "mutate", Context(policies, LABELS))
    assert result.injected
    return copy.deepcopy(result.object)


def rules_fired(pod: dict[str, Any], policies: PolicySet) -> list[tuple[str, str, str]]:
    outcome = review(pod_review(pod, "shop"), "validate", Context(policies, LABELS))
    assert outcome.decision is not None
    return [(f.violation.rule, f.action, f.violation.message) for f in outcome.decision.findings]


def test_the_current_profile_is_not_stale(default_policies: PolicySet) -> None:
    assert rules_fired(injected(default_policies), default_policies) == []


def test_an_older_version_of_the_profile_is_stale_and_warns(default_policies: PolicySet, tmp_path: Path) -> None:
    changed = profile_changed(tmp_path)
    [(rule, action, message)] = rules_fired(injected(default_policies), changed)
    old = default_policies.default.mesh.profile.proxy.profile_hash
    new = changed.default.mesh.profile.proxy.profile_hash
    assert (rule, action) == ("stale-proxy", "warn")
    assert message == (f'[stale-proxy] pod "web-1" runs the proxy "mesh-proxy" injected from an older version of '
                       f'mesh profile "mesh-proxy" (hash {old}, now {new}): restart the pod\'s workload so that it '
                       f"gets the current proxy")


def test_another_profile_is_named(default_policies: PolicySet) -> None:
    pod = injected(default_policies)
    status = json.loads(pod["metadata"]["annotations"][STATUS_ANNOTATION])
    status["profile"] = "legacy-proxy"
    pod["metadata"]["annotations"][STATUS_ANNOTATION] = json.dumps(status)
    [(rule, _, message)] = rules_fired(pod, default_policies)
    assert rule == "stale-proxy"
    assert 'mesh profile "legacy-proxy"' in message and 'now uses mesh profile "mesh-proxy"' in message


@pytest.mark.parametrize("status", ["not json", "[]", '{"profile": "mesh-proxy"}', '{"hash": 7}', "x" * 70000])
def test_a_status_podgate_did_not_write_says_nothing(default_policies: PolicySet, status: str) -> None:
    pod = injected(default_policies)
    pod["metadata"]["annotations"][STATUS_ANNOTATION] = status
    assert [r for r, _, _ in rules_fired(pod, default_policies)] == []


def test_a_pod_without_the_proxy_is_never_stale(default_policies: PolicySet, tmp_path: Path) -> None:
    pod = injected(default_policies)
    pod["spec"]["initContainers"] = [c for c in pod["spec"]["initContainers"] if c["name"] != "mesh-proxy"]
    assert "stale-proxy" not in [r for r, _, _ in rules_fired(pod, profile_changed(tmp_path))]
