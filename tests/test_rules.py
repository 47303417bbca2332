"""Every rule of DESIGN.md, table-driven: a Pod and exactly the violations it must produce.

Each case runs through ``decide`` (the function the server uses) with the bundled policies and
compares the structured violations (rule, containers, fields), not message text.
"""

from __future__ import annotations

from typing import Any

import pytest

from webhook.admission import Context, decide
from webhook.review import parse_review

from .conftest import review_for


def port(number: Any, protocol: str | None = None, *, name: str | None = None, host: int | None = None,
         ip: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"containerPort": number}
    if protocol:
        p["protocol"] = protocol
    if name:
        p["name"] = name
    if host is not None:
        p["hostPort"] = host
    if ip is not None:
        p["hostIP"] = ip
    return p


def ctr(name: str, *ports: dict[str, Any], uid: int | None = None, sidecar: bool = False,
        **probes: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": f"example/{name}:1"}
    if ports:
        c["ports"] = list(ports)
    if uid is not None:
        c["securityContext"] = {"runAsUser": uid}
    if sidecar:
        c["restartPolicy"] = "Always"
    for kind, target in probes.items():  # liveness=("httpGet", 8080)
        handler, value = target
        action = {"port": value} if handler != "httpGet" else {"path": "/", "port": value}
        c[f"{kind}Probe"] = {handler: action}
    return c


def pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), annotations: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = list(init)
    meta: dict[str, Any] = {"name": "p"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


PROXY = ctr("mesh-proxy", port(15021, name="mesh-health"), port(15090), sidecar=True)


def found(ctx: Context, pod_obj: dict[str, Any], namespace: str = "default") -> list[tuple[Any, ...]]:
    request = parse_review(review_for(pod_obj, namespace=namespace))
    decision = decide(request, "validate", ctx)
    out = []
    for f in decision.findings:
        d = f.to_json()
        extra = {k: v for k, v in d.items() if k not in ("rule", "action", "message", "containers")}
        out.append((d["rule"], tuple(d["containers"]), extra))
    return out


CASES = [
    # --- port-collision and the lifetime table
    pytest.param(pod(ctr("a", port(8080)), ctr("b", port(8080)), ctr("c", port(8080))),
                 [("port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP"}),
                  ("port-collision", ("a", "c"), {"port": 8080, "protocol": "TCP"}),
                  ("port-collision", ("b", "c"), {"port": 8080, "protocol": "TCP"})],
                 id="three-containers-one-port-three-pairs"),
    pytest.param(pod(ctr("dns-tcp", port(53, "TCP")), ctr("dns-udp", port(53, "UDP"))), [],
                 id="tcp-vs-udp-no-collision"),
    pytest.param(pod(ctr("a", port(9000)), ctr("b", port(9000, "TCP"))),
                 [("port-collision", ("a", "b"), {"port": 9000, "protocol": "TCP"})],
                 id="protocol-omitted-is-tcp"),
    pytest.param(pod(ctr("a", port(5000, "SCTP")), ctr("b", port(5000, "SCTP"))),
                 [("port-collision", ("a", "b"), {"port": 5000, "protocol": "SCTP"})], id="sctp-collision"),
    pytest.param(pod(ctr("app"), init=(ctr("side", port(9000), sidecar=True), ctr("setup", port(9000)))),
                 [("port-collision", ("side", "setup"), {"port": 9000, "protocol": "TCP"})],
                 id="native-sidecar-before-classic-init-overlaps"),
    pytest.param(pod(ctr("app"), init=(ctr("setup", port(9000)), ctr("side", port(9000), sidecar=True))), [],
                 id="native-sidecar-after-classic-init-no-overlap"),
    pytest.param(pod(ctr("app"), init=(ctr("one", port(9000)), ctr("two", port(9000)))), [],
                 id="classic-init-pair-never-overlaps"),
    pytest.param(pod(ctr("app", port(9000)), init=(ctr("setup", port(9000)),)), [],
                 id="classic-init-vs-app-no-overlap"),
    pytest.param(pod(ctr("app", port(9000)), init=(ctr("side", port(9000), sidecar=True),)),
                 [("port-collision", ("side", "app"), {"port": 9000, "protocol": "TCP"})],
                 id="native-sidecar-vs-app-overlaps"),
    pytest.param(pod(ctr("app"), init=(ctr("s1", port(7000), sidecar=True), ctr("s2", port(7000), sidecar=True))),
                 [("port-collision", ("s1", "s2"), {"port": 7000, "protocol": "TCP"})],
                 id="two-native-sidecars-overlap"),
    pytest.param(pod(ctr("a", port(8080), port(8080, "UDP")), ctr("b")), [], id="same-container-twice-is-not-a-pair"),
    pytest.param({**pod(ctr("a", port(8080))), "spec": {
        "containers": [ctr("a", port(8080))], "ephemeralContainers": [{"name": "dbg", "image": "busybox",
                                                                      "ports": [{"containerPort": 8080}]}]}},
                 [], id="ephemeral-containers-ignored"),
    # --- host ports
    pytest.param(pod(ctr("a", port(80, host=8080)), ctr("b", port(81, host=8080, ip="10.0.0.1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "10.0.0.1"})],
                 id="hostip-empty-is-wildcard"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="0.0.0.0")), ctr("b", port(81, host=8080, ip="10.0.0.1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "10.0.0.1"})],
                 id="hostip-0.0.0.0-is-wildcard"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="::")), ctr("b", port(81, host=8080, ip="10.0.0.1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "10.0.0.1"})],
                 id="hostip-ipv6-any-is-wildcard"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="10.0.0.1")), ctr("b", port(81, host=8080, ip="10.0.0.2"))),
                 [], id="different-specific-hostips-no-collision"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="10.0.0.1")), ctr("b", port(81, host=8080, ip="10.0.0.1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "10.0.0.1"})],
                 id="same-specific-hostip-collides"),
    pytest.param(pod(ctr("a", port(80, host=8080)), ctr("b", port(81, "UDP", host=8080))), [],
                 id="host-port-different-protocols"),
    pytest.param(pod(ctr("a", port(80, host=8080)), ctr("b", port(80, host=8081))),
                 [("port-collision", ("a", "b"), {"port": 80, "protocol": "TCP"})],
                 id="same-container-port-different-host-ports"),
    pytest.param(pod(ctr("a", port(8080)), ctr("b", port(8080)), hostNetwork=True),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "0.0.0.0"})],
                 id="host-network-reported-once-as-host-port"),
    pytest.param(pod(ctr("a", port(8080)), ctr("b", port(9090)), hostNetwork=True), [],
                 id="host-network-distinct-ports"),
    pytest.param(pod(ctr("a", port(7000, host=7000, ip="10.0.0.1")), ctr("b", port(7000, host=7000, ip="10.0.0.2")),
                     hostNetwork=True),
                 [("host-port-collision", ("a", "b"), {"port": 7000, "protocol": "TCP", "host_ip": "0.0.0.0"})],
                 id="host-network-hostip-keeps-nothing-apart"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="0:0:0:0:0:0:0:0")), ctr("b", port(81, host=8080, ip="10.0.0.1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "10.0.0.1"})],
                 id="hostip-ipv6-any-spelt-out-is-wildcard"),
    pytest.param(pod(ctr("a", port(80, host=8080, ip="fd00:0::1")), ctr("b", port(81, host=8080, ip="fd00::1"))),
                 [("host-port-collision", ("a", "b"), {"port": 8080, "protocol": "TCP", "host_ip": "fd00::1"})],
                 id="hostip-same-address-spelt-twice"),
    pytest.param(pod(ctr("app", port(9100)), init=(ctr("setup", port(9100, host=9100)),), hostNetwork=True), [],
                 id="host-network-init-vs-app-no-overlap"),
    # --- port names
    pytest.param(pod(ctr("a", port(8080, name="http")), ctr("b", port(9090, name="http"))),
                 [("duplicate-port-name", ("a", "b"), {"port_name": "http"})], id="duplicate-port-name"),
    pytest.param(pod(ctr("app", port(8080, name="web")), init=(ctr("setup", port(9090, name="web")),)),
                 [("duplicate-port-name", ("setup", "app"), {"port_name": "web"})],
                 id="duplicate-port-name-regardless-of-lifetime"),
    # --- probes
    pytest.param(pod(ctr("app", port(8080, name="http"), readiness=("httpGet", "http"))), [],
                 id="named-probe-port-declared"),
    pytest.param(pod(ctr("app", port(8080, name="web"), readiness=("httpGet", "http"))),
                 [("probe-port-missing", ("app",), {"port_name": "http"})], id="named-probe-port-missing"),
    pytest.param(pod(ctr("app", liveness=("tcpSocket", "health")), ctr("other", port(8081, name="health"))),
                 [("probe-port-missing", ("app",), {"port_name": "health"})],
                 id="named-port-on-another-container-is-missing"),
    pytest.param(pod(ctr("app", startup=("grpc", 9000))), [], id="numeric-probe-undeclared-anywhere-is-fine"),
    pytest.param(pod(ctr("app", port(8080), liveness=("httpGet", 9090)), ctr("metrics", port(9090))),
                 [("probe-port-foreign", ("app", "metrics"), {"port": 9090})], id="numeric-probe-foreign"),
    pytest.param(pod(ctr("app", port(8080), liveness=("httpGet", "9090")), ctr("metrics", port(9090))),
                 [("probe-port-foreign", ("app", "metrics"), {"port": 9090})], id="numeric-string-probe-port"),
    pytest.param(pod(ctr("app", port(9090), liveness=("httpGet", 9090)), ctr("metrics", port(9091))), [],
                 id="numeric-probe-own-port"),
]


