"""Fuzzing the one function every request goes through (``admission.review``), and the HTTP layer.

Whatever arrives, the answer is a well-formed AdmissionReview response or a 4xx with a message:
never an exception, never an internal error, never a slow answer, and never ``allowed: true``
for a Pod the rules deny. Three sources of input: a seeded mutation fuzzer over the recorded
kube-apiserver requests and the shared corpus, hypothesis strategies for wrong types at every
level, and generated Pods with a known collision buried in random noise. Everything is bounded
(examples, seconds) so the file runs in well under a minute.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.admission import Context, Outcome, review
from webhook.server.app import create_app
from webhook.server.settings import Settings

from .conftest import APISERVER_REVIEWS, CORPUS, review_for

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# seconds of CPU time (of this thread: what the work costs, however loaded the machine): far
# below the API server's timeout, far above any honest request (or GC pause)
SLOW_ANSWER = 2.0
MAX_BODY = Settings.max_body_bytes  # larger bodies never reach review(): the server answers 413


def seeds() -> list[bytes]:
    """The recorded requests, plus every AdmissionReview (or bare request) in the shared corpus."""
    out = [p.read_bytes() for p in sorted(APISERVER_REVIEWS.glob("*.json"))]
    corpus = CORPUS / "admissionreview"
    for path in sorted(corpus.rglob("*")) if corpus.is_dir() else ():
        if path.suffix not in (".json", ".yaml", ".yml"):
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for doc in docs:
            if isinstance(doc, dict) and "uid" in doc and "request" not in doc:
                doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": doc}
            if isinstance(doc, dict):
                out.append(orjson.dumps(doc, default=str))
    return out


SEEDS = seeds()


@pytest.fixture(scope="module")
def mctx(default_policies: Any) -> Context:
    """``ctx`` for hypothesis tests (which must not use function-scoped fixtures)."""
    from webhook.namespaces import StaticNamespaceLabels

    return Context(default_policies, StaticNamespaceLabels({"meshed": {"podgate.io/mesh": "enabled"}}))


def check_answer(outcome: Outcome, body: Any = None) -> dict[str, Any] | None:
    """The invariants of every answer; returns the AdmissionReview response, if there is one."""
    if outcome.response is None:
        assert outcome.error is not None and 400 <= outcome.http_status < 500, outcome
        assert outcome.error.message
        return None
    review_ = orjson.loads(orjson.dumps(outcome.response))  # serialisable, as the server sends it
    assert review_["kind"] == "AdmissionReview"
    assert review_["apiVersion"] in ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
    response = review_["response"]
    assert isinstance(response["uid"], str) and response["uid"]
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert response["status"]["message"]
        assert response["status"]["code"] in (400, 403), response  # 500 would be a bug of ours
    if outcome.decision is not None:
        assert outcome.decision.reason != "internal error", body
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        # adds, and replaces of the probes podgate points at the proxy's agent; every op applies
        assert isinstance(ops, list) and all(op["op"] in ("add", "replace") for op in ops)
        if outcome.request is not None:
            jsonpatch.apply_patch(outcome.request.object, ops)
    for warning in response.get("warnings", ()):
        assert isinstance(warning, str)
    return response


def decoding_cost(body: Any) -> float:
    """CPU seconds that decoding the body's JSON takes on its own: linear in the body (which the
    server bounds), and for a mutant of a few MB with hundreds of thousands of objects it
    alone is about a second. The bound is on podgate's work beyond it."""
    if not isinstance(body, bytes):
        return 0.0
    started = time.thread_time()
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    return time.thread_time() - started


def answer(body: Any, webhook: str, ctx: Context) -> dict[str, Any] | None:
    started = time.thread_time()
    outcome = review(body, webhook, ctx)  # type: ignore[arg-type]
    elapsed = time.thread_time() - started
    if elapsed >= SLOW_ANSWER:
        elapsed -= decoding_cost(body)
    assert elapsed < SLOW_ANSWER, f"{webhook} took {elapsed:.2f}s of CPU beyond decoding the JSON"
    return check_answer(outcome, body)


