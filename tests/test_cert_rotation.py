"""A rotated serving certificate is used by new connections without a restart, and no request fails.

gthread workers build the TLS context for every new connection, so replacing the files is
enough. The test rotates twice under load: the way the kubelet updates a Secret volume (one
atomic swap of the ``..data`` symlink), and the way a file-writing tool does it (key, then
certificate, each renamed into place; in between the two files do not match).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import trustme
from cryptography import x509

from .conftest import recorded
from .live_server import live_server
from .serving import trust, write_cert

BODY = json.dumps(recorded("0004_validate_CREATE")).encode()
HEADERS = {"Content-Type": "application/json"}


def kubelet_volume(root: Path, ca: trustme.CA, generation: int) -> None:
    """Lay out ``root`` like a Secret volume and point ``..data`` at a new generation atomically."""
    target = root / f"..gen{generation}"
    target.mkdir()
    write_cert(ca, target / "tls.crt", target / "tls.key")
    link = root / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, root / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial(ca_leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(ca_leaf.cert_chain_pems[0].bytes()).serial_number


def test_rotation_under_load_fails_no_request(tmp_path):
    cas = [trustme.CA() for _ in range(3)]
    context = trust(tmp_path, cas[0])
    for ca in cas[1:]:  # the client trusts every generation, like a caBundle listing old and new CA
        ca.configure_trust(context)
    volume = tmp_path / "tls"
    volume.mkdir()
    kubelet_volume(volume, cas[0], 0)
    cert, key = volume / "tls.crt", volume / "tls.key"

    failures: list[str] = []
    done = threading.Event()
    sent = [0]
    lock = threading.Lock()

    with live_server(tmp_path, "--cert", str(cert), "--key", str(key), "--threads", "4",
                     "--drain-seconds", "0") as server:
        port = int(server.url.rsplit(":", 1)[1])
        kept = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        kept.request("POST", "/validate", BODY, HEADERS)  # a keep-alive connection from before
        assert kept.getresponse().read() and kept.sock is not None
        old_serial = x509.load_der_x509_certificate(kept.sock.getpeercert(binary_form=True)).serial_number

        def hammer() -> None:
            deadline = time.monotonic() + 300  # a safety net: the test sets done
            while not done.is_set() and time.monotonic() < deadline:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
                try:
                    conn.request("POST", "/validate", BODY, HEADERS)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        failures.append(f"HTTP {response.status}")
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                finally:
                    conn.close()
                with lock:
                    sent[0] += 1

        def more_requests(n: int) -> None:
            """Let the load run for ``n`` more requests (counted, not timed: a loaded machine is slow)."""
            target, deadline = sent[0] + n, time.monotonic() + 60
            while sent[0] < target:
                assert time.monotonic() < deadline and any(t.is_alive() for t in threads), "the load stopped"
                time.sleep(0.01)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            more_requests(10)
            kubelet_volume(volume, cas[1], 1)  # Secret volume update: one atomic swap
            second = _leaf_serial(volume / "tls.crt")
            _wait_for_serial(port, context, second)
            more_requests(6)
            # two renames, key first, 50 ms apart: new connections meanwhile find a mismatched pair
            third_leaf = write_cert(cas[2], cert, key, gap=0.05)
            _wait_for_serial(port, context, serial(third_leaf))
            more_requests(10)
        finally:
            done.set()
            for t in threads:
                t.join()

        kept.request("POST", "/validate", BODY, HEADERS)  # the old connection still works
        assert kept.getresponse().status == 200
        assert x509.load_der_x509_certificate(kept.sock.getpeercert(binary_form=True)).serial_number == old_serial
        kept.close()

    assert not failures, f"{len(failures)} of {sent[0]} requests failed: {failures[:5]}"


def _leaf_serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _wait_for_serial(port: int, context: ssl.SSLContext, wanted: int, timeout: float = 30.0) -> None:
    """New connections must present the new certificate (both workers: try several). Each
    connection builds its TLS context anew, so this takes one try; the deadline is for a loaded
    machine."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        seen = [served_serial(port, context) for _ in range(4)]
        if all(s == wanted for s in seen):
            return
        time.sleep(0.05)
    raise AssertionError(f"new connections still get serials {seen}, want {wanted}")
