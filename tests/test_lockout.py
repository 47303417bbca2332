"""No lockout, no bypass.

No lockout: the webhooks the chart installs are never called for kube-system or podgate's own
namespace, whatever the values say, so a podgate that is down cannot stop the Pods that would
bring it (or the control plane) back. No bypass: whoever can merely label a namespace (or a
Pod) cannot switch podgate off for it unless a policy says so. The webhooks' namespaceSelector
keys on ``kubernetes.io/metadata.name``, which the API server sets to the namespace's name and
does not let anyone change; policy exemptions are by namespace *name*; the mesh opt-out
annotation works only where the policy has ``allowOptOut: true``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission import Context, decide
from webhook.namespaces import StaticNamespaceLabels
from webhook.policy import default_policy_dir, load_policy_set
from webhook.review import parse_review
from webhook.selectors import compile_selector

from .conftest import review_for
from .test_chart import NAMESPACE, chart, render, webhooks  # noqa: F401  (chart is a fixture)

PROTECTED = ("kube-system", NAMESPACE)
HOSTILE_VALUES = [
    pytest.param({}, id="defaults"),
    pytest.param({"webhook": {"excludeNamespaces": []}}, id="no-extra-exclusions"),
    pytest.param({"webhook": {"excludeNamespaces": [], "namespaceSelectorExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system", NAMESPACE, "team-a"]}]}},
        id="expressions-try-to-include-kube-system"),
]


def namespace_labels(name: str, extra: dict[str, str]) -> dict[str, str]:
    """A namespace's labels as the API server keeps them: the name label always wins."""
    return {**extra, "kubernetes.io/metadata.name": name}


label_maps = st.dictionaries(st.sampled_from(["podgate.io/exempt", "podgate.io/mesh", "podgate.io/inject",
                                              "admission.podgate.io/skip", "control-plane", "team"]),
                             st.sampled_from(["true", "false", "enabled", "disabled", "ignore", "kube-system"]),
                             max_size=4)


@pytest.mark.parametrize("values", HOSTILE_VALUES)
def test_webhooks_never_called_for_protected_namespaces(chart: Any, values: dict[str, Any]) -> None:  # noqa: F811
    hooks = webhooks(render(chart, {"certs": {"mode": "helm"}, **values}))
    assert {kind for kind, _ in hooks} >= {"ValidatingWebhookConfiguration"}
    for kind, hook in hooks:
        selects = compile_selector(hook["namespaceSelector"])
        for name in PROTECTED:
            for extra in ({}, {"podgate.io/mesh": "enabled"}, {"team": "a"}):
                assert not selects(namespace_labels(name, extra)), (kind, name, extra)


_SELECTORS: list[tuple[str, Any, dict[str, Any]]] = []


def _selectors(chart: Any) -> list[tuple[str, Any, dict[str, Any]]]:  # noqa: F811
    """The default render's webhooks, rendered once (a render makes a CA: 0.1 s)."""
    if not _SELECTORS:
        _SELECTORS.extend((kind, compile_selector(hook["namespaceSelector"]), hook)
                          for kind, hook in webhooks(render(chart, {"certs": {"mode": "helm"}})))
    return _SELECTORS


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=label_maps, name=st.sampled_from(["team-a", "default", "payments", "kube-systems"]))
def test_no_namespace_label_opts_a_namespace_out_of_the_webhooks(chart: Any, extra: dict[str, str],  # noqa: F811
                                                                  name: str) -> None:
    """With the chart's defaults, every other namespace is sent to podgate, whatever its labels."""
    for kind, selects, hook in _selectors(chart):
        assert selects(namespace_labels(name, extra)), (kind, name, extra)
        assert not hook.get("objectSelector"), "Pod labels must not opt a Pod out of the webhook call"


# --- policy level -------------------------------------------------------------------------------

COLLISION = {"metadata": {"name": "web", "labels": {"podgate.io/exempt": "true"},
                          "annotations": {"podgate.io/inject": "false"}},
             "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
                                     {"name": "b", "image": "b", "ports": [{"containerPort": 80}]}]}}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(extra=label_maps)
def test_no_namespace_label_exempts_a_pod_under_the_bundled_policy(default_policies: Any, extra: dict[str, str]) -> None:
    """Exemptions in the bundled policy are by namespace name: labels on "team-a" (even the
    name label of kube-system, which the API server would not allow) change nothing."""
    labels = {**extra, "kubernetes.io/metadata.name": "kube-system"}
    ctx = Context(default_policies, StaticNamespaceLabels({"team-a": labels}))
    decision = decide(parse_review(review_for(COLLISION, namespace="team-a")), "validate", ctx)
    assert not decision.allowed and decision.rules_fired() == ["port-collision"]


def test_kube_system_is_exempt_by_name(default_policies: Any) -> None:
    decision = decide(parse_review(review_for(COLLISION, namespace="kube-system")), "validate",
                      Context(default_policies))
    assert decision.allowed and decision.reason.startswith("exempt: namespace")


def _policies(tmp_path: Path, mesh: str) -> Any:
    for profile in default_policy_dir().glob("*.yaml"):
        if profile.name != "default.yaml":
            (tmp_path / profile.name).write_text(profile.read_text())
    (tmp_path / "default.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: podgate.io/v1alpha1
        kind: Policy
        metadata: {{name: default}}
        spec:
          exemptions: {{namespaces: [kube-system]}}
          mesh:
            profile: mesh-proxy
            namespaceSelector: {{matchLabels: {{podgate.io/mesh: enabled}}}}
            {mesh}
        """))
    return load_policy_set(tmp_path)


MESHED_APP = {"metadata": {"name": "app", "annotations": {"podgate.io/inject": "false"}},
              "spec": {"containers": [{"name": "app", "image": "app"}]}}


@pytest.mark.parametrize(("allow_opt_out", "allowed"), [(True, True), (False, False)])
def test_the_opt_out_annotation_works_only_where_the_policy_allows_it(tmp_path: Path, allow_opt_out: bool,
                                                                     allowed: bool) -> None:
    """A meshed namespace; the Pod says podgate.io/inject: "false" and has no proxy."""
    policies = _policies(tmp_path, f"allowOptOut: {str(allow_opt_out).lower()}")
    ctx = Context(policies, StaticNamespaceLabels({"team-a": {"podgate.io/mesh": "enabled"}}))
    request = parse_review(review_for(MESHED_APP, namespace="team-a"))
    decision = decide(request, "validate", ctx)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rules_fired() == ["missing-proxy"]
        assert decide(request, "mutate", ctx).injected  # and /mutate injects it regardless
