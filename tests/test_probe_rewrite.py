"""Probes through the proxy: what is rewritten, what is left as it came, and how the validate rules
judge a rewritten probe (by the original it stands for, never by podgate's own rewrite).

Each case runs the Pod through ``offline.admit`` (mutate, apply the patch with jsonpatch, validate),
the path the API server takes, with the bundled policies.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from webhook.admission import Context, decide
from webhook.cli.offline import admit, pod_review
from webhook.review import parse_review

from . import k8s_schema
from .test_rules import ctr, pod, port

AGENT = 15020


def meshed(p: dict[str, Any]) -> dict[str, Any]:
    p["metadata"]["namespace"] = "meshed"
    return p


def admitted(p: dict[str, Any], ctx: Context) -> Any:
    return admit(pod_review(p, "meshed"), "admit", ctx)


def containers(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for key in ("initContainers", "containers") for c in p["spec"].get(key) or []}


def originals(p: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e.get("value") for e in containers(p)["mesh-proxy"].get("env") or []}
    return json.loads(env.get("PODGATE_APP_PROBES") or "{}")


def rules(result: Any) -> list[tuple[str, tuple[Any, ...]]]:
    return sorted((f.violation.rule, (*f.violation.containers, f.violation.port or f.violation.port_name))
                  for f in result.findings)


def test_a_rewritten_pod_passes_validation_on_its_originals(ctx: Context) -> None:
    p = meshed(pod(ctr("app", port(8080, name="http"), liveness=("httpGet", "http"), readiness=("tcpSocket", 8080)),
                   ctr("rpc", port(9000), startup=("grpc", 9000))))
    result = admitted(p, ctx)
    assert result.allowed and result.injected and rules(result) == []
    got = result.object
    k8s_schema.check(got)
    for name, kind in (("app", "livenessProbe"), ("app", "readinessProbe"), ("rpc", "startupProbe")):
        assert list(containers(got)[name][kind]) == ["httpGet"] and containers(got)[name][kind]["httpGet"]["port"] == AGENT
    assert originals(got) == {"app": {"livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
                                      "readinessProbe": {"tcpSocket": {"port": 8080}}},
                              "rpc": {"startupProbe": {"grpc": {"port": 9000}}}}
    assert [containers(got)["app"][k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")] == \
        ["/app-health/app/livez", "/app-health/app/readyz"]
    assert containers(got)["rpc"]["startupProbe"]["httpGet"]["path"] == "/app-health/rpc/startupz"


def test_a_probe_on_a_missing_named_port_is_left_for_probe_port_missing(ctx: Context) -> None:
    p = meshed(pod(ctr("app", port(8080, name="http"), liveness=("httpGet", "htpp"), readiness=("httpGet", "http"))))
    result = admitted(p, ctx)
    assert not result.allowed and rules(result) == [("probe-port-missing", ("app", "htpp"))]
    assert result.object["spec"]["containers"][0]["livenessProbe"] == {"httpGet": {"path": "/", "port": "htpp"}}
    assert list(originals(result.object)["app"]) == ["readinessProbe"]


def test_the_original_of_a_rewritten_probe_is_what_the_rules_judge(ctx: Context) -> None:
    """A probe on another container's port, or on a port the proxy reserves, is reported as before
    injection: the rewrite hides podgate's own work, not the Pod's mistakes."""
    p = meshed(pod(ctr("app", port(8080), liveness=("httpGet", 9090), readiness=("httpGet", 15021)),
                   ctr("metrics", port(9090))))
    before = decide(parse_review(pod_review(p, "meshed")), "validate", ctx)
    result = admitted(p, ctx)
    assert set(originals(result.object)["app"]) == {"livenessProbe", "readinessProbe"}
    assert rules(result) == [("probe-port-foreign", ("app", "metrics", 9090)), ("proxy-port-conflict", ("mesh-proxy", "app", 15021))]
    assert sorted(f.violation.rule for f in before.findings if f.violation.rule != "missing-proxy") == \
        ["probe-port-foreign", "proxy-port-conflict"]


def test_a_rewritten_probe_without_its_original_is_judged_as_it_is(ctx: Context) -> None:
    """The status annotation alone does not make a probe podgate's: the proxy's env var must hold
    the original and the probe must still target the agent's path."""
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080))))
    injected = admitted(p, ctx).object
    for tamper in ("drop the original", "move the probe"):
        got = copy.deepcopy(injected)
        if tamper == "drop the original":
            proxy = containers(got)["mesh-proxy"]
            proxy["env"] = [e for e in proxy["env"] if e["name"] != "PODGATE_APP_PROBES"]
            expected = [("proxy-port-conflict", ("app", AGENT))]
        else:
            containers(got)["app"]["readinessProbe"]["httpGet"]["path"] = "/elsewhere"
            expected = [("proxy-port-conflict", ("app", AGENT))]
        verdict = decide(parse_review(pod_review(got, "meshed")), "validate", ctx)
        assert sorted((f.violation.rule, (*f.violation.containers, f.violation.port)) for f in verdict.findings) \
            == expected, tamper


