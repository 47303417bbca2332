"""Decision logs: one JSON line per decision with what an operator needs, and nothing from the Pod's
spec (env values, commands, annotations may hold secrets)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from webhook.server.app import create_app
from webhook.server.logs import JsonFormatter
from webhook.server.settings import Settings

from .conftest import review_for
from .test_rules import ctr, pod, port

SECRET = "s3cr3t-Value-that-must-not-leak"


def leaky_pod(*containers, **spec):
    p = pod(*containers, annotations={"podgate.io/inject": "true", "team.example/token": SECRET}, **spec)
    for c in p["spec"]["containers"]:
        c["env"] = [{"name": "PASSWORD", "value": SECRET},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
        c["command"] = ["run", f"--token={SECRET}"]
    return p


@pytest.fixture
def logged():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    app = create_app(Settings(reload_interval=0))
    logger = logging.getLogger("podgate")
    logger.addHandler(handler)
    try:
        yield app.test_client(), stream
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("path, body, rules", [
    pytest.param("/validate", review_for(leaky_pod(ctr("a", port(8080)), ctr("b", port(8080))), uid="u1"),
                 ["port-collision", "proxy-no-identity"], id="denied"),
    pytest.param("/mutate", review_for(leaky_pod(ctr("a", port(8080))), uid="u1"), [], id="injected"),
    pytest.param("/validate", review_for(leaky_pod(ctr("a", port(70000))), uid="u1"), [], id="malformed"),
])
def test_one_line_per_decision_without_pod_content(logged, path, body, rules):
    client, stream = logged
    if path == "/validate" and rules:
        body["request"]["object"]["spec"]["automountServiceAccountToken"] = False
    assert client.post(path, json=body).status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    decisions = [e for e in lines if e["msg"] == "decision"]
    assert len(decisions) == 1
    entry = decisions[0]
    assert entry["uid"] == "u1" and entry["namespace"] == "default" and entry["webhook"] == path[1:]
    assert entry["latency_ms"] >= 0
    if rules:
        assert set(rules) <= set(entry["rules"])
        assert entry["pod"] == "default/p" and entry["allowed"] is False
    assert SECRET not in stream.getvalue()
    assert "secretKeyRef" not in stream.getvalue() and "PASSWORD" not in stream.getvalue()
