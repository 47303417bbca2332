"""The benchmark's yardstick endpoint stays off in production, and the benchmark program runs."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

from webhook.server.app import create_app
from webhook.server.settings import Settings

from .conftest import REPO, recorded, review_for
from .test_rules import ctr, pod, port


def test_baseline_is_off_by_default() -> None:
    assert Settings().bench_baseline is False
    assert Settings.from_env({}).bench_baseline is False
    client = create_app(Settings(reload_interval=0)).test_client()
    assert client.post("/baseline", json=recorded("0002_validate")).status_code == 404


@pytest.mark.parametrize("value", ["1", "true"])
def test_baseline_setting_from_env(value: str) -> None:
    settings = Settings.from_env({"PODGATE_BENCH_BASELINE": value})
    assert settings.bench_baseline is True
    assert Settings.from_env(settings.to_env()).bench_baseline is True


def test_baseline_parses_and_allows_without_evaluating() -> None:
    client = create_app(Settings(reload_interval=0, bench_baseline=True)).test_client()
    # /validate denies this Pod; the baseline evaluates nothing
    denied = review_for(pod(ctr("app", port(8080)), ctr("metrics", port(8080))))
    assert client.post("/validate", json=denied).get_json()["response"]["allowed"] is False
    assert client.post("/baseline", json=denied).get_json() == {
        "apiVersion": denied["apiVersion"], "kind": "AdmissionReview",
        "response": {"uid": denied["request"]["uid"], "allowed": True}}
    assert client.post("/baseline", data=b"{", content_type="application/json").status_code == 400
    assert client.post("/baseline", data=b"{}", content_type="text/plain").status_code == 415


def test_bench_quick_runs_and_reports_every_target() -> None:
    """A few seconds of the real benchmark: servers start, answers check out, every target is reported."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode in (0, 1), proc.stderr  # 1: a target missed (timing on a busy machine)
    out = proc.stdout
    for heading in ("## floor", "## served", "## workers", "## in process", "## targets"):
        assert heading in out, out
    for target in ("floor serial (1 connection, API server): p50", "floor concurrent", "above 10x the floor's p50",
                   "workers:", "in process:",
                   "linear: /validate", "linear: /mutate", "workload: a Deployment costs"):
        assert target in out, out
    served = out[out.index("## served"):out.index("## workers")]
    assert "1-container" in served and "recorded (" in served and "/baseline" in served, served


def test_suite_bench_runs_and_reports_its_target() -> None:
    """bench/suite.py at a small size: both commands run on the same Pods, the ratio is reported."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--cases", "150"], capture_output=True,
                          text=True, timeout=180, cwd=REPO)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: the target missed on a busy machine
    assert "podgate test, 150 cases naming them" in proc.stdout
    assert "suite: test " in proc.stdout and "x check on the same Pods (<= 3.0)" in proc.stdout


def test_audit_bench_runs_and_reports_its_targets() -> None:
    """bench/audit.py at a small size: the audit and check run on the same Pods, both figures and
    both targets are reported (whether they are met is the benchmark's business, not a test's)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "audit.py"), "--pods", "40", "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("podgate audit, 40 live Pods") and "Pods/s, peak RSS" in lines[0]
    assert lines[1].startswith("podgate check --no-inject, the same Pods")
    assert [line[:4] for line in lines[-2:]] in (["ok  ", "ok  "], ["ok  ", "MISS"], ["MISS", "ok  "],
                                                 ["MISS", "MISS"])


def _bench_module(name: str):  # bench/ is a directory of programs, not a package
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_wrk_result_line_is_read_and_its_absence_is_an_error() -> None:
    wrk = _bench_module("wrk")
    out = "Running 1s test @ https://127.0.0.1:1\n  1 threads and 4 connections\nPODGATE-BENCH 6210 1000412 3 1\n"
    assert wrk.parse(out) == (6210, 1.000412, 3, 1)
    with pytest.raises(ValueError, match="no result line"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)")
def test_wrk_drives_a_served_podgate_and_counts_what_it_refuses(tmp_path) -> None:
    """The workers comparison's client against a real server: answers counted, refusals too."""
    wrk, served = _bench_module("wrk"), _bench_module("served")
    payloads = _bench_module("payloads")
    server = served.Server.start("wrk-test", tmp_path, "--workers", "1")
    try:
        url = f"https://127.0.0.1:{server.port}"
        good = wrk.run("wrk", wrk.script(tmp_path, "/validate?timeout=10s",
                                         payloads.envelope(payloads.one_container(), "wrk-test")), url, 2, 1)
        assert good.requests > 50 and good.non_200 == 0 and good.socket_errors == 0
        assert 0.9 < good.seconds < 2.0 and good.client_seconds > 0
        bad = wrk.run("wrk", wrk.script(tmp_path, "/validate", b'{"kind": "AdmissionReview"}'), url, 2, 1)
        assert bad.requests > 50 and bad.non_200 == bad.requests
    finally:
        server.stop()
