"""A few long-lived connections are spread over every worker (a real gunicorn over TLS)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from webhook.server.worker import FREE, ConnectionTable

from .live_server import live_server


def sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def held_open(port: int) -> int:
    """TCP connections to ``port`` that the server side still holds open (established, or closed
    by the client and not yet noticed by the worker)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            count += int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08")  # ESTABLISHED, CLOSE_WAIT
    return count


def workers(master: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == master:
                out.append(int(entry))
    return sorted(out)


def test_table_lets_only_workers_at_or_below_the_average_accept() -> None:
    table = ConnectionTable(4)
    a, b = table.claim(set()), table.claim({0})
    assert (a, b) == (0, 1)
    assert table.fair(a) and table.fair(b)
    table.set(a, 1)
    assert not table.fair(a) and table.fair(b)  # 1 vs 0: only b may take the next one
    table.set(b, 1)
    assert table.fair(a) and table.fair(b)
    table.set(a, 3)
    table.release(b)  # b died: a is the only live worker, whatever it holds
    assert table.fair(a)
    assert table.claim({a}) == 1
    assert FREE < 0


@pytest.mark.parametrize("connections", [2, 4])
def test_connections_opened_together_land_evenly(tmp_path: Path, connections: int) -> None:
    with live_server(tmp_path, workers=2) as server:
        pids = workers(server.process.pid)
        assert len(pids) == 2
        port = server.port
        # the readiness check's connection is closed; its worker must have noticed (until then it
        # counts as one of that worker's connections, and it may drop out of the count below)
        deadline = time.monotonic() + 30
        while held_open(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held_open(port) == 0, "the readiness check's connection is still held"
        before = [sockets(p) for p in pids]
        context = ssl.create_default_context(cafile=str(server.ca))
        opened: list[ssl.SSLSocket] = []
        lock = threading.Lock()

        def connect() -> None:
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                      server_hostname="localhost")
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")  # accepted and served: counted by now
            with lock:
                opened.append(tls)

        threads = [threading.Thread(target=connect) for _ in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        try:
            assert len(opened) == connections
            held = [sockets(p) - b for p, b in zip(pids, before, strict=True)]
            assert held == [connections // 2] * 2, held
        finally:
            for tls in opened:
                tls.close()
