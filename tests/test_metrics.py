"""/metrics: what each decision counts (in-process), and exact totals across real gunicorn workers."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from webhook.server import metrics
from webhook.server.app import create_app
from webhook.server.settings import Settings

from .conftest import APISERVER_REVIEWS, recorded, review_for
from .live_server import live_server
from .serving import trust, workers, write_cert
from .test_rules import PROXY, ctr, pod, port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse an exposition into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def client():
    app = create_app(Settings(reload_interval=0))
    return app.test_client()


def scrape(client) -> dict[Any, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_each_decision_is_counted_once_with_bounded_labels(client):
    before = scrape(client)
    dup = pod(ctr("app", port(8080)), ctr("metrics", port(8080)), ctr("x", port(9000, name="p")),
              ctr("y", port(9001, name="p")))
    meshed = pod(ctr("app", port(8080)), annotations={"podgate.io/inject": "true"})
    injected = pod(ctr("app", port(8080)), init=(PROXY,), annotations={"podgate.io/inject": "true"})
    host = pod(ctr("app", port(8080)), hostNetwork=True)
    calls = [
        ("/validate", review_for(dup)),                        # denied: port-collision deny, dup name warn
        ("/validate", review_for(dup, operation="DELETE")),    # allowed without looking
        ("/mutate", review_for(meshed)),                       # injected
        ("/mutate", review_for(injected)),                     # skipped: proxy present
        ("/mutate", review_for(host)),                         # skipped: host network
        ("/mutate", review_for(dup, namespace="kube-system")),  # skipped: exempt
        ("/validate", review_for({"spec": {"containers": "nope"}})),  # malformed object
    ]
    for path, body in calls:
        assert client.post(path, json=body).status_code == 200
    assert client.post("/validate", data=b"{", content_type="application/json").status_code == 400
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    req = "podgate_admission_requests_total"
    assert delta(req, webhook="validate", operation="CREATE", result="denied") == 1
    assert delta(req, webhook="validate", operation="DELETE", result="allowed") == 1
    assert delta(req, webhook="validate", operation="CREATE", result="invalid") == 1
    assert delta(req, webhook="validate", operation="unknown", result="invalid") == 1
    assert delta(req, webhook="mutate", operation="CREATE", result="allowed") == 4
    assert delta("podgate_violations_total", rule="port-collision", action="deny") == 1
    assert delta("podgate_violations_total", rule="duplicate-port-name", action="warn") == 1
    inj = "podgate_injections_total"
    assert delta(inj, result="injected", reason="") == 1
    assert delta(inj, result="skipped", reason="proxy-present") + delta(inj, result="skipped",
                                                                        reason="already-injected") == 1
    assert delta(inj, result="skipped", reason="host-network") == 1
    assert delta(inj, result="skipped", reason="exempt") == 1
    assert delta("podgate_admission_duration_seconds_count", webhook="validate") == 4
    assert delta("podgate_admission_duration_seconds_count", webhook="mutate") == 4
    assert value(after, "podgate_policy_last_reload_success") == 1


def test_a_reinvocation_that_rewrites_probes_is_counted_as_reinvoked(client):
    """Not as a second injection: the proxy was injected once, by the first call."""
    import base64
    import json

    import jsonpatch

    def mutate(body: Any) -> Any:
        answer = client.post("/mutate", json=review_for(body)).get_json()["response"]
        return jsonpatch.apply_patch(body, json.loads(base64.b64decode(answer["patch"])))

    injected = mutate(pod(ctr("app", port(8080)), annotations={"podgate.io/inject": "true"}))
    injected["spec"]["containers"].append(ctr("late", port(7000), readiness=("httpGet", 7000)))
    before = scrape(client)
    again = mutate(injected)
    assert again["spec"]["containers"][1]["readinessProbe"]["httpGet"]["port"] == 15020
    after = scrape(client)
    inj = "podgate_injections_total"
    assert value(after, inj, result="reinvoked", reason="probes-rewritten") - \
        value(before, inj, result="reinvoked", reason="probes-rewritten") == 1
    assert value(after, inj, result="injected", reason="") == value(before, inj, result="injected", reason="")


@pytest.mark.parametrize("path", sorted(APISERVER_REVIEWS.glob("*mutate*.json")), ids=lambda p: p.name[:4])
def test_recorded_mutations_have_named_skip_reasons(path):
    """Every skip the real API server's requests produce maps to a named label, never "other"."""
    from webhook.admission import Context, review
    from webhook.policy import load_policy_set

    outcome = review(path.read_bytes(), "mutate", Context(load_policy_set()))
    if outcome.decision is not None and outcome.decision.allowed and not outcome.decision.injected:
        assert metrics.skip_label(outcome.decision.reason) != "other", outcome.decision.reason


