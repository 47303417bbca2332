"""Proxy injection: decide whether a Pod gets the mesh proxy, and build the JSON Patch that adds it.

The patch is built straight from the injection plan (no deep copy, no diff): arrays the Pod
lacks are added whole, keys are escaped (RFC 6901), ``metadata.managedFields`` is never
touched. ``podgate inject`` applies this same patch (``offline.admit``), so it and ``/mutate``
cannot disagree. A ``podgate.io/status`` annotation records what was injected; a Pod that carries
the proxy (a native sidecar or an app container of its name: what runs for the Pod's life) is left
alone, which makes injection idempotent under reinvocation. The annotation without a running proxy
(copied from another Pod), or a classic init container named like the proxy, is refused.
"""

from __future__ import annotations

import copy
import re
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from jsonpointer import escape
from kubernetes.utils.quantity import parse_quantity

from .errors import InjectionError, PodShapeError, PolicyError
from .pods import Pod, Role
from .selectors import Labels

STATUS_ANNOTATION = "podgate.io/status"
PROXY_CPU_ANNOTATION = "podgate.io/proxy-cpu"
PROXY_MEMORY_ANNOTATION = "podgate.io/proxy-memory"
EXCLUDE_INBOUND_ANNOTATION = "podgate.io/exclude-inbound-ports"
EXCLUDE_OUTBOUND_ANNOTATION = "podgate.io/exclude-outbound-ports"
MAX_EXCLUDED_PORTS = 64
MAX_CACHED_REDIRECTS = 64
PLACEHOLDER = re.compile(r"\{(?:proxyUID|inboundPort|outboundPort|excludeInboundPorts|excludeOutboundPorts)\}")
# resource.Quantity's syntax (k8s.io/apimachinery), ASCII only
QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?", re.ASCII)


class Bound(NamedTuple):
    """The largest per-Pod override, as a number and as the policy wrote it (for messages)."""

    value: Decimal
    text: str


@dataclass(frozen=True)
class Injector:
    """A MeshProfile's injection section, compiled once at policy load."""

    profile: str
    proxy_name: str
    proxy_uid: int
    mode: str  # native | classic
    container: Mapping[str, Any]  # the proxy container, complete but for per-Pod overrides
    redirect: Mapping[str, Any] | None  # the traffic-redirect init container template
    redirect_ports: Mapping[str, Any]
    volumes: tuple[Mapping[str, Any], ...]
    max_cpu: Bound | None
    max_memory: Bound | None
    profile_hash: str = field(default="")
    # The redirect's arguments for each pair of excluded-port lists seen (most Pods: none, so one
    # entry): filling the template in on every request cost more than the rest of the plan.
    redirect_args: dict[tuple[tuple[int, ...], tuple[int, ...]], list[str]] = field(
        default_factory=dict, compare=False, repr=False)


def compile_injector(profile: str, proxy_name: str, proxy_uid: int, spec: Mapping[str, Any]) -> Injector | None:
    """Turn ``spec.injection`` of a MeshProfile into an Injector (None: the profile only validates).

    Raises PolicyError with the JSON path of a bad quantity."""
    if not spec or "container" not in spec:
        return None
    container = dict(copy.deepcopy(spec["container"]))
    container["name"] = proxy_name
    security = dict(container.get("securityContext") or {})
    capabilities = dict(security.get("capabilities") or {})
    capabilities["drop"] = ["ALL"]
    security.update(runAsUser=proxy_uid, runAsNonRoot=True, readOnlyRootFilesystem=True,
                    allowPrivilegeEscalation=False, capabilities=capabilities)
    container["securityContext"] = security
    mode = spec.get("mode", "native")
    if mode == "native":
        container["restartPolicy"] = "Always"
    # Keep the API server's field order stable: name first reads best in golden files.
    container = {"name": proxy_name, **{k: v for k, v in container.items() if k != "name"}}
    redirect = None
    ports: dict[str, Any] = {}
    if (redirect_spec := spec.get("redirect")) is not None:
        redirect = {k: v for k, v in redirect_spec.items() if k not in ("ports",)}
        ports = dict(redirect_spec.get("ports") or {})
    limits = (container.get("resources") or {}).get("limits") or {}
    overrides = spec.get("overrides") or {}
    max_cpu = _bound(overrides, "maxCPU", limits, "cpu")
    max_memory = _bound(overrides, "maxMemory", limits, "memory")
    digest = hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return Injector(
        profile=profile, proxy_name=proxy_name, proxy_uid=proxy_uid, mode=mode, container=container,
        redirect=redirect, redirect_ports=ports, volumes=tuple(spec.get("volumes") or ()),
        max_cpu=max_cpu, max_memory=max_memory,
        profile_hash=digest)


