"""What ``podgate audit`` reads from (and writes to) a live cluster, through the kubernetes client.

Objects are read as JSON (``_preload_content=False``), not as the client's model classes: turning
every Pod into those objects costs more than evaluating it, and podgate's core reads plain
mappings anyway. Lists are paged (``limit``/``continue``) so that memory is bounded by a page;
a continue token that expired (410 Gone, after etcd compaction) restarts the list, skipping what
was already read (kube-apiserver lists a namespace's objects in name order). A server error or
throttling (5xx, 429) or a connection that fails is retried with backoff, then ends the audit;
an RBAC refusal ends it at once, naming the verb and resource to grant.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import PodgateError

MAX_LIST_RESTARTS = 5
MAX_CACHED_OWNERS = 4096
POLICY_REPORTS = ("wgpolicyk8s.io", "v1alpha2", "policyreports")


class ClusterError(PodgateError):
    """The audit cannot go on: the API is unreachable, refuses, or keeps failing (exit 2)."""


class NotFound(Exception):
    """404 from the API server; ``kind`` is what the Status says was missing (``namespaces``...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Conflict(Exception):
    """409 from the API server: AlreadyExists on create, a stale resourceVersion on update."""


@dataclass(frozen=True)
class Owner:
    """The workload a Pod belongs to, as far up its controller chain as still exists."""

    kind: str
    name: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


def _status_message(exc: Any) -> str:
    try:
        body = orjson.loads(exc.body or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else f"HTTP {exc.status} {exc.reason or ''}".strip()


def _status_kind(exc: Any) -> str:
    try:
        body = orjson.loads(exc.body or b"{}")
        return str(body.get("details", {}).get("kind", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _resource_name(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def _controller(refs: Any) -> Mapping[str, Any] | None:
    """The ownerReference marked controller (else the only one), if it names a kind and a name."""
    if not isinstance(refs, list):
        return None
    refs = [r for r in refs if isinstance(r, dict) and isinstance(r.get("kind"), str)
            and isinstance(r.get("name"), str)]
    chosen = next((r for r in refs if r.get("controller") is True), refs[0] if len(refs) == 1 else None)
    return chosen


class Cluster:
    """Paged, retried reads of a cluster's API, with the error a person can act on."""

    def __init__(self, api_client: Any, *, page_size: int = 500, retries: int = 4, backoff: float = 0.5,
                 timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> None:
        from kubernetes import client

        self.host = api_client.configuration.host
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.page_size = page_size
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.sleep = sleep
        self.list_restarts = 0
        self._owners: OrderedDict[tuple[str, str, str, str], Mapping[str, Any] | None | bool] = OrderedDict()
        # (group, kind) -> (resource, read function) for the kinds whose owners podgate follows
        self._readers: dict[tuple[str, str], tuple[str, Callable[..., Any]]] = {
            ("apps", "ReplicaSet"): ("replicasets", self.apps.read_namespaced_replica_set),
            ("apps", "Deployment"): ("deployments", self.apps.read_namespaced_deployment),
            ("apps", "StatefulSet"): ("statefulsets", self.apps.read_namespaced_stateful_set),
            ("apps", "DaemonSet"): ("daemonsets", self.apps.read_namespaced_daemon_set),
            ("batch", "Job"): ("jobs", self.batch.read_namespaced_job),
            ("batch", "CronJob"): ("cronjobs", self.batch.read_namespaced_cron_job),
            ("", "ReplicationController"): ("replicationcontrollers",
                                            self.core.read_namespaced_replication_controller),
        }

    # --- one call ---------------------------------------------------------------------------

    def call(self, verb: str, resource: str, group: str, namespace: str | None, fn: Callable[..., Any],
             *args: Any, **kwargs: Any) -> Any:
        """One API call, retried on 5xx/429 and connection failures; the decoded JSON answer.

        Raises ClusterError (give up: exit 2), NotFound (404), Conflict (409), or the client's
        ApiException for anything else the caller handles (410)."""
        from kubernetes.client.exceptions import ApiException

        what = _resource_name(resource, group)
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        for attempt in range(self.retries + 1):
            try:
                answer = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
                data = answer.data
            except ApiException as exc:
                if exc.status == 403:
                    raise ClusterError(f"cannot {verb} {what} {scope}: add {verb} on {what} to podgate's "
                                       f"(Cluster)Role ({_status_message(exc)})") from None
                if exc.status == 401:
                    raise ClusterError(f"the API server at {self.host} refused podgate's credentials "
                                       f"(401 Unauthorized): {_status_message(exc)}") from None
                if exc.status == 404:
                    raise NotFound(_status_kind(exc), _status_message(exc)) from None
                if exc.status == 409:
                    raise Conflict(_status_message(exc)) from None
                if (exc.status >= 500 or exc.status == 429) and attempt < self.retries:
                    self.sleep(self.backoff * 2 ** attempt)
                    continue
                if exc.status >= 500 or exc.status == 429:
                    raise ClusterError(f"cannot {verb} {what} {scope}: the API server answered HTTP {exc.status} "
                                       f"{attempt + 1} times ({_status_message(exc)})") from None
                raise
            except Exception as exc:  # connection refused, DNS, TLS, timeout: the API is unreachable
                if attempt < self.retries:
                    self.sleep(self.backoff * 2 ** attempt)
                    continue
                why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise ClusterError(f"cannot reach the API server at {self.host} to {verb} {what} "
                                   f"({attempt + 1} attempts): {why}") from None
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                raise ClusterError(f"the API server at {self.host} answered {verb} {what} {scope} with something "
                                   f"that is not JSON") from None
        raise AssertionError("unreachable")

    # --- lists ------------------------------------------------------------------------------

    def pages(self, verb: str, resource: str, group: str, namespace: str | None, fn: Callable[..., Any],
              *args: Any, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
        """The items of a list, a page at a time; a 410 Gone restarts the list without the items
        already given (by key: namespace, name)."""
        from kubernetes.client.exceptions import ApiException

        token: str | None = None
        last: tuple[str, str] | None = None
        while True:
            try:
                body = self.call(verb, resource, group, namespace, fn, *args, limit=self.page_size,
                                 _continue=token, **kwargs)
            except ApiException as exc:
                if exc.status == 410 and token and self.list_restarts < MAX_LIST_RESTARTS:
                    self.list_restarts += 1
                    token = None
                    continue
                raise ClusterError(f"cannot {verb} {_resource_name(resource, group)}: HTTP {exc.status} "
                                   f"({_status_message(exc)})") from None
            items = [i for i in body.get("items") or () if isinstance(i, dict)]
            if last is not None:
                items = [i for i in items if _key(i) > last]
            if items:
                last = _key(items[-1])
                yield items
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return

    def namespaces(self) -> Iterator[dict[str, Any]]:
        for page in self.pages("list", "namespaces", "", None, self.core.list_namespace):
            yield from page

    def namespace(self, name: str) -> dict[str, Any] | None:
        try:
            return self.call("get", "namespaces", "", None, self.core.read_namespace, name)
        except NotFound:
            return None

    def pods(self, namespace: str) -> Iterator[list[dict[str, Any]]]:
        return self.pages("list", "pods", "", namespace, self.core.list_namespaced_pod, namespace)

    # --- owners -----------------------------------------------------------------------------

    def owner(self, namespace: str, refs: Any) -> Owner | None:
        """The top of a Pod's controller chain that still exists (ReplicaSet -> Deployment, Job ->
        CronJob); None when the Pod has no controller or its controller is gone. Kinds podgate
        does not know (custom controllers) are taken as the reference names them."""
        found: Owner | None = None
        ref = _controller(refs)
        for _ in range(4):  # Pod -> ReplicaSet -> Deployment: no real chain is longer
            if ref is None:
                break
            group = ref.get("apiVersion", "").rpartition("/")[0] if "/" in ref.get("apiVersion", "") else ""
            kind, name = ref["kind"], ref["name"]
            if (group, kind) not in self._readers:
                return Owner(kind, name)
            parent = self._owner_refs(group, kind, namespace, name)
            if parent is False:
                break  # gone: the last one that exists is the owner
            found = Owner(kind, name)
            ref = parent if isinstance(parent, Mapping) else None
        return found

    def _owner_refs(self, group: str, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None | bool:
        """The controller reference of an owner (None: it has none), False if it does not exist."""
        key = (group, kind, namespace, name)
        if key in self._owners:
            self._owners.move_to_end(key)
            return self._owners[key]
        resource, read = self._readers[(group, kind)]
        try:
            obj = self.call("get", resource, group, namespace, read, name, namespace)
            found: Mapping[str, Any] | None | bool = _controller((obj.get("metadata") or {}).get("ownerReferences"))
        except NotFound:
            found = False
        self._owners[key] = found
        if len(self._owners) > MAX_CACHED_OWNERS:
            self._owners.popitem(last=False)
        return found

    # --- PolicyReports ----------------------------------------------------------------------

    def policy_reports(self, namespace: str | None, label_selector: str) -> Iterator[dict[str, Any]]:
        group, version, plural = POLICY_REPORTS
        try:
            if namespace is None:
                pages = self.pages("list", plural, group, None, self.custom.list_cluster_custom_object,
                                   group, version, plural, label_selector=label_selector)
            else:
                pages = self.pages("list", plural, group, namespace, self.custom.list_namespaced_custom_object,
                                   group, version, namespace, plural, label_selector=label_selector)
            for page in pages:
                yield from page
        except NotFound:
            raise ClusterError(f"the API server at {self.host} has no PolicyReport resource ({group}/{version}): "
                               f"install the CRD (the chart's policyReports.installCRD=true, or Kyverno's or "
                               f"Kubewarden's), or audit without --write-reports") from None

    def get_report(self, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = POLICY_REPORTS
        try:
            return self.call("get", plural, group, namespace, self.custom.get_namespaced_custom_object,
                             group, version, namespace, plural, name)
        except NotFound:
            return None

    def create_report(self, namespace: str, report: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = POLICY_REPORTS
        return self.call("create", plural, group, namespace, self.custom.create_namespaced_custom_object,
                         group, version, namespace, plural, report)

    def update_report(self, namespace: str, report: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = POLICY_REPORTS
        return self.call("update", plural, group, namespace, self.custom.replace_namespaced_custom_object,
                         group, version, namespace, plural, report["metadata"]["name"], report)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
