"""Run the real server (``podgate serve``: gunicorn, gthread, TLS) on a free local port for a test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

PODGATE = Path(sys.executable).with_name("podgate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """PIDs of the gunicorn workers (the master's children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()]


def write_cert(ca: trustme.CA, cert: Path, key: Path, gap: float = 0.0) -> trustme.LeafCert:
    """Issue a serving certificate for 127.0.0.1 and write it as a rotation would: key, then cert,
    each replaced by a rename (readers never see half a file, but for ``gap`` seconds they see the
    new key with the old certificate)."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    for path, pem in ((key, leaf.private_key_pem.bytes()), (cert, leaf.cert_chain_pems[0].bytes())):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, path)
        if gap and path == key:
            time.sleep(gap)
    return leaf


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@contextlib.contextmanager
def serve(tmp: Path, cert: Path, key: Path, *args: str, env: dict[str, str] | None = None,
          ca: trustme.CA, ready_timeout: float = 20.0) -> Iterator[Server]:
    """Start ``podgate serve`` and stop it (SIGTERM, then SIGKILL) whatever the test does."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    command = [str(PODGATE), "serve", "--bind", f"127.0.0.1:{port}", "--cert", str(cert), "--key", str(key),
               "--reload-interval", "0", *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(process, port, log)
    try:
        _wait_ready(server, client_context(ca), ready_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: Server, context: ssl.SSLContext, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"podgate serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if tls.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"podgate serve not ready after {timeout}s:\n{server.log.read_text()}")
