"""Rules that protect the service-mesh proxy: its ports, its UID, its presence, its lifetime."""

from __future__ import annotations

from collections.abc import Iterator

from ..pods import Container, Role
from ..status import read_status
from . import Subject, Violation, rule


@rule("proxy-port-conflict", "deny", mesh=True,
      summary="In a meshed Pod, a container other than the proxy declares (or probes) a port the proxy reserves.",
      why="The proxy binds its reserved ports and redirects traffic through them: the app cannot bind the port, "
          "or the proxy fails to start and the whole Pod loses its network.",
      fix="Move the app to a port outside the proxy's reserved set. A probe podgate rewrote to the proxy's agent "
          "(injection.probes: the agent's port is reserved) is judged by the original it stands for: the rewrite "
          "itself never fires this rule, a probe the developer aimed at a proxy port still does.",
      example="container app declares 15001/TCP, reserved by the proxy for outbound capture")
def proxy_port_conflict(s: Subject) -> Iterator[Violation]:
    if not s.meshed:
        return
    assert s.proxy is not None
    reserved = s.proxy_ports
    proxy = s.proxy_container
    for c in s.pod.containers:
        if s.is_mesh_own(c):
            continue
        clashes = [(lst.port, lst.protocol, "listens on") for lst in c.listeners if (lst.port, lst.protocol) in reserved]
        clashes += [(p.port, "TCP", f"has a {p.kind} on") for p in s.probes(c)
                    if isinstance(p.port, int) and (p.port, "TCP") in reserved]
        seen: set[tuple[int, str]] = set()
        for port, protocol, verb in clashes:
            if (port, protocol) in seen:
                continue
            seen.add((port, protocol))
            shared = proxy is not None and proxy.declares(port, protocol)
            if shared:
                assert proxy is not None
                pair = (proxy, c) if s.pod.containers.index(proxy) < s.pod.containers.index(c) else (c, proxy)
                names = tuple(x.name for x in pair)
                also = f', which the proxy "{proxy.name}" also declares'
            else:
                names, also = (c.name,), ""
            yield Violation(
                "proxy-port-conflict",
                f'[proxy-port-conflict] container "{c.name}" {verb} {port}/{protocol}{also}: the mesh proxy '
                f'"{s.proxy.name}" reserves that port; move the app to a port outside the proxy\'s reserved set',
                names, port=port, protocol=protocol)


@rule("proxy-uid-conflict", "deny", mesh=True, ephemeral=True,
      summary="In a meshed Pod, a container other than the proxy runs as the proxy's UID.",
      why="The traffic-redirect rules exempt the proxy's UID so the proxy's own traffic is not looped back; "
          "an app running as that UID bypasses the mesh: no mTLS, no policy, no telemetry.",
      fix="Run the container as another user (securityContext.runAsUser on the container or the Pod). This holds "
          "for ephemeral containers too (kubectl debug --custom).",
      example="container app runs as UID 1337, the proxy's UID")
def proxy_uid_conflict(s: Subject) -> Iterator[Violation]:
    if not s.meshed:
        return
    assert s.proxy is not None
    uid = s.proxy.uid
    for c in s.checked:
        if c.run_as_user == uid and not s.is_mesh_own(c):
            what = "ephemeral container" if c.role is Role.EPHEMERAL else "container"
            yield Violation(
                "proxy-uid-conflict",
                f'[proxy-uid-conflict] {what} "{c.name}" runs as UID {uid}, the UID of the mesh proxy '
                f'"{s.proxy.name}": its traffic bypasses the proxy; set another runAsUser for "{c.name}"',
                (c.name,), uid=uid)


def _or_opt_out(s: Subject) -> str:
    """The opt-out advice, only where it can work: the policy allows it (and the Pod does not
    already carry an opt-out the policy ignores)."""
    if s.opt_out is not None:
        return f', or opt the pod out ({s.opt_out}: "false")'
    return " (opting out is off in this policy: allowOptOut is false)"


