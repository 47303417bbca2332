"""The rule engine: what a rule is, the registry of rules, and evaluation of a Pod against it.

Rules are small pure functions over a ``Subject`` (a parsed Pod plus what the policy says about
the mesh). They return violations and never raise to deny; the policy decides what each
violation does (deny, warn, audit, off). Nothing here knows about HTTP or AdmissionReview.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from ..echo import MESSAGE_MAX, NAME_MAX, echo
from ..pods import PROBE_KINDS, Container, Pod, Probe, Role
from ..proberewrite import ProbeRewrite, originals
from ..status import STATUS_ANNOTATION, read_status

if TYPE_CHECKING:
    from ..bypass import BypassPolicy, Requester
    from ..revisions import ProxyState

# Enough to explain any real Pod; a bound on the work and the answer for a hostile one.
MAX_FINDINGS_PER_RULE = 20

Action = Literal["deny", "warn", "audit", "off"]
ACTIONS: tuple[Action, ...] = ("deny", "warn", "audit", "off")


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding of one rule. Optional fields are filled where the rule has them."""

    rule: str
    message: str
    containers: tuple[str, ...] = ()
    port: int | None = None
    protocol: str | None = None
    host_ip: str | None = None
    port_name: str | None = None
    uid: int | None = None

    def to_json(self, action: Action) -> dict[str, Any]:
        """The ``check -o json`` shape: rule, action, message, containers, then the rule's fields."""
        out: dict[str, Any] = {"rule": self.rule, "action": action, "message": self.message,
                               "containers": list(self.containers)}
        for key in ("port", "protocol", "host_ip", "port_name", "uid"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """A violation together with the action the policy gives its rule."""

    violation: Violation
    action: Action

    def to_json(self) -> dict[str, Any]:
        return self.violation.to_json(self.action)


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """What the rules need to know about the mesh proxy a policy expects."""

    name: str
    uid: int
    reserved: frozenset[tuple[int, str]]  # (port, protocol) pairs the proxy owns
    helpers: frozenset[str] = frozenset()  # injected helper containers (traffic redirect)
    probes: ProbeRewrite | None = None  # the profile rewrites probes to the proxy's agent
    profile: str = ""  # the MeshProfile's name
    profile_hash: str = ""  # what podgate.io/status records of the profile it injected ("": injects nothing)


@dataclass(frozen=True)
class Subject:
    """A Pod and the mesh facts the policy established for it: the input of every rule."""

    pod: Pod
    proxy: ProxySpec | None = None  # None: the governing policy has no mesh
    mesh_required: bool = False  # the policy selects the Pod for the mesh and it did not opt out
    mesh_selected: bool = False  # the policy selects the Pod for the mesh, opted out or not
    # Who asked, where that is a real identity (not a controller acting for someone): the
    # policy's meshBypass section judges it. None: the section is not enforced on this request.
    requester: Requester | None = None
    bypass: BypassPolicy | None = None  # the policy's meshBypass section (None: anyone may bypass)
    # An ephemeralcontainers update: the containers it adds. Only the rules that apply to
    # ephemeral containers run then, and they look at these containers only.
    ephemeral: tuple[Container, ...] | None = None
    opt_out: str | None = None  # the annotation that opts a Pod out; None: the policy allows no opt-out
    # which revision and profile the Pod should have and which it was injected with (None: not known)
    proxy_state: ProxyState | None = None
    running: bool = False  # the Pod already runs (podgate audit): a missing proxy is fixed by a restart

    @property
    def checked(self) -> tuple[Container, ...]:
        """The containers the rules judge: the ones being added by an ephemeralcontainers update,
        else the Pod's."""
        return self.ephemeral if self.ephemeral is not None else self.pod.containers

    @cached_property
    def proxy_container(self) -> Container | None:
        """The proxy: a container of its name that runs for the Pod's life (a classic init
        container of that name exits before the apps start, so it is not the proxy)."""
        return self.pod.running_container(self.proxy.name) if self.proxy else None

    @cached_property
    def meshed(self) -> bool:
        """Selected by the mesh policy (and injectable), or already carrying the proxy."""
        if self.proxy_container is not None:
            return True
        pod = self.pod
        return self.mesh_required and not pod.host_network and not pod.is_mirror and not pod.is_windows

    @cached_property
    def proxy_ports(self) -> frozenset[tuple[int, str]]:
        """The reserved set plus whatever the proxy container itself declares."""
        assert self.proxy is not None
        declared = self.proxy_container.listeners if self.proxy_container else ()
        return self.proxy.reserved | {(lst.port, lst.protocol) for lst in declared}

    @cached_property
    def containers_by_listener(self) -> dict[tuple[int, str], list[Container]]:
        """(port, protocol) -> the distinct containers that declare it, in Pod order: built in one
        pass, once, for every rule that looks listeners up."""
        groups: dict[tuple[int, str], list[Container]] = {}
        for c in self.pod.containers:
            for lst in c.listeners:
                key = (lst.port, lst.protocol)
                members = groups.get(key)
                if members is None:
                    groups[key] = [c]
                elif members[-1] is not c:
                    members.append(c)
        return groups

    @cached_property
    def rewritten_probes(self) -> Mapping[tuple[str, str], tuple[Probe, ...]]:
        """(container, kind) -> the original of a probe podgate rewrote to the proxy's agent (the
        status annotation lists them, the proxy's env var holds them)."""
        proxy = self.proxy_container
        if proxy is None or self.proxy is None or self.proxy.probes is None \
                or STATUS_ANNOTATION not in self.pod.annotations:
            return {}
        status = read_status(self.pod.annotations)
        if status is None or not status.probes:
            return {}
        spec = self.pod.raw["spec"]
        raw = {c.get("name"): c for key in ("initContainers", "containers") for c in spec.get(key) or ()}
        return originals(self.proxy.probes, status.probes, raw[proxy.name], raw)

    def probes(self, container: Container) -> tuple[Probe, ...]:
        """The probes of a container as the rules judge them: a probe podgate rewrote to the proxy's
        agent by the original it stands for, so that podgate's own work is not reported while a
        mistake in the original still is."""
        rewritten = self.rewritten_probes
        if not rewritten or not container.probes:
            return container.probes
        out: list[Probe] = []
        for kind in PROBE_KINDS:
            original = rewritten.get((container.name, kind))
            out.extend(original if original is not None else (p for p in container.probes if p.kind == kind))
        return tuple(out)

    def is_mesh_own(self, container: Container) -> bool:
        """The proxy and its injected helpers are exempt from the rules that guard the proxy (an
        ephemeral container never is one, whatever its name)."""
        return self.proxy is not None and container.role is not Role.EPHEMERAL and (
            container is self.proxy_container or container.name in self.proxy.helpers)


Check = Callable[[Subject], Iterable[Violation]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: stable ID, default action, the check, and its documentation."""

    id: str
    default_action: Action
    check: Check
    summary: str  # one line: what it checks
    why: str  # why it matters at runtime
    fix: str  # what to change
    example: str = field(default="")
    # A mesh rule finds nothing in a Pod that neither is nor must be meshed: ``evaluate`` skips it
    # there, which is most Pods (tests/test_rules_mesh_skip.py holds every mesh rule to that).
    mesh: bool = field(default=False)
    # The rule judges ephemeral containers too (they declare no ports: the port rules never do).
    ephemeral: bool = field(default=False)


RULES: dict[str, Rule] = {}


def rule(rule_id: str, default_action: Action, *, summary: str, why: str, fix: str,
         example: str = "", mesh: bool = False, ephemeral: bool = False) -> Callable[[Check], Check]:
    """Register a check function under its rule ID."""

    def register(check: Check) -> Check:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id!r} registered twice")
        RULES[rule_id] = Rule(rule_id, default_action, check, summary, why, fix, example, mesh, ephemeral)
        return check

    return register


def quote_pair(a: Container, b: Container) -> str:
    return f'"{a.name}" and "{b.name}"'


def evaluate(subject: Subject, actions: Mapping[str, Action]) -> list[Finding]:
    """Run every rule that is not ``off`` and attach the policy's action to each violation.

    Each rule reports at most ``MAX_FINDINGS_PER_RULE`` violations: one is enough to deny, and a
    hostile Pod (thousands of containers on one port) must not turn into millions of messages.
    Rules are generators, so the ones not taken are never computed.
    """
    findings: list[Finding] = []
    outside_mesh = not subject.mesh_required and not subject.meshed
    ephemeral = subject.ephemeral is not None
    for r in RULES.values():
        if outside_mesh and r.mesh or ephemeral and not r.ephemeral:
            continue
        action = actions.get(r.id, r.default_action)
        if action != "off":  # a plain loop: most rules find nothing, and cheaply
            for violation in islice(r.check(subject), MAX_FINDINGS_PER_RULE):
                findings.append(Finding(bounded(violation), action))
    return findings


def bounded(violation: Violation) -> Violation:
    """The violation with what it quotes from the Pod bounded (webhook.echo): a 1 MB container
    name in twenty findings must not make a 40 MB answer and log line. Real names pass as they are."""
    if len(violation.message) <= MESSAGE_MAX and all(len(n) <= NAME_MAX for n in violation.containers) \
            and (violation.port_name is None or len(violation.port_name) <= NAME_MAX):
        return violation
    return replace(violation, message=echo(violation.message, MESSAGE_MAX),
                   containers=tuple(echo(n) for n in violation.containers),
                   port_name=None if violation.port_name is None else echo(violation.port_name))


# Importing the rule modules registers their rules, in the order they are documented.
from . import ports, probes, mesh, governance  # noqa: E402,F401  (registration side effect)
