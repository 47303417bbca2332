"""A read-only view of a Pod: its containers, listeners, probes and UIDs, checked for shape.

The rules work on this view rather than on raw dicts so that each rule stays short and every
shape problem (a port that is a string, containers that are not a list) is found once, here,
with the JSON pointer of the offending field.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from jsonpointer import escape

from .errors import PodShapeError

PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
PROBE_KINDS = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc")
WILDCARD_HOST_IPS = frozenset({"", "0.0.0.0", "::"})
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class Role(enum.Enum):
    """When a container runs, which decides whom it shares the network namespace with."""

    INIT = "init"  # classic init container: runs alone, before the next one starts
    SIDECAR = "sidecar"  # native sidecar: an init container with restartPolicy Always
    APP = "app"  # spec.containers
    EPHEMERAL = "ephemeral"  # spec.ephemeralContainers: added to a running Pod (kubectl debug), no ports


# Listener, Probe and Container are NamedTuples, not frozen dataclasses: just as immutable, but
# built several times faster (a frozen dataclass sets each field through object.__setattr__),
# and a Pod has one per port, probe and container on every admission request.

class Listener(NamedTuple):
    """One entry of a container's ``ports``."""

    port: int
    protocol: str
    name: str | None
    host_port: int | None
    host_ip: str


class Probe(NamedTuple):
    """A liveness/readiness/startup probe that targets a port (exec probes are left out)."""

    kind: str  # livenessProbe, readinessProbe, startupProbe
    handler: str  # httpGet, tcpSocket, grpc
    port: int | str  # a number, or the name of a port of the same container


class Container(NamedTuple):
    """A container with just the fields the rules need."""

    name: str
    role: Role
    index: int  # position in initContainers (INIT, SIDECAR) or containers (APP)
    listeners: tuple[Listener, ...]
    probes: tuple[Probe, ...]
    run_as_user: int | None  # effective: the container's securityContext, else the Pod's
    capabilities: frozenset[str] = frozenset()  # securityContext.capabilities.add (read for ephemeral containers)

    def runs_with(self, other: Container) -> bool:
        """Whether the two containers can be running at the same time (Kubernetes 1.28+)."""
        a, b = self, other
        if a.role is Role.INIT and b.role is Role.INIT:
            return False  # classic init containers run one at a time
        if Role.APP in (a.role, b.role) and Role.INIT in (a.role, b.role):
            return False  # every classic init container has finished before apps start
        if a.role is Role.INIT and b.role is Role.SIDECAR:
            return b.index < a.index  # sidecars started before this init container run alongside
        if b.role is Role.INIT and a.role is Role.SIDECAR:
            return a.index < b.index
        return True

    def has_successors(self) -> bool:
        """Whether this container runs alongside any container that comes after it in Pod order.

        In Pod order (init containers, then apps) a classic init container overlaps only the native
        sidecars declared *before* it, and a sidecar or app overlaps everything after it. So the
        overlapping pairs ``(a, b)``, ``a`` before ``b``, are exactly those where ``a`` is not a
        classic init container: rules can walk them without testing the pairs that never overlap.
        """
        return self.role is not Role.INIT

    def declares(self, port: int, protocol: str = "TCP") -> bool:
        return any(lst.port == port and lst.protocol == protocol for lst in self.listeners)

    def port_named(self, name: str) -> Listener | None:
        for lst in self.listeners:
            if lst.name == name:
                return lst
        return None


@dataclass(frozen=True, slots=True)
class Pod:
    """The parts of a Pod that podgate reasons about. ``raw`` is the object as received."""

    raw: Mapping[str, Any]
    namespace: str
    display_name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    containers: tuple[Container, ...]  # init containers first, then app containers: Pod order
    host_network: bool
    restart_policy: str
    automount_token: bool | None
    detailed: bool = True  # False: containers without listeners, probes and UIDs (see parse_pod)

    @property
    def is_mirror(self) -> bool:
        return MIRROR_ANNOTATION in self.annotations

    @property
    def is_windows(self) -> bool:
        """``spec.os.name: windows``: the API server then refuses Linux-only securityContext fields."""
        os = self.raw["spec"].get("os")
        return isinstance(os, dict) and os.get("name") == "windows"

    def container(self, name: str) -> Container | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def running_container(self, name: str) -> Container | None:
        """The container of that name if it runs alongside the app containers for the Pod's life
        (an app container or a native sidecar); a classic init container exits before they start."""
        c = self.container(name)
        return c if c is not None and c.role is not Role.INIT else None


