"""Proxy injection: decide whether a Pod gets the mesh proxy, and build the JSON Patch that adds it.

The patch is built straight from the injection plan (no deep copy, no diff): arrays the Pod
lacks are added whole, keys are escaped (RFC 6901), ``metadata.managedFields`` is never
touched. ``podgate inject`` applies this same patch (``offline.admit``), so it and ``/mutate``
cannot disagree. A ``podgate.io/status`` annotation (webhook/status.py) records what was injected, the
Pod's own containers at the time and the probes rewritten (webhook/proberewrite.py). A Pod that
carries the proxy (a native sidecar or an app container of its name: what runs for the Pod's life)
is not injected again; when the status says podgate injected it (reinvocation: another webhook ran
in between), only the containers added since get their probes rewritten, and nothing else changes.
The annotation without a running proxy (copied from another Pod), or a classic init container named
like the proxy, is refused.
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
from jsonpointer import escape, unescape
from kubernetes.utils.quantity import parse_quantity

from .echo import echo
from .errors import InjectionError, PodShapeError, PolicyError
from .pods import Container, Pod, Role, port_number
from .proberewrite import (
    REWRITE_ANNOTATION,
    ProbeRewrite,
    compile_probe_rewrite,
    decode_originals,
    encode_originals,
    env_value,
    rewrite_container,
)
from .selectors import Labels
from .status import STATUS_ANNOTATION, Status, read_status

PROXY_CPU_ANNOTATION = "podgate.io/proxy-cpu"
PROXY_MEMORY_ANNOTATION = "podgate.io/proxy-memory"
PROXY_CPU_LIMIT_ANNOTATION = "podgate.io/proxy-cpu-limit"
PROXY_MEMORY_LIMIT_ANNOTATION = "podgate.io/proxy-memory-limit"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
ALREADY_INJECTED = f"already injected ({STATUS_ANNOTATION} is set)"
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
    probes: ProbeRewrite | None = None  # the probes of the Pod's containers go through the proxy's agent
    hold: bool = False  # classic mode: the proxy comes first, its postStart hook holds the apps
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
    hold = spec.get("hold")
    if hold is not None:
        container["lifecycle"] = {**(container.get("lifecycle") or {}), "postStart": hold["postStart"]}
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
        profile_hash=digest, probes=compile_probe_rewrite(spec.get("probes")), hold=hold is not None)


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
    if "hold" in spec and spec.get("mode", "native") == "native":
        problems.append((["hold"], "hold is for mode classic: a native sidecar already holds the app containers "
                                   "until its startupProbe passes; leave hold out, or use mode: classic"))
    env = (spec.get("probes") or {}).get("env")
    for i, entry in enumerate(proxy.get("env") or []):
        if env is not None and isinstance(entry, dict) and entry.get("name") == env:
            problems.append((["container", "env", i, "name"], f"{env!r} is the env var that carries the original "
                                                              "probes (probes.env): podgate sets it; use another name"))
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
    reinvoked: bool = False  # the patch rewrites the probes of containers added since injection


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
    # Its name is the one of the profile the Pod was injected with (or would be: its revision's).
    proxy = pod.running_container(mesh.judging_profile(pod, labels).proxy.name)
    if proxy is not None:
        if STATUS_ANNOTATION in pod.annotations:
            return ALREADY_INJECTED
        where = "a native sidecar" if proxy.role is Role.SIDECAR else "an app container"
        return f'already has a "{proxy.name}" container ({where})'
    mesh.choice(pod)  # raises for a value that is neither "true" nor "false" (check_opt_in)
    if pod.host_network:
        return "hostNetwork pod (shares the node's network)"
    if pod.is_windows:
        # The proxy and the redirect run with runAsUser, capabilities, readOnlyRootFilesystem and
        # allowPrivilegeEscalation: Linux-only fields the API server refuses in a Windows Pod.
        return "Windows pod (spec.os.name: windows; the proxy needs Linux-only security settings)"
    if mesh.opted_out(pod):
        return f'opted out ({mesh.annotation}: "false")'
    revision = mesh.revision(pod, labels)
    if not mesh.requires(pod, labels):
        if revision.source != "policy default":  # the one answer: the policy decides whether, the label which
            return (f"not selected for the mesh by policy ({revision.describe()} chooses the proxy of a meshed "
                    f"pod, it does not mesh one)")
        return "not selected for the mesh by policy"
    if revision.profile is None:  # a typo must not leave the Pod outside the mesh, nor on another proxy
        raise InjectionError(f"no mesh profile for {revision.describe()}; known revisions: "
                             f"{', '.join(sorted(mesh.revisions))}")
    if revision.profile.injector is None:
        return f'mesh profile "{revision.profile.name}" has no injection template'
    return None


def check_opt_in(pod: Pod, mesh: Any) -> None:
    """Raise InjectionError where /mutate refuses the Pod's opt-in annotation (a Pod it could
    still inject); /validate asks the same, so that the two webhooks give one answer."""
    if not pod.is_mirror and pod.running_container(mesh.profile.proxy.name) is None:
        mesh.choice(pod)


def _ports_annotation(pod: Pod, key: str) -> list[int]:
    raw = pod.annotations.get(key)
    if raw is None:
        return []
    ports = []
    for part in raw.split(","):
        number = port_number(part.strip())
        if number is None:
            raise InjectionError(f'annotation {key}: "{echo(raw)}" is not a comma-separated list of ports 1-65535')
        ports.append(number)
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
        raise InjectionError(f'annotation {key}: "{echo(raw)}" is not a Kubernetes quantity (e.g. 200m, 256Mi)')
    if value <= 0:
        raise InjectionError(f'annotation {key}: "{echo(raw)}" must be greater than zero')
    if whole and value != value.to_integral_value():
        hint = ' ("m" is thousandths; mebibytes are "Mi")' if raw.endswith("m") else ""
        raise InjectionError(f'annotation {key}: "{echo(raw)}" is not a whole number of bytes{hint}')
    if bound is not None and value > bound.value:
        raise InjectionError(f'annotation {key}: "{echo(raw)}" exceeds the policy maximum {bound.text}')
    return raw


RESOURCE_OVERRIDES = (  # (annotation, requests or limits, resource, whole bytes only)
    (PROXY_CPU_ANNOTATION, "requests", "cpu", False),
    (PROXY_MEMORY_ANNOTATION, "requests", "memory", True),
    (PROXY_CPU_LIMIT_ANNOTATION, "limits", "cpu", False),
    (PROXY_MEMORY_LIMIT_ANNOTATION, "limits", "memory", True),
)


def _proxy_resources(inj: Injector, pod: Pod) -> dict[str, Any] | None:
    """The proxy's resources with the Pod's overrides (None: no override). An override replaces
    one value; every other request and limit of the profile stays."""
    bounds = {"cpu": inj.max_cpu, "memory": inj.max_memory}
    resources = dict(inj.container.get("resources") or {})
    given: dict[tuple[str, str], str] = {}
    for key, section, name, whole in RESOURCE_OVERRIDES:
        value = _quantity_annotation(pod, key, bounds[name], whole=whole)
        if value is not None:
            resources[section] = {**(resources.get(section) or {}), name: value}
            given[(section, name)] = key
    if not given:
        return None
    for name in ("cpu", "memory"):
        request, limit = (resources.get(section, {}).get(name) for section in ("requests", "limits"))
        if request is not None and limit is not None and _quantity(request) > _quantity(limit):
            said = {section: f"annotation {given[(section, name)]}" if (section, name) in given else "the mesh profile"
                    for section in ("requests", "limits")}
            raise InjectionError(f'the proxy\'s {name} request "{request}" ({said["requests"]}) is more than its {name} '
                                 f'limit "{limit}" ({said["limits"]}): the API server refuses such a Pod; lower the '
                                 f"request or raise the limit")
    return resources


def _proxy_container(inj: Injector, pod: Pod, originals: dict[str, Any]) -> dict[str, Any]:
    container = dict(inj.container)
    if (resources := _proxy_resources(inj, pod)) is not None:
        container["resources"] = resources
    if originals:
        assert inj.probes is not None
        container["env"] = [*(container.get("env") or ()),
                            {"name": inj.probes.env, "value": encode_originals(originals)}]
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
    if excluded or excluded_out:
        # The profile may exclude the proxy's own ports (health, metrics); a Pod may not, in
        # either direction: traffic to the capture ports or the proxy's listeners must not slip
        # past the redirect.
        own = {port for port, protocol in reserved if protocol == "TCP"}
        own.update(p for p in (ports.get("inbound"), ports.get("outbound")) if p is not None)
        for key, listed in ((EXCLUDE_INBOUND_ANNOTATION, excluded), (EXCLUDE_OUTBOUND_ANNOTATION, excluded_out)):
            for port in listed:
                if port in own:
                    raw = echo(pod.annotations[key])
                    what = {ports.get("inbound"): " (its inbound capture port)",
                            ports.get("outbound"): " (its outbound capture port)"}.get(port, "")
                    raise InjectionError(f'annotation {key}: "{raw}" includes {port}, a port of the mesh proxy '
                                         f'"{inj.proxy_name}"{what}: only the mesh profile may exclude the '
                                         f"proxy's ports; leave it out")
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


def _rewrites_probes(inj: Injector, pod: Pod) -> bool:
    """The profile rewrites probes and the Pod does not opt out (``podgate.io/rewrite-probes``)."""
    choice = pod.annotations.get(REWRITE_ANNOTATION)
    if choice is not None and choice not in ("true", "false"):
        raise InjectionError(f'annotation {REWRITE_ANNOTATION}: "{echo(choice)}" must be "true" (probes go through the '
                             f'proxy) or "false" (the kubelet probes the containers directly), in lower case')
    return inj.probes is not None and choice != "false"


def _probe_ops(rw: ProbeRewrite, pod: Pod, containers: list[Container]) -> tuple[list[dict[str, Any]],
                                                                                 dict[str, Any]]:
    """The ``replace`` ops that point the probes of these containers at the agent, and the originals
    (container -> kind -> probe). Container paths are those of the Pod as it came: these ops go
    before any op that inserts a container."""
    spec = pod.raw["spec"]
    ops: list[dict[str, Any]] = []
    originals: dict[str, Any] = {}
    for c in containers:
        if c.role is Role.INIT:
            continue  # a classic init container has no probes (the API server refuses them)
        key = "containers" if c.role is Role.APP else "initContainers"
        rewritten = rewrite_container(rw, spec[key][c.index])
        for kind, probe in rewritten.probes.items():
            ops.append({"op": "replace", "path": f"/spec/{key}/{c.index}/{kind}", "value": probe})
        if rewritten.originals:
            originals[c.name] = dict(rewritten.originals)
    return ops, originals


def _own_containers(pod: Pod, injected: frozenset[str]) -> tuple[str, ...]:
    return tuple(c.name for c in pod.containers if c.name not in injected)


def _annotation_ops(raw: Mapping[str, Any], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Set annotations, adding ``metadata`` or ``metadata.annotations`` whole where the Pod lacks them."""
    metadata = raw.get("metadata")
    if metadata is None:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": dict(values)}}]
    if metadata.get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(values)}]
    return [{"op": "add", "path": f"/metadata/annotations/{escape(key)}", "value": value}
            for key, value in values.items()]