# --- the mutation fuzzer ------------------------------------------------------------------------

ODD_VALUES: list[Any] = [None, True, False, 0, -1, 65536, 2**63, -(2**63), 1.5, 1e308, "", "8080", "-1", "0x50",
                         "²", "١٢٣", "ü/~名", "x" * 300, [], {}, [1], {"a": 1}, [None], "TCP\x00"]
ODD_ANNOTATIONS = ["podgate.io/inject", "podgate.io/proxy-cpu", "podgate.io/proxy-memory",
                   "podgate.io/exclude-inbound-ports", "podgate.io/exclude-outbound-ports", "podgate.io/status",
                   "kubernetes.io/config.mirror", "ü~/名"]
ODD_ANNOTATION_VALUES = ["true", "false", "NaN", "Infinity", "²", "1,2,٣", "100m", "1e999", "", "0", "-1",
                         "65536", "1," * 70, "ü"]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, prefix + (i,))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def mutate_structure(rng: random.Random, review_: Any) -> Any:
    """Wrong types, deletions, huge arrays and deep nesting, mostly inside request.object."""
    obj = copy.deepcopy(review_)
    for _ in range(rng.randint(1, 4)):
        paths = _paths(obj)
        in_object = [p for p in paths if p[:2] == ("request", "object")]
        path = rng.choice(in_object if in_object and rng.random() < 0.8 else paths)
        roll = rng.random()
        if roll < 0.55:
            obj = _set(obj, path, copy.deepcopy(rng.choice(ODD_VALUES)))
        elif roll < 0.7 and path:
            del _get(obj, path[:-1])[path[-1]]
        elif roll < 0.85:
            value = _get(obj, path)
            obj = _set(obj, path, value * 50 if isinstance(value, list) else [value] * rng.randint(2, 200))
        else:
            value = _get(obj, path)
            for _ in range(rng.randint(10, 120)):  # orjson refuses nesting beyond 255 levels
                value = {"a": value} if rng.random() < 0.5 else [value]
            obj = _set(obj, path, value)
    request = obj.get("request") if isinstance(obj, dict) else None
    if isinstance(request, dict) and rng.random() < 0.5:
        request["namespace"] = "meshed"  # the mesh rules and injection run too
        pod = request.get("object")
        meta = pod.get("metadata") if isinstance(pod, dict) else None
        annotations = meta.setdefault("annotations", {}) if isinstance(meta, dict) else None
        if isinstance(annotations, dict):
            annotations[rng.choice(ODD_ANNOTATIONS)] = rng.choice(ODD_ANNOTATION_VALUES)
    return obj


def mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    """Truncated or corrupted JSON."""
    if rng.random() < 0.4:
        return body[: rng.randint(0, len(body))]
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def mutants(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        body = rng.choice(SEEDS)
        if rng.random() < 0.8:
            body = orjson.dumps(mutate_structure(rng, orjson.loads(body)))
        else:
            body = mutate_bytes(rng, body)
        if len(body) <= MAX_BODY:
            out.append(body)
    return out


def test_the_seeds_are_there() -> None:
    assert len(SEEDS) >= 42


def test_mutation_fuzzer_in_process(ctx: Context) -> None:
    """Thousands of mutated real requests through both webhooks."""
    started = time.thread_time()
    for body in mutants(2500, seed=1):
        for webhook in ("validate", "mutate"):
            answer(body, webhook, ctx)
    assert time.thread_time() - started < 40


def test_every_seed_is_answered_as_is(ctx: Context) -> None:
    for body in SEEDS:
        for webhook in ("validate", "mutate"):
            answer(body, webhook, ctx)


# --- hypothesis: wrong types at every level -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)

BASE_POD = {"metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080, "name": "http"}],
                                     "readinessProbe": {"httpGet": {"port": "http"}}}],
                     "initContainers": [{"name": "side", "image": "s", "restartPolicy": "Always",
                                         "ports": [{"containerPort": 9090, "hostPort": 9090}]}]}}