def _bound(overrides: Mapping[str, Any], key: str, limits: Mapping[str, Any], resource: str) -> Bound | None:
    """The largest per-Pod override allowed: the profile's explicit bound, else the proxy's limit."""
    path, value = (f"/spec/injection/overrides/{key}", overrides[key]) if key in overrides \
        else (f"/spec/injection/container/resources/limits/{resource}", limits.get(resource))
    if value is None:
        return None
    try:
        return Bound(parse_quantity(value), str(value))
    except (ValueError, TypeError):
        raise PolicyError(f"{path}: {value!r} is not a Kubernetes quantity (e.g. 500m, 1Gi)") from None


def template_problems(spec: Mapping[str, Any], proxy_name: str) -> list[tuple[list[Any], str]]:
    """What the API server refuses in every Pod these templates go into that a JSON Schema cannot
    say (it compares values across fields), as (path inside ``spec.injection``, message).

    Runs on a schema-valid ``spec.injection``."""
    problems: list[tuple[list[Any], str]] = []
    proxy, redirect = spec.get("container") or {}, spec.get("redirect") or {}
    problems += _duplicates(["container", "ports"], proxy.get("ports") or [], "name", "the proxy container")
    for at, container, what in ((["container"], proxy, "the proxy container"),
                                (["redirect"], redirect, "the redirect container")):
        problems += _duplicates(at + ["volumeMounts"], container.get("volumeMounts") or [], "mountPath", what)
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        for name, request in (resources.get("requests") or {}).items():
            if name in limits and _quantity(request) > _quantity(limits[name]):
                problems.append((at + ["resources", "requests", name],
                                 f"{request!r} is more than the {name} limit {limits[name]!r}: the API server "
                                 "refuses the Pod"))
    if redirect.get("name") == proxy_name:
        problems.append((["redirect", "name"], f"{proxy_name!r} is also the proxy's name (spec.proxy.name): "
                                               "two containers of a Pod cannot share a name"))
    limits = (proxy.get("resources") or {}).get("limits") or {}
    for key, name in (("maxCPU", "cpu"), ("maxMemory", "memory")):
        bound = (spec.get("overrides") or {}).get(key)
        if bound is not None and name in limits and _quantity(bound) > _quantity(limits[name]):
            problems.append((["overrides", key], f"{bound!r} is more than the proxy's {name} limit {limits[name]!r}: "
                                                 "the API server refuses a Pod that asks for more"))
    problems += _duplicates(["volumes"], spec.get("volumes") or [], "name", "the profile's volumes")
    return problems


def _duplicates(at: list[Any], items: list[Any], key: str, what: str) -> list[tuple[list[Any], str]]:
    seen: dict[Any, int] = {}
    out = []
    for i, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if value is None:
            continue
        if value in seen:
            out.append((at + [i, key], f"{value!r} is given twice in {what} (also {at[-1]}/{seen[value]}): "
                                       "the API server refuses the Pod"))
        else:
            seen[value] = i
    return out


