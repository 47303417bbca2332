"""The HTTP layer through Flask's test client: status codes and bodies for good and bad requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from webhook.server.app import create_app
from webhook.server.settings import Settings

from .conftest import recorded, review_for
from .test_rules import ctr, pod, port


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    app = create_app(Settings(reload_interval=0, max_body_bytes=64 * 1024))
    return app.test_client()


def post(client: FlaskClient, body: Any, path: str = "/validate", content_type: str = "application/json") -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


def test_health_and_ready(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").data == b"ready\n"


def test_validate_recorded_request(client: FlaskClient) -> None:
    body = recorded("0004_validate")
    resp = post(client, body)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.json["response"] == {"uid": body["request"]["uid"], "allowed": True}


def test_validate_denies(client: FlaskClient) -> None:
    resp = post(client, review_for(pod(ctr("a", port(80)), ctr("b", port(80)))))
    assert resp.status_code == 200
    assert resp.json["response"]["allowed"] is False
    assert resp.json["response"]["status"]["code"] == 403


def test_mutate_outside_the_mesh_has_no_patch(client: FlaskClient) -> None:
    resp = post(client, recorded("0001_mutate"), "/mutate")
    assert resp.json["response"]["allowed"] is True and "patch" not in resp.json["response"]


ERRORS = [
    pytest.param(b"", "application/json", 400, "empty body", id="empty-body"),
    pytest.param(b"{not json", "application/json", 400, "not valid JSON", id="invalid-json"),
    pytest.param(b"[1, 2]", "application/json", 400, "must be a JSON object", id="json-array"),
    pytest.param(b'{"kind": "Pod", "apiVersion": "v1"}', "application/json", 400, "kind must be AdmissionReview",
                 id="not-an-admission-review"),
    pytest.param(b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2", "request": {}}',
                 "application/json", 400, "apiVersion must be one of", id="wrong-api-version"),
    pytest.param(b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "application/json", 400,
                 "/request is required", id="no-request"),
    pytest.param(b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"operation": "CREATE"}}',
                 "application/json", 400, "/request/uid is required", id="missing-uid"),
    pytest.param(b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {"uid": 7}}',
                 "application/json", 400, "/request/uid is required", id="uid-not-a-string"),
    pytest.param(b"{}", "text/plain", 415, "Content-Type must be application/json", id="text-plain"),
    pytest.param(b"x" * (65 * 1024), "application/json", 413, "", id="oversized"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "fragment"), ERRORS)
@pytest.mark.parametrize("path", ["/validate", "/mutate"])
def test_bad_requests_get_4xx_with_a_message(client: FlaskClient, path: str, body: bytes, content_type: str,
                                              status: int, fragment: str) -> None:
    resp = post(client, body, path, content_type)
    assert resp.status_code == status
    assert resp.mimetype == "application/json"
    assert resp.json["status"] == status and fragment in resp.json["error"]
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize(("request_patch", "fragment"), [
    ({"operation": "PATCH"}, "/request/operation must be one of"),
    ({"kind": "Pod"}, "/request/kind must be an object"),
    ({"dryRun": "yes"}, "/request/dryRun must be bool"),
    ({"namespace": 5}, "/request/namespace must be str"),
])
def test_bad_request_with_uid_is_denied_in_kind(client: FlaskClient, request_patch: dict[str, Any],
                                                fragment: str) -> None:
    """Once the request names itself, the API server gets an AdmissionReview that says why."""
    body = recorded("0004_validate")
    body["request"].update(request_patch)
    resp = post(client, body)
    assert resp.status_code == 200
    answer = resp.json["response"]
    assert answer["uid"] == body["request"]["uid"] and answer["allowed"] is False
    assert answer["status"]["code"] == 400 and fragment in answer["status"]["message"]


def test_unknown_route_and_method(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
    resp = client.get("/validate")
    assert resp.status_code == 405 and resp.json["status"] == 405


def _wsgi(app: Any, path: str, body: bytes, content_type: str = "application/json") -> tuple[str, list[Any], bytes]:
    """Call a WSGI callable as gunicorn would, with the body held in memory."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method="POST", data=body, content_type=content_type).get_environ()
    started: list[Any] = []
    answer = b"".join(app(environ, lambda status, headers, exc_info=None: started.extend((status, headers))))
    return started[0], sorted(started[1]), answer


def _all_recorded() -> list[Any]:
    from .conftest import APISERVER_REVIEWS

    files = sorted(APISERVER_REVIEWS.glob("*.json")) + sorted((APISERVER_REVIEWS.parent / "workloads").glob("*.json"))
    return [pytest.param(f, id=f.name.split(".")[0]) for f in files]


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
@pytest.mark.parametrize("recorded_file", _all_recorded())
def test_the_direct_path_answers_as_the_flask_view(recorded_file: Any, path: str) -> None:
    """What the API server sends skips Flask; its answer is byte for byte the Flask view's."""
    app = create_app(Settings(reload_interval=0))
    body = recorded_file.read_bytes()
    direct, flask_only = app.wsgi_app, app.wsgi_app.flask
    assert _wsgi(direct, path, body) == _wsgi(flask_only, path, body)


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'{"kind": "Pod"}', b"\xff\xfe"])
def test_the_direct_path_refuses_bad_bodies_as_the_flask_view(body: bytes) -> None:
    app = create_app(Settings(reload_interval=0))
    answer = _wsgi(app.wsgi_app, "/validate", body)
    assert answer == _wsgi(app.wsgi_app.flask, "/validate", body)
    assert answer[0].startswith("400 ")


def test_only_whole_json_posts_to_the_webhooks_skip_flask() -> None:
    app = create_app(Settings(reload_interval=0, max_body_bytes=1024))
    direct = app.wsgi_app
    seen: list[str] = []
    inner = direct.flask
    direct.flask = lambda environ, start: seen.append(environ["PATH_INFO"]) or inner(environ, start)
    body = json.dumps(review_for(pod(ctr("a", port(80))))).encode()
    assert _wsgi(direct, "/validate", body)[0] == "200 OK"
    assert _wsgi(direct, "/mutate", body, "application/json; charset=utf-8")[0] == "200 OK"
    assert seen == []  # both answered without Flask
    assert _wsgi(direct, "/validate", body, "text/plain")[0].startswith("415 ")
    assert _wsgi(direct, "/validate", b"{" * 2048)[0].startswith("413 ")  # over max_body_bytes
    assert _wsgi(direct, "/other", body)[0].startswith("404 ")
    assert seen == ["/validate", "/validate", "/other"]


def test_an_unexpected_error_on_the_direct_path_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(reload_interval=0))
    app.wsgi_app.state.store = None  # type: ignore[assignment]  (reading the policies fails)
    body = json.dumps(review_for(pod(ctr("a", port(80))))).encode()
    status, headers, answer = _wsgi(app.wsgi_app, "/validate", body)
    assert status == "500 INTERNAL SERVER ERROR"
    assert json.loads(answer) == {"error": "internal error; see podgate's logs", "status": 500}
    assert "Traceback" not in answer.decode()
    assert "unhandled error" in caplog.text
