"""Start a real ``podgate serve`` (gunicorn over TLS on 127.0.0.1) for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests


# podgate's own announcement (after it bound), or gunicorn's line (absent above --log-level info)
LISTENING = re.compile(r"(?:Listening at: |listening on )https?://127\.0\.0\.1:(\d+) ")


@contextmanager
def reserved_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing else can take while the block runs, for a listener that
    binds it with SO_REUSEPORT (the health port). A port found free and released before the
    server binds it can be taken in between, by any program's outgoing connection."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))  # bound, never listening: it takes no connection
        yield s.getsockname()[1]


def listening_port(log: str) -> int | None:
    """The port gunicorn bound for ``--bind 127.0.0.1:0``, from its log (None: not yet)."""
    found = LISTENING.search(log)
    return int(found[1]) if found else None


@dataclass
class LiveServer:
    process: subprocess.Popen[bytes]
    url: str
    ca: Path
    cert_dir: Path
    log: Path
    client_cert: tuple[str, str] | None = None  # (cert, key) presented to a server run with --client-ca

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        s.verify = str(self.ca)
        s.cert = self.client_cert
        return s

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def live_server(tmp: Path, *args: str, env: dict[str, str] | None = None, workers: int = 2,
                timeout: float = 90.0, client_cert: tuple[str, str] | None = None) -> Iterator[LiveServer]:
    """Run ``podgate serve`` with a fresh self-signed certificate until the block ends.

    The server binds port 0, so the kernel picks a port no one holds, and tells its port in its
    log. The readiness drain is off (``--drain-seconds 0``) unless ``args`` sets it: tests stop servers
    with SIGTERM and should not wait for it. ``timeout`` is for a loaded machine: a server that
    imports the Kubernetes client takes seconds to start there.
    """
    cert_dir = tmp / "certs"
    fd, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=tmp)
    log = Path(name)
    cmd: Sequence[str] = [sys.executable, "-m", "webhook.cli", "serve", "--bind", "127.0.0.1:0",
                          "--cert-dir", str(cert_dir), "--workers", str(workers), "--drain-seconds", "0", *args]
    with open(fd, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)
    server = LiveServer(process, "", cert_dir / "ca.crt", cert_dir, log, client_cert)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"podgate serve exited with {process.returncode}:\n{server.output()}")
            if not server.url and (port := listening_port(server.output())):
                server.url = f"https://127.0.0.1:{port}"
            try:
                if server.url and server.session().get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"podgate serve not ready after {timeout}s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (master and workers), SIGKILL if it does not go."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
