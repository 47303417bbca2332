"""lane.py: the API server's request read and answered by the worker's event loop.

It must never read a request differently from gunicorn (generated requests, compared with
gunicorn's own parser), must read the API server's requests (the form Go's net/http sends, the
recorded ones), must answer with the bytes gunicorn would send, and must leave to a thread what
could wait (a namespace the cache does not hold yet).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.server import lane

from .conftest import review_for
from .live_server import LiveServer, live_server
from .stand_in_apiserver import StandInAPIServer
from .test_hardening import client_context

REPO = Path(__file__).resolve().parent.parent
RECORDED = sorted((REPO / "tests/data/reviews/apiserver").glob("*.json"))


class RawTLS:
    """One kept-alive TLS connection that sends raw requests and reads Content-Length answers."""

    def __init__(self, server: LiveServer) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        self.sock = client_context(server).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                                       server_hostname="127.0.0.1")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(self, raw: bytes) -> bytes:
        self.sock.sendall(raw)
        answer = b""
        while (end := answer.find(b"\r\n\r\n")) < 0 or len(answer) < end + 4 + _length(answer[:end]):
            chunk = self.sock.recv(65536)
            assert chunk, f"the server closed the connection after {answer!r}"
            answer += chunk
        return answer

    def close(self) -> None:
        self.sock.close()


def _length(head: bytes) -> int:
    found = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return int(found[1]) if found else 0


def go_request(path: str, body: bytes, query: str = "timeout=10s") -> bytes:
    """A request as kube-apiserver's client (Go net/http) writes it: its header order and case."""
    return (f"POST {path}?{query} HTTP/1.1\r\nHost: podgate.podgate-system.svc:443\r\n"
            f"User-Agent: kube-apiserver-admission\r\nContent-Length: {len(body)}\r\n"
            f"Accept: application/json, */*\r\nContent-Type: application/json\r\n"
            f"Accept-Encoding: gzip\r\n\r\n").encode() + body


def gunicorn_reads(buffer: bytes) -> tuple[str, str, str, bytes, bytes]:
    """What gunicorn's parser reads from ``buffer``: method, path, content type, body, and what is left."""
    parser = RequestParser(Config(), iter([buffer]), ("127.0.0.1", 1))
    request = next(parser)
    body = request.body.read()
    content_type = next((v for k, v in request.headers if k == "CONTENT-TYPE"), "")
    return request.method, request.path, content_type, body, parser.unreader.read()


def test_the_api_servers_request_is_read() -> None:
    body = b'{"kind":"AdmissionReview"}'
    request = lane.parse(go_request("/validate", body))
    assert request == lane.Request("/validate", "application/json", body)
    assert lane.parse(go_request("/mutate", b"{}", query="timeout=30s")) == lane.Request("/mutate", "application/json", b"{}")


@pytest.mark.parametrize("path", RECORDED[:12], ids=lambda p: p.name)
def test_recorded_requests_are_read_as_gunicorn_reads_them(path: Path) -> None:
    body = path.read_bytes()
    for webhook in ("/validate", "/mutate"):
        raw = go_request(webhook, body)
        request = lane.parse(raw)
        assert request is not None
        assert ("POST", request.path, request.content_type, request.body, b"") == gunicorn_reads(raw)


GOOD = go_request("/validate", b"{}")


