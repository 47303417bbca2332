"""``podgate test``: the project's own suites pass, wrong expectations fail readably, malformed
suites exit 2 naming file, line and JSON path, and ``--init`` turns requests into cases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from webhook.cli.commands import main

from .conftest import APISERVER_REVIEWS, DATA, REPO

RULES_SUITE = DATA / "suites" / "rules"
REVISIONS_SUITE = DATA / "suites" / "revisions"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("suite_dir", [APISERVER_REVIEWS, RULES_SUITE, REVISIONS_SUITE],
                         ids=["apiserver", "rules", "revisions"])
def test_project_suites_pass(capsys: pytest.CaptureFixture[str], suite_dir: Path) -> None:
    code, out, err = run(capsys, "test", str(suite_dir))
    assert code == 0, out + err
    assert "FAIL" not in out
    assert out.splitlines()[-1].endswith("passed, 0 failed")


def test_apiserver_suite_covers_every_recording() -> None:
    suite = yaml.safe_load((APISERVER_REVIEWS / "podgate-test.yaml").read_text())
    named = {c["request"] for c in suite["cases"]}
    assert named == {p.name for p in APISERVER_REVIEWS.glob("*.request.json")}
    assert len(named) == 42


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed entry point, as CI would call it."""
    podgate = Path(sys.executable).with_name("podgate")
    ok = subprocess.run([str(podgate), "test", str(RULES_SUITE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "podgate-test.yaml"
    bad.write_text("apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases: 3\n")
    broken = subprocess.run([str(podgate), "test", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 2
    assert f"{bad}:3: /cases: 3 is not of type 'array'" in broken.stderr


def copy_rules_suite(tmp_path: Path) -> Path:
    target = tmp_path / "suite"
    shutil.copytree(RULES_SUITE, target)
    text = (target / "podgate-test.yaml").read_text()
    (target / "podgate-test.yaml").write_text(text.replace("policies: ../../../../policies",
                                                           f"policies: {REPO / 'policies'}"))
    return target


def set_expect(suite_file: Path, case: str, **expect: object) -> None:
    data = yaml.safe_load(suite_file.read_text())
    for c in data["cases"]:
        if c["name"] == case:
            c["expect"].update(expect)
    suite_file.write_text(yaml.safe_dump(data, sort_keys=False))


def test_wrong_expectations_fail_with_readable_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = copy_rules_suite(tmp_path)
    f = suite / "podgate-test.yaml"
    set_expect(f, "port-collision-denied", allowed=True, rules=["host-port-collision"])
    set_expect(f, "duplicate-port-name-warns", warnings=[])
    set_expect(f, "proxy-port-and-uid-conflicts", doesNotFire=["proxy-uid-conflict"])
    golden = suite / "golden" / "cart.yaml"
    golden.write_text(golden.read_text().replace("image: example/cart:1", "image: example/cart:2"))
    code, out, _ = run(capsys, "test", str(suite))
    assert code == 1
    assert "  FAIL port-collision-denied" in out
    assert "allowed: expected true, got false (denied: pod \"default/collide\" breaks 1 podgate rule" in out
    assert "rules: expected [host-port-collision], got [port-collision] " \
           "(did not fire: host-port-collision; also fired: port-collision)" in out
    assert "warnings: expected 0, got 1" in out
    assert "doesNotFire: proxy-uid-conflict fired: [proxy-uid-conflict]" in out
    # the golden mismatch is a unified diff of the two objects
    assert "-  - image: example/cart:2" in out and "+  - image: example/cart:1" in out
    assert out.splitlines()[-1] == "17 cases: 13 passed, 4 failed"


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = copy_rules_suite(tmp_path)
    set_expect(suite / "podgate-test.yaml", "kube-system-is-exempt", allowed=False)
    code, out, _ = run(capsys, "test", "-o", "json", "--run", "exempt", str(suite))
    assert code == 1
    report = json.loads(out)
    assert report["summary"] == {"cases": 1, "passed": 0, "failed": 1, "malformed": 0}
    [case] = report["suites"][0]["cases"]
    assert case["name"] == "kube-system-is-exempt" and case["passed"] is False
    assert case["failures"] == ["allowed: expected false, got true (allowed)"]


def test_update_golden_rewrites_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = copy_rules_suite(tmp_path)
    golden = suite / "golden" / "cart.yaml"
    want = yaml.safe_load(golden.read_text())
    golden.unlink()
    code, out, err = run(capsys, "test", str(suite))
    assert code == 2 and "golden/cart.yaml does not exist" in err
    code, out, _ = run(capsys, "test", "--update-golden", str(suite))
    assert code == 0, out
    assert yaml.safe_load(golden.read_text()) == want


MALFORMED = [
    pytest.param("cases:\n  - name: a\n    request: r.json\n", "podgate-test.yaml:1: /: 'apiVersion' is a required property",
                 id="no-header"),
    pytest.param("{head}cases:\n  - name: a\n    expect: {{allowed: true}}\n",
                 "podgate-test.yaml:7: /cases/0: a case needs exactly one of request, manifest, object", id="no-input"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    manifest: m.yaml\n    expect: {{allowed: true}}\n",
                 "podgate-test.yaml:7: /cases/0: a case needs exactly one of request, manifest, object", id="two-inputs"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect:\n      alowed: true\n",
                 "podgate-test.yaml:10: /cases/0/expect/alowed: Additional properties are not allowed ('alowed' was unexpected)",
                 id="typo-in-expect"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect: {{rules: port-collision}}\n",
                 "podgate-test.yaml:9: /cases/0/expect/rules: 'port-collision' is not of type 'array'", id="rules-not-list"),
    pytest.param("{head}cases:\n  - name: a\n    request: missing.json\n    expect: {{allowed: true}}\n",
                 "podgate-test.yaml:8: /cases/0/request: request file {dir}/missing.json does not exist",
                 id="missing-request-file"),
    pytest.param("{head}cases:\n  - name: a\n    request: broken.json\n    expect: {{allowed: true}}\n",
                 "broken.json:1: invalid JSON/YAML:", id="unparseable-request"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect: {{allowed: true}}\n"
                 "  - name: a\n    request: r.json\n    expect: {{allowed: true}}\n",
                 "podgate-test.yaml:10: /cases/1/name: case name 'a' is used twice", id="duplicate-name"),
    pytest.param("{head}cases:\n  - name: a\n   request: r.json\n", "podgate-test.yaml:8: invalid YAML:", id="bad-yaml"),
    pytest.param("{head}cases:\n  - name: a\n    object: {{kind: ConfigMap}}\n    expect: {{allowed: true}}\n",
                 "/cases/0: the manifest is a ConfigMap, not a Pod or workload", id="not-a-pod"),
    # an unknown rule ID would make the expectation pass (doesNotFire) or fail (fires) forever
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect: {{allowed: false, doesNotFire: "
                 "[port-colision]}}\n",
                 'podgate-test.yaml:9: /cases/0/expect/doesNotFire/0: unknown rule "port-colision"; did you mean '
                 '"port-collision"?', id="unknown-rule-in-doesNotFire"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect:\n      fires:\n        - port-collision\n"
                 "        - proxy-uid-conflicts\n",
                 'podgate-test.yaml:12: /cases/0/expect/fires/1: unknown rule "proxy-uid-conflicts"; did you mean '
                 '"proxy-uid-conflict"?', id="unknown-rule-in-fires"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect: {{rules: [no-such-rule]}}\n",
                 'podgate-test.yaml:9: /cases/0/expect/rules/0: unknown rule "no-such-rule" (known rules: podgate '
                 'explain)', id="unknown-rule-in-rules"),
    pytest.param("{head}cases:\n  - name: a\n    request: r.json\n    expect:\n      violations:\n"
                 "        - {{rule: host-port-colision, port: 80}}\n",
                 'podgate-test.yaml:11: /cases/0/expect/violations/0/rule: unknown rule "host-port-colision"; did you '
                 'mean "host-port-collision"?', id="unknown-rule-in-violations"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_suite_exits_2_naming_file_line_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         text: str, message: str) -> None:
    shutil.copy(APISERVER_REVIEWS / "0002_validate_CREATE_default_single.request.json", tmp_path / "r.json")
    (tmp_path / "broken.json").write_text("{\"apiVersion\": [}")
    head = "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\nname: t\n# comment\n\n"
    (tmp_path / "podgate-test.yaml").write_text(text.format(head=head, dir=tmp_path))
    code, out, err = run(capsys, "test", str(tmp_path))
    assert code == 2
    assert message.format(dir=tmp_path) in err, err
    assert str(tmp_path) in err
    assert "Traceback" not in err


def test_every_unknown_rule_of_a_suite_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = copy_rules_suite(tmp_path)
    set_expect(suite / "podgate-test.yaml", "port-collision-denied", doesNotFire=["port-colision"])
    set_expect(suite / "podgate-test.yaml", "kube-system-is-exempt", fires=["missing-proxi"])
    code, out, err = run(capsys, "test", str(suite))
    assert code == 2 and out == "0 cases: 0 passed, 0 failed; 1 suite could not run\n"
    lines = err.splitlines()
    assert len(lines) == 2
    assert '/expect/doesNotFire/0: unknown rule "port-colision"; did you mean "port-collision"?' in lines[0]
    assert '/expect/fires/0: unknown rule "missing-proxi"; did you mean "missing-proxy"?' in lines[1]


def test_no_suite_found_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "test", str(tmp_path))
    assert code == 2 and "no test suite found (a file named podgate-test.yaml)" in err


def test_init_from_a_request_and_a_manifest_then_a_policy_change_fails_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The platform team's loop: record, --init, review, change the policy, see the suite fail."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("*.json", "*.py"))
    suite = tmp_path / "tests"
    request = RULES_SUITE / "requests" / "port-collision.json"
    manifest = RULES_SUITE / "manifests" / "deployment-meshed.yaml"
    code, out, _ = run(capsys, "test", "--policies", str(policies), str(suite),
                       "--init", str(request), str(manifest), "--namespace", "shop")
    assert code == 0, out
    assert "added case 'port-collision' to" in out and "denied (port-collision)" in out
    data = yaml.safe_load((suite / "podgate-test.yaml").read_text())
    assert data["cases"][0] == {"name": "port-collision", "request": "requests/port-collision.json",
                                "webhook": "validate",
                                "expect": {"allowed": False, "rules": ["port-collision"], "warnings": []}}
    # the manifest names its namespace (shop) but it is not labelled for the mesh in this suite
    assert data["cases"][1]["expect"] == {"allowed": True, "rules": [], "warnings": [], "injected": False}
    assert (suite / "requests" / "port-collision.json").exists()

    # the same request again is no new case; through the other webhook it is, under a free name,
    # and a comment survives
    text = (suite / "podgate-test.yaml").read_text()
    (suite / "podgate-test.yaml").write_text("# reviewed by the platform team\n" + text)
    code, out, _ = run(capsys, "test", "--policies", str(policies), str(suite), "--init", str(request))
    assert code == 0
    assert out.splitlines() == [
        f"skipped {request}: the suite already has case 'port-collision' for it (webhook validate)",
        f"no case added to {suite / 'podgate-test.yaml'}: it already has them all"]
    assert (suite / "podgate-test.yaml").read_text() == "# reviewed by the platform team\n" + text
    code, out, _ = run(capsys, "test", "--policies", str(policies), str(suite), "--init", str(request),
                       "--webhook", "mutate")
    assert code == 0 and "added case 'port-collision-2'" in out
    assert (suite / "podgate-test.yaml").read_text().startswith("# reviewed by the platform team\n")

    code, out, _ = run(capsys, "test", "--policies", str(policies), str(suite))
    assert code == 0 and out.splitlines()[-1] == "3 cases: 3 passed, 0 failed"

    default = policies / "default.yaml"
    default.write_text(default.read_text().replace("port-collision: deny", "port-collision: warn"))
    code, out, _ = run(capsys, "test", "--policies", str(policies), str(suite))
    assert code == 1
    assert "  FAIL port-collision  (" in out
    assert "allowed: expected false, got true (allowed)" in out
    assert out.splitlines()[-1] == "3 cases: 2 passed, 1 failed"


def test_init_injected_manifest_writes_a_golden_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "tests"
    suite.mkdir()
    (suite / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\nnamespaceLabels:\n"
        "  shop: {podgate.io/mesh: enabled}\ncases: []\n")
    code, out, _ = run(capsys, "test", str(suite), "--init", str(RULES_SUITE / "manifests" / "deployment-meshed.yaml"))
    assert code == 0, out
    data = yaml.safe_load((suite / "podgate-test.yaml").read_text())
    assert data["cases"][0]["expect"]["patched"] == "golden/deployment-meshed.yaml"
    assert yaml.safe_load((suite / "golden" / "deployment-meshed.yaml").read_text()) == \
        yaml.safe_load((RULES_SUITE / "golden" / "cart.yaml").read_text())
    code, out, _ = run(capsys, "test", str(suite))
    assert code == 0, out


def test_junit_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xml.etree import ElementTree

    suite = copy_rules_suite(tmp_path)
    set_expect(suite / "podgate-test.yaml", "kube-system-is-exempt", rules=["port-collision"])
    code, out, _ = run(capsys, "test", "-o", "junit", str(suite))
    assert code == 1
    root = ElementTree.fromstring(out)
    [node] = root.findall("testsuite")
    assert node.get("tests") == "17" and node.get("failures") == "1"
    failed = [c for c in node.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["kube-system-is-exempt"]
    assert failed[0].find("failure").get("message").startswith("rules: expected [port-collision], got []")


def test_init_makes_one_case_per_pod_of_a_multi_document_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "apps.yaml"
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n},
             "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
                                     {"name": "b", "image": "b", "ports": [{"containerPort": p}]}]}}
            for n, p in (("ok", 81), ("clash", 80))]
    manifest.write_text(yaml.safe_dump_all([pods[0], {"apiVersion": "v1", "kind": "ConfigMap"}, pods[1]]))
    suite = tmp_path / "suite"
    code, out, _ = run(capsys, "test", str(suite), "--init", str(manifest))
    assert code == 0, out
    cases = yaml.safe_load((suite / "podgate-test.yaml").read_text())["cases"]
    assert [(c["name"], c["document"], c["expect"]["allowed"]) for c in cases] == \
        [("apps-0", 0, True), ("apps-2", 2, False)]
    # a different file of the same name is copied under a free name
    other = tmp_path / "other" / "apps.yaml"
    other.parent.mkdir()
    other.write_text(yaml.safe_dump(pods[0]))
    assert run(capsys, "test", str(suite), "--init", str(other))[0] == 0
    assert yaml.safe_load((suite / "podgate-test.yaml").read_text())["cases"][-1]["manifest"] == "manifests/apps-2.yaml"
    assert run(capsys, "test", str(suite))[0] == 0


def two_port_pod(name: str, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
                                    {"name": "b", "image": "b", "ports": [{"containerPort": port}]}]}}


