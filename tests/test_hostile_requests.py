"""Forged requests that multiply cost or size, and annotations the two webhooks must read alike.

A hostile tenant can send the webhook anything the API server forwards (and, where it can reach
the port, anything at all): digit strings past Python's int-conversion limit, thousands of
containers of one name, a megabyte of name. Each gets a denial that says what is wrong, at a
cost linear in the request and an answer and log line of bounded size. ``podgate.io/inject``
gets one answer from /mutate and /validate.
"""

from __future__ import annotations

import base64
import gc
import json
import time
from typing import Any

import orjson
import pytest

from webhook.admission import Context, review
from webhook.echo import MESSAGE_MAX, NAME_MAX, echo
from webhook.server.report import decision_fields

from .conftest import review_for
from .test_rules import PROXY, ctr, pod, port

DIGITS = "1" * 5000  # past Python's 4,300-digit limit on int(str)


def answer(body: Any, ctx: Context, webhook: str = "validate") -> dict[str, Any]:
    outcome = review(orjson.dumps(body), webhook, ctx)
    assert outcome.response is not None, outcome.error
    return outcome.response["response"]


def test_echo_keeps_real_names_and_bounds_the_rest() -> None:
    assert echo("a" * NAME_MAX) == "a" * NAME_MAX
    long = echo("b" * 1_000_000)
    assert len(long) < NAME_MAX + 40 and "(1000000 characters)" in long


# --- huge digit strings ------------------------------------------------------------------------

@pytest.mark.parametrize("annotation", ["podgate.io/exclude-inbound-ports", "podgate.io/exclude-outbound-ports"])
@pytest.mark.parametrize("value", [DIGITS, f"8080,{DIGITS}", "0" * 5000 + "80," + "9" * 6])
def test_a_port_annotation_of_thousands_of_digits_is_denied_as_invalid(ctx: Context, annotation: str,
                                                                      value: str) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/inject": "true", annotation: value})
    response = answer(review_for(obj), ctx, "mutate")
    assert response["allowed"] is False and response["status"]["code"] == 400, response
    message = response["status"]["message"]
    assert "is not a comma-separated list of ports 1-65535" in message and len(message) < 1000


def test_leading_zeros_are_still_a_port(ctx: Context) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/inject": "true",
                                       "podgate.io/exclude-inbound-ports": "0" * 5000 + "8080"})
    assert answer(review_for(obj), ctx, "mutate")["allowed"] is True


@pytest.mark.parametrize("webhook", ["validate", "mutate"])
@pytest.mark.parametrize("handler", ["httpGet", "tcpSocket"])
def test_a_probe_port_of_thousands_of_digits_is_no_internal_error(ctx: Context, webhook: str, handler: str) -> None:
    obj = pod(ctr("app", port(8080), readiness=(handler, DIGITS)), annotations={"podgate.io/inject": "true"})
    response = answer(review_for(obj), ctx, webhook)
    assert response.get("status", {}).get("code") != 500, response
    if webhook == "validate":
        assert response["allowed"] is False and "[probe-port-missing]" in response["status"]["message"]
        assert len(response["status"]["message"]) < 2 * MESSAGE_MAX


# --- cost and size that a forged request can multiply ----------------------------------------

def same_named(n: int) -> dict[str, Any]:
    return pod(*[ctr("x", port(80, host=80)) for _ in range(n)])