def _default_container(pod: Pod, proxy_name: str) -> str | None:
    """The container ``kubectl logs`` and ``exec`` pick without ``-c``: the Pod's first app container,
    unless the Pod names one itself (None: leave it)."""
    if DEFAULT_CONTAINER_ANNOTATION in pod.annotations:
        return None
    return next((c.name for c in pod.containers if c.role is Role.APP and c.name != proxy_name), None)


def plan(pod: Pod, policy: Any, labels: Labels | None) -> Plan:
    """Decide and build the injection for one Pod; raise InjectionError for a bad override and
    PodShapeError for a field the injection touches that the pod model does not check."""
    reason = skip_reason(pod, policy, labels)
    if reason == ALREADY_INJECTED:
        return _reinvoked(pod, policy)
    if reason is not None:
        return Plan(skip=reason)
    profile = policy.mesh.revision(pod, labels).profile  # skip_reason made sure there is one
    inj: Injector = profile.injector
    if STATUS_ANNOTATION in pod.annotations:
        raise InjectionError(f'the pod carries {STATUS_ANNOTATION}, but no "{inj.proxy_name}" container runs in '
                             f"it: remove the annotation (copied from an injected pod?) so that podgate can inject "
                             f"the proxy")
    probe_ops: list[dict[str, Any]] = []
    originals: dict[str, Any] = {}
    if _rewrites_probes(inj, pod):
        assert inj.probes is not None
        probe_ops, originals = _probe_ops(inj.probes, pod, list(pod.containers))
    proxy = _proxy_container(inj, pod, originals)
    redirect = _redirect_container(inj, pod, profile.proxy.reserved)
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
    ops = probe_ops  # first: their paths are those of the containers before any is inserted

    head = [c for c in (redirect, proxy if inj.mode == "native" else None) if c is not None]
    if head:
        existing = spec.get("initContainers")
        if existing:
            ops.extend({"op": "add", "path": f"/spec/initContainers/{i}", "value": c} for i, c in enumerate(head))
        else:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": head})
    if inj.mode == "classic":
        # RFC 6902 appends ("-") to an array that exists only: a missing, null or empty one is added whole.
        # With hold the proxy goes first: the kubelet starts containers in order and waits for each
        # one's postStart hook before it starts the next.
        if spec.get("containers"):
            ops.append({"op": "add", "path": "/spec/containers/0" if inj.hold else "/spec/containers/-",
                        "value": proxy})
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

    status = Status(inj.profile, inj.profile_hash, tuple(c["name"] for c in head),
                    (proxy["name"],) if inj.mode == "classic" else (), tuple(v["name"] for v in inj.volumes),
                    pod_containers=tuple(c.name for c in pod.containers),
                    probes={name: tuple(kinds) for name, kinds in originals.items()},
                    revision=profile.revision)
    annotations = {STATUS_ANNOTATION: status.to_json()}
    if (default := _default_container(pod, inj.proxy_name)) is not None:
        annotations[DEFAULT_CONTAINER_ANNOTATION] = default
    ops.extend(_annotation_ops(raw, annotations))
    return Plan(patch=ops)