LEVELS = [(), ("apiVersion",), ("kind",), ("request",), ("request", "uid"), ("request", "kind"),
          ("request", "kind", "kind"), ("request", "operation"), ("request", "namespace"), ("request", "dryRun"),
          ("request", "subResource"), ("request", "userInfo"), ("request", "object"), ("request", "oldObject"),
          ("request", "object", "metadata"), ("request", "object", "metadata", "labels"),
          ("request", "object", "metadata", "annotations"), ("request", "object", "spec"),
          ("request", "object", "spec", "containers"), ("request", "object", "spec", "containers", 0),
          ("request", "object", "spec", "containers", 0, "name"), ("request", "object", "spec", "containers", 0, "ports"),
          ("request", "object", "spec", "containers", 0, "ports", 0),
          ("request", "object", "spec", "containers", 0, "ports", 0, "containerPort"),
          ("request", "object", "spec", "containers", 0, "ports", 0, "protocol"),
          ("request", "object", "spec", "containers", 0, "readinessProbe"),
          ("request", "object", "spec", "containers", 0, "readinessProbe", "httpGet", "port"),
          ("request", "object", "spec", "containers", 0, "securityContext"),
          ("request", "object", "spec", "initContainers"),
          ("request", "object", "spec", "initContainers", 0, "restartPolicy"),
          ("request", "object", "spec", "initContainers", 0, "ports", 0, "hostPort"),
          ("request", "object", "spec", "hostNetwork"), ("request", "object", "spec", "securityContext"),
          ("request", "object", "spec", "volumes"), ("request", "object", "spec", "automountServiceAccountToken")]


@FUZZ
@given(level=st.sampled_from(LEVELS), value=json_values, namespace=st.sampled_from(["default", "meshed"]),
       webhook=st.sampled_from(["validate", "mutate"]), operation=st.sampled_from(["CREATE", "UPDATE"]))
def test_wrong_types_at_every_level(mctx: Context, level: tuple[Any, ...], value: Any, namespace: str,
                                    webhook: str, operation: str) -> None:
    body = review_for(copy.deepcopy(BASE_POD), namespace=namespace, operation=operation,
                      old=copy.deepcopy(BASE_POD) if operation == "UPDATE" else None)
    body = _set(body, level, value)
    answer(body, webhook, mctx)
    answer(orjson.dumps(body), webhook, mctx)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes(mctx: Context, data: bytes) -> None:
    for webhook in ("validate", "mutate"):
        answer(data, webhook, mctx)


# --- a known collision survives any noise -------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
noise_port = st.fixed_dictionaries(
    {"containerPort": st.integers(min_value=1, max_value=65535).filter(lambda p: p != 8080)},
    optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP"]), "name": names,
              "hostIP": st.sampled_from(["", "10.0.0.1", "::"])})
noise_container = st.fixed_dictionaries(
    {"image": st.just("noise")},
    optional={"ports": st.lists(noise_port, max_size=4),
              "securityContext": st.fixed_dictionaries({"runAsUser": st.integers(0, 2**31)})})
label_maps = st.dictionaries(names, names, max_size=4)


@FUZZ
@given(noise=st.lists(noise_container, max_size=6), init_noise=st.lists(noise_container, max_size=3),
       labels=label_maps, annotations=label_maps, namespace=st.sampled_from(["default", "meshed", "team-a", "名前"]),
       pod_name=names, opt_out=st.booleans(), order=st.randoms(use_true_random=False),
       namespace_labels=label_maps | label_maps.map(lambda d: {**d, "podgate.io/mesh": "enabled"}))