@rule("missing-proxy", "deny", mesh=True,
      summary="A Pod that policy says must be meshed reaches validation without the proxy container.",
      why="The injection did not happen (the mutating webhook was skipped, failed open, or the Pod was edited): "
          "the Pod would run outside the mesh, unencrypted and unseen by mesh policy.",
      fix="Make sure podgate's mutating webhook runs for the Pod's namespace, or opt the Pod out explicitly "
          "(where the policy allows it: allowOptOut).",
      example="a Pod in a namespace labelled podgate.io/mesh=enabled without mesh-proxy")
def missing_proxy(s: Subject) -> Iterator[Violation]:
    pod = s.pod
    if s.proxy is None or not s.mesh_required or s.proxy_container is not None:
        return
    if pod.host_network or pod.is_mirror or pod.is_windows:
        return  # never injected: mesh-host-network says so for hostNetwork and Windows Pods
    if pod.container(s.proxy.name) is not None:  # a classic init container: it exits before the apps start
        yield Violation(
            "missing-proxy",
            f'[missing-proxy] pod "{pod.display_name}" must be meshed by policy, but its "{s.proxy.name}" is a '
            f"classic init container, which exits before the app containers start, so no proxy runs: rename that "
            f"init container so podgate can inject the proxy{_or_opt_out(s)}")
        return
    if s.running:  # the webhook injects on creation only
        yield Violation(
            "missing-proxy",
            f'[missing-proxy] pod "{pod.display_name}" must be meshed by policy but runs without the '
            f'"{s.proxy.name}" container (created before its namespace was meshed, or while podgate\'s mutating '
            f"webhook was unavailable): restart it so that podgate injects the proxy")
        return
    yield Violation(
        "missing-proxy",
        f'[missing-proxy] pod "{pod.display_name}" must be meshed by policy but has no "{s.proxy.name}" '
        f"container: check that podgate's mutating webhook covers namespace \"{pod.namespace}\"{_or_opt_out(s)}")


@rule("proxy-udp-port", "warn", mesh=True,
      summary="In a meshed Pod, a container other than the proxy declares a UDP port.",
      why="The proxy carries TCP only: UDP traffic to and from the Pod bypasses the mesh.",
      fix="Accept that the UDP traffic is outside the mesh (set the rule to audit for this Pod's policy), "
          "or serve it over TCP.",
      example="container dns declares 53/UDP")
def proxy_udp_port(s: Subject) -> Iterator[Violation]:
    if not s.meshed:
        return
    assert s.proxy is not None
    for c in s.pod.containers:
        if s.is_mesh_own(c):
            continue
        for lst in c.listeners:
            if lst.protocol == "UDP":
                yield Violation(
                    "proxy-udp-port",
                    f'[proxy-udp-port] container "{c.name}" listens on {lst.port}/UDP: the mesh proxy carries TCP '
                    f"only, so that traffic bypasses the mesh",
                    (c.name,), port=lst.port, protocol="UDP")


@rule("mesh-host-network", "warn", mesh=True,
      summary="A Pod that policy says must be meshed uses hostNetwork (or is a Windows Pod): it cannot be injected.",
      why="A hostNetwork Pod shares the node's network namespace, and a Windows Pod (spec.os.name: windows) cannot "
          "take the proxy's Linux-only security settings; podgate never injects the proxy there, so the Pod runs "
          "outside the mesh.",
      fix="Drop hostNetwork if the Pod should be meshed, or opt it out of the mesh explicitly (a Windows Pod: opt "
          "it out, or mesh it by other means).",
      example="a DaemonSet with hostNetwork: true in a meshed namespace")
def mesh_host_network(s: Subject) -> Iterator[Violation]:
    if s.proxy is None or not s.mesh_required or s.proxy_container is not None:
        return
    if s.pod.host_network:
        yield Violation(
            "mesh-host-network",
            f'[mesh-host-network] pod "{s.pod.display_name}" must be meshed by policy but uses hostNetwork: '
            f"the proxy cannot be injected; drop hostNetwork{_or_opt_out(s)}")
    elif s.pod.is_windows:
        yield Violation(
            "mesh-host-network",
            f'[mesh-host-network] pod "{s.pod.display_name}" must be meshed by policy but is a Windows pod '
            f"(spec.os.name: windows): the proxy needs Linux-only security settings and cannot be injected; "
            + (f'opt the pod out ({s.opt_out}: "false")' if s.opt_out is not None
               else "exempt it from this policy (opting out is off: allowOptOut is false)"))