def _quantity(value: Any) -> Decimal:
    """A quantity the schema has checked; a bound compile_injector reports itself counts as 0."""
    try:
        return parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return Decimal(0)


@dataclass(frozen=True)
class Plan:
    """What /mutate answers: a patch, or why nothing is injected."""

    skip: str | None = None
    patch: list[dict[str, Any]] = field(default_factory=list)


def skip_reason(pod: Pod, policy: Any, labels: Labels | None) -> str | None:
    """Why this Pod gets no proxy (None: inject), in the order Istio checks. Raises InjectionError
    for an opt-in/opt-out annotation that is neither "true" nor "false"."""
    mesh = policy.mesh
    if mesh is None:
        return f'policy "{policy.name}" has no mesh'
    if pod.is_mirror:
        return "mirror pod (managed by the kubelet)"
    # The proxy counts where it runs for the Pod's life: a native sidecar or an app container. A
    # classic init container of that name exits first; plan() refuses it rather than skip the Pod.
    proxy = pod.running_container(mesh.profile.proxy.name)
    if proxy is not None:
        if STATUS_ANNOTATION in pod.annotations:
            return "already injected (podgate.io/status is set)"
        where = "a native sidecar" if proxy.role is Role.SIDECAR else "an app container"
        return f'already has a "{proxy.name}" container ({where})'
    choice = pod.annotations.get(mesh.annotation)
    if choice is not None and choice not in ("true", "false"):
        # "True", "yes", "1" would otherwise read as "not opted in" (or not out), silently
        raise InjectionError(f'annotation {mesh.annotation}: "{choice}" must be "true" (inject the proxy) or '
                             f'"false" (opt out), in lower case')
    if pod.host_network:
        return "hostNetwork pod (shares the node's network)"
    if pod.is_windows:
        # The proxy and the redirect run with runAsUser, capabilities, readOnlyRootFilesystem and
        # allowPrivilegeEscalation: Linux-only fields the API server refuses in a Windows Pod.
        return "Windows pod (spec.os.name: windows; the proxy needs Linux-only security settings)"
    if mesh.opted_out(pod):
        return f'opted out ({mesh.annotation}: "false")'
    if not mesh.requires(pod, labels):
        return "not selected for the mesh by policy"
    if mesh.profile.injector is None:
        return f'mesh profile "{mesh.profile.name}" has no injection template'
    return None


def _ports_annotation(pod: Pod, key: str) -> list[int]:
    raw = pod.annotations.get(key)
    if raw is None:
        return []
    ports = []
    for part in raw.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or not 1 <= int(part) <= 65535:
            raise InjectionError(f'annotation {key}: "{raw}" is not a comma-separated list of ports 1-65535')
        ports.append(int(part))
    if len(ports) > MAX_EXCLUDED_PORTS:
        raise InjectionError(f"annotation {key}: at most {MAX_EXCLUDED_PORTS} ports, got {len(ports)}")
    return ports


def _quantity_annotation(pod: Pod, key: str, bound: Bound | None, whole: bool = False) -> str | None:
    raw = pod.annotations.get(key)
    if raw is None:
        return None
    # The API server's grammar, not Python's: parse_quantity also takes "NaN", "1_000" and "١٢",
    # which would reach the Pod and fail there (or, for NaN, fail every comparison here).
    value = None
    if QUANTITY.fullmatch(raw):
        try:
            value = parse_quantity(raw)
        except (ValueError, ArithmeticError):
            pass
    if value is None or not value.is_finite():
        raise InjectionError(f'annotation {key}: "{raw}" is not a Kubernetes quantity (e.g. 200m, 256Mi)')
    if value <= 0:
        raise InjectionError(f'annotation {key}: "{raw}" must be greater than zero')
    if whole and value != value.to_integral_value():
        hint = ' ("m" is thousandths; mebibytes are "Mi")' if raw.endswith("m") else ""
        raise InjectionError(f'annotation {key}: "{raw}" is not a whole number of bytes{hint}')
    if bound is not None and value > bound.value:
        raise InjectionError(f'annotation {key}: "{raw}" exceeds the policy maximum {bound.text}')
    return raw