def test_a_collision_is_denied_whatever_the_noise(default_policies: Any, noise: list[dict[str, Any]],
                                                   init_noise: list[dict[str, Any]], labels: dict[str, str],
                                                   annotations: dict[str, str], namespace: str, pod_name: str,
                                                   opt_out: bool, order: random.Random,
                                                   namespace_labels: dict[str, str]) -> None:
    """Two app containers on 8080/TCP: denied, through /validate and through /mutate then /validate,
    whatever else the Pod carries, whatever labels its namespace has (a namespace label cannot
    exempt: exemptions are by namespace name)."""
    from webhook.namespaces import StaticNamespaceLabels

    containers = [{"name": "app", "image": "a", "ports": [{"containerPort": 8080}]},
                  {"name": "metrics", "image": "m", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]
    containers += [dict(c, name=f"noise-{i}") for i, c in enumerate(noise)]
    order.shuffle(containers)
    if opt_out:
        annotations = dict(annotations, **{"podgate.io/inject": "false"})
    pod = {"metadata": {"name": pod_name, "labels": labels, "annotations": annotations},
           "spec": {"containers": containers,
                    "initContainers": [dict(c, name=f"init-{i}") for i, c in enumerate(init_noise)]}}
    ctx = Context(default_policies, StaticNamespaceLabels({namespace: namespace_labels}))
    request = review_for(pod, namespace=namespace)
    response = answer(request, "validate", ctx)
    assert response is not None and response["allowed"] is False
    mutated = answer(request, "mutate", ctx)
    assert mutated is not None
    if mutated.get("patch"):
        import jsonpatch

        patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(mutated["patch"])))
        response = answer(review_for(patched, namespace=namespace), "validate", ctx)
        assert response is not None and response["allowed"] is False


# --- hostile sizes: bounded work, bounded answers -----------------------------------------------

def _containers(n: int, **port: Any) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "image": "x", "ports": [dict({"containerPort": 80}, **port)]} for i in range(n)]


HOSTILE = [
    pytest.param({"containers": _containers(3000)}, False, id="3000-apps-one-port"),
    pytest.param({"containers": [{"name": "a"}], "initContainers": _containers(3000)}, True, id="3000-inits-one-port"),
    pytest.param({"containers": [{"name": f"c{j}", "ports": [{"containerPort": p} for p in range(1, 20001)]}
                                 for j in range(2)]}, False, id="2x20000-ports"),
    pytest.param({"containers": [{"name": f"c{i}", "ports": [{"containerPort": i + 1, "name": "http"}]}
                                 for i in range(3000)]}, True, id="3000-dup-port-names"),
    pytest.param({"containers": [{"name": f"c{i}", "ports": [{"containerPort": i + 1, "hostPort": 80,
                                                              "hostIP": f"10.0.{i // 250}.{i % 250}"}]}
                                 for i in range(3000)]}, True, id="3000-hostports-distinct-ips"),
    pytest.param({"containers": [{"name": f"c{i}", "ports": [{"containerPort": i + 1, "hostPort": 80}]}
                                 for i in range(3000)]}, False, id="3000-hostports-wildcard"),
]


@pytest.mark.parametrize(("spec", "allowed"), HOSTILE)
def test_hostile_pods_are_answered_fast_and_small(ctx: Context, spec: dict[str, Any], allowed: bool) -> None:
    """Regression: 3,000 containers on one port took 33 s and built a 685 MB answer."""
    body = orjson.dumps(review_for({"metadata": {"name": "big"}, "spec": spec}))
    for webhook in ("validate", "mutate"):
        started = time.thread_time()
        outcome = review(body, webhook, ctx)  # type: ignore[arg-type]
        # CPU time, which other work on the machine does not stretch; the quadratic version took 33 s
        assert time.thread_time() - started < 3.0
        response = check_answer(outcome)
        assert response is not None
        assert len(orjson.dumps(outcome.response)) < 64 * 1024
        if webhook == "validate":
            assert response["allowed"] is allowed


# --- regressions found by the fuzzer -----------------------------------------------------------

def _pod(container: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "annotations": annotations or {}},
            "spec": {"containers": [dict({"name": "app", "image": "a"}, **container)], **spec}}


