"""Rules about probes whose port is not where the kubelet will look for it."""

from __future__ import annotations

from collections.abc import Iterator

from . import Subject, Violation, rule


@rule("probe-port-missing", "deny",
      summary="A liveness, readiness or startup probe names a port that its own container does not declare.",
      why="The kubelet resolves a named probe port only among the probed container's own ports; "
          "the probe fails forever, so the Pod never gets ready or is restarted in a loop.",
      fix="Declare the named port on the probed container, or probe a port number. (Where the mesh profile "
          "sends probes through the proxy, such a probe is not rewritten: the proxy's agent could not resolve the "
          "name either.)",
      example='readinessProbe.httpGet.port: "http" on a container without a port named http')
def probe_port_missing(s: Subject) -> Iterator[Violation]:
    for c in s.pod.containers:
        seen: set[str] = set()
        for probe in s.probes(c):
            name = probe.port
            if isinstance(name, int) or name in seen or c.port_named(name) is not None:
                continue
            seen.add(name)
            yield Violation(
                "probe-port-missing",
                f'[probe-port-missing] the {probe.kind} of container "{c.name}" targets the port named "{name}", '
                f"which that container does not declare: the kubelet will fail the probe forever; declare the "
                f"port on \"{c.name}\" or probe a port number",
                (c.name,), port_name=name)


@rule("probe-port-foreign", "warn",
      summary="A probe targets a port number that only another container of the Pod declares.",
      why="The probe passes or fails with the other container: a crashed app can stay 'ready' (or be restarted "
          "for the other container's fault).",
      fix="Probe a port of the probed container itself, or move the probe to the container that listens. A probe "
          "podgate rewrote to the proxy's agent (listed in podgate.io/status) is judged by the original it stands "
          "for, so the rewrite itself never fires this rule.",
      example="livenessProbe of app targets 9090, which only metrics declares")
def probe_port_foreign(s: Subject) -> Iterator[Violation]:
    by_listener = s.containers_by_listener
    for c in s.pod.containers:
        seen: set[int] = set()
        for probe in s.probes(c):
            port = probe.port
            if isinstance(port, str) or port in seen:
                continue
            if c.declares(port, "TCP"):
                continue  # the container declares the port itself (asked of it: a list of owners is as long as the Pod)
            owners = by_listener.get((port, "TCP"))
            seen.add(port)
            if not owners or s.meshed and (port, "TCP") in s.proxy_ports:
                continue  # undeclared ports are legal; proxy ports are proxy-port-conflict's
            other = owners[0].name  # the first container, in Pod order, that declares it
            yield Violation(
                "probe-port-foreign",
                f'[probe-port-foreign] the {probe.kind} of container "{c.name}" targets port {port}, which only '
                f'container "{other}" declares: the probe checks the wrong container; probe a port of "{c.name}"',
                (c.name, other), port=port)
