"""The real server: gunicorn over TLS on loopback, as the API server meets it.

Body caps are checked on the wire (a huge Content-Length is refused before any body byte is
sent; a chunked body is cut off at the cap), a trickling body gets 408 within the request's
time budget, TLS below 1.2 and weak ciphers are refused, client certificates are enforced with
``--client-ca``, and SIGTERM drains: /readyz turns 503 while requests are still answered.
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from .conftest import review_for
from .live_server import LiveServer, live_server

CAP = 256 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("server"), "--max-body-bytes", str(CAP), workers=1) as srv:
        yield srv


def client_context(srv: LiveServer, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(srv.ca))
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def https_get(srv: LiveServer, path: str) -> int:
    """One GET on its own connection: probes keep working while other requests are in flight."""
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=client_context(srv))
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def raw_request(srv: LiveServer, head: bytes, body_parts: Iterator[bytes] = iter(()),
                timeout: float = 5.0) -> tuple[float, bytes]:
    """Send ``head`` and then ``body_parts`` (stopping early if the server answers or closes);
    return (seconds until the status line, the response head)."""
    sock = client_context(srv).wrap_socket(socket.create_connection(("127.0.0.1", srv.port)),
                                            server_hostname="127.0.0.1")
    sock.settimeout(timeout)
    started = time.monotonic()
    try:
        sock.sendall(head)
        sock.setblocking(False)
        received = b""
        for part in body_parts:
            try:
                received += sock.recv(65536)
                break  # the server answered before the body was sent
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            try:
                sock.sendall(part)
            except (OSError, ssl.SSLError):
                break  # the server closed on us: the answer is waiting
        sock.settimeout(timeout)
        while b"\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return time.monotonic() - started, received
    finally:
        sock.close()


def post(srv: LiveServer, path: str, body: bytes, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=context or client_context(srv))
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


COLLISION = {"metadata": {"name": "web"}, "spec": {"containers": [
    {"name": "app", "image": "app", "ports": [{"containerPort": 8080}]},
    {"name": "metrics", "image": "metrics", "ports": [{"containerPort": 8080}]}]}}
BODY = json.dumps(review_for(COLLISION)).encode()


def test_a_recorded_request_is_answered(server: LiveServer) -> None:
    status, body = post(server, "/validate?timeout=10s", BODY)
    assert status == 200
    assert json.loads(body)["response"]["allowed"] is False


def test_huge_content_length_is_refused_before_the_body_is_sent(server: LiveServer) -> None:
    head = (b"POST /validate HTTP/1.1\r\nHost: podgate\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n")
    elapsed, response = raw_request(server, head)  # not one body byte is sent
    assert response.startswith(b"HTTP/1.1 413"), response
    # a server waiting for the body would answer at the end of its 8 s budget; the margin is
    # for a loaded machine
    assert elapsed < 5


CHUNKED_HEAD = (b"POST /validate HTTP/1.1\r\nHost: podgate\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked transfer coding of ``parts``."""
    for part in parts:
        yield b"%x\r\n" % len(part) + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_chunked_body_over_the_cap_is_cut_off(server: LiveServer) -> None:
    """Werkzeug's get_data stops silently at the cap for a chunked body; podgate must refuse it."""
    chunk = b"x" * 65536
    _, response = raw_request(server, CHUNKED_HEAD, chunked(iter([chunk] * (10 * CAP // len(chunk)))))
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


def test_chunked_body_under_the_cap_is_served(server: LiveServer) -> None:
    parts = (BODY[i:i + 1000] for i in range(0, len(BODY), 1000))
    _, response = raw_request(server, CHUNKED_HEAD, chunked(parts))
    assert response.startswith(b"HTTP/1.1 200"), response[:200]


def test_a_trickling_body_gets_408_within_the_budget(server: LiveServer) -> None:
    """?timeout=1s (what the API server sends for timeoutSeconds: 1): answered at its 0.8 s budget.

    The server's clock starts after the client's, so the answer cannot come sooner; the upper
    bound has room for a loaded machine and still tells this budget from the 8 s default."""
    head = (b"POST /validate?timeout=1s HTTP/1.1\r\nHost: podgate\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{")
    elapsed, response = raw_request(server, head)  # and then nothing
    assert response.startswith(b"HTTP/1.1 408"), response[:200]
    assert 0.7 <= elapsed < 4, elapsed


def test_health_endpoints(server: LiveServer) -> None:
    assert https_get(server, "/healthz") == 200
    assert https_get(server, "/readyz") == 200


# --- TLS -------------------------------------------------------------------------------------

def _handshake(srv: LiveServer, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return f"{tls.version()} {tls.cipher()[0]}"


def _client(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        ctx.minimum_version, ctx.maximum_version = minimum, maximum
    except ValueError:
        pytest.skip(f"this OpenSSL cannot offer {maximum.name}")
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_is_refused(server: LiveServer, version: ssl.TLSVersion) -> None:
    ctx = _client(version, version, "ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(server, ctx)
    # the server's alert, not this client's own refusal to offer the version
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value


@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-SHA",
                                    "ECDHE-RSA-AES256-SHA", "DHE-RSA-AES128-GCM-SHA256"])
def test_weak_tls12_ciphers_are_refused(server: LiveServer, cipher: str) -> None:
    """No static RSA key exchange, no CBC: only ECDHE with AES-GCM or ChaCha20 on TLS 1.2."""
    ctx = _client(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, cipher)
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(server, ctx)
    assert "ALERT_HANDSHAKE_FAILURE" in str(refused.value), refused.value


@pytest.mark.parametrize(("version", "expected"), [
    (ssl.TLSVersion.TLSv1_2, "TLSv1.2 ECDHE-ECDSA-AES"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3 TLS_")])
def test_modern_tls_is_served(server: LiveServer, version: ssl.TLSVersion, expected: str) -> None:
    assert _handshake(server, _client(version, version)).startswith(expected)


# --- client certificates ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, tuple[str, str], tuple[str, str]]]:
    """A server that takes only clients with a certificate from the API server's CA."""
    work = tmp_path_factory.mktemp("mtls")

    def client(ca: trustme.CA, name: str) -> tuple[str, str]:
        leaf = ca.issue_cert("kube-apiserver")  # trustme leaves carry clientAuth too
        leaf.cert_chain_pems[0].write_to_path(str(work / f"{name}.crt"))
        leaf.private_key_pem.write_to_path(str(work / f"{name}.key"))
        return str(work / f"{name}.crt"), str(work / f"{name}.key")

    apiserver_ca, stranger_ca = trustme.CA(), trustme.CA()
    apiserver_ca.cert_pem.write_to_path(str(work / "client-ca.crt"))
    apiserver = client(apiserver_ca, "apiserver")
    stranger = client(stranger_ca, "stranger")  # same name, another CA
    with live_server(work, "--client-ca", str(work / "client-ca.crt"), workers=1, client_cert=apiserver) as srv:
        yield srv, apiserver, stranger


def _refused(srv: LiveServer, ctx: ssl.SSLContext) -> bool:
    """TLS 1.3 verifies the client after the handshake: the refusal shows on the first read."""
    try:
        status, _ = post(srv, "/validate", BODY, context=ctx)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        return True
    return False


def test_client_ca_without_a_client_certificate_is_refused(mtls: tuple) -> None:
    srv, _, _ = mtls
    assert _refused(srv, client_context(srv))


def test_client_ca_with_a_certificate_from_another_ca_is_refused(mtls: tuple) -> None:
    srv, _, stranger = mtls
    assert _refused(srv, client_context(srv, stranger))


def test_client_ca_with_the_right_certificate_is_served(mtls: tuple) -> None:
    srv, apiserver, _ = mtls
    status, body = post(srv, "/validate", BODY, context=client_context(srv, apiserver))
    assert status == 200
    assert json.loads(body)["response"]["uid"]


# --- graceful shutdown -----------------------------------------------------------------------

def test_sigterm_drains_readiness_first_then_stops(tmp_path: Path) -> None:
    """SIGTERM to the master (what the kubelet sends): /readyz 503 at once, requests still
    answered and /healthz still 200 for --drain-seconds, then a clean exit."""
    drain = 3.0
    with live_server(tmp_path, "--drain-seconds", str(drain)) as srv:
        srv.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        readiness: list[int] = []
        # the master handles the signal in its loop, a moment later; from then on: unready. Two
        # rounds of probes after the first 503, then stop: each round must end inside the drain,
        # however slowly a loaded machine runs them, so the test sends no more than it needs.
        while readiness.count(503) < 2:
            assert time.monotonic() - started < drain - 1, f"/readyz still {readiness} after SIGTERM"
            readiness.append(https_get(srv, "/readyz"))
            status, _ = post(srv, "/validate", BODY)
            assert status == 200  # still answering
            assert https_get(srv, "/healthz") == 200  # alive: the kubelet must not restart it
            time.sleep(0.05)
        turned = readiness.index(503)
        assert readiness[turned:] == [503, 503], readiness
        assert srv.process.wait(30) == 0
        assert time.monotonic() - started >= drain  # the drain delay was honoured
        with pytest.raises(OSError):
            post(srv, "/validate", BODY)


def test_health_port_serves_probes_in_plaintext_and_nothing_else(tmp_path: Path) -> None:
    """With --client-ca the kubelet cannot probe the TLS port; --health-bind gives it a
    plaintext port that answers GET /healthz, /readyz, /metrics and no admission request."""
    from .live_server import reserved_port

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    leaf = ca.issue_cert("kube-apiserver")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "c.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    with reserved_port() as health, live_server(tmp_path, "--client-ca", str(tmp_path / "client-ca.crt"), "--health-bind",
                     f"127.0.0.1:{health}", workers=2, client_cert=(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))) as srv:
        def plain(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", health, timeout=5)
            try:
                conn.request(method, path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        for _ in range(4):  # whichever worker takes the connection
            assert plain("GET", "/healthz") == (200, b"ok\n")
            assert plain("GET", "/readyz")[0] == 200
        assert b"podgate_" in plain("GET", "/metrics")[1]
        assert plain("POST", "/validate", BODY)[0] == 501  # no admission over plaintext
        assert plain("GET", "/validate")[0] == 404
        assert _refused(srv, client_context(srv))  # the TLS port still wants the client certificate


@pytest.mark.parametrize(("timeout", "budget"), [
    ("10s", 8.0), ("5s", 4.0), ("1m0s", 8.0), ("500ms", 0.4), ("1.5s", 1.2), (None, 8.0), ("bogus", 8.0),
    ("10", 8.0), ("0s", 0.05), ("9" * 400 + "h", 8.0)])
def test_request_budget_follows_the_api_servers_timeout(timeout: str | None, budget: float) -> None:
    from webhook.server.budget import request_budget

    assert request_budget(timeout, 10.0) == pytest.approx(budget)


def test_fuzzed_sample_through_the_real_server(server: LiveServer) -> None:
    """A smaller sample of the fuzzer's mutants over TLS: gunicorn's parsing and the app together."""
    from .test_fuzz import mutants

    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10, context=client_context(server))
    try:
        for body in mutants(150, seed=3):
            for path in ("/validate?timeout=10s", "/mutate?timeout=10s"):
                try:
                    conn.request("POST", path, body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    status, payload = resp.status, resp.read()
                except (http.client.HTTPException, OSError):  # a 413 closes the connection: reconnect
                    conn.close()
                    conn.request("POST", path, body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    status, payload = resp.status, resp.read()
                assert status in (200, 400, 413), (status, payload[:200])
                answer = json.loads(payload)
                assert answer["kind"] == "AdmissionReview" if status == 200 else answer["error"]
    finally:
        conn.close()


def test_no_listener_but_the_tls_port(server: LiveServer) -> None:
    """gunicorn 25+ also opens a control socket unless told not to; podgate tells it not to."""
    assert "Control socket" not in server.output()
    assert "Listening at: https://127.0.0.1:" in server.output()


def test_only_a_body_gunicorn_already_holds_skips_the_socket_timeout() -> None:
    """The deadline may go without a socket timeout only when reading cannot wait on the client."""
    from gunicorn.http.body import Body, ChunkedReader, LengthReader
    from gunicorn.http.unreader import IterUnreader

    from webhook.server.views import _held_length

    def held(data: bytes) -> IterUnreader:
        unreader = IterUnreader([])
        unreader.unread(data)
        return unreader

    assert _held_length({"wsgi.input": Body(LengthReader(held(b"x" * 100), 100))}) == 100
    assert _held_length({"wsgi.input": Body(LengthReader(held(b"x" * 150), 100))}) == 100  # the next request behind it
    assert _held_length({"wsgi.input": Body(LengthReader(held(b"x" * 99), 100))}) is None  # one byte still to come
    assert _held_length({"wsgi.input": Body(ChunkedReader(object(), held(b"5\r\nhello\r\n0\r\n\r\n")))}) is None
    assert _held_length({"wsgi.input": io.BytesIO(b"{}"), "CONTENT_LENGTH": "2"}) == 2  # held in memory
    assert _held_length({"wsgi.input": io.BytesIO(b"{}")}) is None  # no length: read it as a stream
    assert _held_length({"wsgi.input": io.BytesIO(b"{}"), "CONTENT_LENGTH": "-1"}) is None
    assert _held_length({}) is None
