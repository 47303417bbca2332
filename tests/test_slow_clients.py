"""Slow and malformed clients against the real server (gunicorn over TLS on loopback).

A connection has a deadline from its accept (handshake, head and body together), a worker holds
a bounded number of connections and drops the oldest unfinished one to take a new one, and the
request threads only ever see complete requests: slow clients never hold a thread, so /healthz
and the API server's requests are served while they hang on. A chunked body whose framing is
broken is a bad request (400, with the reason), never a 500.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import selectors
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import review_for
from .live_server import LiveServer, live_server

POD = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "app"}]}}
BODY = json.dumps(review_for(POD)).encode()
HEAD = (b"POST /validate?timeout=10s HTTP/1.1\r\nHost: podgate\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(BODY))
CLIENT_HELLO_START = b"\x16\x03\x01"  # the first 3 bytes of a TLS ClientHello record


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The defaults the chart runs: 2 workers x 4 threads."""
    with live_server(tmp_path_factory.mktemp("server"), workers=2) as srv:
        yield srv


def context(srv: LiveServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.ca))


def tls(srv: LiveServer, timeout: float = 10) -> ssl.SSLSocket:
    return context(srv).wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=timeout),
                                    server_hostname="127.0.0.1")


def healthz_seconds(srv: LiveServer) -> float:
    """Seconds for /healthz on a new connection (handshake included)."""
    started = time.monotonic()
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=10, context=context(srv))
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return time.monotonic() - started


class Tricklers:
    """Slow clients: half send a request head over TLS one byte at a time, half send the first
    bytes of a ClientHello over TCP and then nothing; a thread keeps the trickle going."""

    def __init__(self, srv: LiveServer, count: int, every: float = 0.2) -> None:
        self.heads: list[tuple[ssl.SSLSocket, list[int]]] = []
        self.hellos: list[socket.socket] = []
        for i in range(count):
            if i % 2:
                raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                raw.sendall(CLIENT_HELLO_START)
                self.hellos.append(raw)
            else:
                sock = tls(srv)
                sock.sendall(b"P")
                self.heads.append((sock, [1]))
        self.every = every
        self.stop = threading.Event()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            for sock, sent in self.heads:
                if sent[0] < 0:
                    continue
                try:
                    sock.sendall(HEAD[sent[0]:sent[0] + 1])
                    sent[0] += 1
                except OSError:
                    sent[0] = -1
                    self.dropped += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock, _ in self.heads:
            sock.close()
        for raw in self.hellos:
            raw.close()


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closes ``sock`` (None: still open after ``within``)."""
    started = time.monotonic()
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(4096):
                return time.monotonic() - started
    except TimeoutError:
        return None
    except OSError:
        return time.monotonic() - started


def test_slow_clients_do_not_stall_healthz(server: LiveServer) -> None:
    """The attack of the report: 8 trickling heads over TLS and 16 stalled ClientHellos, against
    8 request threads in all. /healthz stays answered, and in about the time it normally takes."""
    normal = min(healthz_seconds(server) for _ in range(3))
    slow = Tricklers(server, 48)
    try:
        time.sleep(0.5)
        during = [healthz_seconds(server) for _ in range(5)]
    finally:
        slow.close()
    assert max(during) < max(1.0, 20 * normal), (normal, during)


def test_a_stalled_client_hello_is_dropped_at_the_deadline(tmp_path: Path) -> None:
    with live_server(tmp_path, "--request-timeout", "1.5", workers=1) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        raw.sendall(CLIENT_HELLO_START)
        try:
            seconds = closed_by_server(raw, within=8)
        finally:
            raw.close()
        assert seconds is not None and 1.0 <= seconds < 5, seconds


def test_a_trickling_head_is_dropped_at_the_deadline_from_accept(tmp_path: Path) -> None:
    """A byte every 0.1 s keeps every single read short: only a deadline on the whole request ends it."""
    with live_server(tmp_path, "--request-timeout", "1.5", workers=1) as srv:
        started = time.monotonic()
        sock = tls(srv)
        closed = None
        try:
            for i in range(len(HEAD)):
                try:
                    sock.sendall(HEAD[i:i + 1])
                    sock.settimeout(0.1)
                    if sock.recv(4096) == b"":
                        closed = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = time.monotonic() - started
                    break
        finally:
            sock.close()
        assert closed is not None and 1.0 <= closed < 5, closed


def test_at_the_connection_bound_the_oldest_unfinished_connection_makes_room(tmp_path: Path) -> None:
    with live_server(tmp_path, "--max-connections", "8", workers=1) as srv:
        stalled = []
        try:
            for _ in range(8):
                raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                raw.sendall(CLIENT_HELLO_START)
                stalled.append(raw)
            time.sleep(0.3)  # all accepted
            # a new connection is served: the oldest stalled one went to make room for it
            assert healthz_seconds(srv) < 5
            assert closed_by_server(stalled[0], within=3) is not None
            assert closed_by_server(stalled[-1], within=0.3) is None  # the newest is still held
        finally:
            for raw in stalled:
                raw.close()


def serial_latencies(srv: LiveServer, seconds: float) -> list[float]:
    """The API server's pattern: one keep-alive connection, the next request when the answer is in."""
    sock = tls(srv)
    request = HEAD + BODY
    out = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                data += chunk
            out.append(time.perf_counter() - started)
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
    finally:
        sock.close()
    return out


