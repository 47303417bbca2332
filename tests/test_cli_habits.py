"""The habits of the ecosystem: --help for everything, did-you-mean, -f, version, log format."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.cli.commands import build_parser, main

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
