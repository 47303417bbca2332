"""Probes through the proxy: rewrite the kubelet's probes to the proxy's agent, and read them back.

Once the redirect captures inbound traffic and the mesh enforces mTLS, the kubelet's plain
HTTP/TCP/gRPC probes to an app port fail. A MeshProfile with ``injection.probes`` has podgate
rewrite every ``httpGet``, ``tcpSocket`` and ``grpc`` probe of the Pod's containers (app containers
and native sidecars; ``exec`` probes stay) into an ``httpGet`` on the agent's port and a path per
container and probe kind; the timing fields stay as they were. The originals go to the proxy in an
env var, as JSON ``{container: {probeKind: {handler: {...}, "timeoutSeconds": n}}}`` with named
ports resolved to numbers, for the agent to run them from inside the Pod.

Only what can be rewritten faithfully is: a probe on a named port the container does not declare,
one with more than one handler, or one of a shape the API server would refuse is left as it came,
for the validating webhook to report. The status annotation lists the rewritten probes;
``originals`` gives the validate rules the probe each rewritten one stands for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import PodShapeError
from .pods import PROBE_HANDLERS, PROBE_KINDS, Probe, container_probes, port_number

REWRITE_ANNOTATION = "podgate.io/rewrite-probes"
# The path segment for each probe kind ({probe} in the path template), as Istio's agent names them.
PROBE_SLUGS = {"livenessProbe": "livez", "readinessProbe": "readyz", "startupProbe": "startupz"}
MAX_ORIGINALS_BYTES = 256 * 1024


@dataclass(frozen=True)
class ProbeRewrite:
    """``spec.injection.probes`` of a MeshProfile: where the proxy's agent answers for the app."""

    port: int  # the agent's port (outside the redirect, reserved by the proxy)
    path: str  # template with {container} and {probe}
    env: str  # the proxy's env var that carries the original probes

    def agent_path(self, container: str, kind: str) -> str:
        return self.path.replace("{container}", container).replace("{probe}", PROBE_SLUGS[kind])

    def targets_agent(self, probe: Any, container: str, kind: str) -> bool:
        """The probe is podgate's rewrite: an httpGet on the agent's port and this probe's path."""
        action = probe.get("httpGet") if isinstance(probe, dict) else None
        return isinstance(action, dict) and action.get("port") == self.port \
            and action.get("path") == self.agent_path(container, kind)


def compile_probe_rewrite(spec: Mapping[str, Any] | None) -> ProbeRewrite | None:
    if not spec:
        return None
    return ProbeRewrite(spec["port"], spec["path"], spec["env"])


def _resolve_port(port: Any, container: Mapping[str, Any]) -> int | None:
    """A probe port as the kubelet resolves it: a number, a numeric string, or the name of a port of
    the container itself (None: it cannot be resolved)."""
    if isinstance(port, str):
        if port.isascii() and port.isdigit():
            return port_number(port)  # int() raises beyond 4,300 digits
        else:
            ports = container.get("ports")
            for entry in ports if isinstance(ports, list) else ():
                if isinstance(entry, dict) and entry.get("name") == port:
                    port = entry.get("containerPort")
                    break
            else:
                return None
    if type(port) is not int or not 0 < port < 65536:
        return None
    return port


@dataclass(frozen=True)
class Rewritten:
    """One container's rewritten probes (kind -> the new probe) and their originals (kind -> JSON)."""

    probes: Mapping[str, dict[str, Any]]
    originals: Mapping[str, dict[str, Any]]


def rewrite_container(rw: ProbeRewrite, container: Mapping[str, Any]) -> Rewritten:
    """The probes of one container that go through the agent; what cannot be rewritten is left out."""
    name = container.get("name")
    probes: dict[str, dict[str, Any]] = {}
    originals: dict[str, dict[str, Any]] = {}
    if not isinstance(name, str):
        return Rewritten(probes, originals)
    for kind in PROBE_KINDS:
        probe = container.get(kind)
        if not isinstance(probe, dict):
            continue
        handlers = [h for h in (*PROBE_HANDLERS, "exec") if probe.get(h) is not None]
        if len(handlers) != 1 or handlers[0] == "exec" or not isinstance(action := probe[handlers[0]], dict):
            continue
        handler = handlers[0]
        port = action.get("port")
        if handler == "grpc" and type(port) is not int:
            continue  # a gRPC probe takes a number only: the API server refuses the Pod
        port = _resolve_port(port, container)
        if port is None or port == rw.port:
            continue  # the kubelet cannot run it as it is, or it already asks the agent
        original: dict[str, Any] = {handler: {**action, "port": port}}
        if "timeoutSeconds" in probe:
            original["timeoutSeconds"] = probe["timeoutSeconds"]
        agent = {"path": rw.agent_path(name, kind), "port": rw.port}
        # the handler's place in the probe is kept, and every timing field as it was
        probes[kind] = {("httpGet" if key == handler else key): (agent if key == handler else value)
                        for key, value in probe.items() if key not in PROBE_HANDLERS or key == handler}
        originals[kind] = original
    return Rewritten(probes, originals)


def encode_originals(originals: Mapping[str, Mapping[str, Any]]) -> str:
    """The env var's value: containers and kinds in a fixed order, so equal inputs give equal bytes."""
    return orjson.dumps(originals, option=orjson.OPT_SORT_KEYS).decode()


def decode_originals(value: Any) -> dict[str, dict[str, Any]] | None:
    """The env var's value read back (None: not the JSON podgate writes)."""
    if not isinstance(value, str) or len(value) > MAX_ORIGINALS_BYTES:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not all(
            isinstance(kinds, dict) and all(k in PROBE_SLUGS and isinstance(p, dict) for k, p in kinds.items())
            for kinds in data.values()):
        return None
    return data


def env_value(container: Mapping[str, Any], name: str) -> Any:
    """The value of a plain env var of a container (None where it has none)."""
    env = container.get("env")
    for entry in env if isinstance(env, list) else ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get("value")
    return None


def originals(rw: ProbeRewrite, rewritten: Mapping[str, tuple[str, ...]], proxy: Mapping[str, Any],
              containers: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], tuple[Probe, ...]]:
    """(container, kind) -> the probe a rewritten one stands for, parsed as the rules read probes.

    A probe counts as rewritten where the status lists it, it still targets the agent's path and
    the proxy's env var holds its original; anything else is checked as it is."""
    if not rewritten:
        return {}
    stored = decode_originals(env_value(proxy, rw.env)) or {}
    out: dict[tuple[str, str], tuple[Probe, ...]] = {}
    for name, kinds in rewritten.items():
        container = containers.get(name)
        for kind in kinds:
            original = stored.get(name, {}).get(kind)
            if kind not in PROBE_SLUGS or container is None or original is None \
                    or not rw.targets_agent(container.get(kind), name, kind):
                continue
            probe = {key: value for key, value in original.items() if key in PROBE_HANDLERS}
            try:
                out[(name, kind)] = container_probes({kind: probe}, f"/{rw.env}/{name}")
            except PodShapeError:
                continue  # not the shape podgate writes: the rewritten probe is checked as it is
    return out