def _proxy_container(inj: Injector, pod: Pod) -> dict[str, Any]:
    container = dict(inj.container)
    cpu = _quantity_annotation(pod, PROXY_CPU_ANNOTATION, inj.max_cpu)
    memory = _quantity_annotation(pod, PROXY_MEMORY_ANNOTATION, inj.max_memory, whole=True)
    if cpu or memory:
        resources = dict(container.get("resources") or {})
        requests = dict(resources.get("requests") or {})
        if cpu:
            requests["cpu"] = cpu
        if memory:
            requests["memory"] = memory
        resources["requests"] = requests
        container["resources"] = resources
    return container


def _redirect_container(inj: Injector, pod: Pod, reserved: frozenset[tuple[int, str]]) -> dict[str, Any] | None:
    if inj.redirect is None:
        for key in (EXCLUDE_INBOUND_ANNOTATION, EXCLUDE_OUTBOUND_ANNOTATION):
            if key in pod.annotations:  # it would do nothing: say so rather than ignore it
                raise InjectionError(f'annotation {key}: the mesh profile "{inj.profile}" injects no traffic '
                                     f"redirect, so there are no ports to exclude; remove the annotation")
        return None
    ports = inj.redirect_ports
    excluded = _ports_annotation(pod, EXCLUDE_INBOUND_ANNOTATION)
    excluded_out = _ports_annotation(pod, EXCLUDE_OUTBOUND_ANNOTATION)
    if excluded:
        # The profile may exclude the proxy's own ports (health, metrics); a Pod may not: traffic to
        # the capture ports or the proxy's listeners must not slip past the redirect.
        own = {port for port, protocol in reserved if protocol == "TCP"}
        own.update(p for p in (ports.get("inbound"), ports.get("outbound")) if p is not None)
        for port in excluded:
            if port in own:
                raw = pod.annotations[EXCLUDE_INBOUND_ANNOTATION]
                what = " (its inbound capture port)" if port == ports.get("inbound") else ""
                raise InjectionError(f'annotation {EXCLUDE_INBOUND_ANNOTATION}: "{raw}" includes {port}, a port of '
                                     f'the mesh proxy "{inj.proxy_name}"{what}: only the mesh profile may exclude '
                                     f"the proxy's ports; leave it out")
    key = (tuple(excluded), tuple(excluded_out))
    args = inj.redirect_args.get(key)
    if args is None:
        inbound = sorted({*ports.get("excludeInbound", ()), *excluded})
        outbound = sorted({*ports.get("excludeOutbound", ()), *excluded_out})
        values = {
            "proxyUID": str(inj.proxy_uid),
            "inboundPort": str(ports.get("inbound", "")),
            "outboundPort": str(ports.get("outbound", "")),
            "excludeInboundPorts": ",".join(map(str, inbound)),
            "excludeOutboundPorts": ",".join(map(str, outbound)),
        }
        args = _fill_args(inj.redirect.get("args") or (), values)
        if len(inj.redirect_args) < MAX_CACHED_REDIRECTS:  # Pods choose the keys: keep the table small
            inj.redirect_args[key] = args
    container = dict(inj.redirect)
    container["args"] = args
    return container


def _fill_args(templates: Any, values: Mapping[str, str]) -> list[str]:
    """Fill in the placeholders. Where they fill in nothing (no excluded ports), the option is left
    out rather than given an empty value: ``--flag {x}`` loses both arguments, ``--flag={x}`` its
    one."""
    args: list[str] = []
    flag = False  # the last argument is a plain option ("-..."), which the next one may be the value of
    for template in templates:
        arg = _fill(template, values)
        if arg != template and arg == PLACEHOLDER.sub("", template) and (arg == "" or arg.endswith("=")):
            if arg == "" and flag:
                args.pop()
            flag = False
            continue
        flag = arg.startswith("-") and arg == template
        args.append(arg)
    return args