@pytest.mark.parametrize(("pod_obj", "expected"), CASES)
def test_rules_unmeshed(ctx: Context, pod_obj: dict[str, Any], expected: list[tuple[Any, ...]]) -> None:
    assert found(ctx, pod_obj) == expected


MESH_CASES = [
    pytest.param(pod(ctr("app"), init=(PROXY,)), [], id="clean-meshed-pod"),
    pytest.param(pod(ctr("app")), [("missing-proxy", (), {})], id="missing-proxy"),
    pytest.param(pod(ctr("app"), annotations={"podgate.io/inject": "false"}), [], id="opted-out"),
    pytest.param(pod(ctr("app"), hostNetwork=True), [("mesh-host-network", (), {})], id="host-network-not-injectable"),
    pytest.param(pod(ctr("app"), annotations={"kubernetes.io/config.mirror": "abc"}), [], id="mirror-pod"),
    pytest.param(pod(ctr("app", port(15001)), os={"name": "windows"}), [("mesh-host-network", (), {})],
                 id="windows-not-injectable"),
    pytest.param(pod(ctr("app"), os={"name": "linux"}), [("missing-proxy", (), {})], id="linux-os-is-injectable"),
    pytest.param(pod(ctr("app", uid=1337), init=(PROXY,)),
                 [("proxy-uid-conflict", ("app",), {"uid": 1337})], id="container-level-proxy-uid"),
    pytest.param(pod(ctr("app"), init=(PROXY,), securityContext={"runAsUser": 1337}),
                 [("proxy-uid-conflict", ("app",), {"uid": 1337})], id="pod-level-proxy-uid"),
    pytest.param(pod(ctr("app", uid=1000), init=(PROXY,), securityContext={"runAsUser": 1337}), [],
                 id="container-uid-overrides-pod-uid"),
    pytest.param(pod(ctr("app", port(15021)), init=(PROXY,)),
                 [("proxy-port-conflict", ("mesh-proxy", "app"), {"port": 15021, "protocol": "TCP"})],
                 id="clash-with-proxy-port-reported-once"),
    pytest.param(pod(ctr("app", port(15001)), init=(PROXY,)),
                 [("proxy-port-conflict", ("app",), {"port": 15001, "protocol": "TCP"})],
                 id="reserved-port-the-proxy-does-not-declare"),
    pytest.param(pod(ctr("app", port(8080), liveness=("httpGet", 15020)), init=(PROXY,)),
                 [("proxy-port-conflict", ("app",), {"port": 15020, "protocol": "TCP"})],
                 id="probe-on-reserved-port"),
    pytest.param(pod(ctr("app", port(15001, "UDP")), init=(PROXY,)),
                 [("proxy-udp-port", ("app",), {"port": 15001, "protocol": "UDP"})],
                 id="reserved-number-other-protocol-is-udp-warning"),
    pytest.param(pod(ctr("dns", port(53, "UDP"), port(53, "TCP")), init=(PROXY,)),
                 [("proxy-udp-port", ("dns",), {"port": 53, "protocol": "UDP"})], id="udp-bypasses-mesh"),
    pytest.param(pod(ctr("app"), init=(PROXY,), automountServiceAccountToken=False),
                 [("proxy-no-identity", (), {})], id="no-identity"),
    pytest.param(pod(ctr("app"), ctr("mesh-proxy", port(15021)), restartPolicy="Never"),
                 [("proxy-blocks-completion", ("mesh-proxy",), {})], id="classic-proxy-in-job"),
    pytest.param(pod(ctr("app"), init=(PROXY,), restartPolicy="OnFailure"), [], id="native-proxy-in-job"),
    # --- what counts as the proxy: a container of its name that runs alongside the apps
    pytest.param(pod(ctr("app"), init=(ctr("mesh-proxy"),)), [("missing-proxy", (), {})],
                 id="classic-init-named-like-the-proxy-is-not-the-proxy"),
    pytest.param(pod(ctr("app"), init=(ctr("mesh-proxy", uid=1337),)),
                 [("proxy-uid-conflict", ("mesh-proxy",), {"uid": 1337}), ("missing-proxy", (), {})],
                 id="classic-init-named-like-the-proxy-is-not-exempt"),
    pytest.param(pod(ctr("app"), ctr("mesh-proxy")), [], id="app-container-proxy-counts"),
]


