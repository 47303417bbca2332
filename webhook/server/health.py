"""An optional plaintext port for the kubelet's probes and Prometheus: GET /healthz, /readyz, /metrics.

With ``--client-ca`` the TLS port takes only clients with a certificate from the API server's
CA, and the kubelet's probes have none. ``--health-bind`` opens a second, plaintext listener
that serves nothing but those GET endpoints (no admission request is ever read there). Every
gunicorn worker listens on it with SO_REUSEPORT, so a probe reaches some worker and reports that
worker's readiness, through the same Flask views as the TLS port.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class _HealthServer(ThreadingHTTPServer):
    allow_reuse_port = True  # one listener per worker on the same port
    daemon_threads = True


def serve(app: Any, bind: str) -> ThreadingHTTPServer:
    """Start the listener in a daemon thread of this process; returns the server."""
    host, _, port = bind.rpartition(":")
    client = app.test_client()
    lock = threading.Lock()  # the test client is not meant for concurrent use

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path not in PATHS:
                self.send_error(404, "only /healthz, /readyz and /metrics are served on this port")
                return
            with lock:
                resp = client.get(path)
                body = resp.get_data()
            self.send_response(resp.status_code)
            self.send_header("Content-Type", resp.headers.get("Content-Type", "text/plain"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
            pass

    server = _HealthServer((host.strip("[]"), int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
