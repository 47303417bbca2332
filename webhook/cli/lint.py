"""``podgate policy lint DIR``: schema errors with file, line and JSON path, and settings that
load fine but contradict each other.

Errors make a policy set unusable or wrong (the server would refuse it, or a Pod would be
judged against something the author did not mean); warnings are legal but probably not meant.
Lines come from the YAML node marks of the same parse that produced the data, so a JSON path
from jsonschema points at the line a person edits.

One run reports every problem it can find: a document with schema errors still gets the other
checks, on its well-formed parts. A value that fails the schema is replaced by ``BROKEN``,
which no check reads, and a check that needs a whole part (the injection templates) runs only
when that part has no schema error at all.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import PolicyError
from ..files import POLICY_FILE_MAX, InputFileError, file_kind, read_text
from ..inject import template_problems
from ..policy import (
    PolicyLoader,
    PolicySet,
    load_policy_set,
    mesh_profile_name,
    policy_files,
    reserved_ports,
    schema_problems,
    unknown_revision,
)
from ..revisions import revision_of
from ..rules import RULES
from ..yamlpos import YamlDocument, error_line, error_text, json_pointer, load_documents, schema_error_path
from .explain import unknown_rule_message

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


_SEVERITY_COLOURS = {"error": "\033[31m", "warning": "\033[33m"}


def coloured(problem: Problem) -> str:
    """The problem's line with its severity in colour (red errors, yellow warnings)."""
    text = str(problem)
    word = f": {problem.severity}: "
    return text.replace(word, f": {_SEVERITY_COLOURS[problem.severity]}{problem.severity}\033[0m: ", 1)


class _Broken:
    """Stands in for a value that failed the schema: it is no dict, list, str or int, so the
    checks, which look at the types they read, pass it by."""

    def __repr__(self) -> str:
        return "<broken>"


BROKEN = _Broken()