def test_init_on_a_list_writes_cases_the_suite_accepts_and_skips_them_the_second_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A List of several Pods shares one document number: each case names its item too."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    pods = {"apiVersion": "v1", "kind": "List", "items": [two_port_pod("clash", 80), cm, two_port_pod("ok", 81)]}
    manifest = tmp_path / "multi.yaml"
    manifest.write_text(yaml.safe_dump_all([cm, two_port_pod("single", 82), pods]))
    suite = tmp_path / "suite"
    code, out, _ = run(capsys, "test", str(suite), "--init", str(manifest))
    assert code == 0, out
    cases = yaml.safe_load((suite / "podgate-test.yaml").read_text())["cases"]
    assert [(c["name"], c["document"], c.get("item"), c["expect"]["allowed"]) for c in cases] == \
        [("multi-1", 1, None, True), ("multi-2-0", 2, 0, False), ("multi-2-2", 2, 2, True)]
    code, out, err = run(capsys, "test", str(suite))
    assert code == 0, out + err
    assert out.splitlines()[-1] == "3 cases: 3 passed, 0 failed"

    # again: nothing is added twice, and the run says so
    before = (suite / "podgate-test.yaml").read_text()
    code, out, _ = run(capsys, "test", str(suite), "--init", str(manifest))
    assert code == 0
    assert out.splitlines() == [
        f"skipped {manifest} [document 1]: the suite already has case 'multi-1' for it (webhook admit)",
        f"skipped {manifest} [document 2, item 0]: the suite already has case 'multi-2-0' for it (webhook admit)",
        f"skipped {manifest} [document 2, item 2]: the suite already has case 'multi-2-2' for it (webhook admit)",
        f"no case added to {suite / 'podgate-test.yaml'}: it already has them all"]
    assert (suite / "podgate-test.yaml").read_text() == before
    # another namespace or another webhook is another case
    code, out, _ = run(capsys, "test", str(suite), "--init", str(manifest), "--webhook", "validate")
    assert code == 0 and out.count("added case") == 3 and "skipped" not in out
    assert run(capsys, "test", str(suite))[0] == 0