@pytest.mark.parametrize(("pod", "namespace", "webhook", "where"), [
    pytest.param(_pod({"ports": [{"containerPort": 80, "protocol": {"x": 1}}]}), "default", "validate",
                 "/ports/0/protocol", id="protocol-is-an-object"),
    pytest.param(_pod({"ports": [{"containerPort": 80, "protocol": ["TCP"]}]}), "default", "validate",
                 "/ports/0/protocol", id="protocol-is-a-list"),
    pytest.param(_pod({}, volumes=3), "meshed", "mutate", "/spec/volumes", id="volumes-not-a-list"),
    pytest.param(_pod({}, {"podgate.io/proxy-cpu": "NaN"}), "meshed", "mutate", "podgate.io/proxy-cpu",
                 id="nan-quantity"),
    pytest.param(_pod({}, {"podgate.io/proxy-memory": "1_000"}), "meshed", "mutate", "podgate.io/proxy-memory",
                 id="python-only-quantity"),
    pytest.param(_pod({}, {"podgate.io/exclude-inbound-ports": "8080,²"}), "meshed", "mutate",
                 "podgate.io/exclude-inbound-ports", id="superscript-digit-port"),
])
def test_fuzzer_findings_are_clear_denials(ctx: Context, pod: dict[str, Any], namespace: str, webhook: str,
                                          where: str) -> None:
    response = answer(review_for(pod, namespace=namespace), webhook, ctx)
    assert response is not None and response["allowed"] is False
    assert response["status"]["code"] == 400
    assert where in response["status"]["message"]


def test_superscript_probe_port_is_a_name_not_a_crash(ctx: Context) -> None:
    pod = _pod({"ports": [{"containerPort": 80}], "livenessProbe": {"tcpSocket": {"port": "²"}}})
    response = answer(review_for(pod), "validate", ctx)
    assert response is not None and response["allowed"] is False
    assert "probe-port-missing" in response["status"]["message"]


def test_duplicate_keys_last_one_wins_like_the_api_server(ctx: Context) -> None:
    """Go's encoding/json and orjson both keep the last duplicate: a collision hidden behind an
    earlier clean copy of ``spec`` is still seen."""
    clean = json.dumps({"containers": [{"name": "a", "image": "a"}]})
    bad = json.dumps({"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80}]},
                                     {"name": "b", "image": "b", "ports": [{"containerPort": 80}]}]})
    envelope = json.dumps(review_for({"metadata": {"name": "p"}, "spec": {}}))
    body = envelope.replace('"spec":{}', f'"spec":{clean},"spec":{bad}').replace('"spec": {}', f'"spec": {clean}, "spec": {bad}')
    assert body.count('"spec"') == 2
    response = answer(body.encode(), "validate", ctx)
    assert response is not None and response["allowed"] is False


def test_deep_nesting_is_a_400(ctx: Context) -> None:
    body = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    outcome = review(body, "validate", ctx)
    check_answer(outcome)
    assert outcome.http_status == 400


# --- the HTTP layer: a sample through the Flask test client ------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    labels = tmp_path_factory.mktemp("ns") / "labels.yaml"
    labels.write_text("meshed: {podgate.io/mesh: enabled}\n")
    app = create_app(Settings(reload_interval=0, namespace_labels_file=labels, max_body_bytes=256 * 1024))
    return app.test_client()


def test_http_sample_never_5xx(client: Any) -> None:
    for body in mutants(300, seed=2):
        for path in ("/validate", "/mutate"):
            resp = client.post(path, data=body, content_type="application/json")
            assert resp.status_code in (200, 400, 413, 422), resp.status_code
            payload = resp.get_json()
            assert isinstance(payload, dict)
            if resp.status_code == 200:
                assert payload["kind"] == "AdmissionReview"
            else:
                assert payload["error"]


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
    ("application/json; charset=latin-1", 400)])
def test_http_content_types(client: Any, content_type: str, status: int) -> None:
    resp = client.post("/validate", data=b"\xff\xfe{", content_type=content_type)
    assert resp.status_code == status
    assert resp.get_json()["error"]


def test_http_oversized_body_is_413(client: Any) -> None:
    resp = client.post("/validate", data=b" " * (256 * 1024 + 1), content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["status"] == 413


def test_http_wrong_method_and_path_are_4xx_json(client: Any) -> None:
    assert client.get("/validate").status_code == 405
    assert client.post("/nope", data=b"{}", content_type="application/json").status_code == 404