@dataclass
class Doc:
    """A Policy or MeshProfile document with where it came from, schema errors and all."""

    file: str
    yaml: YamlDocument
    data: dict[str, Any]  # the document, each value that failed the schema replaced by BROKEN
    errors: list[list[Any]] = field(default_factory=list)  # where the schema errors are

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def name(self) -> str | None:
        name = _map(self.data.get("metadata")).get("name")
        return name if isinstance(name, str) else None

    @property
    def has_spec(self) -> bool:
        return isinstance(self.data.get("spec"), dict)

    @property
    def spec(self) -> Mapping[str, Any]:
        return _map(self.data.get("spec"))

    def intact(self, *path: Any) -> bool:
        """No schema error at, inside or above ``path``."""
        n = len(path)
        return not any(list(path[:len(e)]) == e or e[:n] == list(path) for e in self.errors)

    def problem(self, severity: Severity, path: list[Any], message: str) -> Problem:
        return Problem(severity, self.file, self.yaml.line(path), json_pointer(path), message)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _error_paths(error: Any) -> list[list[Any]]:
    """Where a schema error is: for a missing or unknown key, the key itself."""
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        return [path + [k] for k in error.validator_value if k not in error.instance] or [path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [path + [k] for k in error.instance if k not in known] or [path]
    return [path]


def _prune(data: Any, errors: list[Any]) -> Any:
    """A copy of ``data`` with every value that fails the schema replaced by BROKEN. A missing or
    unknown key leaves its mapping as it is: the checks read only the keys they know."""
    data = copy.deepcopy(data)
    for error in errors:
        if error.validator in ("required", "additionalProperties"):
            continue
        path = list(error.absolute_path)
        if not path:
            return BROKEN
        parent = data
        for key in path[:-1]:
            if isinstance(parent, dict) and key in parent or isinstance(parent, list) and 0 <= key < len(parent):
                parent = parent[key]
            else:
                parent = None
                break
        if isinstance(parent, (dict, list)):
            parent[path[-1]] = BROKEN
    return data


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


def lint(path: Path) -> Report:
    """Lint a policy directory, or one file of it: a file is read with the other files of its
    directory (the MeshProfiles its Policies name live there) and only its own problems count."""
    if path.exists() and not path.is_dir() and not path.is_file():  # a FIFO: reading it would wait for a writer
        raise PolicyError(f"{path}: not a policy directory or file ({file_kind(path.stat().st_mode)})")
    one_file = path if path.is_file() else None
    directory = path.parent if one_file is not None else path
    problems: list[Problem] = []
    docs: list[Doc] = []
    refused: set[str] = set()  # MeshProfiles with errors of their own: policies naming them are not wrong too
    files, skipped = policy_files(directory)
    if one_file is not None and one_file not in files:
        files.append(one_file)  # e.g. a .yml or an odd name: linted all the same when named
    if not files:
        problems.append(Problem("error", str(directory), None, "", "no policy files (*.yaml) found"))
    for line in skipped:
        file, _, message = line.partition(": ")
        problems.append(Problem("warning", file, None, "", message))
    for file in files:
        docs.extend(_read(file, problems, refused))
    problems += _semantics(docs, refused)
    if not any(p.severity == "error" for p in problems):
        try:  # whatever the loader refuses that the checks above did not foresee
            load_policy_set(directory)
        except PolicyError as exc:
            problems += [Problem("error", str(directory), None, "", line) for line in str(exc).splitlines()]
    if one_file is not None:
        mine = str(one_file)
        problems = [p for p in problems if Path(p.file) == one_file or (p.file == str(directory) and mine in p.message)]
        docs = [d for d in docs if Path(d.file) == one_file]
    problems.sort(key=lambda p: (p.file, p.line or 0, p.severity))
    return Report(problems, sum(d.kind == "Policy" for d in docs), sum(d.kind == "MeshProfile" for d in docs))


def load_policies(directory: str | Path | None) -> PolicySet:
    """``load_policy_set`` for the command line: a directory that does not load is reported as
    ``policy lint`` reports it (file, line, JSON path; the one way policy errors are shown),
    and a directory of other Kubernetes objects (manifests, say) is told so in one line."""
    try:
        return load_policy_set(directory)
    except PolicyError as exc:
        if directory is None:
            raise
        path = Path(directory)
        if not path.is_dir():
            raise
        if (kinds := _foreign_kinds(path)) is not None:
            raise PolicyError(f"{path}: this does not look like a policy directory: it holds "
                              f"{', '.join(kinds)}, no Policy or MeshProfile (podgate policy files have "
                              f"apiVersion podgate.io/v1alpha1); --policies names the directory of those") from None
        errors = [str(p) for p in lint(path).problems if p.severity == "error"]
        if not errors:
            raise
        raise PolicyError(f"{path}: {len(errors)} error{'s' if len(errors) != 1 else ''} in the policies "
                          f"(podgate policy lint {path} says the same):\n" + "\n".join(errors)) from None


def _foreign_kinds(directory: Path) -> list[str] | None:
    """The kinds in a directory whose readable documents are Kubernetes objects but none a
    Policy or MeshProfile; None when it has one of those, or nothing of the kind."""
    kinds: dict[str, None] = {}
    for file in policy_files(directory)[0]:
        try:
            docs = [d.data for d in load_documents(read_text(file, POLICY_FILE_MAX, regular_only=True))]
        except (InputFileError, UnicodeDecodeError, yaml.YAMLError):
            continue
        for data in docs:
            kind = data.get("kind") if isinstance(data, dict) else None
            if kind in ("Policy", "MeshProfile") and isinstance(data, dict) \
                    and str(data.get("apiVersion", "")).startswith("podgate.io/"):
                return None
            if isinstance(kind, str) and kind:
                kinds.setdefault(kind, None)
    return list(kinds) or None


def _read(path: Path, problems: list[Problem], refused: set[str]) -> Iterator[Doc]:
    label = str(path)
    try:
        parsed = load_documents(read_text(path, POLICY_FILE_MAX, regular_only=True), PolicyLoader)
    except InputFileError as exc:
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
        if errors and (name := mesh_profile_name(ydoc.data)) is not None:
            refused.update((name, revision_of(_map(ydoc.data.get("spec")), name)))
        data = _prune(ydoc.data, [best for best, _ in errors])
        if isinstance(data, dict) and data.get("kind") in ("Policy", "MeshProfile"):
            # the other checks still run, on the parts that are well-formed
            yield Doc(label, ydoc, data, [p for best, _ in errors for p in _error_paths(best)])


def _semantics(docs: list[Doc], refused: set[str]) -> list[Problem]:
    out: list[Problem] = []
    profiles: dict[str, Doc] = {}
    for d in docs:
        if d.kind == "MeshProfile":
            if d.name is not None:
                if d.name in profiles:
                    out.append(d.problem("error", ["metadata", "name"],
                                         f"MeshProfile {d.name!r} is also defined in {profiles[d.name].file}"))
                profiles[d.name] = d
            out += _profile(d)
    revisions: dict[str, Doc] = {}
    for d in profiles.values():
        revision = revision_of(d.spec, d.name or "")
        if revision in revisions:
            other = revisions[revision]
            at = ["spec", "revision"] if "revision" in d.spec else ["metadata", "name"]
            out.append(d.problem("error", at, f"revision {revision!r} is also the revision of MeshProfile "
                                              f"{other.name!r} ({other.file}); each revision names one profile"))
        else:
            revisions[revision] = d
    policies = [d for d in docs if d.kind == "Policy"]
    seen: dict[str, Doc] = {}
    default: Doc | None = None
    matched: dict[str, Doc] = {}
    for d in policies:
        spec = d.spec
        if d.name is not None:
            if d.name in seen:
                out.append(d.problem("error", ["metadata", "name"],
                                     f"Policy {d.name!r} is also defined in {seen[d.name].file}"))
            seen[d.name] = d
        if d.has_spec and "match" not in spec:
            if default is not None:
                out.append(d.problem("error", ["spec"], f"only one policy may omit match (the default); "
                                                        f"policy {default.name!r} in {default.file} already does"))
            default = default or d
        for rule_id in _map(spec.get("rules")):
            if rule_id not in RULES:
                out.append(d.problem("error", ["spec", "rules", rule_id], unknown_rule_message(str(rule_id))))
        for i, ns in enumerate(_list(_map(spec.get("match")).get("namespaces"))):
            if not isinstance(ns, str):
                continue
            if ns in matched:
                out.append(d.problem("warning", ["spec", "match", "namespaces", i],
                                     f"namespace {ns!r} is also matched by policy {matched[ns].name!r}, which comes "
                                     f"first (file order): this policy never governs it"))
            else:
                matched[ns] = d
        out += _policy(d, profiles, revisions, refused)
    return out


def _reserved(d: Doc) -> list[tuple[int, tuple[int, str]]]:
    """(index, (port, protocol)) of the well-formed ``reservedPorts`` entries."""
    out = []
    for i, entry in enumerate(_list(_map(d.spec.get("proxy")).get("reservedPorts"))):
        if isinstance(entry, dict) and isinstance(entry.get("port"), int) \
                and isinstance(entry.get("protocol", "TCP"), str):
            entry = reserved_ports([entry])[0]
        elif isinstance(entry, int) and not isinstance(entry, bool):
            entry = reserved_ports([entry])[0]
        else:
            continue
        out.append((i, entry))
    return out


def _profile(d: Doc) -> Iterator[Problem]:
    proxy = _map(d.spec.get("proxy"))
    entries = _reserved(d)
    reserved = {entry for _, entry in entries}
    whole = d.intact("spec", "proxy", "reservedPorts")  # else a port may be in an entry that failed the schema
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for i, entry in entries:
        counts[entry] += 1
        if counts[entry] == 2:
            yield d.problem("warning", ["spec", "proxy", "reservedPorts", i], f"{entry[0]}/{entry[1]} is listed twice")
    injection = _map(d.spec.get("injection"))
    if not injection:
        return
    container = _map(injection.get("container"))
    for i, port in enumerate(_list(container.get("ports"))):
        if not isinstance(port, dict) or not isinstance(port.get("containerPort"), int) \
                or not isinstance(port.get("protocol", "TCP"), str):
            continue
        key = (port["containerPort"], port.get("protocol", "TCP"))
        if whole and key not in reserved:
            yield d.problem("warning", ["spec", "injection", "container", "ports", i],
                            f"the proxy container declares {key[0]}/{key[1]}, which spec.proxy.reservedPorts does "
                            "not list: proxy-port-conflict guards it only in Pods that already carry the proxy")
    if d.intact("spec", "injection") and isinstance(proxy.get("name"), str):  # it reads the whole templates
        for path, message in template_problems(injection, proxy["name"]):
            yield d.problem("error", ["spec", "injection", *path], message)
    volumes = _list(injection.get("volumes"))
    names = {v.get("name") for v in volumes if isinstance(v, dict)}
    for i, volume in enumerate(volumes):
        if isinstance(volume, dict) and isinstance(volume.get("name"), str) and len(volume) == 1:
            yield d.problem("warning", ["spec", "injection", "volumes", i],
                            f"volume {volume['name']!r} has no source: Kubernetes makes it an emptyDir (write "
                            "emptyDir: {} to say so, or give the source you meant)")
    all_named = all(isinstance(name, str) for name in names) and all(isinstance(v, dict) for v in volumes)
    for at in ("container", "redirect"):
        for i, mount in enumerate(_list(_map(injection.get(at)).get("volumeMounts"))):
            name = mount.get("name") if isinstance(mount, dict) else None
            if all_named and isinstance(name, str) and name not in names:
                yield d.problem("warning", ["spec", "injection", at, "volumeMounts", i, "name"],
                                f"volume {name!r} is not in spec.injection.volumes: every Pod this profile "
                                "injects must bring it, or the API server refuses the Pod")
    yield from _start_order(d, injection, container)
    redirect_ports = _map(_map(injection.get("redirect")).get("ports"))
    probes = _map(injection.get("probes"))
    agent = probes.get("port")
    if isinstance(agent, int) and not isinstance(agent, bool):
        if whole and (agent, "TCP") not in reserved:
            yield d.problem("error", ["spec", "injection", "probes", "port"],
                            f"the kubelet's probes go to the proxy's agent on {agent}/TCP, but spec.proxy.reservedPorts "
                            "does not list it: an app on that port would answer them and no rule would say so")
        excluded = redirect_ports.get("excludeInbound", [])
        if injection.get("redirect") is not None and isinstance(excluded, list) and agent not in excluded \
                and d.intact("spec", "injection", "redirect", "ports"):
            yield d.problem("error", ["spec", "injection", "probes", "port"],
                            f"the redirect captures inbound traffic to {agent}, the agent's probe port: list it in "
                            "spec.injection.redirect.ports.excludeInbound, or the kubelet's plain probes meet the "
                            "mesh's mTLS and fail")
    for role in ("inbound", "outbound"):
        port = redirect_ports.get(role)
        if whole and isinstance(port, int) and (port, "TCP") not in reserved:
            yield d.problem("error", ["spec", "injection", "redirect", "ports", role],
                            f"the proxy captures {role} traffic on {port}/TCP, but "
                            "spec.proxy.reservedPorts does not list it: an app on that port would take the "
                            "proxy's traffic and no rule would say so")


def _start_order(d: Doc, injection: Mapping[str, Any], container: Mapping[str, Any]) -> Iterator[Problem]:
    """What holds the app containers until the proxy is ready: the native sidecar's startupProbe (the
    kubelet starts the next container once a sidecar has started), or in classic mode ``hold``."""
    mode = injection.get("mode", "native")
    if mode == "native" and d.intact("spec", "injection", "container") and "startupProbe" not in container:
        yield d.problem("warning", ["spec", "injection", "container"],
                        "the native proxy has no startupProbe: the kubelet starts the app containers as soon as "
                        "the proxy's process runs, before it is ready, and their first connections fail; give "
                        "it a startupProbe on its readiness endpoint")
    elif mode == "classic" and "hold" not in injection:
        yield d.problem("warning", ["spec", "injection", "mode"],
                        "classic mode without hold: nothing holds the app containers until the proxy is ready, "
                        "and their first connections fail; add spec.injection.hold (a postStart hook that waits "
                        "for the proxy), or use mode: native with a startupProbe")


def _policy(d: Doc, profiles: Mapping[str, Doc], revisions: Mapping[str, Doc], refused: set[str]) -> Iterator[Problem]:
    spec = d.spec
    exemptions = _map(spec.get("exemptions"))
    exempt = [ns for ns in _list(exemptions.get("namespaces")) if isinstance(ns, str)]
    matched = _list(_map(spec.get("match")).get("namespaces"))
    for i, ns in enumerate(_list(exemptions.get("namespaces"))):
        if isinstance(ns, str) and ns in matched:
            yield d.problem("warning", ["spec", "exemptions", "namespaces", i],
                            f"namespace {ns!r} is both matched and exempted by this policy: none of its rules apply there")
    if exemptions.get("podSelector") == {}:
        yield d.problem("warning", ["spec", "exemptions", "podSelector"],
                        "an empty selector matches every Pod: the whole policy is switched off")
    mesh = spec.get("mesh")
    if not isinstance(mesh, dict):
        return
    for i, ns in enumerate(_list(mesh.get("namespaces"))):
        if isinstance(ns, str) and ns in exempt:
            yield d.problem("warning", ["spec", "mesh", "namespaces", i],
                            f"namespace {ns!r} is in the mesh and also exempt: exempt Pods are never injected or checked")
    for key in ("namespaceSelector", "podSelector"):
        if mesh.get(key) == {}:
            yield d.problem("warning", ["spec", "mesh", key], "an empty selector matches everything: every Pod is meshed")
    key = "revision" if "revision" in mesh else "profile"
    name = mesh.get(key)
    if not isinstance(name, str) or name in refused:  # a profile with errors of its own: judged by them
        return
    known = revisions if key == "revision" else profiles
    if name not in known:
        message = unknown_revision(name, revisions) if key == "revision" else \
            f"no MeshProfile named {name!r} (known: {', '.join(sorted(profiles)) or 'none'})"
        yield d.problem("error", ["spec", "mesh", key], message)
        return
    profile = known[name]
    missing_proxy = _map(spec.get("rules")).get("missing-proxy", RULES["missing-proxy"].default_action)
    if not profile.spec.get("injection") and missing_proxy == "deny":
        yield d.problem("warning", ["spec", "mesh", key],
                        f"MeshProfile {profile.name!r} has no injection and missing-proxy is deny: every Pod this "
                        "policy meshes is denied unless another injector adds the proxy first")