@pytest.mark.parametrize(("pod_obj", "expected"), MESH_CASES)
def test_rules_meshed_namespace(ctx: Context, pod_obj: dict[str, Any], expected: list[tuple[Any, ...]]) -> None:
    assert found(ctx, pod_obj, namespace="meshed") == expected


def test_pod_carrying_the_proxy_is_meshed_anywhere(ctx: Context) -> None:
    assert found(ctx, pod(ctr("app", uid=1337), init=(PROXY,))) == [("proxy-uid-conflict", ("app",), {"uid": 1337})]


def test_classic_init_named_like_the_proxy_does_not_mesh_a_pod(ctx: Context) -> None:
    """It exits before the apps start: the Pod is not meshed by carrying it (no proxy rules)."""
    assert found(ctx, pod(ctr("app", port(15001), uid=1337), init=(ctr("mesh-proxy"),))) == []


def test_missing_proxy_names_the_classic_init_container(ctx: Context) -> None:
    request = parse_review(review_for(pod(ctr("app"), init=(ctr("mesh-proxy"),)), namespace="meshed"))
    (finding,) = decide(request, "validate", ctx).findings
    assert finding.violation.rule == "missing-proxy"
    assert '"mesh-proxy" is a classic init container' in finding.violation.message
    assert "rename" in finding.violation.message