def _reinvoked(pod: Pod, policy: Any) -> Plan:
    """A Pod podgate injected earlier in this admission (``reinvocationPolicy: IfNeeded``): the
    containers another webhook added since get their probes rewritten; the patch is empty when
    nothing is new, so calling again changes nothing."""
    status = read_status(pod.annotations)
    # the profile it was injected with (its revision's, not necessarily the default's)
    profile = policy.mesh.profiles.get(status.profile) if status is not None else None
    inj: Injector | None = profile.injector if profile is not None else None
    if inj is None or status is None or status.pod_containers is None or status.profile != inj.profile:
        return Plan(skip=ALREADY_INJECTED)  # not a status this podgate can build on: leave the Pod alone
    injected = status.injected() | {inj.proxy_name}
    seen = frozenset(status.pod_containers)
    new = [c for c in pod.containers if c.name not in seen and c.name not in injected]
    if not new or not _rewrites_probes(inj, pod):
        return Plan(skip=ALREADY_INJECTED)
    assert inj.probes is not None
    ops, originals = _probe_ops(inj.probes, pod, new)
    if not ops:
        return Plan(skip=f"{ALREADY_INJECTED}; the containers added since have no probes to rewrite")
    proxy = pod.running_container(inj.proxy_name)
    assert proxy is not None  # skip_reason said so
    where = f"/spec/{'containers' if proxy.role is Role.APP else 'initContainers'}/{proxy.index}"
    proxy_raw = pod.raw["spec"]["containers" if proxy.role is Role.APP else "initContainers"][proxy.index]
    env = proxy_raw.get("env")
    if env is not None and not isinstance(env, list):
        raise PodShapeError(f"{where}/env", "expected a list")
    stored = env_value(proxy_raw, inj.probes.env)
    index = next((i for i, e in enumerate(env or ()) if isinstance(e, dict) and e.get("name") == inj.probes.env),
                 None)
    merged = decode_originals(stored) if index is not None else {}
    if merged is None:
        raise InjectionError(f'the env var {inj.probes.env} of the mesh proxy "{inj.proxy_name}" is not the JSON '
                             f"podgate writes, so the probes of the containers added since injection cannot be "
                             f"added to it")
    value = encode_originals({**merged, **originals})
    if index is not None:
        ops.append({"op": "replace", "path": f"{where}/env/{index}/value", "value": value})
    elif env:
        ops.append({"op": "add", "path": f"{where}/env/-", "value": {"name": inj.probes.env, "value": value}})
    else:
        ops.append({"op": "add", "path": f"{where}/env", "value": [{"name": inj.probes.env, "value": value}]})
    updated = Status(status.profile, status.hash, status.init_containers, status.containers, status.volumes,
                     pod_containers=_own_containers(pod, status.injected()),
                     probes={**status.probes, **{name: tuple(kinds) for name, kinds in originals.items()}},
                     revision=status.revision)
    ops.extend(_annotation_ops(pod.raw, {STATUS_ANNOTATION: updated.to_json()}))
    return Plan(patch=ops, reinvoked=True)


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """``doc`` with the ops of a ``plan`` (RFC 6902 ``add`` and ``replace``) applied, as the API
    server applies them, without changing ``doc``: only the objects and arrays along each op's
    path are copied (jsonpatch deep-copies the whole Pod and every value, which made judging a
    workload's template cost more than its Pod's two webhook calls). The result shares the rest
    with ``doc`` and the patch: read it, do not change it."""
    copied: set[int] = set()

    def own(node: Any) -> Any:
        fresh = dict(node) if isinstance(node, dict) else list(node)
        copied.add(id(fresh))
        return fresh

    root = own(doc)
    for op in ops:
        kind = op["op"]
        if kind not in ("add", "replace"):
            raise ValueError(f"apply_patch applies add and replace, not {kind!r}")
        *parents, last = [unescape(part) for part in op["path"].split("/")[1:]]
        node = root
        for part in parents:
            key: Any = int(part) if isinstance(node, list) else part
            child = node[key]
            if id(child) not in copied:
                child = node[key] = own(child)
            node = child
        value = op["value"]
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif kind == "add":
                index = int(last)
                if not 0 <= index <= len(node):
                    raise IndexError(f"{op['path']}: index out of range")
                node.insert(index, value)
            else:
                node[int(last)] = value
        else:
            if kind == "replace" and last not in node:
                raise KeyError(f"{op['path']}: nothing to replace")
            node[last] = value
    return root
