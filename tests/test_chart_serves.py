"""The chart's output runs: the container command, the policies ConfigMap and the Helm-made Secret,
laid out as the kubelet mounts them, make a server that the API server (trusting the webhooks'
caBundle, calling the Service's DNS name) and the probes can talk to.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import helm_python as hp
import pytest

from .conftest import recorded
from .live_server import listening_port, stop
from .test_chart import CHART, NAMESPACE, RELEASE, container, one, render, webhooks


def kubelet_volume(root: Path, files: dict[str, bytes]) -> None:
    """Write files the way the kubelet lays out a ConfigMap or Secret volume (``..data`` links)."""
    data = root / "..2026_01_01_00_00_00.000000000"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
    (root / "..data").symlink_to(data.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")


@pytest.mark.parametrize("server", [
    pytest.param({}, id="defaults"),
    pytest.param({"maxRequests": 2, "record": {"enabled": True}}, id="recording-and-recycling"),
])
def test_rendered_chart_serves_the_api_server(tmp_path: Path, server: dict[str, Any]) -> None:
    # no namespace cache: there is no API server here to watch
    objs = render(hp.Chart.load(str(CHART)), {"namespaceLabels": {"fromAPI": False}, "server": server})
    secret = one(objs, "Secret")
    tls_files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    policies = {k: v.encode() for k, v in one(objs, "ConfigMap")["data"].items()}
    c = container(objs)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    root = tmp_path / "root"
    kubelet_volume(root / mounts["tls"].lstrip("/"), tls_files)
    kubelet_volume(root / mounts["policies"].lstrip("/"), policies)

    args = []
    for arg in c["command"][1:]:  # the chart's command, with the container paths under tmp_path
        if arg.startswith("--bind="):
            arg = "--bind=127.0.0.1:0"  # the kernel picks a free port; the log tells which
        elif "=/" in arg:
            flag, path = arg.split("=", 1)
            arg = f"{flag}={root}{path}"
        args.append(arg)
    ca = one(objs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
    context = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
    service_name = f"{RELEASE}.{NAMESPACE}.svc"  # what the API server dials and checks

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            conn = http.client.HTTPSConnection(service_name, port, context=context, timeout=10)
            conn.sock = context.wrap_socket(raw, server_hostname=service_name)
            conn.request(method, path, json.dumps(body) if body else None, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()

    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "webhook.cli", *args, "--drain-seconds=0"], stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)},
                                   start_new_session=True)
    port = None
    try:
        deadline = time.monotonic() + 90  # for a loaded machine
        while True:
            port = port or listening_port(log.read_text())
            try:
                if port and call("GET", c["readinessProbe"]["httpGet"]["path"])[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert call("GET", c["livenessProbe"]["httpGet"]["path"]) == (200, b"ok\n")
        for kind, hook in webhooks(objs):
            webhook = "mutate" if kind.startswith("Mutating") else "validate"
            status, body = call("POST", hook["clientConfig"]["service"]["path"],
                                recorded("0003_mutate" if webhook == "mutate" else "0004_validate"))
            assert status == 200 and json.loads(body)["response"]["allowed"] is True, body
        status, body = call("GET", "/metrics")
        assert status == 200 and b"podgate_admission_requests_total" in body
        if "recorded" in mounts:  # the requests were written to the volume the chart mounts
            saved = sorted(p.name.split("_")[1] for p in (root / mounts["recorded"].lstrip("/")).glob("*.json"))
            assert saved == sorted("mutate" if k.startswith("Mutating") else "validate" for k, _ in webhooks(objs))
    finally:
        stop(process)
