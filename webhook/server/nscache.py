"""Namespace labels from the cluster: a list+watch cache kept by a background thread.

An AdmissionRequest does not carry the labels of the Pod's namespace, yet policies select meshed
namespaces by label. Asking the API server on every request would put its latency on every Pod
creation, so each worker keeps a cache: list all namespaces, then watch from that
resourceVersion; relist when the watch expires (410 Gone) and every ``resync`` seconds. A
namespace missing from the cache (created a moment ago) is fetched directly.

When the API server cannot be reached, the cache keeps serving the last labels it saw (a
namespace's labels rarely change) and says so in logs, metrics and /readyz. Only a namespace it
has never seen is a problem; ``on_unavailable`` decides: ``deny`` (default) answers such a request
with a denial the caller can retry, ``no-labels`` evaluates it as if the namespace had no labels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from ..errors import NamespaceUnavailable, WouldWait
from ..selectors import Labels

log = logging.getLogger("podgate.namespaces")

OnUnavailable = Literal["deny", "no-labels"]


def api_connection(source: str) -> Any:
    """A kubernetes ApiClient for ``in-cluster``, ``kubeconfig`` (``$KUBECONFIG`` or ~/.kube/config),
    or a plain URL such as ``kubectl proxy``'s http://127.0.0.1:8001: the one place a --kube-api
    value becomes a connection, for the server's namespace cache and for ``podgate audit``."""
    from kubernetes import client, config

    if source == "in-cluster":
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
    elif source == "kubeconfig":
        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
    else:
        configuration = client.Configuration()
        configuration.host = source
    return client.ApiClient(configuration)


def api_client(source: str) -> Any:
    """A CoreV1Api over ``api_connection(source)``."""
    from kubernetes import client

    return client.CoreV1Api(api_connection(source))


class NamespaceCache:
    """Callable as a NamespaceLabels lookup; ``start()`` begins the list+watch thread."""

    def __init__(self, api: Any, *, resync: float = 300.0, on_unavailable: OnUnavailable = "deny",
                 fetch_timeout: float = 2.0, backoff: float = 1.0,
                 report: Callable[[bool, int], None] | None = None,
                 count: Callable[[str], None] | None = None) -> None:
        self.api = api
        self.resync = resync
        self.on_unavailable = on_unavailable
        self.fetch_timeout = fetch_timeout
        self.backoff = backoff
        self._report = report or (lambda synced, size: None)
        self._count = count or (lambda event: None)
        self._labels: dict[str, Labels] = {}
        self.synced = False  # the last list or watch succeeded
        self.ever_synced = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lookups (request threads) ---------------------------------------------------------

    def __call__(self, namespace: str) -> Labels | None:
        labels = self._labels.get(namespace)
        if labels is not None:
            return labels
        return self._fetch(namespace)

    def cached(self, namespace: str) -> Labels | None:
        """The labels if the cache has them; WouldWait if they would have to be fetched."""
        labels = self._labels.get(namespace)
        if labels is None:
            raise WouldWait(f"labels of namespace {namespace!r} not cached")
        return labels

    def _fetch(self, namespace: str) -> Labels | None:
        from kubernetes.client.exceptions import ApiException

        try:
            ns = self.api.read_namespace(namespace, _request_timeout=self.fetch_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None  # the API server will refuse the Pod itself
            self._count("fetch_error")
            return self._unavailable(namespace, f"HTTP {exc.status} {exc.reason}")
        except Exception as exc:  # connection refused, timeout, TLS: the API is unreachable
            self._count("fetch_error")
            return self._unavailable(namespace, str(exc) or type(exc).__name__)
        self._count("fetch")
        labels = dict(ns.metadata.labels or {})
        self._labels = {**self._labels, namespace: labels}
        return labels

    def _unavailable(self, namespace: str, why: str) -> Labels | None:
        log.warning("labels of namespace %s unknown and the API server is unreachable: %s", namespace, why)
        if self.on_unavailable == "deny":
            raise NamespaceUnavailable(
                f'podgate cannot read the labels of namespace "{namespace}" from the API server ({why}); '
                "retry in a moment")
        return None

    # --- the watch thread ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._labels)

    def status(self) -> tuple[bool, str]:
        """For /readyz: (ready, text). Ready once the first list succeeded; stale is shown, not fatal."""
        if not self.ever_synced:
            return False, f"namespace cache not synced yet{': ' + self.last_error if self.last_error else ''}"
        if not self.synced:
            return True, f"namespace cache stale (serving last known labels): {self.last_error}"
        return True, f"namespace cache synced ({self.size} namespaces)"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="namespace-cache", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.synced and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.synced

    def _set_state(self, synced: bool, error: str | None = None) -> None:
        if synced and not self.synced:
            log.info("namespace cache synced: %d namespaces", self.size)
        elif not synced and (self.synced or error != self.last_error):
            log.error("namespace cache cannot reach the API server (serving last known labels): %s", error)
        self.synced = synced
        self.ever_synced = self.ever_synced or synced
        self.last_error = error
        self._report(synced, self.size)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                self._watch(version)
            except Exception as exc:
                self._count("error")
                self._set_state(False, _describe(exc))
                self._stop.wait(self.backoff)

    def _list(self) -> str:
        result = self.api.list_namespace(_request_timeout=max(self.fetch_timeout, 10.0))
        self._labels = {ns.metadata.name: dict(ns.metadata.labels or {}) for ns in result.items}
        self._count("list")
        self._set_state(True)
        return result.metadata.resource_version

    def _watch(self, version: str) -> None:
        """Apply watch events until the watch ends (resync) or fails (relist)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        stream = watch.Watch()
        try:
            for event in stream.stream(self.api.list_namespace, resource_version=version,
                                       timeout_seconds=int(self.resync), allow_watch_bookmarks=True):
                if self._stop.is_set():
                    return
                kind, ns = event["type"], event["object"]
                if kind == "BOOKMARK":
                    continue
                name = ns.metadata.name
                if kind == "DELETED":
                    self._labels = {k: v for k, v in self._labels.items() if k != name}
                else:
                    self._labels = {**self._labels, name: dict(ns.metadata.labels or {})}
                self._count("watch_event")
        except ApiException as exc:
            if exc.status != 410:
                raise
            self._count("expired")  # 410 Gone: our resourceVersion is too old; relist
        finally:
            stream.stop()


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status:
        return f"HTTP {status} {getattr(exc, 'reason', '')}".strip()
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