def _fill(template: str, values: Mapping[str, str]) -> str:
    out = template
    if "{" not in out:
        return out  # most arguments are plain words: nothing to look for
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def _status(inj: Injector, init: list[str], containers: list[str], volumes: list[str]) -> str:
    return orjson.dumps({"profile": inj.profile, "hash": inj.profile_hash, "initContainers": init,
                         "containers": containers, "volumes": volumes}).decode()


def plan(pod: Pod, policy: Any, labels: Labels | None) -> Plan:
    """Decide and build the injection for one Pod; raise InjectionError for a bad override and
    PodShapeError for a field the injection touches that the pod model does not check."""
    reason = skip_reason(pod, policy, labels)
    if reason is not None:
        return Plan(skip=reason)
    inj: Injector = policy.mesh.profile.injector
    if STATUS_ANNOTATION in pod.annotations:
        raise InjectionError(f'the pod carries {STATUS_ANNOTATION}, but no "{inj.proxy_name}" container runs in '
                             f"it: remove the annotation (copied from an injected pod?) so that podgate can inject "
                             f"the proxy")
    proxy = _proxy_container(inj, pod)
    redirect = _redirect_container(inj, pod, policy.mesh.profile.proxy.reserved)
    for new in (proxy, redirect):
        if new is None or (taken := pod.container(new["name"])) is None:
            continue
        if new is proxy and taken.role is Role.INIT:
            raise InjectionError(f'the pod has a classic init container named "{taken.name}": it exits before the '
                                 f"app containers start, so it is not the mesh proxy, and the mesh profile "
                                 f'"{inj.profile}" injects a container of that name; rename the init container')
        raise InjectionError(f'the pod already has a container named "{new["name"]}", which the mesh '
                             f'profile "{inj.profile}" injects; rename that container')
    raw = pod.raw
    spec = raw["spec"]
    ops: list[dict[str, Any]] = []

    head = [c for c in (redirect, proxy if inj.mode == "native" else None) if c is not None]
    if head:
        existing = spec.get("initContainers")
        if existing:
            ops.extend({"op": "add", "path": f"/spec/initContainers/{i}", "value": c} for i, c in enumerate(head))
        else:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": head})
    if inj.mode == "classic":
        # RFC 6902 appends ("-") to an array that exists only: a missing, null or empty one is added whole.
        if spec.get("containers"):
            ops.append({"op": "add", "path": "/spec/containers/-", "value": proxy})
        else:
            ops.append({"op": "add", "path": "/spec/containers", "value": [proxy]})

    if inj.volumes:
        existing_volumes = spec.get("volumes") or []
        if not isinstance(existing_volumes, list):
            raise PodShapeError("/spec/volumes", "expected a list")
        names = {v.get("name") for v in existing_volumes if isinstance(v, dict) and isinstance(v.get("name"), str)}
        for volume in inj.volumes:
            if volume["name"] in names:
                raise InjectionError(f'the pod already has a volume named "{volume["name"]}", which the mesh '
                                     f'profile "{inj.profile}" injects')
        if existing_volumes:
            ops.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in inj.volumes)
        else:
            ops.append({"op": "add", "path": "/spec/volumes", "value": list(inj.volumes)})

    status = _status(inj, [c["name"] for c in head], [proxy["name"]] if inj.mode == "classic" else [],
                     [v["name"] for v in inj.volumes])
    metadata = raw.get("metadata")
    if metadata is None:
        ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {STATUS_ANNOTATION: status}}})
    elif metadata.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {STATUS_ANNOTATION: status}})
    else:
        ops.append({"op": "add", "path": f"/metadata/annotations/{escape(STATUS_ANNOTATION)}", "value": status})
    return Plan(patch=ops)
