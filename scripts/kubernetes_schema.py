#!/usr/bin/env python3
"""Regenerate ``policies/kubernetes.schema.json``: the Kubernetes schema that a MeshProfile's
injection templates (proxy container, traffic-redirect init container, volumes) are checked
against when podgate loads its policies.

Source: the strict JSON Schemas that kubernetes-validate (a test dependency, never a runtime
one) ships per Kubernetes version, generated from the API server's OpenAPI. They give types,
required fields and unknown fields, for ``io.k8s.api.core.v1.Container`` and
``io.k8s.api.core.v1.Volume`` and every definition they reference; nothing else is kept.
The OpenAPI does not carry what the API server's validation (``pkg/apis/core/validation``)
adds on top, so ``VALIDATION`` below does: enums, port/UID/mode ranges, the quantity syntax,
at most one volume source, exactly one probe handler / env source. A template that fails any
of these makes every injected Pod fail admission, which is why the loader refuses it. Nothing
the API server accepts is refused, except ``null`` (a template leaves a field out instead);
tests hold the schema to every container and volume of the corpus.

Run it after changing ``KUBERNETES_VERSION`` or ``VALIDATION`` and commit the result:

    .venv/bin/python scripts/kubernetes_schema.py           # rewrite the bundled file
    .venv/bin/python scripts/kubernetes_schema.py --check   # exit 1 if it is stale (tests do this)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webhook.inject import QUANTITY  # noqa: E402  (one quantity grammar for the schema and the annotations)

# The version of the cluster our recorded AdmissionReviews come from (kube-apiserver v1.36.2).
KUBERNETES_VERSION = "1.36"
TARGET = REPO / "policies" / "kubernetes.schema.json"
ID = "https://podgate.io/schemas/kubernetes.schema.json"
ROOTS = ("io.k8s.api.core.v1.Container", "io.k8s.api.core.v1.Volume")
V1 = "io.k8s.api.core.v1."
QUANTITY_DEF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "#/$defs/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
# Integer formats are ranges: a number outside them does not even decode in the API server.
INT_FORMATS = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}
# Keys whose values are maps of names to schemas (not keywords).
NAMED = ("properties", "$defs", "patternProperties", "dependentSchemas")

PORT = {"minimum": 1, "maximum": 65535}
PORT_NAME_RULE = "at most 15 lowercase letters, digits and single '-' between them, with at least one letter"
PORT_NAME = {"pattern": "^(?=.{1,15}$)(?=[0-9-]*[a-z])[a-z0-9]+(-[a-z0-9]+)*$",  # IANA_SVC_NAME
             "errorMessage": {"pattern": f"{{value}} is not a port name ({PORT_NAME_RULE})"}}
PORT_OR_NAME = {  # a probe's port: a number, or the name of one of the container's ports
    "type": ["integer", "string"], "minimum": 1, "maximum": 65535, "pattern": PORT_NAME["pattern"],
    "errorMessage": {"pattern": f"{{value}} is neither a port number nor a port name ({PORT_NAME_RULE})"}}
NON_NEGATIVE = {"minimum": 0}
ID_RANGE = {"minimum": 0, "maximum": 2147483647}  # IsValidUserID / IsValidGroupID
FILE_MODE = {"minimum": 0, "maximum": 0o777}
QUANTITY_SCHEMA = {
    "type": ["string", "number"], "pattern": f"^{QUANTITY.pattern}$", "minimum": 0,
    "not": {"type": "string", "pattern": "^-"},
    "errorMessage": {"type": "{value} is not a Kubernetes quantity (e.g. 500m, 1Gi)",
                     "pattern": "{value} is not a Kubernetes quantity (e.g. 500m, 1Gi)",
                     "minimum": "{value} is negative: a quantity here must be 0 or more",
                     "not": "{value} is negative: a quantity here must be 0 or more"}}
ENV_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName",
                   "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs")


def enum(*values: str) -> dict[str, Any]:
    return {"enum": list(values)}


def exactly_one(what: str, names: list[str]) -> dict[str, Any]:
    """For objects only: a null or a list is a type error already, once is enough."""
    return {"if": {"type": "object"}, "then": {
        "oneOf": [{"required": [n]} for n in names],
        "errorMessage": {"oneOf": f"{what} takes exactly one of {', '.join(names)}"}}}


# (definition, property or "" for the definition itself, schema merged in; None deletes a keyword)
VALIDATION: list[tuple[str, str, dict[str, Any]]] = [
    ("Container", "imagePullPolicy", enum("Always", "IfNotPresent", "Never")),
    ("Container", "terminationMessagePolicy", enum("File", "FallbackToLogsOnError")),
    ("Container", "restartPolicy", enum("Always", "OnFailure", "Never")),
    ("ContainerPort", "containerPort", PORT),
    ("ContainerPort", "hostPort", {"minimum": 0, "maximum": 65535}),  # 0: no host port
    ("ContainerPort", "protocol", enum("TCP", "UDP", "SCTP")),
    ("ContainerPort", "name", PORT_NAME),
    ("ContainerResizePolicy", "resourceName", enum("cpu", "memory")),
    ("ContainerResizePolicy", "restartPolicy", enum("NotRequired", "RestartContainer")),
    ("ContainerRestartRule", "action", enum("Restart")),
    ("ContainerRestartRuleOnExitCodes", "operator", enum("In", "NotIn")),
    ("HTTPGetAction", "port", {"$ref": None, **PORT_OR_NAME}),
    ("HTTPGetAction", "scheme", enum("HTTP", "HTTPS")),
    ("TCPSocketAction", "port", {"$ref": None, **PORT_OR_NAME}),
    ("GRPCAction", "port", PORT),
    ("SleepAction", "seconds", NON_NEGATIVE),
    ("Probe", "", exactly_one("a probe", ["exec", "httpGet", "tcpSocket", "grpc"])),
    *[("Probe", field, NON_NEGATIVE) for field in
      ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold")],
    ("Probe", "terminationGracePeriodSeconds", {"minimum": 1}),
    ("LifecycleHandler", "", {"minProperties": 1, "maxProperties": 1, "errorMessage": {
        "minProperties": "a lifecycle hook takes exactly one of exec, httpGet, sleep, tcpSocket",
        "maxProperties": "a lifecycle hook takes exactly one of exec, httpGet, sleep, tcpSocket"}}),
    ("ResourceRequirements", "limits", {"propertyNames": {"$ref": "#/$defs/podgate.resourceName"}}),
    ("ResourceRequirements", "requests", {"propertyNames": {"$ref": "#/$defs/podgate.resourceName"}}),
    ("SecurityContext", "runAsUser", ID_RANGE),
    ("SecurityContext", "runAsGroup", ID_RANGE),
    ("SecurityContext", "procMount", enum("Default", "Unmasked")),
    ("SeccompProfile", "type", enum("RuntimeDefault", "Unconfined", "Localhost")),
    ("AppArmorProfile", "type", enum("RuntimeDefault", "Unconfined", "Localhost")),
    ("VolumeMount", "mountPropagation", enum("None", "HostToContainer", "Bidirectional")),
    ("VolumeMount", "recursiveReadOnly", enum("Disabled", "IfPossible", "Enabled")),
    ("EnvVarSource", "", {"minProperties": 1, "maxProperties": 1, "errorMessage": {
        "minProperties": "valueFrom takes exactly one of configMapKeyRef, fieldRef, fileKeyRef, "
                         "resourceFieldRef, secretKeyRef",
        "maxProperties": "valueFrom takes exactly one of configMapKeyRef, fieldRef, fileKeyRef, "
                         "resourceFieldRef, secretKeyRef"}}),
    ("EnvVarSource", "fieldRef", {"properties": {"fieldPath": {
        "pattern": "^(" + "|".join(p.replace(".", r"\.") for p in ENV_FIELD_PATHS)
                   + r"|metadata\.(labels|annotations)\['[^']+'\])$",
        "errorMessage": {"pattern": "{value} is not a field an environment variable can read: one of "
                                    + ", ".join(ENV_FIELD_PATHS) + ", metadata.labels['KEY'], "
                                    "metadata.annotations['KEY']"}}}}),
    ("ResourceFieldSelector", "resource", {
        "pattern": r"^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-.+)$",
        "errorMessage": {"pattern": "{value} is not a container resource: limits.cpu, requests.memory, "
                                    "limits.ephemeral-storage, ..."}}),
    # A volume with only a name is valid: the API server defaults it to an emptyDir (Istio relies on it).
    ("Volume", "", {"maxProperties": 2, "errorMessage": {
        "maxProperties": "a volume takes one source (emptyDir, configMap, secret, projected, ...), not several"}}),
    ("EmptyDirVolumeSource", "medium", {"pattern": "^(Memory|HugePages(-.+)?)?$",
                                        "errorMessage": {"pattern": "{value} is not a medium: \"\", Memory or HugePages"}}),
    ("HostPathVolumeSource", "type", enum("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                                          "CharDevice", "BlockDevice")),
    ("ConfigMapVolumeSource", "defaultMode", FILE_MODE),
    ("SecretVolumeSource", "defaultMode", FILE_MODE),
    ("ProjectedVolumeSource", "defaultMode", FILE_MODE),
    ("DownwardAPIVolumeSource", "defaultMode", FILE_MODE),
    ("KeyToPath", "mode", FILE_MODE),
    ("DownwardAPIVolumeFile", "mode", FILE_MODE),
    ("ServiceAccountTokenProjection", "expirationSeconds", {"minimum": 600, "maximum": 2**32}),
]

# What a MeshProfile holds is not quite a Container: the proxy's name comes from spec.proxy.name,
# and the redirect container's ports are podgate's own (the ports it redirects), and it is an
# init container that runs to completion, which the API server does not allow probes or hooks.
RUNS_TO_COMPLETION = {"not": {}, "errorMessage": {"not": "the traffic-redirect init container runs to completion "
                                                         "before the Pod starts: it takes no probes, lifecycle "
                                                         "hooks or restartPolicy"}}
ENTRY_POINTS = {
    "proxyContainer": "The proxy container template: a Container whose name is spec.proxy.name.",
    "redirectContainer": "The traffic-redirect init container template: a Container that runs to completion; "
                         "ports are podgate's (which traffic it redirects).",
    "volume": "A volume the profile adds to the Pod.",
}


def definitions(version: str) -> dict[str, Any]:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    return json.loads((folder / "_definitions.json").read_text())["$defs"]


def closure(defs: dict[str, Any], roots: tuple[str, ...]) -> list[str]:
    """The roots and every definition they reference, in the order first met."""
    seen: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and value.startswith("#/$defs/"):
                    add(value.removeprefix("#/$defs/"))
                else:
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    def add(name: str) -> None:
        if name not in seen:
            seen.append(name)
            visit(defs[name])

    for root in roots:
        add(root)
    return seen


def clean(node: Any) -> Any:
    """Drop descriptions and x-kubernetes-* annotations (size), ``null`` from types (a template
    says what it means: leave a field out rather than set it to null), integer formats as ranges."""
    if isinstance(node, list):
        return [clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" or key.startswith("x-kubernetes-"):
            continue
        if key in NAMED:
            out[key] = {name: clean(sub) for name, sub in value.items()}
        elif key == "type" and isinstance(value, list):
            kept = [t for t in value if t != "null"]
            out[key] = kept[0] if len(kept) == 1 else kept
        elif key == "format" and value in INT_FORMATS:
            out["minimum"], out["maximum"] = INT_FORMATS[value]
        else:
            out[key] = clean(value)
    return out


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict) and key != "errorMessage":
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def build(version: str = KUBERNETES_VERSION) -> dict[str, Any]:
    source = definitions(version)
    defs = {name: clean(source[name]) for name in closure(source, ROOTS)}
    defs[QUANTITY_DEF] = copy.deepcopy(QUANTITY_SCHEMA)
    defs["podgate.resourceName"] = {
        "type": "string", "pattern": r"^(cpu|memory|ephemeral-storage|hugepages-.+|[^/]+/.+)$",
        "errorMessage": {"pattern": "{value} is not a resource name: cpu, memory, ephemeral-storage, "
                                    "hugepages-<size>, or a domain-prefixed extended resource"}}
    for definition, field, patch in VALIDATION:
        schema = defs[V1 + definition]
        merge(schema if not field else schema["properties"][field], patch)
    if not any(INT_OR_STRING in json.dumps(d) for d in defs.values()):
        defs.pop(INT_OR_STRING.removeprefix("#/$defs/"), None)

    container = defs[V1 + "Container"]
    proxy = copy.deepcopy(container)
    proxy.pop("required", None)
    redirect = copy.deepcopy(container)
    redirect["properties"]["ports"] = True
    for field in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "restartPolicy"):
        redirect["properties"][field] = copy.deepcopy(RUNS_TO_COMPLETION)
    entry = {"proxyContainer": proxy, "redirectContainer": redirect,
             "volume": {"$ref": f"#/$defs/{V1}Volume"}}
    for name, text in ENTRY_POINTS.items():
        entry[name] = {"description": text, **entry[name]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": ID,
        "title": f"Kubernetes {version} Container and Volume, as the API server validates them",
        "description": "Generated by scripts/kubernetes_schema.py from kubernetes-validate's strict schemas "
                       f"(v{version}.0-local-strict); do not edit by hand. errorMessage: what podgate prints "
                       "when a keyword fails ({value} is the offending value).",
        "x-kubernetes-version": version,
        "$defs": {**entry, **dict(sorted(defs.items()))},
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the bundled file differs")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is stale: run scripts/kubernetes_schema.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)} ({len(text)} bytes, Kubernetes {KUBERNETES_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