def _swap(old: bytes, new: bytes) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("raw", [
    _swap(b"POST ", b"PUT "),
    _swap(b"POST ", b"post "),
    _swap(b"/validate?", b"/validate/x?"),
    _swap(b"/validate?", b"/valid%61te?"),
    _swap(b"?timeout=10s", b"?timeout=10s#frag"),
    _swap(b"HTTP/1.1", b"HTTP/1.0"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Transfer-Encoding: chunked\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Connection: close\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Expect: 100-continue\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Upgrade: h2c\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"X-Forwarded-Proto: http\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Accept_Encoding: gzip\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Accept-Encoding : gzip\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Accept-Encoding: g\x80zip\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Accept-Encoding: g\x00zip\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Accept-Encoding: a\tb\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b" folded\r\n"),
    _swap(b"Accept-Encoding: gzip\r\n", b"Content-Length: 2\r\n"),  # a second one
    _swap(b"Accept-Encoding: gzip\r\n", b"Content-Type: text/plain\r\n"),  # a second one
    _swap(b"Accept-Encoding: gzip\r\n", b"Host: other\r\n"),  # a second one
    _swap(b"Content-Length: 2\r\n", b"Content-Length: +2\r\n"),
    _swap(b"Content-Length: 2\r\n", b""),
    _swap(b"\r\n\r\n", b"\n\n"),
    GOOD + b"P",  # the start of a pipelined request
    GOOD[:-1],  # the body not all in
], ids=lambda raw: re.sub(r"[^\x21-\x7e]", "_", raw[:0].decode() or "case"))
def test_anything_else_is_left_to_gunicorn(raw: bytes) -> None:
    assert lane.parse(raw) is None


def test_gunicorns_limits_are_kept() -> None:
    assert lane.parse(GOOD, lane.FieldLimits(line=36, fields=7, field_size=37)) is not None
    assert lane.parse(GOOD, lane.FieldLimits(line=35)) is None  # its request line is 35 long
    assert lane.parse(GOOD, lane.FieldLimits(fields=6)) is None  # it has 6 fields
    assert lane.parse(GOOD, lane.FieldLimits(field_size=36)) is None  # its longest field is 36 long
    many = _swap(b"Accept-Encoding: gzip\r\n", b"".join(b"X-%d: y\r\n" % i for i in range(100)))
    assert lane.parse(many) is None  # gunicorn's default: 100 fields at most


def test_a_hostile_head_costs_no_more_than_its_length() -> None:
    """A head of single-spaced words that fails at its very end: the pattern must not backtrack."""
    value = b"a " * 30_000 + b"\x00"
    raw = b"POST /validate HTTP/1.1\r\nX: " + value + b"\r\nContent-Length: 2\r\n\r\n{}"
    started = time.process_time()
    assert lane.parse(raw) is None
    assert time.process_time() - started < 0.1


# --- never read differently from gunicorn ------------------------------------------------------

_NAMES = ["Host", "Content-Type", "content-type", "Content-Length", "CONTENT-LENGTH", "Transfer-Encoding",
          "Connection", "Expect", "X-Forwarded-Proto", "X_Thing", "X-Thing", "Accept"]
_VALUES = ["application/json", "application/json; charset=utf-8", "chunked", "keep-alive", "close", "gzip, chunked",
           "100-continue", "https", "a\tb", "", "  padded  ", "a  b", "\xe9", "0", "2", "007", "-1", "1e3"]
_LINES = ["POST /validate HTTP/1.1", "POST /mutate?timeout=10s HTTP/1.1", "POST /validate?a=b&c HTTP/1.1",
          "POST /validate HTTP/1.0", "GET /validate HTTP/1.1", "POST /validate?x#y HTTP/1.1",
          "POST  /validate HTTP/1.1", "POST /validate HTTP/1.1 ", "POST http://h/validate HTTP/1.1"]


@st.composite
def requests(draw: Any) -> bytes:
    body = draw(st.sampled_from([b"{}", b'{"a":1}', b"", b"2\r\n{}\r\n0\r\n\r\n", b"x" * 40]))
    fields = draw(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES + [str(len(body))]),
                                     st.sampled_from([": ", ": ", ":", " : ", ":\t"])), max_size=5))
    if draw(st.booleans()):  # most requests that matter have their length right
        fields.insert(draw(st.integers(0, len(fields))), ("Content-Length", str(len(body)), ": "))
    head = draw(st.sampled_from(_LINES)) + "\r\n" + "".join(f"{n}{sep}{v}\r\n" for n, v, sep in fields)
    tail = draw(st.sampled_from([b"", b"", b"", b"x", b"POST / HTTP/1.1\r\n\r\n"]))
    return head.encode("latin-1") + b"\r\n" + body + tail


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_what_lane_reads_gunicorn_reads_the_same(raw: bytes) -> None:
    request = lane.parse(raw)
    if request is not None:
        assert gunicorn_reads(raw) == ("POST", request.path, request.content_type, request.body, b"")


