"""A stand-in for the parts of kube-apiserver podgate uses, over real HTTP.

No kube-apiserver binary installs here, so this serves what the namespace cache and ``podgate
audit`` call, and the real ``kubernetes`` client talks to it unchanged:
- namespaces: list (with a resourceVersion), watch (a stream of JSON event lines, ending at
  timeoutSeconds or with a 410 ERROR event when told to expire watches), and get. Like
  kube-apiserver, a watch is sent with chunked transfer coding, one chunk per event: a client
  reads each event as it comes (a body that ends only when the connection closes would be read
  whole, so events would arrive only when the watch ends);
- Pods, ReplicationControllers, ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs,
  CronJobs and PolicyReports (wgpolicyk8s.io/v1alpha2): list (cluster-wide or in a namespace,
  sorted by namespace and name as etcd returns them, ``labelSelector`` with ``k=v`` terms,
  ``limit``/``continue`` pagination) and get; PolicyReports also create, update (optimistic:
  a stale resourceVersion is a 409 Conflict) and delete.
Faults, as a real API server produces them: a continue token that expired (410 Gone, as after
etcd compaction), a refusal by RBAC (403 with the Status kube-apiserver sends), server errors
(5xx) for the next N calls, a CRD that is not installed (404), a hook after each page served.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

# resource -> (API path prefix, kind)
RESOURCES: dict[str, tuple[str, str]] = {
    "pods": ("api/v1", "Pod"),
    "replicationcontrollers": ("api/v1", "ReplicationController"),
    "replicasets": ("apis/apps/v1", "ReplicaSet"),
    "deployments": ("apis/apps/v1", "Deployment"),
    "statefulsets": ("apis/apps/v1", "StatefulSet"),
    "daemonsets": ("apis/apps/v1", "DaemonSet"),
    "jobs": ("apis/batch/v1", "Job"),
    "cronjobs": ("apis/batch/v1", "CronJob"),
    "policyreports": ("apis/wgpolicyk8s.io/v1alpha2", "PolicyReport"),
}
WRITABLE = {"policyreports"}
GROUPS = {"api/v1": "", "apis/apps/v1": "apps", "apis/batch/v1": "batch",
          "apis/wgpolicyk8s.io/v1alpha2": "wgpolicyk8s.io"}


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


@dataclass
class Fault:
    """Answer the next ``times`` calls that match with ``code``."""

    verb: str
    resource: str
    code: int
    times: int


class StandInAPIServer:
    def __init__(self) -> None:
        self.version = 1
        self.namespaces: dict[str, dict[str, str]] = {}
        self.events: list[tuple[int, str, str, dict[str, str]]] = []  # (rv, type, name, labels)
        self.cond = threading.Condition()
        self.expire_watches = False
        self.requests: list[str] = []  # GET paths
        self.calls: list[tuple[str, str]] = []  # (method, path) of every call
        self.verbs: set[tuple[str, str, str]] = set()  # (verb, API group, resource) asked for, as RBAC sees them
        # resource -> {(namespace, name): object}
        self.store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in RESOURCES}
        self._sorted: dict[str, list[tuple[str, str]]] = {}
        self.forbidden: set[tuple[str, str, str | None]] = set()  # (verb, resource, namespace or None: any)
        self.faults: list[Fault] = []
        self.crd_installed = True
        self.expire_continue = 0  # the next N calls with a continue token get 410 Gone
        self.after_page: Callable[[str, int], None] | None = None  # (resource, pages served so far)
        self.pages = 0
        self.get_delay = 0.0  # seconds before a namespace get is answered (an API server under load)
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

    # --- namespaces (the watch cache's part) -----------------------------------------------

    def set(self, name: str, labels: dict[str, str], kind: str | None = None) -> None:
        with self.cond:
            self.version += 1
            kind = kind or ("MODIFIED" if name in self.namespaces else "ADDED")
            self.namespaces[name] = labels
            self.events.append((self.version, kind, name, labels))
            self.cond.notify_all()

    def delete(self, name: str) -> None:
        """Delete a namespace and, as the namespace controller does, everything in it."""
        with self.cond:
            self.version += 1
            labels = self.namespaces.pop(name)
            self.events.append((self.version, "DELETED", name, labels))
            for objects in self.store.values():
                for key in [k for k in objects if k[0] == name]:
                    del objects[key]
            self._sorted.clear()
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

    # --- other objects ----------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object (create or replace) as the API server would: with a uid and version."""
        prefix, kind = RESOURCES[resource]
        with self.cond:
            self.version += 1
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            meta.setdefault("uid", f"uid-{resource}-{meta['namespace']}-{meta['name']}")
            meta["resourceVersion"] = str(self.version)
            obj.setdefault("apiVersion", prefix.partition("/")[2] if prefix.startswith("apis/") else "v1")
            obj.setdefault("kind", kind)
            key = (meta["namespace"], meta["name"])
            if key not in self.store[resource]:
                self._sorted.pop(resource, None)
            self.store[resource][key] = obj
            return obj

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            return self.store[resource].get((namespace, name))

    def remove(self, resource: str, namespace: str, name: str) -> None:
        with self.cond:
            del self.store[resource][(namespace, name)]
            self._sorted.pop(resource, None)

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [o for (ns, _), o in sorted(self.store[resource].items()) if namespace in (None, ns)]

    def fail(self, verb: str, resource: str, code: int = 503, times: int = 1) -> None:
        with self.cond:
            self.faults.append(Fault(verb, resource, code, times))

    def _fault(self, verb: str, resource: str) -> int | None:
        with self.cond:
            for fault in self.faults:
                if fault.verb == verb and fault.resource == resource and fault.times > 0:
                    fault.times -= 1
                    return fault.code
        return None

    def _keys(self, resource: str) -> list[tuple[str, str]]:
        keys = self._sorted.get(resource)
        if keys is None:
            keys = self._sorted[resource] = sorted(self.store[resource])
        return keys

    def _list(self, resource: str, namespace: str | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One page of a list, as kube-apiserver pages it: ``continue`` carries the last key."""
        selector = [term.partition("=")[::2] for term in query.get("labelSelector", "").split(",") if term]
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self.cond:
            start: tuple[str, str] | None = None
            if token:
                if self.expire_continue:
                    self.expire_continue -= 1
                    return 410, status(410, "Expired", "The provided continue parameter is too old to display a "
                                                       "consistent list result. You can start a new list without "
                                                       "the continue parameter.")
                start = tuple(json.loads(base64.b64decode(token))["after"])  # type: ignore[assignment]
            items: list[dict[str, Any]] = []
            more = None
            for key in self._keys(resource):
                if namespace is not None and key[0] != namespace:
                    continue
                if start is not None and key <= start:
                    continue
                obj = self.store[resource][key]
                labels = obj["metadata"].get("labels") or {}
                if any(labels.get(k) != v for k, v in selector):
                    continue
                if limit and len(items) == limit:
                    more = base64.b64encode(json.dumps({"after": list(last)}).encode()).decode()
                    break
                items.append(obj)
                last = key
            prefix, kind = RESOURCES[resource]
            body = {"apiVersion": prefix.partition("/")[2] if prefix.startswith("apis/") else "v1",
                    "kind": f"{kind}List", "metadata": {"resourceVersion": str(self.version)}, "items": items}
            if more:
                body["metadata"]["continue"] = more
            self.pages += 1
            return 200, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = orjson.dumps(body)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")  # once stopped, no kept-alive connection answers
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._serve("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.calls.append((method, self.path))
                if method == "GET":
                    api.requests.append(self.path)
                parts = url.path.strip("/").split("/")
                if parts[:1] == ["api"] and len(parts) >= 2:
                    prefix, rest = "/".join(parts[:2]), parts[2:]
                elif parts[:1] == ["apis"] and len(parts) >= 3:
                    prefix, rest = "/".join(parts[:3]), parts[3:]
                else:
                    self._json(404, status(404, "NotFound", "the server could not find the requested resource"))
                    return
                if prefix == "api/v1" and rest[:1] == ["namespaces"] and len(rest) <= 2:
                    self._namespaces(method, rest[1] if len(rest) == 2 else None, query)
                    return
                namespace = name = None
                if rest[:1] == ["namespaces"] and len(rest) in (3, 4):
                    namespace, resource = rest[1], rest[2]
                    name = rest[3] if len(rest) == 4 else None
                elif len(rest) == 1:
                    resource = rest[0]
                else:
                    resource = ""
                if RESOURCES.get(resource, ("",))[0] != prefix or (resource == "policyreports"
                                                                   and not api.crd_installed):
                    self._json(404, status(404, "NotFound", "the server could not find the requested resource"))
                    return
                verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                        "DELETE": "delete"}[method]
                api.verbs.add((verb, GROUPS[prefix], resource))
                if (verb, resource, None) in api.forbidden or (verb, resource, namespace) in api.forbidden:
                    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
                    group = GROUPS[prefix]
                    self._json(403, status(
                        403, "Forbidden",
                        f'{resource}{"." + group if group else ""}{" " + repr(name) if name else ""} is forbidden: '
                        f'User "system:serviceaccount:podgate:podgate-audit" cannot {verb} resource "{resource}" '
                        f'in API group "{group}" {scope}', {"group": group, "kind": resource}))
                    return
                if (code := api._fault(verb, resource)) is not None:
                    self._json(code, status(code, "InternalError" if code == 500 else "ServiceUnavailable",
                                            f"stand-in fault: HTTP {code}"))
                    return
                if verb == "list":
                    code, body = api._list(resource, namespace, query)
                    self._json(code, body)
                    if code == 200 and api.after_page is not None:
                        api.after_page(resource, api.pages)
                    return
                assert namespace is not None
                if method == "GET":
                    obj = api.get(resource, namespace, name or "")
                    if obj is None:
                        self._not_found(resource, name or "")
                    else:
                        self._json(200, obj)
                    return
                if resource not in WRITABLE:
                    self._json(405, status(405, "MethodNotAllowed", "the stand-in does not write this resource"))
                    return
                self._write(method, resource, namespace, name)

            def _not_found(self, resource: str, name: str) -> None:
                self._json(404, status(404, "NotFound", f'{resource} "{name}" not found',
                                       {"name": name, "kind": resource}))

            def _write(self, method: str, resource: str, namespace: str, name: str | None) -> None:
                with api.cond:
                    if namespace not in api.namespaces:
                        self._json(404, status(404, "NotFound", f'namespaces "{namespace}" not found',
                                               {"name": namespace, "kind": "namespaces"}))
                        return
                    if method == "DELETE":
                        if api.get(resource, namespace, name or "") is None:
                            self._not_found(resource, name or "")
                        else:
                            api.remove(resource, namespace, name or "")
                            self._json(200, status(200, "", "deleted") | {"status": "Success"})
                        return
                    obj = self._body()
                    meta = obj.setdefault("metadata", {})
                    meta["namespace"] = namespace
                    current = api.get(resource, namespace, meta.get("name", ""))
                    if method == "POST":
                        if current is not None:
                            self._json(409, status(409, "AlreadyExists",
                                                   f'{resource} "{meta.get("name")}" already exists'))
                            return
                    else:
                        if current is None or meta.get("name") != name:
                            self._not_found(resource, name or "")
                            return
                        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
                            self._json(409, status(409, "Conflict", f'Operation cannot be fulfilled on {resource} '
                                                   f'"{name}": the object has been modified; please apply your '
                                                   f"changes to the latest version and try again"))
                            return
                        meta["uid"] = current["metadata"]["uid"]
                    stored = api.put(resource, obj)
                self._json(201 if method == "POST" else 200, stored)

            def _namespaces(self, method: str, name: str | None, query: dict[str, str]) -> None:
                if method != "GET":
                    self._json(405, status(405, "MethodNotAllowed", "read-only"))
                    return
                verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
                api.verbs.add((verb, "", "namespaces"))
                if (verb, "namespaces", None) in api.forbidden:
                    self._json(403, status(403, "Forbidden", f'namespaces is forbidden: User "x" cannot {verb} '
                                           f'resource "namespaces" in API group "" at the cluster scope'))
                    return
                if (code := api._fault(verb, "namespaces")) is not None:
                    self._json(code, status(code, "ServiceUnavailable", f"stand-in fault: HTTP {code}"))
                    return
                if name is not None:
                    time.sleep(api.get_delay)
                    with api.cond:
                        labels = api.namespaces.get(name)
                        version = api.version
                    if labels is None:
                        self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "NotFound", "code": 404})
                    else:
                        self._json(200, api._object(name, labels, version))
                    return
                if verb == "watch":
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
