"""The habits of the ecosystem: --help for everything, did-you-mean, -f, version, log format."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.cli.commands import build_parser, main
from webhook.cli.progress import Progress

from .conftest import REPO
from .live_server import live_server

POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: a, image: a}]\n"


def _parsers(parser: argparse.ArgumentParser, name: str = "podgate") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_option_and_argument_has_help() -> None:
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, parser in _parsers(build_parser()) for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_mistyped_option_shows_the_subcommands_usage_and_the_nearest_option(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", "--polices", "x", "pod.yaml")
    assert code == 2
    assert err.startswith("usage: podgate check ")
    assert err.rstrip().endswith('unrecognized arguments: --polices; did you mean "--policies"?')
    code, _, err = run(capsys, "policy", "lint", "--stirct", str(REPO / "policies"))
    assert code == 2 and err.startswith("usage: podgate policy lint ") and 'did you mean "--strict"?' in err


def test_did_you_mean_for_commands_and_rule_ids(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "chekc", "pod.yaml")
    assert code == 2 and 'invalid choice \'chekc\'; did you mean "check"?' in err
    code, _, err = run(capsys, "policy", "lnt", "x")
    assert code == 2 and 'did you mean "lint"?' in err
    code, _, err = run(capsys, "explain", "probe-port-mising")
    assert code == 2 and 'did you mean "probe-port-missing"?' in err


def test_filename_flag_like_kubectl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(POD)
    (tmp_path / "b.yaml").write_text(POD.replace("web", "api"))
    code, out, _ = run(capsys, "check", "-o", "json", "-f", str(tmp_path / "a.yaml"),
                       "--filename", str(tmp_path / "b.yaml"))
    assert code == 0 and [r["name"] for r in json.loads(out)["results"]] == ["web", "api"]
    code, out, _ = run(capsys, "inject", "-f", str(tmp_path / "a.yaml"))
    assert code == 0 and "name: web" in out
    code, _, err = run(capsys, "check")
    assert code == 2 and err.startswith("usage: podgate check ") and "PATH (or -f PATH" in err


def test_version_has_the_build_details(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "version", "-o", "json")
    details = json.loads(out)
    assert code == 0 and details["podgate"] and details["python"].startswith("CPython 3.")
    assert details["libraries"]["gunicorn"] and details["libraries"]["flask"]
    code, out, _ = run(capsys, "version")
    assert out.startswith("podgate ") and "\npython " in out and "  gunicorn " in out
    proc = subprocess.run([sys.executable, "-m", "webhook.cli", "-V"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("podgate ")


def test_server_logs_are_json_lines_gunicorns_too_and_log_level_applies(tmp_path: Path) -> None:
    with live_server(tmp_path, "--log-level", "debug", workers=1) as server:
        review = json.loads(next((REPO / "tests/data/reviews/apiserver").glob("0004_*")).read_text())
        assert server.session().post(f"{server.url}/validate", json=review, timeout=10).status_code == 200
    lines = server.output().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    gunicorn = [entry for entry in logged if entry["logger"] == "gunicorn.error"]
    assert any(entry["msg"].startswith("Listening at: ") for entry in gunicorn)  # gunicorn's own lines, in JSON
    assert any(entry["level"] == "debug" for entry in gunicorn)  # --log-level reaches gunicorn too
    assert any(entry["logger"] == "podgate.decision" for entry in logged)
    # Everything else is what serve prints on stdout for a person: the announcement and the demo request.
    assert all(line.startswith(("{", "podgate ", "try it:", "  curl ")) for line in lines), lines


def test_log_level_warning_leaves_out_decisions_and_gunicorns_info(tmp_path: Path) -> None:
    with live_server(tmp_path, "--log-level", "WARNING", workers=1) as server:
        review = json.loads(next((REPO / "tests/data/reviews/apiserver").glob("0004_*")).read_text())
        assert server.session().post(f"{server.url}/validate", json=review, timeout=10).status_code == 200
    logged = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert [entry for entry in logged if entry["level"] in ("debug", "info")] == []


DENIED_AND_WARNED = """\
apiVersion: v1
kind: Pod
metadata: {name: ok}
spec:
  containers: [{name: a, image: a}]
---
apiVersion: v1
kind: Pod
metadata: {name: clash}
spec:
  containers:
  - {name: app, image: a, ports: [{containerPort: 8080}]}
  - {name: metrics, image: m, ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: names}
spec:
  containers:
  - {name: app, image: a, ports: [{name: http, containerPort: 8080}]}
  - {name: side, image: s, ports: [{name: http, containerPort: 9090}]}
