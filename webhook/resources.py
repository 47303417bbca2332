"""A Pod's effective resource requests, as the scheduler and ResourceQuota count them.

Kubernetes 1.29+ (native sidecars): the app containers run together with every native sidecar, and
each classic init container runs together with the sidecars declared before it, so the Pod asks for
the larger of (apps + all sidecars) and, over its init containers, (that init container + the
sidecars before it) or (the sidecars up to and including each sidecar); ``spec.overhead`` comes on
top. A container's request defaults to its limit where only the limit is given (the API server
does so). ``podgate check -o json`` shows this for an injected Pod, so that teams see what the proxy
costs them before quota does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

Requests = dict[str, Decimal]
BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def _quantities(values: Any) -> Requests:
    """A ResourceList as numbers; a value that is not a quantity counts as nothing (the API server
    refuses the Pod for it anyway)."""
    out: Requests = {}
    for name, value in values.items() if isinstance(values, dict) else ():
        try:
            number = parse_quantity(value)
        except (ValueError, TypeError, ArithmeticError):
            continue
        if isinstance(name, str) and number.is_finite() and number >= 0:
            out[name] = number
    return out


def container_requests(container: Any) -> Requests:
    resources = container.get("resources") if isinstance(container, dict) else None
    if not isinstance(resources, dict):
        return {}
    return {**_quantities(resources.get("limits")), **_quantities(resources.get("requests"))}


def _add(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> Requests:
    return {name: a.get(name, Decimal(0)) + b.get(name, Decimal(0)) for name in {*a, *b}}


def _max(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> Requests:
    return {name: max(a.get(name, Decimal(0)), b.get(name, Decimal(0))) for name in {*a, *b}}


def _containers(spec: Mapping[str, Any], key: str) -> Iterable[Any]:
    value = spec.get(key)
    return value if isinstance(value, list) else ()


def pod_requests(pod: Any) -> Requests:
    """The Pod's effective requests (the formula of k8s.io/component-helpers resource.PodRequests)."""
    spec = pod.get("spec") if isinstance(pod, dict) else None
    if not isinstance(spec, dict):
        return {}
    apps: Requests = {}
    for container in _containers(spec, "containers"):
        apps = _add(apps, container_requests(container))
    sidecars: Requests = {}
    init: Requests = {}
    for container in _containers(spec, "initContainers"):
        own = container_requests(container)
        if isinstance(container, dict) and container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, own)
            init = _max(init, sidecars)
        else:
            init = _max(init, _add(own, sidecars))
    total = _max(_add(apps, sidecars), init)
    pod_level = spec.get("resources")  # Pod-level resources (1.32+): where given, they are the Pod's
    if isinstance(pod_level, dict):
        total.update({**_quantities(pod_level.get("limits")), **_quantities(pod_level.get("requests"))})
    return _add(total, _quantities(spec.get("overhead")))


def format_quantity(name: str, value: Decimal) -> str:
    """A quantity as Kubernetes writes it: CPU in cores or millicores (rounded up), everything else
    in whole units with the largest binary suffix that divides it."""
    if name == "cpu" or name.endswith(".cpu"):
        millis = (value * 1000).to_integral_value(ROUND_CEILING)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    whole = value.to_integral_value(ROUND_CEILING)
    for suffix, size in BINARY_SUFFIXES:
        if whole and whole % size == 0:
            return f"{whole // size}{suffix}"
    return str(whole)


def formatted(requests: Mapping[str, Decimal]) -> dict[str, str]:
    return {name: format_quantity(name, requests[name]) for name in sorted(requests)}