def test_64_slow_clients_keep_api_server_latency_within_2x(server: LiveServer) -> None:
    """Blocks without and with 64 slow clients connected, A B B A; medians of each side."""
    quiet: list[float] = []
    loaded: list[float] = []
    serial_latencies(server, 0.3)  # warm up
    for side in (quiet, loaded, loaded, quiet):
        if side is loaded:
            slow = Tricklers(server, 64, every=0.1)
            time.sleep(0.3)
            try:
                side.extend(serial_latencies(server, 1.0))
                assert slow.dropped == 0  # they were connected all along
            finally:
                slow.close()
        else:
            side.extend(serial_latencies(server, 1.0))
    ratio = statistics.median(loaded) / statistics.median(quiet)
    assert ratio < 2.0, (ratio, statistics.median(quiet), statistics.median(loaded))


def exchange(sock: ssl.SSLSocket, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` while reading the answer, until the server closes, in one thread.

    The server may answer and close before the whole request is sent, so the answer must be read
    while sending. One thread does both: an SSL socket must not be read in one thread while
    another writes to it (OpenSSL's state is not safe for that: the read then sees a false EOF).
    """
    sock.setblocking(False)
    answer = bytearray()
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while time.monotonic() < deadline:
            try:
                while True:  # what OpenSSL holds already is not seen by select: read until it would block
                    got = sock.recv(65536)
                    if not got:
                        return bytes(answer)
                    answer += got
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            except OSError:
                return bytes(answer)
            if view:
                try:
                    view = view[sock.send(view):]
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except OSError:
                    view = view[:0]  # the server answered and closed before the rest was sent
                if not view:
                    sel.modify(sock, selectors.EVENT_READ)
            sel.select(max(0.0, deadline - time.monotonic()))
    raise AssertionError(f"the server neither answered nor closed within {timeout} s: {bytes(answer[:200])!r}")


CHUNKED = (b"POST /validate HTTP/1.1\r\nHost: podgate\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("body", [
    pytest.param(b"zz\r\n{}\r\n0\r\n\r\n", id="size-not-hex"),
    pytest.param(b"-5\r\n{}\r\n0\r\n\r\n", id="negative-size"),
    pytest.param(b"2\r\n{}XX0\r\n\r\n", id="data-without-crlf"),
    pytest.param(b"2;" + b"e" * 100_000 + b"\r\n{}\r\n0\r\n\r\n", id="100kB-extension"),
    pytest.param(b"2\r\n{}\r\n0\r\nbad trailer\r\n\r\n", id="bad-trailer"),
])
def test_a_malformed_chunked_body_is_a_400_with_the_reason(server: LiveServer, body: bytes) -> None:
    with tls(server) as sock:
        data = exchange(sock, CHUNKED + body)
    head, _, answer = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), data[:300]
    assert b"malformed request body" in answer, answer
    assert "Traceback" not in server.output()

