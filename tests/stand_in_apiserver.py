"""A stand-in for the namespaces endpoints of kube-apiserver, over real HTTP, for the watch cache.

No kube-apiserver binary installs here, so this serves the part of the API the cache uses:
list (with a resourceVersion), watch (a stream of JSON event lines, ending at timeoutSeconds or
with a 410 ERROR event when told to expire watches), and get. The real ``kubernetes`` client
talks to it unchanged. Like kube-apiserver, a watch is sent with chunked transfer coding, one
chunk per event: a client reads each event as it comes (a body that ends only when the
connection closes would be read whole, so events would arrive only when the watch ends).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class StandInAPIServer:
    def __init__(self) -> None:
        self.version = 1
        self.namespaces: dict[str, dict[str, str]] = {}
        self.events: list[tuple[int, str, str, dict[str, str]]] = []  # (rv, type, name, labels)
        self.cond = threading.Condition()
        self.expire_watches = False
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInAPIServer:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.expire_watches = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def set(self, name: str, labels: dict[str, str], kind: str | None = None) -> None:
        with self.cond:
            self.version += 1
            kind = kind or ("MODIFIED" if name in self.namespaces else "ADDED")
            self.namespaces[name] = labels
            self.events.append((self.version, kind, name, labels))
            self.cond.notify_all()

    def delete(self, name: str) -> None:
        with self.cond:
            self.version += 1
            labels = self.namespaces.pop(name)
            self.events.append((self.version, "DELETED", name, labels))
            self.cond.notify_all()

    def expire(self) -> None:
        """End every open watch with 410 Gone and forget old events, as etcd compaction does."""
        with self.cond:
            self.expire_watches = True
            self.events.clear()
            self.cond.notify_all()

    def _object(self, name: str, labels: dict[str, str], version: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels, "resourceVersion": str(version)},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")  # once stopped, no kept-alive connection answers
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append(self.path)
                parts = url.path.strip("/").split("/")
                if parts[:3] != ["api", "v1", "namespaces"]:
                    self._json(404, {"kind": "Status", "code": 404})
                    return
                if len(parts) == 4:
                    with api.cond:
                        labels = api.namespaces.get(parts[3])
                        version = api.version
                    if labels is None:
                        self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "NotFound", "code": 404})
                    else:
                        self._json(200, api._object(parts[3], labels, version))
                    return
                if query.get("watch") in ("true", "1"):
                    self._watch(int(query.get("resourceVersion") or 0), float(query.get("timeoutSeconds") or 30))
                    return
                with api.cond:
                    items = [api._object(n, lab, api.version) for n, lab in sorted(api.namespaces.items())]
                    api.expire_watches = False
                    self._json(200, {"apiVersion": "v1", "kind": "NamespaceList",
                                     "metadata": {"resourceVersion": str(api.version)}, "items": items})

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def _watch(self, since: int, timeout: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self._events(since, timeout)
                    self._chunk(b"")  # the last chunk: the watch ended
                except OSError:
                    pass  # the client went away

            def _events(self, since: int, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                sent = since
                while time.monotonic() < deadline:
                    with api.cond:
                        if api.expire_watches:
                            line = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                                                                "status": "Failure", "reason": "Expired",
                                                                "message": "too old resource version", "code": 410}}
                            self._chunk((json.dumps(line) + "\n").encode())
                            return
                        pending = [e for e in api.events if e[0] > sent]
                        if not pending:
                            api.cond.wait(timeout=0.1)
                            continue
                    for version, kind, name, labels in pending:
                        self._chunk((json.dumps({"type": kind, "object": api._object(name, labels, version)})
                                     + "\n").encode())
                        sent = version

        return Handler
