"""Profile revisions: which MeshProfile a Pod should get, and which one it was injected with.

Several MeshProfiles can be live at once, each under a revision name (``spec.revision``, else the
profile's name), so that a new proxy can be tried in one namespace before it becomes the
default. A Pod's revision comes from, in this order:

1. the Pod's label ``podgate.io/rev``;
2. its namespace's label ``podgate.io/rev``;
3. the policy's default revision (``spec.mesh.profile`` or ``spec.mesh.revision``).

The revision says *which* proxy a meshed Pod gets, never *whether* it is meshed: that is the
policy's selection alone (namespaces, selectors, the opt-in/opt-out annotation). So a namespace
labelled with a revision but not selected by the policy is not meshed, and a Pod that opts out
stays out whatever revision its labels name.

A Pod that carries the proxy is judged by the profile it was injected with, which
``podgate.io/status`` records (profile name, revision, hash): until it is restarted it runs that
proxy, whatever the labels say now. A record whose profile is gone falls back to its revision's
current profile, then (a Pod injected before revisions existed) to the default revision's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .pods import Pod
from .selectors import Labels
from .status import read_status

if TYPE_CHECKING:
    from .policy import MeshProfile, MeshSelection

REVISION_LABEL = "podgate.io/rev"

Source = Literal["pod label", "namespace label", "policy default"]


@dataclass(frozen=True)
class Wanted:
    """The revision a Pod should run now, where that came from, and its profile (None: no loaded
    profile has the revision)."""

    revision: str
    source: Source
    profile: MeshProfile | None

    def describe(self) -> str:
        """``revision "canary" (the pod's label podgate.io/rev)``: for messages."""
        where = {"pod label": f"the pod's label {REVISION_LABEL}",
                 "namespace label": f"the namespace's label {REVISION_LABEL}",
                 "policy default": "the policy's default revision"}[self.source]
        return f'revision "{self.revision}" ({where})'


@dataclass(frozen=True)
class Injected:
    """What ``podgate.io/status`` says the Pod was injected with, and the loaded profile that
    judges it (the recorded one if it is still loaded, see ``injected_with``)."""

    profile_name: str
    revision: str | None  # None: injected before revisions existed
    hash: str
    profile: MeshProfile  # the profile the rules judge the Pod by

    @property
    def profile_gone(self) -> bool:
        return self.profile.name != self.profile_name


@dataclass(frozen=True)
class ProxyState:
    """Which revision and profile a Pod should have, and which it has: what ``stale-proxy`` and
    ``podgate audit`` need to say that a Pod needs a restart."""

    wanted: Wanted
    injected: Injected | None  # None: the Pod carries no podgate status annotation
    default: MeshProfile  # the policy's default revision's

    @property
    def judging_profile(self) -> MeshProfile:
        """The profile the rules judge the Pod by: the one it was injected with, else the one its
        revision gives, else (an unknown revision, which /mutate denies) the default revision's."""
        if self.injected is not None:
            return self.injected.profile
        return self.wanted.profile or self.default

    @property
    def stale(self) -> str | None:
        """Where the running proxy came from, when that is not what the Pod would get if it were
        created now (None: it is, or the Pod was not injected by podgate): ``stale-proxy`` says
        "injected from" this."""
        have, want = self.injected, self.wanted
        if have is None:
            return None
        recorded = _profile_phrase(have.profile_name, have.revision, have.hash)
        if want.profile is None:
            return f"{recorded}, but {want.describe()} names no loaded mesh profile"
        current = want.profile.injector.profile_hash if want.profile.injector is not None else ""
        if not have.profile_gone and want.profile.name == have.profile_name:
            if not current or have.hash == current:
                return None
            revision = f'revision "{have.revision}", ' if have.revision not in (None, have.profile_name) else ""
            return f'an older version of mesh profile "{have.profile_name}" ({revision}hash {have.hash}, now {current})'
        now = _profile_phrase(want.profile.name, None, current)  # its revision is named before it
        if want.source == "policy default":
            default = "" if want.revision == want.profile.name else f'\'s default revision "{want.revision}"'
            return f"{recorded}, but its policy{default} now uses {now}"
        return f"{recorded}, but {want.describe()} now gives {now}"


def _profile_phrase(name: str, revision: str | None, digest: str) -> str:
    """``mesh profile "P" (revision "R", hash H)``; the revision only where it is not the name."""
    shown = f'revision "{revision}", ' if revision not in (None, name) else ""
    return f'mesh profile "{name[:63]}" ({shown}hash {digest[:16]})'

def revision_of(spec: Mapping[str, Any], name: str) -> str:
    """A MeshProfile's revision: ``spec.revision``, else its name."""
    revision = spec.get("revision")
    return revision if isinstance(revision, str) else name


def wanted(pod: Pod, namespace_labels: Labels | None, mesh: MeshSelection) -> Wanted:
    """The revision the Pod should get: its own label, else its namespace's, else the policy's
    default (namespace labels that are unknown say nothing)."""
    revision = pod.labels.get(REVISION_LABEL)
    source: Source = "pod label"
    if revision is None and namespace_labels is not None:
        revision, source = namespace_labels.get(REVISION_LABEL), "namespace label"
    if revision is None:
        return Wanted(mesh.profile.revision, "policy default", mesh.profile)
    return Wanted(revision, source, mesh.revisions.get(revision))


def injected_with(pod: Pod, mesh: MeshSelection) -> Injected | None:
    """The profile the Pod was injected with, by its status annotation (None: it has none).

    The recorded profile judges the Pod while it is loaded; if it is gone, the recorded
    revision's current profile does; a record without a revision (or with one no profile has any
    more) is judged by the policy's default revision."""
    status = read_status(pod.annotations)
    if status is None:
        return None  # none, or not a record podgate wrote: nothing to judge by
    profile = mesh.profiles.get(status.profile)
    if profile is None and status.revision is not None:
        profile = mesh.revisions.get(status.revision)
    return Injected(status.profile, status.revision, status.hash, profile or mesh.profile)


def judging_profile(pod: Pod, namespace_labels: Labels | None, mesh: MeshSelection) -> MeshProfile:
    """The profile the rules judge this Pod by (see ``ProxyState.judging_profile``)."""
    return proxy_state(pod, namespace_labels, mesh).judging_profile


def proxy_state(pod: Pod, namespace_labels: Labels | None, mesh: MeshSelection) -> ProxyState:
    """Which revision and profile the Pod should have (under today's labels and policies), and
    which it was injected with."""
    return ProxyState(wanted(pod, namespace_labels, mesh), injected_with(pod, mesh), mesh.profile)
