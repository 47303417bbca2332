"""``podgate policy lint DIR``: schema errors with file, line and JSON path, and settings that
load fine but contradict each other.

Errors make a policy set unusable or wrong (the server would refuse it, or a Pod would be
judged against something the author did not mean); warnings are legal but probably not meant.
Lines come from the YAML node marks of the same parse that produced the data, so a JSON path
from jsonschema points at the line a person edits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import PolicyError
from .explain import unknown_rule_message
from .inject import template_problems
from .policy import PolicyLoader, iter_policy_files, load_policy_set, mesh_profile_name, reserved_ports, schema_problems
from .rules import RULES
from .yamlpos import YamlDocument, error_line, error_text, json_pointer, load_documents, schema_error_path

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    file: str
    line: int | None
    path: str  # JSON pointer inside the document ("" for the file)
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.path + ': ' if self.path else ''}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "file": self.file, "line": self.line, "path": self.path,
                "message": self.message}


@dataclass
class Doc:
    """A schema-valid policy document with where it came from."""

    file: str
    yaml: YamlDocument

    @property
    def data(self) -> Any:
        return self.yaml.data

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def name(self) -> str:
        return self.data["metadata"]["name"]

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.data["spec"]

    def problem(self, severity: Severity, path: list[Any], message: str) -> Problem:
        return Problem(severity, self.file, self.yaml.line(path), json_pointer(path), message)


@dataclass
class Report:
    problems: list[Problem]
    policies: int
    profiles: int

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)


def lint(directory: Path) -> Report:
    problems: list[Problem] = []
    docs: list[Doc] = []
    refused: set[str] = set()  # MeshProfiles with errors of their own: policies naming them are not wrong too
    files = list(iter_policy_files(directory))
    if not files:
        problems.append(Problem("error", str(directory), None, "", "no policy files (*.yaml) found"))
    for path in files:
        docs.extend(_read(path, problems, refused))
    problems += _semantics(docs, refused)
    if not any(p.severity == "error" for p in problems):
        try:  # whatever the loader refuses that the checks above did not foresee
            load_policy_set(directory)
        except PolicyError as exc:
            problems += [Problem("error", str(directory), None, "", line) for line in str(exc).splitlines()]
    problems.sort(key=lambda p: (p.file, p.line or 0, p.severity))
    return Report(problems, sum(d.kind == "Policy" for d in docs), sum(d.kind == "MeshProfile" for d in docs))


def _read(path: Path, problems: list[Problem], refused: set[str]) -> Iterator[Doc]:
    label = str(path)
    try:
        parsed = load_documents(path.read_text(encoding="utf-8"), PolicyLoader)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem("error", label, None, "", f"cannot read: {exc}"))
        return
    except yaml.YAMLError as exc:
        problems.append(Problem("error", label, error_line(exc), "", f"invalid YAML: {error_text(exc)}"))
        return
    for ydoc in parsed:
        for key_path, first, again in ydoc.duplicate_keys():
            problems.append(Problem("error", label, again, json_pointer(key_path),
                                    f"key given twice (also on line {first}); only the last one counts"))
        errors = schema_problems(ydoc.data)
        for best, message in errors:
            at = schema_error_path(best)
            problems.append(Problem("error", label, ydoc.line(at), json_pointer(at), message))
        if not errors:
            yield Doc(label, ydoc)
        elif (name := mesh_profile_name(ydoc.data)) is not None:
            refused.add(name)


def _semantics(docs: list[Doc], refused: set[str]) -> list[Problem]:
    out: list[Problem] = []
    profiles: dict[str, Doc] = {}
    for d in docs:
        if d.kind == "MeshProfile":
            if d.name in profiles:
                out.append(d.problem("error", ["metadata", "name"],
                                     f"MeshProfile {d.name!r} is also defined in {profiles[d.name].file}"))
            profiles[d.name] = d
            out += _profile(d)
    policies = [d for d in docs if d.kind == "Policy"]
    seen: dict[str, Doc] = {}
    default: Doc | None = None
    matched: dict[str, Doc] = {}
    for d in policies:
        spec = d.spec
        if d.name in seen:
            out.append(d.problem("error", ["metadata", "name"], f"Policy {d.name!r} is also defined in {seen[d.name].file}"))
        seen[d.name] = d
        if "match" not in spec:
            if default is not None:
                out.append(d.problem("error", ["spec"], f"only one policy may omit match (the default); "
                                                        f"policy {default.name!r} in {default.file} already does"))
            default = default or d
        for rule_id in spec.get("rules") or {}:
            if rule_id not in RULES:
                out.append(d.problem("error", ["spec", "rules", rule_id], unknown_rule_message(rule_id)))
        for i, ns in enumerate((spec.get("match") or {}).get("namespaces") or ()):
            if ns in matched:
                out.append(d.problem("warning", ["spec", "match", "namespaces", i],
                                     f"namespace {ns!r} is also matched by policy {matched[ns].name!r}, which comes "
                                     f"first (file order): this policy never governs it"))
            else:
                matched[ns] = d
        out += _policy(d, profiles, refused)
    return out


def _profile(d: Doc) -> Iterator[Problem]:
    proxy = d.spec["proxy"]
    reserved = reserved_ports(proxy["reservedPorts"])
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for i, entry in enumerate(reserved):
        counts[entry] += 1
        if counts[entry] == 2:
            yield d.problem("warning", ["spec", "proxy", "reservedPorts", i], f"{entry[0]}/{entry[1]} is listed twice")
    injection = d.spec.get("injection")
    if not injection:
        return
    for i, port in enumerate(injection["container"].get("ports") or ()):
        if not isinstance(port, dict) or not isinstance(port.get("containerPort"), int):
            continue
        key = (port["containerPort"], port.get("protocol", "TCP"))
        if key not in reserved:
            yield d.problem("warning", ["spec", "injection", "container", "ports", i],
                            f"the proxy container declares {key[0]}/{key[1]}, which spec.proxy.reservedPorts does "
                            "not list: proxy-port-conflict guards it only in Pods that already carry the proxy")
    for path, message in template_problems(injection, proxy["name"]):
        yield d.problem("error", ["spec", "injection", *path], message)
    volumes = {v["name"] for v in injection.get("volumes") or ()}
    for i, volume in enumerate(injection.get("volumes") or ()):
        if len(volume) == 1:
            yield d.problem("warning", ["spec", "injection", "volumes", i],
                            f"volume {volume['name']!r} has no source: Kubernetes makes it an emptyDir (write "
                            "emptyDir: {} to say so, or give the source you meant)")
    for at in ("container", "redirect"):
        for i, mount in enumerate((injection.get(at) or {}).get("volumeMounts") or ()):
            if mount["name"] not in volumes:
                yield d.problem("warning", ["spec", "injection", at, "volumeMounts", i, "name"],
                                f"volume {mount['name']!r} is not in spec.injection.volumes: every Pod this profile "
                                "injects must bring it, or the API server refuses the Pod")
    redirect_ports = (injection.get("redirect") or {}).get("ports") or {}
    for role in ("inbound", "outbound"):
        if role in redirect_ports and (redirect_ports[role], "TCP") not in reserved:
            yield d.problem("error", ["spec", "injection", "redirect", "ports", role],
                            f"the proxy captures {role} traffic on {redirect_ports[role]}/TCP, but "
                            "spec.proxy.reservedPorts does not list it: an app on that port would take the "
                            "proxy's traffic and no rule would say so")


def _policy(d: Doc, profiles: Mapping[str, Doc], refused: set[str]) -> Iterator[Problem]:
    spec = d.spec
    exempt = (spec.get("exemptions") or {}).get("namespaces") or []
    matched = (spec.get("match") or {}).get("namespaces") or []
    for i, ns in enumerate(exempt):
        if ns in matched:
            yield d.problem("warning", ["spec", "exemptions", "namespaces", i],
                            f"namespace {ns!r} is both matched and exempted by this policy: none of its rules apply there")
    if (spec.get("exemptions") or {}).get("podSelector") == {}:
        yield d.problem("warning", ["spec", "exemptions", "podSelector"],
                        "an empty selector matches every Pod: the whole policy is switched off")
    mesh = spec.get("mesh")
    if mesh is None:
        return
    if mesh["profile"] in refused:
        return
    if mesh["profile"] not in profiles:
        yield d.problem("error", ["spec", "mesh", "profile"],
                        f"no MeshProfile named {mesh['profile']!r} (known: {', '.join(sorted(profiles)) or 'none'})")
        return
    for i, ns in enumerate(mesh.get("namespaces") or ()):
        if ns in exempt:
            yield d.problem("warning", ["spec", "mesh", "namespaces", i],
                            f"namespace {ns!r} is in the mesh and also exempt: exempt Pods are never injected or checked")
    for key in ("namespaceSelector", "podSelector"):
        if mesh.get(key) == {}:
            yield d.problem("warning", ["spec", "mesh", key], "an empty selector matches everything: every Pod is meshed")
    profile = profiles[mesh["profile"]]
    missing_proxy = (spec.get("rules") or {}).get("missing-proxy", RULES["missing-proxy"].default_action)
    if not profile.spec.get("injection") and missing_proxy == "deny":
        yield d.problem("warning", ["spec", "mesh", "profile"],
                        f"MeshProfile {profile.name!r} has no injection and missing-proxy is deny: every Pod this "
                        "policy meshes is denied unless another injector adds the proxy first")