# --- served ------------------------------------------------------------------------------------

def _without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


def _ticks(pid: int) -> tuple[int, int]:
    """CPU ticks of a worker: its main thread (the event loop), and all its other threads."""
    main = other = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if int(task.name) == pid:
            main += ticks
        else:
            other += ticks
    return main, other


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("lane"), workers=1) as server:
        yield server


def _worker(server: LiveServer) -> int:
    from .serving import workers

    (pid,) = workers(server.process.pid)
    return pid


def test_served_here_byte_for_byte_as_gunicorn_serves_it(one_worker: LiveServer) -> None:
    """The same request, once in the API server's shape (the event loop answers it) and once with a
    ``Connection: keep-alive`` field (gunicorn reads it, on a thread): the same bytes come back,
    but for the Date. The thread's CPU shows which path answered."""
    body = RECORDED[3].read_bytes()
    direct = go_request("/validate", body)
    via_gunicorn = direct.replace(b"Accept-Encoding: gzip\r\n", b"Connection: keep-alive\r\n")
    assert lane.parse(direct) is not None and lane.parse(via_gunicorn) is None
    worker = _worker(one_worker)
    conn = RawTLS(one_worker)
    try:
        answers = {}
        for name, raw in (("lane", direct), ("gunicorn", via_gunicorn)):
            answers[name] = _without_date(conn.exchange(raw))
            before = _ticks(worker)
            for _ in range(1500):
                conn.exchange(raw)
            after = _ticks(worker)
            answers[name + " threads"] = after[1] - before[1]
    finally:
        conn.close()
    assert answers["lane"] == answers["gunicorn"]
    assert answers["lane"].startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nConnection: keep-alive\r\n")
    assert json.loads(answers["lane"].partition(b"\r\n\r\n")[2])["response"]["uid"]
    # 1,500 requests take the thread pool tens of ticks; answered on the event loop, about none
    assert answers["lane threads"] <= 3 < answers["gunicorn threads"], answers


def test_what_the_event_loop_answers_is_logged_and_counted_the_last_answers_too(tmp_path: Path) -> None:
    """Its answers are reported after they are sent, in batches: none may be lost, neither while
    requests keep coming nor when the server stops right after the last one."""
    review = json.loads(RECORDED[3].read_text())
    with live_server(tmp_path, workers=1) as server:
        conn = RawTLS(server)
        for i in range(45):  # one batch of 32 and a part
            review["request"]["uid"] = f"lane-{i}"
            assert conn.exchange(go_request("/validate", json.dumps(review).encode())).startswith(b"HTTP/1.1 200 OK")
        time.sleep(0.5)  # the reporter's interval is 0.1 s
        metrics = server.session().get(f"{server.url}/metrics", timeout=5).text
        for i in range(45, 50):  # answered just before the server is told to stop
            review["request"]["uid"] = f"lane-{i}"
            conn.exchange(go_request("/validate", json.dumps(review).encode()))
        conn.close()
    assert re.search(r'podgate_admission_requests_total\{operation="CREATE",result="allowed",webhook="validate"\} 45\.0', metrics)
    logged = {json.loads(line).get("uid") for line in server.output().splitlines() if line.startswith("{")}
    assert {f"lane-{i}" for i in range(50)} <= logged