@rule("proxy-no-identity", "warn", mesh=True,
      summary="A meshed Pod sets automountServiceAccountToken: false.",
      why="The proxy proves the workload's identity with the ServiceAccount token; without it, mTLS "
          "certificates cannot be issued and the proxy cannot join the mesh.",
      fix="Remove automountServiceAccountToken: false, or mount a projected token for the proxy.",
      example="spec.automountServiceAccountToken: false in a meshed namespace")
def proxy_no_identity(s: Subject) -> Iterator[Violation]:
    if s.meshed and s.pod.automount_token is False:
        yield Violation(
            "proxy-no-identity",
            f'[proxy-no-identity] pod "{s.pod.display_name}" is meshed but sets automountServiceAccountToken: '
            f"false: the proxy cannot obtain its workload identity; remove the setting or project a token")


@rule("proxy-blocks-completion", "warn", mesh=True,
      summary="A Pod with restartPolicy Never or OnFailure carries the proxy as a classic container.",
      why="A classic proxy container never exits, so a Job's Pod never completes and the Job hangs.",
      fix="Inject the proxy as a native sidecar (mode: native), which Kubernetes stops when the app exits.",
      example="a Job Pod with mesh-proxy in spec.containers")
def proxy_blocks_completion(s: Subject) -> Iterator[Violation]:
    proxy = s.proxy_container
    if proxy is None or proxy.role is not Role.APP or s.pod.restart_policy not in ("Never", "OnFailure"):
        return
    yield Violation(
        "proxy-blocks-completion",
        f'[proxy-blocks-completion] the mesh proxy "{proxy.name}" is a regular container in a pod with '
        f"restartPolicy {s.pod.restart_policy}: it never exits, so the pod never completes; inject it as a native "
        f"sidecar (mode: native)",
        (proxy.name,))


@rule("stale-proxy", "warn", mesh=True,
      summary="A Pod runs a proxy injected from an older version of its mesh profile (podgate.io/status records "
              "another profile hash).",
      why="Injection happens once, when a Pod is created: a change to the mesh profile (a new proxy image, new "
          "settings) reaches only Pods created after it. Until its workload restarts, the Pod runs the old proxy.",
      fix="Restart the Pod's workload (kubectl rollout restart deployment/NAME, or delete a bare Pod): its new "
          "Pods get the current proxy. podgate audit lists them, with the command for each workload.",
      example="podgate.io/status records hash 3f2a9c0d1b7e4a55 of mesh-proxy; the profile's hash is now "
              "9c1b0e7a2d4f6b88")
def stale_proxy(s: Subject) -> Iterator[Violation]:
    proxy = s.proxy_container
    if proxy is None or s.proxy is None:
        return
    if s.proxy_state is not None:  # revisions known: the profile it should have may be another one
        if (origin := s.proxy_state.stale) is not None:
            yield _stale(s, proxy, origin)
        return
    if not s.proxy.profile_hash:
        return
    status = read_status(s.pod.annotations)
    if status is None or not status.hash:
        return  # not podgate's status: nothing to compare
    profile, digest = status.profile, status.hash
    if profile == s.proxy.profile and digest == s.proxy.profile_hash:
        return
    if profile == s.proxy.profile:
        origin = f'an older version of mesh profile "{profile}" (hash {digest[:16]}, now {s.proxy.profile_hash})'
    else:
        origin = (f'mesh profile "{profile[:63]}" (hash {digest[:16]}), but its policy now uses mesh profile '
                  f'"{s.proxy.profile}" (hash {s.proxy.profile_hash})')
    yield _stale(s, proxy, origin)


def _stale(s: Subject, proxy: Container, origin: str) -> Violation:
    return Violation(
        "stale-proxy",
        f'[stale-proxy] pod "{s.pod.display_name}" runs the proxy "{proxy.name}" injected from {origin}: restart '
        f"the pod's workload so that it gets the current proxy",
        (proxy.name,))