@pytest.mark.parametrize("reason, label", [
    ('not injected: policy "hostNetwork opted out" has no mesh', "no-mesh"),
    ("not injected: hostNetwork pod (shares the node's network)", "host-network"),
    ("not injected: Windows pod (spec.os.name: windows)", "windows"),
    ('not injected: already has a "mesh-proxy" container', "proxy-present"),
    ('not injected: mesh profile "not selected" has no injection template', "no-template"),
    ('exempt: namespace "mirror pod" is exempt in policy "default"', "exempt"),
    ("something new", "other"),
])
def test_skip_labels_come_from_the_sentence_not_the_names_in_it(reason, label):
    assert metrics.skip_label(reason) == label


def test_policy_reload_failure_is_counted(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    for good in (Path(metrics.__file__).parents[2] / "policies").glob("*.yaml"):
        (policies / good.name).write_text(good.read_text())
    app = create_app(Settings(policy_dir=policies, reload_interval=0))
    store = app.extensions["podgate"].store
    before = samples(metrics.exposition()[0].decode())
    (policies / "default.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nspec: 3\n")
    store.poll()
    after = samples(metrics.exposition()[0].decode())
    name = "podgate_policy_reloads_total"
    assert value(after, name, result="failure") - value(before, name, result="failure") == 1
    assert value(after, "podgate_policy_last_reload_success") == 0
    assert store.current is not None  # the last good set stays


def test_namespace_cache_hook():
    metrics.set_namespace_cache(True, 7)
    metrics.namespace_cache_event("relist")
    parsed = samples(metrics.exposition()[0].decode())
    assert value(parsed, "podgate_namespace_cache_synced") == 1
    assert value(parsed, "podgate_namespace_cache_namespaces") == 7
    assert value(parsed, "podgate_namespace_cache_events_total", event="relist") >= 1


# --- across gunicorn workers -------------------------------------------------------------------

def requests_by_file(directory: Path) -> dict[str, float]:
    """Requests counted in each counter file (a live worker's pid, or "archive"), read straight
    from the multiprocess files."""
    out: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        owner = path.stem.split("_")[1]
        for key, val, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "podgate_admission_requests_total":
                out[owner] = out.get(owner, 0) + val
    return out


def test_counts_are_exact_across_workers_and_recycled_workers(tmp_path):
    """Two workers recycled every ~10 requests, scraped all along: /metrics reports every request
    exactly once, no scrape ever goes down (a dead worker counted twice, then once) or over what
    was sent, and the directory keeps only the live workers' files and one archive per type."""
    ca = trustme.CA()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    write_cert(ca, cert, key)
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"left over from an earlier run")  # must be cleared
    validate = recorded("0004_validate_CREATE").copy()
    denied = review_for(pod(ctr("app", port(8080)), ctr("metrics", port(8080))))
    mutate = recorded("0003_mutate_CREATE")
    context = trust(tmp_path, ca)
    req = "podgate_admission_requests_total"

    def connect() -> http.client.HTTPSConnection:
        # a new connection each time, so both workers take some
        return http.client.HTTPSConnection("127.0.0.1", server_port, context=context, timeout=10)

    def post(path: str, body: dict[str, Any]) -> int:
        conn = connect()
        try:
            with lock:
                sent[0] += 1
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def scrape() -> dict[Any, float]:
        conn = connect()
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200
            return samples(response.read().decode())
        finally:
            conn.close()

    def scrape_total() -> float:
        return sum(v for (name, _), v in scrape().items() if name == req)

    def settled(gone: set[int]) -> tuple[list[str], set[str], set[int]]:
        """The metric files, their owners and the live workers, once the files are those of two
        live workers (none of ``gone``) and the archives. A worker exits, and its replacement
        starts, a moment after its last answer went out; the master folds its files when it reaps
        it. The files are listed first: a worker that dies in between is looked at again."""
        deadline = time.monotonic() + 30
        while True:
            files = sorted(p.name for p in multiproc.glob("*.db"))
            owners = {name[:-3].rsplit("_", 1)[1] for name in files}
            live = workers(server.process.pid)
            if (len(live) == 2 and not live & gone and owners <= {"archive"} | {str(pid) for pid in live}) \
                    or time.monotonic() > deadline:
                return files, owners, live
            time.sleep(0.05)

    def scrape_all_along() -> None:
        while not finished.is_set():
            total = scrape_total()
            with lock:
                scraped.append((total, sent[0]))  # only a request sent by now can have been counted
            time.sleep(0.02)

    plan = [("/validate", validate)] * 120 + [("/validate", denied)] * 50 + [("/mutate", mutate)] * 70
    random.Random(7).shuffle(plan)
    sent, lock, finished, scraped = [0], threading.Lock(), threading.Event(), []
    with live_server(tmp_path, "--cert", str(cert), "--key", str(key), "--threads", "4", "--max-requests", "10",
                     "--reload-interval", "0", "--drain-seconds", "0", env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}) as server:
        server_port = server.port
        scraper = threading.Thread(target=scrape_all_along)
        scraper.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda call: post(*call), plan))
        finally:
            finished.set()
            scraper.join()
        assert statuses == [200] * len(plan)
        deadline = time.monotonic() + 30  # workers report in batches, a fraction of a second late
        while True:
            parsed = scrape()
            if sum(v for (name, _), v in parsed.items() if name == req) >= len(plan) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        files, owners, live = settled(set())
        by_file = requests_by_file(multiproc)
        live_gauge_pids = {int(p.stem.rsplit("_", 1)[1]) for p in multiproc.glob("gauge_live*.db")}
        booted = server.output().count("Booting worker with pid")
        # a worker killed outright (OOM, SIGKILL) is reaped and folded the same way, with what it
        # had reported (everything, here: the totals above were complete)
        victim = min(live)
        os.kill(victim, signal.SIGKILL)
        _, owners_after_kill, live_after_kill = settled({victim})
        after_kill = scrape()

    denied_count = sum(1 for _, body in plan if body is denied)
    assert value(parsed, req, webhook="validate", operation="CREATE", result="allowed") == 120
    assert value(parsed, req, webhook="validate", operation="CREATE", result="denied") == denied_count
    assert value(parsed, req, webhook="mutate", operation="CREATE", result="allowed") == 70
    assert value(parsed, "podgate_admission_duration_seconds_count", webhook="mutate") == 70
    assert value(parsed, "podgate_injections_total", result="skipped", reason="not-selected") == 70
    assert "1" not in by_file  # the stale file was removed at start
    assert sum(by_file.values()) == len(plan)
    assert booted >= 20, f"only {booted} workers ran"  # recycled many times over
    # bounded: the live workers' files and one archive per type, however many workers came and went
    assert owners <= {"archive"} | {str(pid) for pid in live}, files
    assert len(files) <= len({name[:-3].rsplit("_", 1)[0] for name in files}) * (1 + len(live)), files
    assert by_file["archive"] >= len(plan) / 2  # most requests were answered by workers now gone
    assert live_gauge_pids <= live, "a dead worker's live gauges were not marked dead"
    assert victim not in live_after_kill and str(victim) not in owners_after_kill
    assert owners_after_kill <= {"archive"} | {str(pid) for pid in live_after_kill}
    # the same counts (sums of latencies may differ in the last bits: added in another order)
    assert {k: v for k, v in after_kill.items() if k[0].startswith("podgate_admission")} == pytest.approx(
        {k: v for k, v in parsed.items() if k[0].startswith("podgate_admission")}, rel=1e-9)
    # scraped all along: never more than was sent, never less than an earlier scrape
    totals = [total for total, _ in scraped]
    assert len(scraped) >= 10 and all(total <= ceiling for total, ceiling in scraped), scraped
    assert totals == sorted(totals), totals