@pytest.mark.parametrize(("pick", "message"), [
    ("    document: 0\n", "document 0 of {file} must hold exactly one Pod or workload, found 2; it is a List: "
                         "pick one with item: N"),
    ("    document: 0\n    item: 5\n", "document 0 item 5 of {file} must hold exactly one Pod or workload, found 0"),
    ("", "{file} must hold exactly one Pod or workload, found 2; pick one with document: N"),
])
def test_a_manifest_case_must_pick_one_item_of_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      pick: str, message: str) -> None:
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": [two_port_pod("a", 80), two_port_pod("b", 81)]}))
    (tmp_path / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n  - name: a\n    manifest: list.yaml\n"
        + pick + "    expect: {allowed: true}\n")
    code, _, err = run(capsys, "test", str(tmp_path))
    assert code == 2
    assert f"podgate-test.yaml:5: /cases/0/manifest: {message.format(file=tmp_path / 'list.yaml')}" in err, err
    (tmp_path / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n  - name: a\n    manifest: list.yaml\n"
        "    document: 0\n    item: 1\n    expect: {allowed: true}\n")
    code, out, err = run(capsys, "test", str(tmp_path))
    assert code == 0, out + err


def test_a_request_file_that_is_not_an_admission_review(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pod.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Pod"}))
    head = "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n  - name: a\n    request: pod.json\n"
    (tmp_path / "podgate-test.yaml").write_text(head + "    expect: {allowed: true}\n")
    code, _, err = run(capsys, "test", str(tmp_path))
    assert code == 2 and "pod.json is a Pod, not an AdmissionReview (use manifest:" in err
    # unless the case is about podgate rejecting it
    (tmp_path / "podgate-test.yaml").write_text(head + "    expect: {error: 'kind must be AdmissionReview'}\n")
    code, out, _ = run(capsys, "test", str(tmp_path))
    assert code == 0, out


def many_pods_suite(directory: Path, n: int) -> Path:
    """One manifest of n Pods, and a suite with a case for each (every third one collides)."""
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"}, "spec": {"containers": [
        {"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b", "ports": [{"containerPort": 80 if i % 3 == 0 else 81}]}]}} for i in range(n)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pods.yaml").write_text(yaml.safe_dump_all(pods))
    cases = [{"name": f"p{i}", "manifest": "pods.yaml", "document": i, "expect": {"allowed": i % 3 != 0}}
             for i in range(n)]
    (directory / "podgate-test.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "podgate.io/v1alpha1", "kind": "TestSuite", "name": directory.name, "cases": cases}))
    return directory


def test_a_manifest_file_is_parsed_once_however_many_cases_name_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case re-parsing its file made a suite quadratic (400 cases from one file: minutes)."""
    from webhook.cli import suite as suite_module

    parsed: list[str] = []
    real = suite_module.read_documents

    def counting(source: str) -> list:
        parsed.append(source)
        return real(source)

    monkeypatch.setattr(suite_module, "read_documents", counting)
    many_pods_suite(tmp_path / "s", 60)
    code, out, err = run(capsys, "test", str(tmp_path / "s"))
    assert code == 0, out + err
    assert out.splitlines()[-1] == "60 cases: 60 passed, 0 failed"
    assert len(parsed) == 1


def test_every_problem_of_every_suite_is_reported_and_the_good_ones_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xml.etree import ElementTree

    many_pods_suite(tmp_path / "a-good", 3)
    bad = tmp_path / "b-bad"
    bad.mkdir()
    (bad / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n"
        "  - {name: x, request: missing.json, expect: {allowed: true}}\n"
        "  - {name: x, manifest: gone.yaml, expect: {allowed: true}}\n"
        "  - {name: y, object: {kind: ConfigMap}, expect: {fires: [port-colision]}}\n")
    many_pods_suite(tmp_path / "c-good", 2)

    code, out, err = run(capsys, "test", str(tmp_path))
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("podgate: ")]
    assert len(problems) == 5, err
    for text in ("missing.json does not exist", "case name 'x' is used twice", "gone.yaml",
                 "not a Pod or workload", 'unknown rule "port-colision"'):
        assert any(text in line for line in problems), (text, err)
    assert out.splitlines()[-1] == "5 cases: 5 passed, 0 failed; 1 suite could not run"
    assert f"{tmp_path / 'c-good' / 'podgate-test.yaml'}: c-good" in out  # the suite after the bad one ran

    code, out, _ = run(capsys, "test", "-o", "json", str(tmp_path))
    assert code == 2
    report = json.loads(out)
    assert report["summary"] == {"cases": 5, "passed": 5, "failed": 0, "malformed": 1}
    assert [len(s["errors"]) for s in report["suites"]] == [0, 5, 0]
    assert [len(s["cases"]) for s in report["suites"]] == [3, 0, 2]

    code, out, _ = run(capsys, "test", "-o", "junit", str(tmp_path))
    assert code == 2
    root = ElementTree.fromstring(out)
    suites = root.findall("testsuite")
    assert [s.get("errors") for s in suites] == ["0", "1", "0"]
    error = suites[1].find("testcase/error")
    assert error is not None and "missing.json does not exist" in (error.text or "")

    # no suite at all: still a report, with the error in it
    code, out, _ = run(capsys, "test", "-o", "json", str(tmp_path / "nowhere"))
    assert code == 2
    assert "no such file or directory" in json.loads(out)["suites"][0]["errors"][0]


MESHED_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}


def test_namespace_labels_are_honoured_by_test_and_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text("shop: {podgate.io/mesh: enabled}\n")
    manifest = tmp_path / "web.yaml"
    manifest.write_text(yaml.safe_dump(MESHED_POD))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "podgate-test.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: TestSuite\ncases:\n"
        f"  - {{name: web, manifest: {manifest}, expect: {{allowed: true, injected: true}}}}\n")
    code, out, _ = run(capsys, "test", str(suite))
    assert code == 1 and "injected: expected true, got false" in out
    code, out, _ = run(capsys, "test", "--namespace-labels", str(labels), str(suite))
    assert code == 0, out

    # --init under those labels: the case is injected and records the labels it was made under
    fresh = tmp_path / "fresh"
    code, out, _ = run(capsys, "test", "--namespace-labels", str(labels), str(fresh), "--init", str(manifest))
    assert code == 0, out
    [case] = yaml.safe_load((fresh / "podgate-test.yaml").read_text())["cases"]
    assert case["expect"]["injected"] is True
    assert case["namespaceLabels"] == {"shop": {"podgate.io/mesh": "enabled"}}
    code, out, _ = run(capsys, "test", str(fresh))
    assert code == 0, out


def test_init_writes_nothing_when_a_file_is_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = RULES_SUITE / "manifests" / "deployment-meshed.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [\n")
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    suite = tmp_path / "suite"
    code, _, err = run(capsys, "test", str(suite), "--init", str(good), str(broken), str(config))
    assert code == 2
    assert str(broken) in err and str(config) in err  # every bad file, not only the first
    assert not suite.exists()  # nothing copied, no golden file, no suite


def test_init_with_the_directory_after_the_files_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = RULES_SUITE / "manifests" / "deployment-meshed.yaml"
    suite = tmp_path / "suite"
    suite.mkdir()
    code, _, err = run(capsys, "test", "--init", str(manifest), str(suite))
    assert code == 2
    assert f"the directory comes first: podgate test {suite} --init {manifest}" in err
    assert list(suite.iterdir()) == []
    # a directory among the files is named as such
    code, _, err = run(capsys, "test", str(suite), "--init", str(manifest), str(tmp_path))
    assert code == 2 and f"{tmp_path}: is a directory; --init takes" in err
    assert list(suite.iterdir()) == []
