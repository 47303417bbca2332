"""The ``podgate.io/status`` annotation: what podgate injected into a Pod, written and read back.

Injection writes it; a later call of /mutate (reinvocation: another webhook ran in between) reads
it to tell the containers it has seen from new ones, and /validate reads it to know which probes
podgate rewrote. Anyone who can create a Pod can write the annotation, so reading it never trusts
its shape: an annotation that is not what podgate writes reads as None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

STATUS_ANNOTATION = "podgate.io/status"
# The API server caps all annotations of an object at 256 KiB together; podgate writes far less.
MAX_STATUS_BYTES = 64 * 1024


@dataclass(frozen=True)
class Status:
    """What one injection recorded. ``pod_containers`` are the Pod's own containers (init and app)
    podgate has seen, None in a status written before podgate recorded them; ``probes`` maps a
    container to the probe kinds podgate rewrote in it."""

    profile: str
    hash: str
    init_containers: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    pod_containers: tuple[str, ...] | None = None
    probes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    revision: str | None = None  # None: written before profiles had revisions (webhook/revisions.py)

    def injected(self) -> frozenset[str]:
        """The names of the containers podgate added."""
        return frozenset(self.init_containers) | frozenset(self.containers)

    def to_json(self) -> str:
        out: dict[str, Any] = {"profile": self.profile}
        if self.revision is not None:
            out["revision"] = self.revision
        out |= {"hash": self.hash,
                "initContainers": list(self.init_containers), "containers": list(self.containers),
                "volumes": list(self.volumes)}
        if self.pod_containers is not None:
            out["podContainers"] = list(self.pod_containers)
        if self.probes:
            out["probes"] = {name: list(kinds) for name, kinds in self.probes.items()}
        return orjson.dumps(out).decode()


def _names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def read_status(annotations: Mapping[str, str]) -> Status | None:
    """The status annotation of a Pod, or None when there is none or it is not podgate's shape."""
    raw = annotations.get(STATUS_ANNOTATION)
    if raw is None or len(raw) > MAX_STATUS_BYTES:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("profile"), str) \
            or not isinstance(data.get("hash"), str):
        return None
    lists = {key: _names(data.get(key, [])) for key in ("initContainers", "containers", "volumes")}
    if any(v is None for v in lists.values()):
        return None
    pod_containers = _names(data["podContainers"]) if "podContainers" in data else None
    if "podContainers" in data and pod_containers is None:
        return None
    probes: dict[str, tuple[str, ...]] = {}
    raw_probes = data.get("probes", {})
    if not isinstance(raw_probes, dict):
        return None
    for name, kinds in raw_probes.items():
        if (kinds := _names(kinds)) is None:
            return None
        probes[name] = kinds
    revision = data.get("revision")
    if revision is not None and not isinstance(revision, str):
        return None
    return Status(data["profile"], data["hash"], lists["initContainers"] or (), lists["containers"] or (),
                  lists["volumes"] or (), pod_containers, probes, revision)
