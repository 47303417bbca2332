"""A real gunicorn over real TLS on 127.0.0.1, answering AdmissionReviews as the API server sends them."""

from __future__ import annotations

import base64
import json
import ssl
import socket
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from .conftest import recorded, review_for
from .live_server import LiveServer, live_server
from .test_rules import ctr, pod, port
from .test_workloads import recorded as recorded_workload


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("server")
    labels = tmp / "namespaces.yaml"
    labels.write_text("meshed: {podgate.io/mesh: enabled}\n")
    with live_server(tmp, "--namespace-labels", str(labels)) as srv:
        yield srv


def post(server: LiveServer, path: str, body: Any) -> Any:
    # the API server appends ?timeout=10s and sends its own User-Agent
    return server.session().post(f"{server.url}{path}?timeout=10s", data=json.dumps(body),
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "kube-apiserver-admission"}, timeout=10)


def test_serves_tls_with_its_own_certificate(server: LiveServer) -> None:
    context = ssl.create_default_context(cafile=str(server.ca))
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert "listening on https://127.0.0.1:" in server.output()
    assert "curl -s --cacert" in server.output()


def test_recorded_request_allowed(server: LiveServer) -> None:
    body = recorded("0002_validate")
    resp = post(server, "/validate", body)
    assert resp.status_code == 200
    assert resp.json() == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": {"uid": body["request"]["uid"], "allowed": True}}


def test_denial_with_status_and_warnings(server: LiveServer) -> None:
    body = review_for(pod(ctr("app", port(8080, name="http")), ctr("metrics", port(8080, name="http"))))
    answer = post(server, "/validate", body).json()["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 403
    assert '[port-collision] containers "app" and "metrics" both listen on 8080/TCP' in answer["status"]["message"]
    assert answer["warnings"][0].startswith("[duplicate-port-name]")


def test_mutate_patch_applies_to_a_valid_meshed_pod(server: LiveServer) -> None:
    obj = pod(ctr("app", port(8080)))
    answer = post(server, "/mutate", review_for(obj, namespace="meshed")).json()["response"]
    patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["mesh-init", "mesh-proxy"]
    # and the validating webhook accepts what the mutating one made
    after = post(server, "/validate", review_for(patched, namespace="meshed")).json()["response"]
    assert after["allowed"] is True, after


@pytest.mark.parametrize(("data", "content_type", "status"), [
    (b"{broken", "application/json", 400),
    (b"{}", "text/plain", 415),
])
def test_malformed_requests_get_4xx(server: LiveServer, data: bytes, content_type: str, status: int) -> None:
    resp = server.session().post(f"{server.url}/validate", data=data, headers={"Content-Type": content_type})
    assert resp.status_code == status and "error" in resp.json()


def test_decisions_are_logged_as_json_lines(server: LiveServer) -> None:
    post(server, "/validate", review_for(pod(ctr("a", port(1)), ctr("b", port(1))), uid="log-me"))
    deadline = time.monotonic() + 30  # workers write their decision lines in batches (the rest: a loaded machine)
    while True:
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        logged = [e for e in lines if e.get("uid") == "log-me"]
        if logged or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (entry,) = logged
    assert entry["msg"] == "decision" and entry["allowed"] is False and entry["rules"] == ["port-collision"]
    assert "object" not in json.dumps(entry)  # no Pod specs in logs


def test_reuses_a_good_certificate(tmp_path: Path) -> None:
    from webhook.server.certs import ensure_self_signed

    first = ensure_self_signed(tmp_path).cert.read_bytes()
    assert ensure_self_signed(tmp_path).cert.read_bytes() == first
    assert ensure_self_signed(tmp_path, ["other.example"]).cert.read_bytes() != first


def test_workloads_and_ephemeral_containers_over_tls(server: LiveServer) -> None:
    """The recorded kubectl apply of a colliding Deployment, a CronJob without jobTemplate and
    kubectl debug's ephemeral containers, through real gunicorn and TLS: answers, never a 5xx."""
    deployment = recorded_workload("0001_validate_CREATE_Deployment")
    resp = post(server, "/validate", deployment)
    assert resp.status_code == 200
    assert resp.json()["response"]["status"]["message"].startswith(
        'deployment "shop/web" spec.template: [port-collision]')
    cronjob = recorded_workload("0012_validate_CREATE_CronJob")
    del cronjob["request"]["object"]["spec"]["jobTemplate"]
    resp = post(server, "/validate", cronjob)
    assert resp.status_code == 200 and resp.json()["response"]["status"]["code"] == 400
    assert "request.object/spec/jobTemplate: is missing" in resp.json()["response"]["status"]["message"]
    debug = recorded_workload("0015_validate_UPDATE_Pod-ephemeralcontainers")
    debug["request"]["namespace"] = "meshed"  # the server's namespace labels mesh "meshed"
    assert "[proxy-uid-conflict] ephemeral container" in post(server, "/validate", debug).json()[
        "response"]["status"]["message"]
    del debug["request"]["oldObject"]
    resp = post(server, "/validate", debug)
    assert resp.status_code == 200 and resp.json()["response"]["status"]["code"] == 400