def test_an_uncached_namespace_is_looked_up_on_a_thread(tmp_path: Path) -> None:
    """Fetching a namespace's labels from the API server must not hold the event loop: /healthz
    (and every other connection) is answered while a Pod in a new namespace waits for its labels."""
    api = StandInAPIServer().start()
    try:
        with live_server(tmp_path, "--kube-api", api.url, workers=1) as server:
            api.get_delay = 1.5
            api.namespaces["brand-new"] = {"team": "shop"}  # not in the list the cache took
            body = json.dumps(review_for({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                          "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
                                         namespace="brand-new")).encode()
            answer: list[bytes] = []
            slow = RawTLS(server)
            waiting = threading.Thread(target=lambda: answer.append(slow.exchange(go_request("/validate", body))))
            waiting.start()
            time.sleep(0.2)  # the request is in, and its labels are being fetched
            started = time.monotonic()
            assert server.session().get(f"{server.url}/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 0.8
            waiting.join(10)
            slow.close()
            assert answer and answer[0].startswith(b"HTTP/1.1 200 OK")
    finally:
        api.stop()


def test_garbage_is_collected_between_requests_as_the_thresholds_say() -> None:
    """The worker turns the collector off and runs it from the event loop before it waits: it
    collects as often as the collector would, just not inside a request."""
    import gc

    from webhook.server.worker import collect_garbage

    was_enabled, thresholds = gc.isenabled(), gc.get_threshold()
    gc.disable()
    try:
        gc.collect()
        gc.set_threshold(500, 2, 2)
        for _ in range(600):  # cycles: only the collector frees them
            node: dict[str, Any] = {}
            node["self"] = node
        assert gc.get_count()[0] >= 500
        collect_garbage()
        assert gc.get_count()[0] < 50 and gc.get_count()[1] == 1  # a young collection
        collect_garbage()
        assert gc.get_count()[1] == 1  # nothing due: nothing done
        for _ in range(2):
            for _ in range(600):
                node = {}
                node["self"] = node
            collect_garbage()
        assert gc.get_count()[1:] == (0, 1)  # the middle generation came due and was collected
    finally:
        gc.set_threshold(*thresholds)
        if was_enabled:
            gc.enable()


def test_a_log_reader_that_stops_reading_stops_no_answer(tmp_path: Path) -> None:
    """podgate's stderr is a pipe that nobody reads (a stuck log collector): once it is full, the
    event loop goes on answering Pods and /healthz, and counts them; the lines it could not write
    wait for the reader, and when it reads again they come out in order."""
    import os
    import select
    import subprocess
    import sys

    from .live_server import listening_port, stop

    cmd = [sys.executable, "-m", "webhook.cli", "serve", "--bind", "127.0.0.1:0", "--cert-dir",
           str(tmp_path / "certs"), "--workers", "1", "--drain-seconds", "0"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert process.stdout is not None
    review = json.loads(RECORDED[3].read_text())
    try:
        started_up, fd, deadline = b"", process.stdout.fileno(), time.monotonic() + 90
        while not (port := listening_port(started_up.decode(errors="replace"))):  # then the pipe is not read
            assert process.poll() is None and time.monotonic() < deadline, f"podgate serve did not start: {started_up!r}"
            if select.select([fd], [], [], 0.5)[0]:
                started_up += os.read(fd, 1 << 16)
        server = LiveServer(process, f"https://127.0.0.1:{port}", tmp_path / "certs" / "ca.crt", tmp_path / "certs",
                            tmp_path / "unused.log")
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "podgate serve did not get ready"
            try:
                if server.session().get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    break
            except OSError:
                time.sleep(0.1)
        conn = RawTLS(server)  # a 10 s timeout: a blocked event loop fails the exchange
        total = 1200  # about 400 bytes of log line each: the 64 KiB pipe is full after about 160
        for i in range(total):
            review["request"]["uid"] = f"stalled-{i}"
            assert conn.exchange(go_request("/validate", json.dumps(review).encode())).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert server.session().get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
        metrics = server.session().get(f"{server.url}/metrics", timeout=5).text
        conn.close()
        assert re.search(rf'podgate_admission_requests_total\{{operation="CREATE",result="allowed",'
                         rf'webhook="validate"\}} {total}\.0', metrics), metrics[-3000:]
        out, deadline = b"", time.monotonic() + 30
        while time.monotonic() < deadline and out.count(b'"uid":"stalled-') < total:
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 1 << 16)
    finally:
        stop(process)
        process.stdout.close()
    uids = [json.loads(line)["uid"] for line in out.decode().splitlines()
            if line.startswith("{") and '"uid":"stalled-' in line]
    assert uids == [f"stalled-{i}" for i in range(total)]
