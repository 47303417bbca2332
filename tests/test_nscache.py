"""The namespace-label cache against an API server stand-in over real HTTP with the real client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from webhook.admission import Context, review
from webhook.server.nscache import NamespaceCache, NamespaceUnavailable, api_client

from .conftest import review_for
from .live_server import live_server
from .stand_in_apiserver import StandInAPIServer
from .test_rules import ctr, pod


@pytest.fixture
def apiserver() -> Iterator[StandInAPIServer]:
    api = StandInAPIServer().start()
    api.set("default", {"kubernetes.io/metadata.name": "default"})
    api.set("shop", {"podgate.io/mesh": "enabled"})
    yield api
    api.stop()


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``check``; the deadline is only for a failing test (a loaded machine may be slow)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def make_cache(api: StandInAPIServer, **kwargs: object) -> NamespaceCache:
    events: list[str] = []
    # a stopped stand-in refuses connections at once, so no test waits for the fetch timeout;
    # a short one would only fail a direct fetch that a loaded machine answers slowly
    cache = NamespaceCache(api_client(api.url), resync=2, backoff=0.1, fetch_timeout=10,
                           count=events.append, **kwargs)  # type: ignore[arg-type]
    cache.events = events  # type: ignore[attr-defined]
    return cache


def test_lists_then_follows_the_watch(apiserver: StandInAPIServer) -> None:
    cache = make_cache(apiserver)
    assert cache.status()[0] is False  # not ready before the first list
    cache.start()
    try:
        assert cache.wait_synced(30)
        assert cache("shop") == {"podgate.io/mesh": "enabled"}
        apiserver.set("shop", {"podgate.io/mesh": "disabled"})
        apiserver.set("new", {"team": "x"})
        assert eventually(lambda: cache("shop") == {"podgate.io/mesh": "disabled"})
        assert eventually(lambda: cache._labels.get("new") == {"team": "x"})
        apiserver.delete("new")
        assert eventually(lambda: "new" not in cache._labels)
        assert "watch_event" in cache.events  # type: ignore[attr-defined]  # followed, not relisted
        assert cache.status() == (True, "namespace cache synced (2 namespaces)")
    finally:
        cache.stop()


def test_relists_after_410_gone(apiserver: StandInAPIServer) -> None:
    cache = make_cache(apiserver)
    cache.start()
    try:
        assert cache.wait_synced(30)
        lists = sum(1 for e in cache.events if e == "list")  # type: ignore[attr-defined]
        apiserver.expire()
        apiserver.set("after", {"a": "b"})
        assert eventually(lambda: cache._labels.get("after") == {"a": "b"})
        assert "expired" in cache.events  # type: ignore[attr-defined]
        assert sum(1 for e in cache.events if e == "list") > lists  # type: ignore[attr-defined]
    finally:
        cache.stop()


def test_cache_miss_is_fetched_directly(apiserver: StandInAPIServer) -> None:
    cache = make_cache(apiserver)  # never started: every lookup is a miss
    assert cache("shop") == {"podgate.io/mesh": "enabled"}
    assert cache("missing") is None  # 404: the API server will reject the Pod itself
    assert any(path.startswith("/api/v1/namespaces/shop") for path in apiserver.requests)


def test_unreachable_api_keeps_last_known_labels_and_applies_the_fallback(apiserver: StandInAPIServer) -> None:
    cache = make_cache(apiserver)
    cache.start()
    try:
        assert cache.wait_synced(30)
        apiserver.stop()
        assert eventually(lambda: not cache.synced)
        ready, text = cache.status()
        assert ready and text.startswith("namespace cache stale (serving last known labels)")
        assert cache("shop") == {"podgate.io/mesh": "enabled"}  # still served
        with pytest.raises(NamespaceUnavailable, match='namespace "brand-new"'):
            cache("brand-new")
    finally:
        cache.stop()
    lenient = make_cache(apiserver, on_unavailable="no-labels")
    assert lenient("brand-new") is None


def test_a_denial_the_user_can_retry_when_labels_are_unknown(apiserver: StandInAPIServer,
                                                            default_policies: object) -> None:
    cache = make_cache(apiserver)
    apiserver.stop()
    outcome = review(review_for(pod(ctr("app")), namespace="brand-new"), "mutate",
                     Context(default_policies, cache))  # type: ignore[arg-type]
    assert outcome.response is not None
    answer = outcome.response["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 503
    assert "retry in a moment" in answer["status"]["message"]


def test_served_mutation_uses_labels_from_the_api(apiserver: StandInAPIServer, tmp_path: Path) -> None:
    """podgate serve --kube-api URL: /readyz waits for the first sync; injection follows the labels."""
    import json

    with live_server(tmp_path, "--kube-api", apiserver.url) as server:
        session = server.session()
        assert session.get(f"{server.url}/readyz").text.startswith("namespace cache synced")
        for namespace, injected in (("shop", True), ("default", False)):
            body = review_for(pod(ctr("app")), namespace=namespace)
            answer = session.post(f"{server.url}/mutate", data=json.dumps(body),
                                  headers={"Content-Type": "application/json"}).json()["response"]
            assert ("patch" in answer) is injected, namespace
        metrics = session.get(f"{server.url}/metrics").text
        assert "podgate_namespace_cache_synced 1.0" in metrics