"""


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "pods.yaml"
    path.write_text(DENIED_AND_WARNED)
    return path


def test_check_sarif_places_each_violation_at_its_object(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--no-inject", "-o", "sarif", str(mixed))
    sarif = json.loads(out)
    assert code == 1 and sarif["version"] == "2.1.0"
    (the_run,) = sarif["runs"]
    results = {(r["ruleId"], r["level"], r["locations"][0]["physicalLocation"]["region"]["startLine"])
               for r in the_run["results"]}
    assert results == {("port-collision", "error", 7), ("duplicate-port-name", "warning", 15)}
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == str(mixed)
               for r in the_run["results"])
    assert {r["id"] for r in the_run["tool"]["driver"]["rules"]} == {"port-collision", "duplicate-port-name"}
    assert the_run["invocations"][0]["executionSuccessful"] is True


def test_check_junit_and_fail_on_warn(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xml.etree import ElementTree

    code, out, _ = run(capsys, "check", "--no-inject", "-o", "junit", str(mixed))
    suite = ElementTree.fromstring(out).find("testsuite")
    assert code == 1 and suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["Pod default/clash (document 1)"]
    code, out, _ = run(capsys, "check", "--no-inject", "-o", "junit", "--fail-on", "warn", str(mixed))
    suite = ElementTree.fromstring(out).find("testsuite")
    assert code == 1 and suite is not None and suite.get("failures") == "2"
    (mixed.parent / "warned.yaml").write_text(DENIED_AND_WARNED.split("---\n")[2])
    assert run(capsys, "check", "--no-inject", str(mixed.parent / "warned.yaml"))[0] == 0
    assert run(capsys, "check", "--no-inject", "--fail-on", "warn", str(mixed.parent / "warned.yaml"))[0] == 1


def test_check_junit_reports_a_file_that_cannot_be_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xml.etree import ElementTree

    (tmp_path / "bad.yaml").write_text("a: [\n")
    (tmp_path / "good.yaml").write_text(POD)
    code, out, _ = run(capsys, "check", "-o", "junit", str(tmp_path))
    root = ElementTree.fromstring(out)
    assert code == 2
    errors = [case.find("error").get("message") for case in root.iter("testcase") if case.find("error") is not None]
    assert len(errors) == 1 and "bad.yaml" in errors[0]


def test_check_quiet_prints_only_what_was_denied_or_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    many = "---\n".join(POD.replace("web", f"web-{i}") for i in range(50))
    (tmp_path / "many.yaml").write_text(many + "---\n" + DENIED_AND_WARNED)
    code, out, _ = run(capsys, "check", "--no-inject", "-q", str(tmp_path / "many.yaml"))
    lines = out.splitlines()
    assert code == 1
    assert [line.split(": ")[0].rsplit(" ", 1)[-1] for line in lines if not line.startswith("  ")][:-1] == \
        ["default/clash", "default/names"]
    assert lines[-1].startswith("53 objects checked: 1 denied, 1 warned")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal_after_a_second_and_erased() -> None:
    now = [0.0]
    screen = _Terminal()
    progress = Progress(screen, 5000, clock=lambda: now[0])
    progress.update(10)
    assert screen.getvalue() == ""  # under a second: nothing
    now[0] = 1.5
    progress.update(1200)
    assert screen.getvalue() == "\rchecked 1,200 of 5,000 objects (24%)"
    now[0] = 1.6
    progress.update(1300)  # within the redraw interval: not redrawn
    now[0] = 2.0
    progress.update(5000)
    progress.close()
    assert screen.getvalue().endswith("\rchecked 5,000 of 5,000 objects (100%)\r" + " " * 37 + "\r")
    piped = io.StringIO()
    progress = Progress(piped, 5000, clock=lambda: now[0] + 10)
    progress.update(1)
    assert piped.getvalue() == ""


def test_check_run_draws_progress_on_a_slow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.admission import Context
    from webhook.cli import check as check_module
    from webhook.namespaces import StaticNamespaceLabels
    from webhook.policy import load_policy_set

    (tmp_path / "many.yaml").write_text("---\n".join(POD.replace("web", f"w{i}") for i in range(30)))
    ticks = iter(range(1000))
    monkeypatch.setattr("webhook.cli.progress.time.monotonic", lambda: float(next(ticks)))  # a second per look
    screen = _Terminal()
    labels = StaticNamespaceLabels()
    report = check_module.run([str(tmp_path)], Context(load_policy_set(), labels), labels, "default", True,
                              progress=screen)
    assert len(report.results) == 30
    assert "checked 30 of 30 objects (100%)" in screen.getvalue() and screen.getvalue().endswith("\r")


def test_policy_lint_takes_one_file_in_the_context_of_its_directory(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for source in (REPO / "policies").glob("*.yaml"):
        (tmp_path / source.name).write_text(source.read_text())
    code, out, _ = run(capsys, "policy", "lint", str(tmp_path / "default.yaml"))  # names a profile of another file
    assert code == 0 and out == f"{tmp_path / 'default.yaml'}: 1 policy, 0 mesh profiles: 0 errors, 0 warnings\n"
    (tmp_path / "team.yml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: team}\n"
                                       "spec: {match: {namespaces: [team]}, rules: {port-collision: block}}\n")
    code, out, _ = run(capsys, "policy", "lint", str(tmp_path / "team.yml"))
    assert code == 1 and f"{tmp_path / 'team.yml'}:4: error: /spec/rules/port-collision" in out
    code, out, _ = run(capsys, "policy", "lint", str(tmp_path / "mesh-proxy.yaml"))
    assert code == 0 and "team.yml" not in out


@pytest.mark.parametrize("flag,env,coloured", [
    ([], {}, False),  # not a terminal
    (["--color", "always"], {"NO_COLOR": "1"}, True),
    ([], {"FORCE_COLOR": "1"}, True),
    ([], {"FORCE_COLOR": "0"}, False),
    (["--color", "never"], {"FORCE_COLOR": "1"}, False),
])
def test_colour_in_lint_check_and_test(flag: list[str], env: dict[str, str], coloured: bool, tmp_path: Path,
                                       mixed: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "p.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
                                     "spec: {rules: {port-collision: block}}\n")
    outputs = [run(capsys, "policy", "lint", *flag, str(tmp_path))[1],
               run(capsys, "check", "--no-inject", *flag, str(mixed))[1],
               run(capsys, "test", *flag, str(REPO / "tests/data/suites/rules"))[1]]
    assert [("\033[" in out) for out in outputs] == [coloured] * 3, outputs


def _complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer after ``line``, through argcomplete's protocol (as the script asks)."""
    answer = tmp_path / "completions"
    env = {**os.environ, "PYTHONPATH": str(REPO), "_ARGCOMPLETE": "1", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(answer), "_ARGCOMPLETE_IFS": "\n"}
    proc = subprocess.run([sys.executable, "-m", "webhook.cli"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [word.strip() for word in answer.read_text().split("\n")]


def test_shell_completion_of_commands_options_and_rule_ids(tmp_path: Path) -> None:
    assert _complete("podgate che", tmp_path) == ["check"]
    assert _complete("podgate check --fail", tmp_path) == ["--fail-on"]
    assert _complete("podgate check --fail-on ", tmp_path) == ["deny", "warn"]
    assert "port-collision" in _complete("podgate explain port", tmp_path)
    assert "lint" in _complete("podgate policy ", tmp_path)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_registers_podgate(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, script, _ = run(capsys, "completion", shell)
    assert code == 0 and "podgate" in script
    if shell == "zsh":
        assert script.startswith("#compdef podgate")
        return
    proc = subprocess.run(["bash", "-c", f"{script}\ncomplete -p podgate"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(" podgate"), proc.stderr


def test_an_unrendered_helm_template_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"app.fullname\" . }}\n"
        "spec:\n  template:\n    spec:\n      containers: []\n")
    code, _, err = run(capsys, "check", str(tmp_path / "deployment.yaml"))
    assert code == 2
    assert "this looks like an unrendered Helm template: {{ ... }} on line 4; run helm template first" in err


def test_a_tab_is_named_with_its_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n"
                                       "  - name: a\n  \timage: a\n")
    code, _, err = run(capsys, "check", str(tmp_path / "pod.yaml"))
    assert code == 2 and "a tab at line 8, column 3: YAML indents with spaces, not tabs" in err


@pytest.mark.parametrize("manifest,flags,line", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: a\n"
     "    ports:\n    - containerPort: \"80\"\n", [], 9),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers:\n"
     "      - name: a\n        image: a\n        ports: [{containerPort: 99999}]\n", [], 10),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers:\n"
     "      - name: a\n        image: a\n        ports: [{containerPort: 99999}]\n", ["--no-inject"], 10),
    ("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n"
     "    containers:\n    - name: a\n      image: a\n      securityContext: {runAsUser: root}\n", [], 11),
])
def test_an_unreadable_pod_points_at_the_bad_field(manifest: str, flags: list[str], line: int, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.yaml").write_text(manifest)
    code, out, err = run(capsys, "check", "-o", "json", *flags, str(tmp_path / "m.yaml"))
    report = json.loads(out)
    assert code == 2, err
    assert report["results"][0]["line"] == line and report["errors"][0]["line"] == line
    assert f"m.yaml:{line}: document 0" in err