def test_metrics_dir_must_be_prepared_before_prometheus_client_is_imported():
    from webhook.server.runner import prepare_metrics_dir

    with pytest.raises(RuntimeError, match="imported before"):
        prepare_metrics_dir({})  # this test process imported it long ago


def test_serve_makes_and_removes_its_own_metrics_dir(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR (as in the chart), ``podgate serve`` makes a temp dir and
    removes it when the server exits, not when a worker does (a worker is a fork of the process
    that made it: recycled every 3 requests here, it must leave the directory alone)."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    with live_server(tmp_path, "--workers", "1", "--max-requests", "3", "--reload-interval", "0",
                     "--drain-seconds", "0", env=env) as server:
        made = list(scratch.glob("podgate-metrics-*"))
        assert len(made) == 1 and list(made[0].glob("counter_*.db"))
        session = server.session()
        body = recorded("0004_validate_CREATE")
        for _ in range(10):  # the worker is replaced three times over (a new connection each time)
            assert session.post(f"{server.url}/validate", json=body, headers={"Connection": "close"}).status_code == 200
        deadline = time.monotonic() + 30  # counted in batches, a fraction of a second late
        while True:
            response = session.get(f"{server.url}/metrics", headers={"Connection": "close"})
            assert response.status_code == 200
            counted = value(samples(response.text), "podgate_admission_requests_total", webhook="validate",
                            operation="CREATE", result="allowed")
            if counted >= 10 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert counted == 10
        assert made[0].is_dir()
    assert not made[0].exists()


