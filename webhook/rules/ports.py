"""Rules about listeners that clash in the Pod's shared network namespace or on the node.

Each rule groups listeners by key in one pass, so the cost is linear in the number of ports;
only containers that share a key are compared pairwise (that is the size of the answer).
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import combinations

from ..pods import WILDCARD_HOST_IPS, Container, Role, overlapping_pairs
from . import Subject, Violation, quote_pair, rule


def _lifetime_note(a: Container, b: Container) -> str:
    """Say why two init containers overlap: it is the non-obvious case of the lifetime table."""
    if Role.INIT in (a.role, b.role):
        sidecar, init = (a, b) if a.role is Role.SIDECAR else (b, a)
        return f' (native sidecar "{sidecar.name}" is still running when init container "{init.name}" starts)'
    return ""


@rule("port-collision", "deny",
      summary="Two containers that run at the same time declare the same containerPort and protocol.",
      why="All containers of a Pod share one network namespace: only one of them can bind the port; "
          "the other crash-loops with 'address already in use', or a Service sends traffic to the wrong process.",
      fix="Give one of the containers another containerPort (and make it listen there).",
      example="containers app and metrics both declare 8080/TCP")
def port_collision(s: Subject) -> Iterator[Violation]:
    if s.pod.host_network:
        return  # every containerPort is a host port: reported once, as host-port-collision
    for (port, protocol), members in s.containers_by_listener.items():
        if len(members) < 2:
            continue
        proxy = s.proxy_container if s.meshed else None
        for a, b in overlapping_pairs(members):
            if proxy is not None and proxy in (a, b) and (port, protocol) in s.proxy_ports:
                continue  # reported once, as proxy-port-conflict
            yield Violation(
                "port-collision",
                f"[port-collision] containers {quote_pair(a, b)} both listen on {port}/{protocol} in the "
                f"pod's shared network namespace{_lifetime_note(a, b)}; give one of them another containerPort",
                (a.name, b.name), port=port, protocol=protocol)


@lru_cache(maxsize=1024)
def _host_ip_key(host_ip: str) -> str:
    """The address a hostIP binds, in one spelling: "" for any wildcard ("0.0.0.0", "::",
    "0:0:0:0:0:0:0:0"), the canonical form otherwise ("fd00:0::1" is "fd00::1")."""
    if host_ip in WILDCARD_HOST_IPS:
        return ""
    try:
        address = ipaddress.ip_address(host_ip)
    except ValueError:
        return host_ip  # the API server refuses such a Pod; compare it as written
    return "" if address.is_unspecified else str(address)


def _host_pairs(members: list[tuple[Container, str]]) -> Iterator[tuple[tuple[Container, str], tuple[Container, str]]]:
    """Pairs of (container, host IP) in Pod order whose containers run together and whose host IPs
    overlap, without visiting the pairs that do not (thousands of hostPorts on distinct host IPs
    must not cost a square)."""
    later_by_ip: dict[str, list[int]] = {}
    wildcards: list[int] = []
    for j, (_, ip) in enumerate(members):
        (wildcards if not ip else later_by_ip.setdefault(ip, [])).append(j)
    for i, (a, ip_a) in enumerate(members):
        if not a.has_successors():
            continue
        if not ip_a:
            candidates: Iterable[int] = range(i + 1, len(members))
        else:
            same = later_by_ip[ip_a]
            candidates = heapq.merge(same[bisect.bisect_right(same, i):], wildcards[bisect.bisect_right(wildcards, i):])
        for j in candidates:
            yield members[i], members[j]


@rule("host-port-collision", "deny",
      summary="Two containers that run at the same time take the same hostPort and protocol on overlapping host IPs "
              "(with hostNetwork, every containerPort is a host port).",
      why="A host port is bound on the node: the second container cannot bind it, and with hostNetwork the clash "
          "is on the node's own network namespace.",
      fix="Give one of the containers another hostPort, bind them to different specific hostIPs, or drop the "
          "hostPort and use a Service.",
      example="containers a and b both take hostPort 9000/TCP on 0.0.0.0")
def host_port_collision(s: Subject) -> Iterator[Violation]:
    host_network = s.pod.host_network
    groups: dict[tuple[int, str], list[tuple[Container, str]]] = {}
    for c in s.pod.containers:
        seen: set[tuple[int, str, str]] = set()  # one entry per container, host port and host IP
        for lst in c.listeners:
            host_port = lst.host_port or (lst.port if host_network else None)
            if host_port is None:
                continue
            # With hostNetwork the processes bind in the node's namespace themselves: a hostIP
            # there keeps nothing apart, so every such port counts as bound on every address.
            ip = "" if host_network else _host_ip_key(lst.host_ip)
            if (host_port, lst.protocol, ip) not in seen:
                seen.add((host_port, lst.protocol, ip))
                groups.setdefault((host_port, lst.protocol), []).append((c, ip))
    for (port, protocol), members in groups.items():
        if len(members) < 2:
            continue
        # one violation per pair of containers, however many host IPs they share; by identity, not
        # name: 10,000 containers named "x" would otherwise skip a square of pairs named alike
        reported: set[tuple[int, int]] = set()
        for (a, ip_a), (b, ip_b) in _host_pairs(members):
            if a is b or (id(a), id(b)) in reported:
                continue
            reported.add((id(a), id(b)))
            host_ip = ip_a or ip_b or "0.0.0.0"
            where = "the node's network (hostNetwork)" if host_network else f"host IP {host_ip}"
            yield Violation(
                "host-port-collision",
                f"[host-port-collision] containers {quote_pair(a, b)} both take host port {port}/{protocol} on "
                f"{where}; give one of them another {'containerPort' if host_network else 'hostPort'}",
                (a.name, b.name), port=port, protocol=protocol, host_ip=host_ip)


@rule("duplicate-port-name", "warn",
      summary="Two containers of the Pod declare a port with the same name.",
      why="Services and probes resolve named ports; with two ports of one name, a Service's targetPort picks "
          "one of them and traffic meant for the other goes astray. The API server only checks names within one "
          "container.",
      fix="Rename one of the ports so each name is unique in the Pod.",
      example="containers web and sidecar both name a port http")
def duplicate_port_name(s: Subject) -> Iterator[Violation]:
    groups: dict[str, list[Container]] = {}
    for c in s.pod.containers:
        for lst in c.listeners:
            if name := lst.name:
                members = groups.get(name)
                if members is None:
                    groups[name] = [c]
                elif members[-1] is not c:
                    members.append(c)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        for a, b in combinations(members, 2):
            yield Violation(
                "duplicate-port-name",
                f'[duplicate-port-name] containers {quote_pair(a, b)} both name a port "{name}"; a Service '
                f"targetPort \"{name}\" is ambiguous: rename one of them",
                (a.name, b.name), port_name=str(name))
