"""Certificates for tests that run the real server (``tests/live_server.py``) with their own CA."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import trustme


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


def trust(tmp: Path, ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting ``ca``; also where ``live_server`` looks for the CA it checks readiness with."""
    (tmp / "certs").mkdir(exist_ok=True)
    ca.cert_pem.write_to_path(str(tmp / "certs" / "ca.crt"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def workers(pid: int) -> set[int]:
    """PIDs of a gunicorn master's workers (its children)."""
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