def test_kinds_podgate_does_not_read_are_allowed_and_counted_by_kind(client):
    before = scrape(client)
    widget = review_for(pod(ctr("a")))
    widget["request"]["kind"] = {"group": "example.com", "version": "v1", "kind": "Widget"}
    config = review_for(pod(ctr("a")))
    config["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    deployment = json.loads(next((APISERVER_REVIEWS.parent / "workloads").glob("0001_*")).read_text())
    for body, webhook in ((widget, "validate"), (widget, "mutate"), (config, "validate"), (deployment, "validate")):
        response = client.post(f"/{webhook}", json=body)
        assert response.status_code == 200
        if body is not deployment:
            assert response.get_json()["response"]["allowed"] is True
    after = scrape(client)
    name = "podgate_unknown_kinds_total"
    assert value(after, name, webhook="validate", kind="example.com/Widget") \
        - value(before, name, webhook="validate", kind="example.com/Widget") == 1
    assert value(after, name, webhook="mutate", kind="example.com/Widget") \
        - value(before, name, webhook="mutate", kind="example.com/Widget") == 1
    assert value(after, name, webhook="validate", kind="ConfigMap") - value(before, name, webhook="validate",
                                                                             kind="ConfigMap") == 1
    assert not any(labels and dict(labels).get("kind") == "apps/Deployment" for (n, labels) in after if n == name)


def test_kind_labels_are_bounded(monkeypatch):
    monkeypatch.setattr(metrics, "_kind_labels", set())
    assert len(metrics.kind_label("x" * 1000, "K")) == metrics.MAX_KIND_LENGTH
    labels = {metrics.kind_label("example.com", f"Kind{i}") for i in range(metrics.MAX_KIND_LABELS * 2)}
    assert len(labels) == metrics.MAX_KIND_LABELS and "other" in labels
    assert metrics.kind_label("example.com", "Kind0") == "example.com/Kind0"  # those seen keep their label
