"""Governance: who may switch the mesh off for a Pod (a Policy's ``meshBypass`` section)."""

from __future__ import annotations

from collections.abc import Iterator

from ..bypass import rewrites_redirect
from . import Subject, Violation, rule


@rule("unauthorized-mesh-bypass", "deny", ephemeral=True,
      summary="Someone the policy's meshBypass section does not name switches the mesh off: opts a Pod out, "
              "excludes ports from the traffic redirect, or adds an ephemeral container that can rewrite it.",
      why="Whoever can create a Pod can otherwise take it out of the mesh (no mTLS, no mesh policy, no telemetry) "
          "with one annotation, or with kubectl debug --profile=netadmin. Only fires where the Policy has a "
          "meshBypass section; it judges the identity that made the object (a workload, a Pod created directly, "
          "an ephemeral container), never a controller acting for someone, nor a Pod that already runs (podgate "
          "audit: who created it is not recorded on it).",
      fix="Remove the bypass (the opt-out or exclude-ports annotation, the NET_ADMIN capability), or have it applied "
          "by an identity that the policy's meshBypass section allows (docs/policy-guide.md: who may opt out).",
      example='a Deployment annotated podgate.io/inject: "false" by a user outside the group platform-admins')
def unauthorized_mesh_bypass(s: Subject) -> Iterator[Violation]:
    if s.bypass is None or s.requester is None or s.bypass.allows(s.requester, s.pod.namespace):
        return
    who = f'"{s.requester}"'
    if s.ephemeral is not None:
        if not s.meshed:
            return
        for c in s.ephemeral:
            if rewrites_redirect(c):
                added = ", ".join(sorted(c.capabilities))
                yield Violation(
                    "unauthorized-mesh-bypass",
                    f'[unauthorized-mesh-bypass] ephemeral container "{c.name}" adds {added}, with which it can '
                    f'rewrite the mesh traffic redirect of pod "{s.pod.display_name}", and the policy\'s meshBypass '
                    f"section does not allow {who} to bypass the mesh in namespace \"{s.pod.namespace}\"; debug "
                    f"without that capability, or ask for a meshBypass grant",
                    (c.name,))
        return
    if not (s.meshed or s.mesh_selected):
        return  # the annotations change nothing for a Pod outside the mesh
    used = s.bypass.used_by(s.pod)
    if used:
        yield Violation(
            "unauthorized-mesh-bypass",
            f"[unauthorized-mesh-bypass] {' and '.join(used)} switches the mesh off for pod "
            f'"{s.pod.display_name}", and the policy\'s meshBypass section does not allow {who} to do that in '
            f'namespace "{s.pod.namespace}"; remove the annotation, or have it set by an identity the section allows')