def best_of(runs: int, body: bytes, ctx: Context) -> float:
    """The fastest of a few runs, without the garbage collector (whose full passes grow with the
    whole heap, not with the request): the rules' own cost, robust to a loaded machine."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            started = time.perf_counter()
            review(body, "validate", ctx)
            times.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return min(times)


@pytest.mark.parametrize("build", [
    same_named,
    lambda n: pod(*[ctr(f"c{i}", port(15021), readiness=("httpGet", 15021)) for i in range(n)],
                  annotations={"podgate.io/inject": "true"}),
    lambda n: pod(*[ctr("x", port(80, name="http")) for _ in range(n)]),
    lambda n: pod(*[ctr("x", port(80)) for _ in range(n)], hostNetwork=True),
], ids=["host-port-same-name", "probes-on-a-proxy-port", "port-names", "host-network"])
def test_rules_are_linear_in_the_containers(ctx: Context, build: Any) -> None:
    """Four times the containers, about four times the time (a square would be sixteen)."""
    small, large = orjson.dumps(review_for(build(2500))), orjson.dumps(review_for(build(10000)))
    ratio = best_of(5, large, ctx) / best_of(5, small, ctx)
    assert ratio < 10, ratio
    assert best_of(1, large, ctx) < 5


def test_host_port_collisions_of_same_named_containers_are_reported(ctx: Context) -> None:
    response = answer(review_for(same_named(10000)), ctx)
    assert response["allowed"] is False
    assert response["status"]["message"].count("[host-port-collision]") == 20  # MAX_FINDINGS_PER_RULE


def test_a_megabyte_name_is_quoted_once_and_bounded(ctx: Context) -> None:
    """A 1 MB container name with 25 others on one port: the answer and the log line stay small,
    and still name the containers (the long one by its start, length and end)."""
    big = "n" * 1_000_000
    obj = pod(ctr(big, port(80, host=80), port(81, name="p" * 1_000_000)),
              *[ctr(f"c{i}", port(80, host=80), port(82, name="p" * 1_000_000)) for i in range(25)])
    body = review_for(obj)
    body["request"]["object"]["metadata"]["name"] = "m" * 1_000_000
    outcome = review(orjson.dumps(body), "validate", ctx)
    assert outcome.response is not None and outcome.decision is not None
    wire = orjson.dumps(outcome.response)
    assert outcome.response["response"]["allowed"] is False and len(wire) < 200_000, len(wire)
    assert "(1000000 characters)" in outcome.response["response"]["status"]["message"]
    log_line = json.dumps(decision_fields("validate", outcome, 0.001))
    assert len(log_line) < 200_000, len(log_line)


# --- one annotation parser for both webhooks --------------------------------------------------

@pytest.mark.parametrize("value", ["TRUE", "True", "yes", "1", " true", "FALSE"])
@pytest.mark.parametrize("namespace", ["default", "meshed"])
def test_both_webhooks_refuse_an_opt_in_that_is_neither_true_nor_false(ctx: Context, value: str,
                                                                        namespace: str) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/inject": value})
    mutate = answer(review_for(obj, namespace=namespace), ctx, "mutate")
    validate = answer(review_for(obj, namespace=namespace), ctx, "validate")
    expected = f'annotation podgate.io/inject: "{value}" must be "true"'
    for response in (mutate, validate):
        assert response["allowed"] is False and response["status"]["code"] == 400
        assert expected in response["status"]["message"]
    assert mutate["status"]["message"] == validate["status"]["message"]


def test_an_update_that_keeps_an_old_bad_opt_in_is_judged_as_before(ctx: Context) -> None:
    """A Pod admitted before both webhooks refused "TRUE" can still be labelled (and its
    finalizers removed); an update that introduces the value is refused."""
    old = pod(ctr("app"), annotations={"podgate.io/inject": "TRUE"})
    new = pod(ctr("app"), annotations={"podgate.io/inject": "TRUE"})
    new["metadata"]["labels"] = {"team": "a"}
    assert answer(review_for(new, operation="UPDATE", old=old), ctx)["allowed"] is True
    fresh = pod(ctr("app"))
    assert answer(review_for(new, operation="UPDATE", old=fresh), ctx)["allowed"] is False


def test_an_injected_pod_is_not_refused_for_its_opt_in(ctx: Context) -> None:
    """Where /mutate skips the Pod (the proxy runs already), /validate does not ask either."""
    obj = pod(ctr("app"), init=(PROXY,), annotations={"podgate.io/inject": "TRUE"})
    assert answer(review_for(obj), ctx, "mutate")["allowed"] is True
    assert "invalid" not in (answer(review_for(obj), ctx).get("status") or {}).get("message", "")


@pytest.mark.parametrize("ports, port, what", [("15001", 15001, " (its outbound capture port)"),
                                               ("443,15006", 15006, " (its inbound capture port)"),
                                               ("15090", 15090, "")])
def test_mutate_denies_excluding_a_proxy_port_from_outbound_capture(ctx: Context, ports: str, port: int,
                                                                    what: str) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/exclude-outbound-ports": ports})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert (f'annotation podgate.io/exclude-outbound-ports: "{ports}" includes {port}, a port of the mesh proxy '
            f'"mesh-proxy"{what}') in response["status"]["message"]


def test_excluding_other_outbound_ports_still_injects(ctx: Context) -> None:
    obj = pod(ctr("app"), annotations={"podgate.io/exclude-outbound-ports": "443,5432"})
    response = answer(review_for(obj, namespace="meshed"), ctx, "mutate")
    assert response["allowed"] is True
    assert b"443,5432" in base64.b64decode(response["patch"])


# --- against a real server over TLS -----------------------------------------------------------

def test_the_attacks_over_https(tmp_path: Any) -> None:
    from .live_server import live_server

    attacks = {
        "mutate": [pod(ctr("app"), annotations={"podgate.io/inject": "true",
                                                "podgate.io/exclude-inbound-ports": DIGITS}),
                   pod(ctr("app"), annotations={"podgate.io/inject": "TRUE"}),
                   pod(ctr("app", readiness=("tcpSocket", DIGITS)), annotations={"podgate.io/inject": "true"})],
        "validate": [pod(ctr("app"), annotations={"podgate.io/inject": "TRUE"}),
                     pod(ctr("app", readiness=("tcpSocket", DIGITS))),
                     same_named(5000),
                     pod(ctr("n" * 1_000_000, port(80)), *[ctr(f"c{i}", port(80)) for i in range(25)])],
    }
    with live_server(tmp_path, "--workers", "1") as server:
        session = server.session()
        for webhook, pods in attacks.items():
            for obj in pods:
                response = session.post(f"{server.url}/{webhook}", json=review_for(obj), timeout=30)
                assert response.status_code == 200, response.text[:500]
                assert len(response.content) < 200_000
                body = response.json()["response"]
                # denied with a reason, or (a probe /mutate leaves alone) injected: never a 500
                assert (body.get("status") or {}).get("code") in (None, 400, 403), body["status"]
                assert body["allowed"] is False or webhook == "mutate" and "patch" in body
        log = server.output()
    assert "Traceback" not in log and "internal error" not in log
    assert max(len(line) for line in log.splitlines()) < 200_000


@pytest.mark.parametrize("field", ["operation", "subResource", "namespace"])
def test_forged_envelope_fields_are_quoted_bounded(ctx: Context, field: str) -> None:
    """What the envelope carries is echoed in answers and the decision log only within bounds."""
    body = review_for(pod(ctr("app")))
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "K" * 1_000_000}
    body["request"][field] = "x" * 1_000_000
    outcome = review(orjson.dumps(body), "validate", ctx)
    assert len(orjson.dumps(outcome.response)) < 10_000
    assert len(json.dumps(decision_fields("validate", outcome, 0.001))) < 10_000