@pytest.mark.parametrize("probe", [
    pytest.param({"httpGet": {"port": 8080}, "tcpSocket": {"port": 8080}}, id="two-handlers"),
    pytest.param({"httpGet": {"port": True}}, id="boolean-port"),
    pytest.param({"httpGet": {"port": 70000}}, id="port-out-of-range"),
    pytest.param({"grpc": {"port": "grpc"}}, id="named-grpc-port"),
    pytest.param({"httpGet": ["port", 8080]}, id="handler-not-an-object"),
    pytest.param({"httpGet": {"port": AGENT, "path": "/app-health/app/readyz"}}, id="already-the-agent"),
])
def test_a_probe_that_cannot_be_rewritten_faithfully_is_left_as_it_came(ctx: Context, probe: Any) -> None:
    p = meshed(pod(ctr("app", port(8080))))
    p["spec"]["containers"][0]["readinessProbe"] = probe
    decision = decide(parse_review(pod_review(p, "meshed")), "mutate", ctx)
    assert decision.allowed and decision.patch
    got = jsonpatch.apply_patch(p, decision.patch)
    assert got["spec"]["containers"][0]["readinessProbe"] == probe
    assert originals(got) == {}
    assert "probes" not in json.loads(got["metadata"]["annotations"]["podgate.io/status"])


def test_the_probe_opt_out_keeps_the_probes_and_rewrites_none(ctx: Context) -> None:
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080)),
                   annotations={"podgate.io/rewrite-probes": "false"}))
    result = admitted(p, ctx)
    assert result.injected and result.object["spec"]["containers"][0]["readinessProbe"] == \
        {"httpGet": {"path": "/", "port": 8080}}
    assert originals(result.object) == {}


def test_reinvocation_refuses_a_proxy_env_var_that_is_not_podgates(ctx: Context) -> None:
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080))))
    got = admitted(p, ctx).object
    for e in containers(got)["mesh-proxy"]["env"]:
        if e["name"] == "PODGATE_APP_PROBES":
            e["value"] = "[not, json"
    got["spec"]["containers"].append(ctr("late", port(7000), readiness=("httpGet", 7000)))
    decision = decide(parse_review(pod_review(got, "meshed")), "mutate", ctx)
    assert not decision.allowed and decision.code == 400
    assert "PODGATE_APP_PROBES" in decision.message and "not the JSON podgate writes" in decision.message


@pytest.mark.parametrize("status", ["{not json", '{"profile": 1}', '{"profile":"mesh-proxy","hash":"x","probes":[]}',
                                    '{"profile":"mesh-proxy","hash":"x","podContainers":"app"}', "x" * 70000])
def test_a_status_podgate_did_not_write_leaves_the_pod_alone(ctx: Context, status: str) -> None:
    """Reinvocation builds only on a status it can read; anything else is "already injected", and
    the validate rules then judge every probe as it is."""
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080)), init=(ctr("mesh-proxy", sidecar=True),),
                   annotations={"podgate.io/status": status}))
    p["spec"]["containers"].append(ctr("late", port(7000), readiness=("httpGet", 7000)))
    decision = decide(parse_review(pod_review(p, "meshed")), "mutate", ctx)
    assert decision.allowed and not decision.patch and decision.reason.startswith("not injected: already injected")
    verdict = decide(parse_review(pod_review(p, "meshed")), "validate", ctx)
    assert verdict.allowed, verdict.message


def test_reinvocation_after_reinvocation_changes_nothing(ctx: Context) -> None:
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080))))
    got = admitted(p, ctx).object
    got["spec"]["containers"].append(ctr("late", port(7000), liveness=("tcpSocket", 7000)))
    first = decide(parse_review(pod_review(got, "meshed")), "mutate", ctx)
    assert first.reason == "probes rewritten in containers added since injection"
    again = jsonpatch.apply_patch(got, first.patch)
    k8s_schema.check(again)
    assert set(originals(again)) == {"app", "late"}
    second = decide(parse_review(pod_review(again, "meshed")), "mutate", ctx)
    assert second.allowed and not second.patch
    assert decide(parse_review(pod_review(again, "meshed")), "validate", ctx).allowed


def test_reinvocation_of_a_classic_proxy_updates_its_env_var_in_containers() -> None:
    """With mode classic (and hold) the proxy is an app container: the originals of a container
    added since are merged into its env var there."""
    from webhook.namespaces import StaticNamespaceLabels
    from webhook.policy import load_policy_set

    from .conftest import DATA

    classic = Context(load_policy_set(DATA / "inject" / "classic-hold.policies"),
                      StaticNamespaceLabels({"meshed": {"podgate.io/mesh": "enabled"}}))
    p = meshed(pod(ctr("app", port(8080), readiness=("httpGet", 8080))))
    got = admitted(p, classic).object
    assert [c["name"] for c in got["spec"]["containers"]] == ["mesh-proxy", "app"]
    got["spec"]["containers"].append(ctr("late", port(7000), startup=("tcpSocket", 7000)))
    decision = decide(parse_review(pod_review(got, "meshed")), "mutate", classic)
    assert decision.patch and all(op["path"].startswith(("/spec/containers/", "/metadata/")) for op in decision.patch)
    again = jsonpatch.apply_patch(got, decision.patch)
    k8s_schema.check(again)
    assert originals(again) == {"app": {"readinessProbe": {"httpGet": {"path": "/", "port": 8080}}},
                                "late": {"startupProbe": {"tcpSocket": {"port": 7000}}}}
    assert not decide(parse_review(pod_review(again, "meshed")), "mutate", classic).patch
    assert decide(parse_review(pod_review(again, "meshed")), "validate", classic).allowed
