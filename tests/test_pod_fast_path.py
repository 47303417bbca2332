"""The pod model's fast path for well-formed fields gives exactly what the strict path gives:
the same Listener or container, or the same error with the same JSON pointer."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.errors import PodShapeError
from webhook.pods import Role, _container, _listener, _listeners

ODD = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=4), st.floats(allow_nan=False),
                st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
PORT = st.one_of(st.integers(1, 65535), ODD)
PROTOCOL = st.one_of(st.sampled_from(["TCP", "UDP", "SCTP", "", "tcp"]), ODD)


@st.composite
def port_entry(draw: Any) -> Any:
    entry = {}
    for key, values in (("containerPort", PORT), ("protocol", PROTOCOL), ("name", st.one_of(st.text(max_size=3), ODD)),
                        ("hostPort", st.one_of(st.just(0), PORT)), ("hostIP", st.one_of(st.just("10.0.0.1"), ODD))):
        if draw(st.booleans()):
            entry[key] = draw(values)
    return draw(st.one_of(st.just(entry), ODD))


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except PodShapeError as exc:
        return ("error", exc.path, exc.message)
    except Exception as exc:  # noqa: BLE001  (must match too: the caller turns it into a 500)
        return ("crash", type(exc).__name__)


def strict_listeners(ports: list[Any], path: str) -> tuple[Any, ...]:
    return tuple(_listener(p, f"{path}/ports/{i}") for i, p in enumerate(ports))


@settings(max_examples=400, deadline=None)
@given(st.lists(port_entry(), max_size=4))
def test_listeners_fast_path_matches_strict(ports: list[Any]) -> None:
    assert outcome(_listeners, ports, "/spec/containers/0") == outcome(strict_listeners, ports, "/spec/containers/0")


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"name": st.one_of(st.just("app"), ODD)}, optional={
    "ports": st.one_of(st.lists(port_entry(), max_size=2), ODD),
    "securityContext": st.one_of(st.fixed_dictionaries({}, optional={"runAsUser": st.one_of(st.integers(0, 2000), ODD)}),
                                 ODD),
    "readinessProbe": st.one_of(st.fixed_dictionaries({}, optional={
        "httpGet": st.one_of(st.fixed_dictionaries({}, optional={"port": st.one_of(st.just("http"), PORT)}), ODD),
        "tcpSocket": st.fixed_dictionaries({"port": PORT})}), ODD),
}))
def test_container_matches_the_strict_reading(raw: dict[str, Any]) -> None:
    got = outcome(_container, raw, "/spec/containers/0", Role.APP, 0, 1000)
    assert not (isinstance(got, tuple) and got and got[0] == "crash"), got
    if isinstance(got, tuple) and got and got[0] == "error":
        return  # errors are compared field by field above and in the fuzz tests
    assert got.listeners == outcome(strict_listeners, raw.get("ports") or [], "/spec/containers/0")
    security = raw.get("securityContext")
    assert got.run_as_user == (security.get("runAsUser") if isinstance(security, dict)
                               and security.get("runAsUser") is not None else 1000)
