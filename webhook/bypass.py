"""Who may switch the mesh off: a Policy's ``meshBypass`` section and the requester's identity.

The bypasses are what turns a mesh guarantee off for a Pod: the opt-out annotation, the
annotations that exclude ports from the traffic redirect, and an ephemeral container that can
rewrite the redirect (it adds ``NET_ADMIN``). Without the section anyone may use them (podgate's
behaviour before the section existed); with it, only the identities and namespaces it grants.

An identity is only real where the person (or automation) that made the object sent the request:
a Pod that a controller creates carries the controller's ServiceAccount in ``userInfo``
(``system:serviceaccount:kube-system:replicaset-controller``), never the one who applied the
Deployment. So the section is enforced on workloads, on Pods created directly, and on ephemeral
containers; a request from a kube-system controller is not judged by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .inject import EXCLUDE_INBOUND_ANNOTATION, EXCLUDE_OUTBOUND_ANNOTATION
from .pods import Container, Pod

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# The built-in controllers (kube-controller-manager) run as ServiceAccounts of kube-system.
CONTROLLER_PREFIX = SERVICE_ACCOUNT_PREFIX + "kube-system:"
# Capabilities that let a container rewrite the Pod's traffic redirect (iptables/nftables).
REDIRECT_CAPABILITIES = frozenset({"NET_ADMIN", "CAP_NET_ADMIN", "ALL"})


@dataclass(frozen=True, slots=True)
class Requester:
    """Who sent an AdmissionRequest (``request.userInfo``)."""

    username: str
    groups: frozenset[str] = frozenset()

    @property
    def is_controller(self) -> bool:
        """A kube-system ServiceAccount: a controller acting for whoever made the owning object."""
        return self.username.startswith(CONTROLLER_PREFIX)

    @property
    def service_account(self) -> str | None:
        """``namespace/name`` for a ServiceAccount, else None."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = self.username[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        return f"{namespace}/{name}" if namespace and name else None

    def __str__(self) -> str:
        return self.username or "<anonymous>"


def requester(user_info: Mapping[str, Any]) -> Requester:
    """The requester of ``request.userInfo``; fields of the wrong type count as absent."""
    username = user_info.get("username")
    groups = user_info.get("groups")
    return Requester(username if isinstance(username, str) else "",
                     frozenset(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else frozenset())


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``meshBypass.allow`` entry: who (any of users, groups, ServiceAccounts; nobody named:
    anyone) may bypass the mesh where (namespaces by name; none named: every namespace)."""

    namespaces: frozenset[str] | None
    users: frozenset[str]
    groups: frozenset[str]
    service_accounts: frozenset[str]

    def allows(self, who: Requester, namespace: str) -> bool:
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        if not (self.users or self.groups or self.service_accounts):
            return True
        return who.username in self.users or bool(who.groups & self.groups) \
            or who.service_account in self.service_accounts


@dataclass(frozen=True)
class BypassPolicy:
    """A compiled ``meshBypass`` section: the grants, and the opt-out annotation of the policy's mesh."""

    grants: tuple[Grant, ...]
    opt_out_annotation: str | None  # None: the policy's mesh does not allow opting out at all

    def allows(self, who: Requester, namespace: str) -> bool:
        return any(g.allows(who, namespace) for g in self.grants)

    def used_by(self, pod: Pod) -> list[str]:
        """The bypass annotations a Pod carries, as ``key: "value"`` for messages."""
        used = []
        annotations = pod.annotations
        if self.opt_out_annotation is not None and annotations.get(self.opt_out_annotation) == "false":
            used.append(f'{self.opt_out_annotation}: "false"')
        for key in (EXCLUDE_INBOUND_ANNOTATION, EXCLUDE_OUTBOUND_ANNOTATION):
            if key in annotations:
                used.append(f'{key}: "{annotations[key]}"')
        return used


def rewrites_redirect(container: Container) -> bool:
    """Whether an (ephemeral) container adds a capability that can rewrite the traffic redirect."""
    return bool(container.capabilities & REDIRECT_CAPABILITIES)


def compile_bypass(spec: Mapping[str, Any] | None, opt_out_annotation: str | None) -> BypassPolicy | None:
    """The ``meshBypass`` section (already schema-checked) -> BypassPolicy; None when absent."""
    if spec is None:
        return None
    grants = []
    for entry in spec.get("allow") or ():
        namespaces: Sequence[str] | None = entry.get("namespaces")
        grants.append(Grant(frozenset(namespaces) if namespaces is not None else None,
                            frozenset(entry.get("users") or ()), frozenset(entry.get("groups") or ()),
                            frozenset(entry.get("serviceAccounts") or ())))
    return BypassPolicy(tuple(grants), opt_out_annotation)