def overlapping_pairs(members: Sequence[Container]) -> Iterator[tuple[Container, Container]]:
    """The pairs of ``members`` (distinct containers in Pod order) that run at the same time, in
    ``itertools.combinations`` order. The work is proportional to the answer, not to the square of
    the input: a Pod with thousands of init containers on one port costs nothing."""
    for i, a in enumerate(members):
        if a.has_successors():
            for j in range(i + 1, len(members)):
                yield a, members[j]


def _expect(value: Any, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    # bool is an int in Python; the Kubernetes API never accepts true for a number
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PodShapeError(path, f"expected {what}, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _mapping(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    return _expect(value, dict, f"{path}/{key}", "an object")


def _string_map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, str]:
    value = _mapping(obj, key, path)
    for k, v in value.items():
        if not isinstance(v, str):
            raise PodShapeError(f"{path}/{key}/{escape(k)}", f"expected a string, got {_type_name(v)}")
    return value


def _port_number(value: Any, path: str) -> int:
    _expect(value, int, path, "a port number")
    if not 1 <= value <= 65535:
        raise PodShapeError(path, f"port {value} is out of range 1-65535")
    return value


def _listener(raw: Any, path: str) -> Listener:
    _expect(raw, dict, path, "an object")
    port = _port_number(raw.get("containerPort"), f"{path}/containerPort")
    protocol = raw.get("protocol") or "TCP"
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise PodShapeError(f"{path}/protocol", f"protocol must be TCP, UDP or SCTP, got {protocol!r}")
    name = raw.get("name")
    if name is not None:
        _expect(name, str, f"{path}/name", "a string")
    host_port = raw.get("hostPort")
    if host_port is not None and host_port != 0:
        host_port = _port_number(host_port, f"{path}/hostPort")
    else:
        host_port = None
    host_ip = raw.get("hostIP") or ""
    _expect(host_ip, str, f"{path}/hostIP", "a string")
    return Listener(port, protocol, name or None, host_port, host_ip)


def port_number(text: str) -> int | None:
    """A port 1-65535 written in ASCII decimal digits, or None. ("²".isdigit() is true and int()
    refuses it; int() also refuses more than 4,300 digits, with a ValueError no caller expects.)"""
    significant = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(significant) > 5:
        return None
    number = int(significant or "0")
    return number if 1 <= number <= 65535 else None


def _probe_port(value: Any, path: str) -> int | str:
    if isinstance(value, str):
        # the kubelet falls back to parsing a name as a number (prober.extractPort); a string of
        # more digits than any number it parses stays a name, which no container declares
        significant = value.lstrip("0")
        digits = value.isascii() and value.isdigit()
        return int(significant or "0") if digits and len(significant) <= 10 else value
    return _port_number(value, path)


def _listeners(ports: list[Any], path: str) -> tuple[Listener, ...]:
    """Every port of a container. Well-formed entries take the fast path; anything else goes
    through ``_listener``, which names the offending field."""
    out = []
    for raw in ports:
        if type(raw) is dict:
            port, protocol = raw.get("containerPort"), raw.get("protocol") or "TCP"
            name, host_port, host_ip = raw.get("name"), raw.get("hostPort"), raw.get("hostIP") or ""
            if type(port) is int and 0 < port < 65536 and type(protocol) is str and protocol in PROTOCOLS \
                    and (name is None or type(name) is str) and type(host_ip) is str:
                if host_port is None or host_port == 0:
                    out.append(Listener(port, protocol, name or None, None, host_ip))
                    continue
                if type(host_port) is int and 0 < host_port < 65536:
                    out.append(Listener(port, protocol, name or None, host_port, host_ip))
                    continue
        out.append(_listener(raw, f"{path}/ports/{len(out)}"))
    return tuple(out)


def _probes(raw: Mapping[str, Any], path: str) -> tuple[Probe, ...]:
    found = []
    for kind in PROBE_KINDS:
        probe = raw.get(kind)
        if probe is None:
            continue
        if type(probe) is not dict:
            _expect(probe, dict, f"{path}/{kind}", "an object")
        for handler in PROBE_HANDLERS:
            action = probe.get(handler)
            if action is None:
                continue
            if type(action) is not dict:
                _expect(action, dict, f"{path}/{kind}/{handler}", "an object")
            if "port" not in action:
                raise PodShapeError(f"{path}/{kind}/{handler}/port", "a probe needs a port")
            port = action["port"]
            if type(port) is not int or not 0 < port < 65536:
                port = _probe_port(port, f"{path}/{kind}/{handler}/port")
            found.append(Probe(kind, handler, port))
    return tuple(found)


def container_probes(raw: Mapping[str, Any], path: str) -> tuple[Probe, ...]:
    """The port-targeting probes of a container object, as the rules read them; PodShapeError
    names a malformed one."""
    return _probes(raw, path)


def _run_as_user(raw: Mapping[str, Any], path: str) -> int | None:
    ctx = _mapping(raw, "securityContext", path)
    uid = ctx.get("runAsUser")
    if uid is None:
        return None
    return _expect(uid, int, f"{path}/securityContext/runAsUser", "a user ID")


def _container(raw: Any, path: str, role: Role, index: int, pod_uid: int | None,
               detailed: bool = True) -> Container:
    if type(raw) is not dict:
        _expect(raw, dict, path, "a container object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PodShapeError(f"{path}/name", "a container needs a name")
    if not detailed:
        return Container(name, role, index, (), (), None)
    ports = raw.get("ports") or ()
    if type(ports) is not list and ports != ():
        _expect(ports, list, f"{path}/ports", "a list")
    listeners = _listeners(ports, path) if ports else ()
    security = raw.get("securityContext")
    uid = security.get("runAsUser") if type(security) is dict else None
    if uid is not None and type(uid) is not int or security is not None and type(security) is not dict:
        uid = _run_as_user(raw, path)
    probes = _probes(raw, path) if _HAS_PROBE.intersection(raw) else ()
    return Container(name, role, index, listeners, probes, pod_uid if uid is None else uid)


_HAS_PROBE = frozenset(PROBE_KINDS)


def _container_list(spec: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = spec.get(key)
    if value is None:
        return []
    return _expect(value, list, f"{path}/{key}", "a list")


def iter_containers(spec: Mapping[str, Any], path: str, pod_uid: int | None,
                    detailed: bool = True) -> Iterator[Container]:
    """Init containers (classic or native sidecar) in order, then app containers."""
    for i, raw in enumerate(_container_list(spec, "initContainers", path)):
        cpath = f"{path}/initContainers/{i}"
        _expect(raw, dict, cpath, "a container object")
        policy = raw.get("restartPolicy")
        if policy not in (None, "Always"):
            raise PodShapeError(f"{cpath}/restartPolicy", f"only 'Always' is allowed, got {policy!r}")
        yield _container(raw, cpath, Role.SIDECAR if policy == "Always" else Role.INIT, i, pod_uid, detailed)
    for i, raw in enumerate(_container_list(spec, "containers", path)):
        yield _container(raw, f"{path}/containers/{i}", Role.APP, i, pod_uid, detailed)


def pod_name(metadata: Mapping[str, Any]) -> str:
    """A name for messages: controller-made Pods have only ``generateName`` at admission."""
    name = metadata.get("name")
    if isinstance(name, str) and name:
        return name
    generate = metadata.get("generateName")
    if isinstance(generate, str) and generate:
        return f"{generate}<generated>"
    return "<unnamed>"


def parse_pod(raw: Any, namespace: str | None = None, detailed: bool = True) -> Pod:
    """Build the view of a Pod object; raise PodShapeError naming the first malformed field.

    Ephemeral containers are not among ``containers``: they cannot be given at creation, and
    ``new_ephemeral_containers`` reads the ones an ``ephemeralcontainers`` update adds.

    ``namespace`` comes from the AdmissionRequest: Pods made by controllers may not carry
    ``metadata.namespace`` yet. ``detailed=False`` leaves out what only the rules read (each
    container's listeners, probes and UID, most of the work for a large Pod): injection reads
    container names and roles only, and the validating webhook checks the rest of the final Pod.
    """
    _expect(raw, dict, "", "a Pod object")
    metadata = _mapping(raw, "metadata", "")
    spec = raw.get("spec")
    _expect(spec, dict, "/spec", "an object")
    security = _mapping(spec, "securityContext", "/spec")
    pod_uid = security.get("runAsUser")
    if pod_uid is not None:
        _expect(pod_uid, int, "/spec/securityContext/runAsUser", "a user ID")
    # The API server validates the rest (at least one container, unique names) after mutation;
    # podgate checks only the shapes its rules read.
    containers = tuple(iter_containers(spec, "/spec", pod_uid, detailed))
    host_network = spec.get("hostNetwork", False)
    _expect(host_network, bool, "/spec/hostNetwork", "a boolean")
    automount = spec.get("automountServiceAccountToken")
    if automount is not None:
        _expect(automount, bool, "/spec/automountServiceAccountToken", "a boolean")
    restart = spec.get("restartPolicy") or "Always"
    _expect(restart, str, "/spec/restartPolicy", "a string")
    ns = namespace or metadata.get("namespace") or "default"
    _expect(ns, str, "/metadata/namespace", "a string")
    return Pod(
        raw=raw,
        namespace=ns,
        display_name=pod_name(metadata),
        labels=_string_map(metadata, "labels", "/metadata"),
        annotations=_string_map(metadata, "annotations", "/metadata"),
        containers=containers,
        host_network=host_network,
        restart_policy=restart,
        automount_token=automount,
        detailed=detailed,
    )


def _capabilities(raw: Mapping[str, Any], path: str) -> frozenset[str]:
    security = _mapping(raw, "securityContext", path)
    caps = _mapping(security, "capabilities", f"{path}/securityContext")
    added = caps.get("add") or []
    _expect(added, list, f"{path}/securityContext/capabilities/add", "a list")
    for i, cap in enumerate(added):
        _expect(cap, str, f"{path}/securityContext/capabilities/add/{i}", "a capability name")
    return frozenset(added)


def ephemeral_names(raw: Any) -> frozenset[str]:
    """The names of a Pod object's ephemeral containers; PodShapeError for a Pod without a spec."""
    _expect(raw, dict, "", "a Pod object")
    spec = raw.get("spec")
    _expect(spec, dict, "/spec", "an object")
    names = set()
    for i, c in enumerate(_container_list(spec, "ephemeralContainers", "/spec")):
        _expect(c, dict, f"/spec/ephemeralContainers/{i}", "a container object")
        if isinstance(c.get("name"), str):
            names.add(c["name"])
    return frozenset(names)


def new_ephemeral_containers(pod: Pod, before: frozenset[str]) -> tuple[Container, ...]:
    """The ephemeral containers of ``pod`` not named in ``before`` (the old Pod's), in order: what
    an ``ephemeralcontainers`` update adds (they cannot be changed or removed once added).

    Each has its effective UID (its own ``runAsUser``, else the Pod's) and the capabilities it adds;
    no listeners or probes (the API server refuses ports and probes on ephemeral containers)."""
    spec = pod.raw["spec"]
    pod_uid = _mapping(spec, "securityContext", "/spec").get("runAsUser")
    out = []
    for i, raw in enumerate(_container_list(spec, "ephemeralContainers", "/spec")):
        path = f"/spec/ephemeralContainers/{i}"
        _expect(raw, dict, path, "a container object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise PodShapeError(f"{path}/name", "a container needs a name")
        if name in before:
            continue
        uid = _run_as_user(raw, path)
        out.append(Container(name, Role.EPHEMERAL, i, (), (), pod_uid if uid is None else uid,
                             _capabilities(raw, path)))
    return tuple(out)