def test_windows_pod_is_told_why_it_has_no_proxy(ctx: Context) -> None:
    request = parse_review(review_for(pod(ctr("app"), os={"name": "windows"}), namespace="meshed"))
    (finding,) = decide(request, "validate", ctx).findings
    assert finding.action == "warn" and "Windows pod" in finding.violation.message


def test_opt_in_annotation(ctx: Context) -> None:
    assert found(ctx, pod(ctr("app"), annotations={"podgate.io/inject": "true"})) == [("missing-proxy", (), {})]


def test_message_names_rule_containers_port_and_fix(ctx: Context) -> None:
    request = parse_review(review_for(pod(ctr("app", port(8080)), ctr("metrics", port(8080)))))
    decision = decide(request, "validate", ctx)
    (finding,) = decision.findings
    assert finding.violation.message == (
        '[port-collision] containers "app" and "metrics" both listen on 8080/TCP in the pod\'s shared network '
        "namespace; give one of them another containerPort")


def _no_opt_out_ctx(tmp_path: Any) -> Context:
    import shutil

    from webhook.namespaces import StaticNamespaceLabels
    from webhook.policy import load_policy_set

    from .conftest import REPO

    shutil.copytree(REPO / "policies", tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py"))
    default = tmp_path / "default.yaml"
    default.write_text(default.read_text().replace("allowOptOut: true", "allowOptOut: false"))
    return Context(load_policy_set(tmp_path), StaticNamespaceLabels({"meshed": {"podgate.io/mesh": "enabled"}}))


@pytest.mark.parametrize("annotations", [None, {"podgate.io/inject": "false"}], ids=["no-annotation", "opts-out"])
def test_missing_proxy_advises_opting_out_only_where_the_policy_allows_it(
        ctx: Context, tmp_path: Any, annotations: dict[str, str] | None) -> None:
    def message(context: Context) -> str:
        request = parse_review(review_for(pod(ctr("app"), annotations=annotations), namespace="meshed"))
        findings = decide(request, "validate", context).findings
        return " | ".join(f.violation.message for f in findings)

    strict = message(_no_opt_out_ctx(tmp_path))
    assert strict.startswith("[missing-proxy]")
    assert "opt the pod out" not in strict
    assert "allowOptOut is false" in strict
    if annotations is None:  # where it is allowed, the advice names the annotation to set
        assert 'or opt the pod out (podgate.io/inject: "false")' in message(ctx)
    else:  # an allowed opt-out works: nothing to advise
        assert message(ctx) == ""
