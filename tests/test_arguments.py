"""Every command, given a bad path or value, says so in one line naming the argument, and exits 2.

No traceback, no usage screen burying the reason, no server announced that cannot start. The
sweep runs the real ``main`` in-process (argparse exits through SystemExit); the cases that need
a real listener (a port already taken) run ``podgate serve`` as a process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webhook.cli.commands import main
from webhook.server.certs import write_certificates

from .conftest import REPO


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("args")
    good = write_certificates(root / "good", ["localhost"])
    other = write_certificates(root / "other", ["localhost"])
    (root / "garbage.pem").write_text("not a certificate\n")
    (root / "a-file").write_text("x\n")
    (root / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
                                   "  containers: [{name: a, image: a}]\n")
    return {"cert": str(good.cert), "key": str(good.key), "other_key": str(other.key),
            "garbage": str(root / "garbage.pem"), "file": str(root / "a-file"), "dir": str(root),
            "pod": str(root / "pod.yaml"), "certs": str(good.directory), "missing": str(root / "missing")}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, err


# (arguments, what the one line must name); {name} is filled from the ``files`` fixture
CASES: list[tuple[list[str], str]] = [
    (["serve", "--bind", "localhost:99999"], "--bind"),
    (["serve", "--bind", "8443"], "--bind"),
    (["serve", "--bind", "::1:8443"], "--bind"),
    (["serve", "--bind", "bad host:8443"], "--bind"),
    (["serve", "--health-bind", "127.0.0.1:0"], "--health-bind"),
    (["serve", "--health-bind", "127.0.0.1:70000"], "--health-bind"),
    (["serve", "--workers", "0"], "--workers"),
    (["serve", "--workers", "-3"], "--workers"),
    (["serve", "--workers", "two"], "--workers"),
    (["serve", "--workers", "9" * 5000], "--workers"),
    (["serve", "--workers", "100000"], "--workers"),
    (["serve", "--threads", "0"], "--threads"),
    (["serve", "--max-requests", "-1"], "--max-requests"),
    (["serve", "--max-body-bytes", "0"], "--max-body-bytes"),
    (["serve", "--request-timeout", "0"], "--request-timeout"),
    (["serve", "--request-timeout", "nan"], "--request-timeout"),
    (["serve", "--worker-timeout", "0"], "--worker-timeout"),
    (["serve", "--graceful-timeout", "-1"], "--graceful-timeout"),
    (["serve", "--drain-seconds", "inf"], "--drain-seconds"),
    (["serve", "--reload-interval", "-1"], "--reload-interval"),
    (["serve", "--record-max", "0"], "--record-max"),
    (["serve", "--record-max-bytes", "lots"], "--record-max-bytes"),
    (["serve", "--log-level", "loud"], "--log-level"),
    (["serve", "--kube-api", "ftp://example"], "--kube-api"),
    (["serve", "--policies", "{missing}"], "--policies"),
    (["serve", "--policies", "{file}"], "--policies"),
    (["serve", "--namespace-labels", "{missing}"], "--namespace-labels"),
    (["serve", "--cert", "{missing}", "--key", "{key}"], "--cert"),
    (["serve", "--cert", "{dir}", "--key", "{key}"], "--cert"),
    (["serve", "--cert", "{garbage}", "--key", "{key}"], "--cert"),
    (["serve", "--cert", "{cert}", "--key", "{garbage}"], "--key"),
    (["serve", "--cert", "{cert}", "--key", "{other_key}"], "--key"),
    (["serve", "--cert", "{cert}"], "--key"),
    (["serve", "--cert", "{cert}", "--key", "{key}", "--client-ca", "{garbage}"], "--client-ca"),
    (["serve", "--cert", "{cert}", "--key", "{key}", "--client-ca", "{missing}"], "--client-ca"),
    (["serve", "--cert-dir", "/proc/podgate-nowhere"], "--cert-dir"),
    (["serve", "--cert-dir", "{file}"], "--cert-dir"),
    (["serve", "--cert", "{cert}", "--key", "{key}", "--record", "{file}"], "--record"),
    (["review", "--policies", "{missing}", "{file}"], "--policies"),
    (["review", "--webhook", "mutat", "{file}"], "--webhook"),
    (["review", "{missing}"], "{missing}"),
    (["check", "--namespace", "Not_A_Name", "{pod}"], "--namespace"),
    (["check", "-o", "xml", "{pod}"], "--output"),
    (["check", "--namespace-labels", "{dir}", "{pod}"], "--namespace-labels"),
    (["check", "{missing}"], "{missing}"),
    (["check", "-f", "{missing}"], "{missing}"),
    (["inject", "--namespace", "-x-", "{pod}"], "--namespace"),
    (["inject", "--policies", "{file}", "{pod}"], "--policies"),
    (["inject", "{missing}"], "{missing}"),
    (["test", "{missing}"], "{missing}"),
    (["test", "--namespace", "UPPER", "{dir}"], "--namespace"),
    (["explain", "port-colision"], "port-collision"),
    (["policy", "lint", "{missing}"], "{missing}"),
    (["certs", "--out", "/proc/podgate-nowhere"], "--out"),
    (["certs", "--out", "{file}"], "--out"),
    (["certs", "--out", "{certs}"], "--force"),
    (["certs", "--dns", "*.bad name"], "--dns"),
    (["certs", "--dns", "a..b"], "--dns"),
    (["certs", "--dns", "a.*.b"], "--dns"),
    (["certs", "--service", "Web_Hook"], "--service"),
    (["certs", "--namespace", "x" * 64], "--namespace"),
    (["version", "-o", "yaml"], "--output"),
]


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_argument_is_one_line_naming_it(argv: list[str], named: str, files: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(**files) for a in argv]
    code, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # the server's JSON log lines
    assert code == 2, err
    assert len(lines) == 1, err
    assert named.format(**files) in lines[0]
    assert "Traceback" not in err


def test_certs_namespace_without_service_uses_the_charts_service(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["certs", "--out", str(tmp_path), "--namespace", "shop"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "--namespace shop without --service: names for Service podgate" in err
    assert "names: podgate, podgate.shop, podgate.shop.svc, podgate.shop.svc.cluster.local" in out


def test_certs_default_names_use_the_charts_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "podgate.podgate-system.svc" in out and "podgate.podgate.svc" not in out


def test_certs_refuses_to_replace_a_ca_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "--out", str(tmp_path)]) == 0
    ca = (tmp_path / "ca.key").read_bytes()
    assert main(["certs", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "ca.key").read_bytes() == ca
    assert main(["certs", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ca.key").read_bytes() != ca


def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "webhook.cli", "serve", "--cert-dir", str(cwd / "certs"), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def test_serve_on_a_taken_port_is_one_line_and_announces_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = _serve("--bind", f"127.0.0.1:{port}", cwd=tmp_path)
        took = time.monotonic() - started
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"podgate: --bind 127.0.0.1:{port}: cannot listen: the address is in use "
                     "(another server listens there?)"]
    assert "listening" not in proc.stdout
    assert took < 30  # not gunicorn's five retries and more: one attempt


def test_serve_health_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--bind", "127.0.0.1:0", "--health-bind", f"127.0.0.1:{port}", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"podgate: --health-bind 127.0.0.1:{port}: cannot listen")
    assert "listening" not in proc.stdout
