"""``podgate policy lint``: every problem names file, line and JSON path; errors exit 1,
warnings only with --strict; the bundled policies are clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webhook.cli.commands import main

from .conftest import REPO

HEAD = "apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata:\n  name: {name}\nspec:\n"


def policy(name: str, body: str) -> str:
    return HEAD.format(name=name) + body


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A copy of the bundled policies to add files to (named z-* to sort after them)."""
    target = tmp_path / "policies"
    target.mkdir()
    for f in (REPO / "policies").glob("*.yaml"):
        shutil.copy(f, target)
    return target


def lint(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["policy", "lint", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def bundled() -> tuple[int, int]:
    """How many Policy and MeshProfile documents the bundled policies hold."""
    kinds = [d["kind"] for f in (REPO / "policies").glob("*.yaml") for d in yaml.safe_load_all(f.read_text()) if d]
    return kinds.count("Policy"), kinds.count("MeshProfile")


def test_bundled_policies_are_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint(capsys, "--strict", str(REPO / "policies"))
    assert code == 0
    n, m = bundled()
    assert out == (f"{REPO / 'policies'}: {n} polic{'ies' if n != 1 else 'y'}, {m} mesh profile{'s' if m != 1 else ''}: "
                   "0 errors, 0 warnings\n")


# a MeshProfile that only injects, with {injection} the lines under spec.injection (z.yaml line 7 on)
PROFILE = ("apiVersion: podgate.io/v1alpha1\nkind: MeshProfile\nmetadata: {{name: p}}\nspec:\n"
           "  proxy: {{name: envoy, uid: 1337, reservedPorts: [15000, 15001, 15006]}}\n  injection:\n{injection}")

CASES = [
    pytest.param(policy("a", "  match: {namespaces: [a]}\n  rules:\n    port-colision: warn\n"),
                 ['z.yaml:8: error: /spec/rules/port-colision: unknown rule "port-colision"; '
                  'did you mean "port-collision"?'], id="unknown-rule"),
    pytest.param(policy("a", "  match: {namespaces: [a]}\n  rules:\n    port-collision: maybe\n"),
                 ["z.yaml:8: error: /spec/rules/port-collision: 'maybe' is not one of ['deny', 'warn', 'audit', 'off']"],
                 id="bad-action"),
    pytest.param(policy("a", "  match: {namespaces: [a]}\n  rules:\n    port-collision: warn\n"
                             "    port-collision: deny\n"),
                 ["z.yaml:9: error: /spec/rules/port-collision: key given twice (also on line 8)"], id="duplicate-key"),
    pytest.param(policy("a", "  match:\n    namespaces: [a]\n  mesh:\n    profile: istio\n"),
                 ["z.yaml:9: error: /spec/mesh/profile: no MeshProfile named 'istio' (known: "],
                 id="unknown-profile"),
    pytest.param(policy("a", "  rules: {}\n"),
                 ["z.yaml:5: error: /spec: only one policy may omit match (the default); policy 'default'"],
                 id="two-defaults"),
    pytest.param(policy("default", "  match: {namespaces: [a]}\n"),
                 ["z.yaml:4: error: /metadata/name: Policy 'default' is also defined in"], id="duplicate-name"),
    pytest.param(policy("a", "  match: {namespaces: [shop, a]}\n") + "---\n"
                 + policy("b", "  match:\n    namespaces: [b, shop]\n"),
                 ["z.yaml:14: warning: /spec/match/namespaces/1: namespace 'shop' is also matched by policy 'a', "
                  "which comes first (file order): this policy never governs it"], id="shadowed-namespace"),
    pytest.param(policy("a", "  match: {namespaces: [shop]}\n  exemptions:\n    namespaces: [shop]\n"
                             "  mesh:\n    profile: mesh-proxy\n    namespaces: [shop]\n"),
                 ["z.yaml:8: warning: /spec/exemptions/namespaces/0: namespace 'shop' is both matched and exempted",
                  "z.yaml:11: warning: /spec/mesh/namespaces/0: namespace 'shop' is in the mesh and also exempt"],
                 id="exempt-and-meshed"),
    pytest.param(policy("a", "  match: {namespaces: [a]}\n  mesh:\n    profile: mesh-proxy\n    podSelector: {}\n"
                             "  exemptions:\n    podSelector: {}\n"),
                 ["z.yaml:9: warning: /spec/mesh/podSelector: an empty selector matches everything",
                  "z.yaml:11: warning: /spec/exemptions/podSelector: an empty selector matches every Pod"],
                 id="empty-selectors"),
    pytest.param("apiVersion: podgate.io/v1alpha1\nkind: MeshProfile\nmetadata: {name: guard}\nspec:\n  proxy:\n"
                 "    name: envoy\n    uid: 1337\n    reservedPorts: [15001, 15001]\n---\n"
                 + policy("a", "  match: {namespaces: [a]}\n  mesh:\n    profile: guard\n    namespaces: [a]\n"),
                 ["z.yaml:8: warning: /spec/proxy/reservedPorts/1: 15001/TCP is listed twice",
                  "z.yaml:17: warning: /spec/mesh/profile: MeshProfile 'guard' has no injection and missing-proxy "
                  "is deny: every Pod this policy meshes is denied unless another injector adds the proxy first"],
                 id="no-injection-but-missing-proxy-deny"),
    pytest.param("apiVersion: podgate.io/v1alpha1\nkind: MeshProfile\nmetadata: {name: p}\nspec:\n"
                 "  proxy: {name: envoy, uid: 1337, reservedPorts: [15000]}\n  injection:\n    container:\n"
                 "      image: envoy\n      ports:\n        - {containerPort: 15021}\n"
                 "    redirect:\n      name: init\n      image: init\n      ports: {inbound: 15006, outbound: 15000}\n",
                 ["z.yaml:10: warning: /spec/injection/container/ports/0: the proxy container declares 15021/TCP, "
                  "which spec.proxy.reservedPorts does not list",
                  "z.yaml:14: error: /spec/injection/redirect/ports/inbound: the proxy captures inbound traffic on "
                  "15006/TCP, but spec.proxy.reservedPorts does not list it",
                  "z.yaml:7: warning: /spec/injection/container: the native proxy has no startupProbe"],
                 id="proxy-ports-outside-reserved"),
    pytest.param(PROFILE.format(injection="    mode: classic\n    container: {image: envoy}\n"),
                 ["z.yaml:7: warning: /spec/injection/mode: classic mode without hold: nothing holds the app "
                  "containers until the proxy is ready"], id="classic-without-hold"),
    pytest.param(PROFILE.format(injection="    container: {image: envoy, startupProbe: {tcpSocket: {port: 15000}}}\n"
                                          "    hold:\n      postStart: {exec: {command: [wait]}}\n"),
                 ["z.yaml:8: error: /spec/injection/hold: hold is for mode classic: a native sidecar already holds"],
                 id="hold-in-native-mode"),
    pytest.param(PROFILE.format(injection="    mode: classic\n    container: {image: envoy}\n"
                                          "    hold:\n      postStart: {exec: {command: [wait]}}\n"
                                          "    redirect: {name: init, image: init, ports: {inbound: 15006, "
                                          "outbound: 15001, excludeInbound: [15021]}}\n"
                                          "    probes: {port: 15020, path: '/health/{container}/{probe}', env: P}\n"),
                 ["z.yaml:12: error: /spec/injection/probes/port: the kubelet's probes go to the proxy's agent on "
                  "15020/TCP, but spec.proxy.reservedPorts does not list it",
                  "z.yaml:12: error: /spec/injection/probes/port: the redirect captures inbound traffic to 15020, the "
                  "agent's probe port: list it in spec.injection.redirect.ports.excludeInbound"],
                 id="probe-port-outside-reserved-and-captured"),
    pytest.param(PROFILE.format(injection="    mode: classic\n    hold: {postStart: {exec: {command: [wait]}}}\n"
                                          "    container: {image: envoy, env: [{name: P, value: x}]}\n"
                                          "    probes: {port: 15000, path: '/health/{container}', env: P}\n"),
                 ["z.yaml:10: error: /spec/injection/probes/path: '/health/{container}' has no {probe}: a "
                  "container's liveness and readiness probes would share a path"],
                 id="probe-path-without-kind"),
    pytest.param(PROFILE.format(injection="    mode: classic\n    hold: {postStart: {exec: {command: [wait]}}}\n"
                                          "    container: {image: envoy, env: [{name: P, value: x}]}\n"
                                          "    probes: {port: 15000, path: '/health/{container}/{probe}', env: P}\n"),
                 ["z.yaml:9: error: /spec/injection/container/env/0/name: 'P' is the env var that carries the "
                  "original probes (probes.env): podgate sets it"],
                 id="probe-env-taken"),
    pytest.param("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata:\n  name: a\nspec:\n  rules: [\n",
                 ["z.yaml:7: error: invalid YAML: expected the node content, but found '<stream end>'"], id="bad-yaml"),
    pytest.param(policy("Bad_Name", "  match: {namespaces: [a]}\n  extra: 1\n"),
                 ["z.yaml:4: error: /metadata/name: 'Bad_Name' does not match",
                  "z.yaml:7: error: /spec/extra: Additional properties are not allowed ('extra' was unexpected)"],
                 id="schema-errors"),
    # a schema error does not hide the document's other problems: one run shows them all
    pytest.param(policy("a", "  match: {namespaces: [shop, Bad_NS]}\n  exemptions:\n    namespaces: [shop]\n"
                             "  rules:\n    port-colision: warn\n    port-collision: block\n"
                             "  mesh:\n    profile: istio\n    namespaces: [shop]\n    podSelector: {}\n"),
                 ["z.yaml:6: error: /spec/match/namespaces/1: 'Bad_NS' does not match",
                  "z.yaml:8: warning: /spec/exemptions/namespaces/0: namespace 'shop' is both matched and exempted",
                  'z.yaml:10: error: /spec/rules/port-colision: unknown rule "port-colision"; did you mean '
                  '"port-collision"?',
                  "z.yaml:11: error: /spec/rules/port-collision: 'block' is not one of",
                  "z.yaml:13: error: /spec/mesh/profile: no MeshProfile named 'istio' (known: ",
                  "z.yaml:14: warning: /spec/mesh/namespaces/0: namespace 'shop' is in the mesh and also exempt",
                  "z.yaml:15: warning: /spec/mesh/podSelector: an empty selector matches everything"],
                 id="schema-error-unknown-rule-and-profile"),
    pytest.param(policy("a", "  match: {namespaces: [a]}\n  rules: {port-colision: warn}\n  mesh: {profile: []}\n")
                 + "---\n" + policy("b", "  rules: {}\n  exemptions: {namespaces: 3}\n"),
                 ['z.yaml:7: error: /spec/rules/port-colision: unknown rule "port-colision"',
                  "z.yaml:8: error: /spec/mesh/profile: [] is not of type 'string'",
                  "z.yaml:14: error: /spec: only one policy may omit match (the default); policy 'default'",
                  "z.yaml:16: error: /spec/exemptions/namespaces: 3 is not of type 'array'"],
                 id="broken-values-are-not-read"),
    pytest.param("apiVersion: podgate.io/v1alpha1\nkind: MeshProfile\nmetadata: {name: guard}\nspec:\n  proxy:\n"
                 "    name: envoy\n    uid: -1\n    reservedPorts: [15001, 15001, 15006]\n  injection:\n"
                 "    container:\n      image: envoy\n      imagePullPolicy: Sometimes\n"
                 "      volumeMounts: [{name: data, mountPath: /d}]\n"
                 "    redirect: {name: init, image: init, ports: {inbound: 15006, outbound: 15009}}\n---\n"
                 + policy("a", "  match: {namespaces: [a]}\n  mesh:\n    profile: guard\n    namespaces: [a]\n"),
                 ["z.yaml:7: error: /spec/proxy/uid: -1 is less than the minimum of 1",
                  "z.yaml:8: warning: /spec/proxy/reservedPorts/1: 15001/TCP is listed twice",
                  "z.yaml:12: error: /spec/injection/container/imagePullPolicy: 'Sometimes' is not one of",
                  "z.yaml:13: warning: /spec/injection/container/volumeMounts/0/name: volume 'data' is not in "
                  "spec.injection.volumes",
                  "z.yaml:14: error: /spec/injection/redirect/ports/outbound: the proxy captures outbound traffic on "
                  "15009/TCP, but spec.proxy.reservedPorts does not list it"],
                 id="profile-with-schema-errors-and-contradictions"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problems_name_file_line_and_path(policies: Path, capsys: pytest.CaptureFixture[str], text: str,
                                          expected: list[str]) -> None:
    (policies / "z.yaml").write_text(text)
    code, out, _ = lint(capsys, str(policies))
    lines = out.splitlines()
    for want in expected:
        assert any(line.startswith(f"{policies / want}") or line.startswith(str(policies / want)) for line in lines), \
            f"{want!r} not in:\n{out}"
    problems = [line for line in lines[:-1]]
    assert len(problems) == len(expected), out
    errors = sum(": error: " in line for line in problems)
    assert code == (1 if errors else 0)
    assert lines[-1].endswith(f"{errors} error{'s' if errors != 1 else ''}, {len(problems) - errors} "
                              f"warning{'s' if len(problems) - errors != 1 else ''}")


def test_strict_fails_on_warnings_and_json_output(policies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (policies / "z.yaml").write_text(policy("a", "  match: {namespaces: [a]}\n  exemptions:\n    podSelector: {}\n"))
    assert lint(capsys, str(policies))[0] == 0
    assert lint(capsys, "--strict", str(policies))[0] == 1
    code, out, _ = lint(capsys, "-o", "json", str(policies))
    report = json.loads(out)
    assert report["summary"] == {"policies": bundled()[0] + 1, "profiles": bundled()[1], "errors": 0, "warnings": 1}
    assert report["problems"] == [{"severity": "warning", "file": str(policies / "z.yaml"), "line": 8,
                                   "path": "/spec/exemptions/podSelector",
                                   "message": "an empty selector matches every Pod: the whole policy is switched off"}]


def test_a_missing_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        lint(capsys, str(tmp_path / "nope"))
    assert exc.value.code == 2 and "nope: no such file or directory" in capsys.readouterr().err


def test_empty_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint(capsys, str(tmp_path))
    assert code == 1 and "error: no policy files (*.yaml) found" in out


@pytest.mark.parametrize("value", ["true", "null", "\"15000\"", "{port: true}"])
def test_a_wrong_type_among_reserved_ports_is_reported_not_looped_on(tmp_path: Path, value: str) -> None:
    """jsonschema's best_match may hand back the error it was given: explaining it must still end
    (a reload of such a file used to hang the thread that read it)."""
    for path in (REPO / "policies").glob("*.yaml"):
        shutil.copy(path, tmp_path)
    profile = tmp_path / "mesh-proxy.yaml"
    profile.write_text(profile.read_text().replace("reservedPorts: [15000,", f"reservedPorts: [{value}, 15000,", 1))
    done = subprocess.run([sys.executable, "-m", "webhook.cli", "policy", "lint", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stderr
    assert "mesh-proxy.yaml:11: error: /spec/proxy/reservedPorts/0:" in done.stdout
