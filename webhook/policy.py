"""Policy files: load YAML, check it against the JSON Schema, compile it into lookup tables.

Everything a request needs is computed here, once, at load time: per-rule actions, compiled
selectors, namespace sets, the proxy's reserved ports. A policy set is built whole or not at
all; a caller that holds the previous set keeps it when loading the new one fails.
"""

from __future__ import annotations

import difflib
import json
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from .bypass import BypassPolicy, Requester, compile_bypass
from .echo import MESSAGE_MAX, echo
from .errors import InjectionError, PolicyError
from .inject import Injector, compile_injector, template_problems
from .pods import Container, Pod
from .revisions import Wanted, judging_profile, proxy_state, revision_of, wanted
from .rules import RULES, Action, ProxySpec, Subject
from .selectors import Labels, Selector, compile_selector
from .files import POLICY_FILE_MAX, InputFileError, file_kind, read_text
from .yamlpos import error_line, error_text, json_pointer, load_documents

API_VERSION = "podgate.io/v1alpha1"
SCHEMA_FILE = "policy.schema.json"
POLICY_SUFFIXES = (".yaml", ".yml")
DEFAULT_ANNOTATION = "podgate.io/inject"
MAX_SCHEMA_ERRORS = 100

# Namespace labels are not in an AdmissionRequest: callers pass a lookup (a static map offline,
# the watch-backed cache in a cluster). None means "unknown".
NamespaceLabels = Callable[[str], Labels | None]


def no_namespace_labels(_namespace: str) -> Labels | None:
    return None


def default_policy_dir() -> Path:
    """The policies shipped with podgate: ``policies/`` in a checkout, package data when installed."""
    return Path(str(resources.files("webhook.policies")))


@lru_cache(maxsize=1)
def _bundled_schemas() -> Registry:
    """Every bundled ``*.schema.json`` by its ``$id``, so that one can ``$ref`` another
    (policy.schema.json's injection templates refer to kubernetes.schema.json)."""
    schemas = [json.loads(path.read_text()) for path in sorted(default_policy_dir().glob("*.schema.json"))]
    return Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)


@lru_cache(maxsize=4)
def schema_validator(file_name: str = SCHEMA_FILE) -> jsonschema.protocols.Validator:
    """A bundled JSON Schema (``policies/<file_name>``), checked and compiled once per process:
    loading policies and linting them use it, requests never do."""
    schema = json.loads((default_policy_dir() / file_name).read_text())
    base = jsonschema.validators.validator_for(schema)
    base.check_schema(schema)
    cls = jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer),
        validators={"maxItems": _max_items, "items": _items_within(base.VALIDATORS["items"]),
                    "uniqueItems": _items_within(_unique_items)})
    return cls(schema, registry=_bundled_schemas())


def _is_integer(_checker: Any, value: Any) -> bool:
    """An integer is an int: JSON Schema's ``integer`` also takes 15053.0, which then reaches a
    patch as ``runAsUser: 1337.0`` (and ``True``, which YAML writes as true)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _max_items(validator: Any, limit: int, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """maxItems, saying how many (jsonschema's message repeats the whole list)."""
    if validator.is_type(instance, "array") and len(instance) > limit:
        yield jsonschema.ValidationError(f"{len(instance)} entries, more than the {limit} allowed here")


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """uniqueItems in one pass: jsonschema's compares every pair when the entries do not sort
    (5,000 namespaces of mixed types took 42 s)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        try:
            key = json.dumps(item, sort_keys=True, default=repr)
        except (TypeError, ValueError):  # keys of mixed types, a recursive value
            key = repr(item)
        if key in seen:
            yield jsonschema.ValidationError(f"{echo(repr(item))} is listed twice")
            return
        seen.add(key)


def _items_within(check: Callable[..., Any]) -> Callable[..., Any]:
    """A keyword that looks at each entry of a list, skipped where the list is over its maxItems
    (which says so): checking a million entries one by one takes minutes."""
    def bounded(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        limit = schema.get("maxItems") if isinstance(schema, dict) else None
        if limit is not None and validator.is_type(instance, "array") and len(instance) > limit:
            return iter(())
        return check(validator, value, instance, schema) or iter(())
    return bounded


def explain_schema_error(error: jsonschema.ValidationError) -> tuple[jsonschema.ValidationError, str]:
    """The error a person should read, and its message.

    A schema may word its own messages (``errorMessage``: keyword -> text, ``{value}`` for the
    offending value) where jsonschema's would show a regular expression or an unreadable
    ``oneOf``; such a message is taken before descending into the branches. Otherwise a failed
    ``oneOf``/``if`` reports its deepest branch. An unknown key gets a suggestion when it is a
    near miss of a known one (``livenessprobe``: did you mean ``livenessProbe``?)."""
    while True:
        custom = error.schema.get("errorMessage", {}).get(error.validator) if isinstance(error.schema, dict) else None
        if custom is not None:
            return error, echo(custom.replace("{value}", echo(repr(error.instance))), MESSAGE_MAX)
        if not error.context:
            break
        # one level down each time (best_match([error]) may hand back ``error`` itself: a loop
        # that never ends); the chosen branch may have its own errorMessage
        error = jsonschema.exceptions.best_match(error.context)
    message = error.message
    if error.validator == "type" and error.instance is None:
        message = f"empty (null), expected {error.validator_value!r}: give a value or leave the key out"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict) \
            and isinstance(error.schema, dict):
        known = list(error.schema.get("properties", {}))
        unknown = [key for key in error.instance if key not in known]
        for key in unknown:
            if close := difflib.get_close_matches(key, known, n=1, cutoff=0.8):
                message += f"; did you mean {close[0]!r}" + (f" for {key!r}?" if len(unknown) > 1 else "?")
    return error, echo(message, MESSAGE_MAX)  # jsonschema quotes the whole value


@dataclass(frozen=True)
class MeshProfile:
    """A mesh proxy as data: what the rules guard, and (``injection``) what /mutate adds."""

    name: str
    proxy: ProxySpec
    injector: Injector | None  # None: the profile only guards the proxy, it does not inject it
    source: str
    revision: str = ""  # what podgate.io/rev labels name it by (spec.revision, else the name)


_CHOICES = {"true": True, "false": False}


@dataclass(frozen=True)
class MeshSelection:
    """Which Pods a policy puts in the mesh (whether), and with which profile (which: see
    webhook/revisions.py)."""

    profile: MeshProfile  # the default revision's
    namespaces: frozenset[str]
    namespace_selector: Selector | None
    pod_selector: Selector | None
    annotation: str
    allow_opt_out: bool
    revisions: Mapping[str, MeshProfile] = field(default_factory=dict)  # every loaded profile, by revision
    profiles: Mapping[str, MeshProfile] = field(default_factory=dict)  # every loaded profile, by name

    def revision(self, pod: Pod, namespace_labels: Labels | None) -> Wanted:
        """The revision (and profile) this Pod should get: its label, its namespace's, the default."""
        return wanted(pod, namespace_labels, self)

    def judging_profile(self, pod: Pod, namespace_labels: Labels | None) -> MeshProfile:
        """The profile the Pod was injected with (its status annotation), else its revision's."""
        return judging_profile(pod, namespace_labels, self)

    def choice(self, pod: Pod) -> bool | None:
        """The Pod's opt-in annotation: True ("true"), False ("false"), None (absent). Anything
        else ("TRUE", "yes", "1") raises InjectionError: /mutate refuses it and /validate denies
        it, rather than one reading it as "not opted in" while the other refuses."""
        value = pod.annotations.get(self.annotation)
        if value is None or value in _CHOICES:
            return _CHOICES.get(value)  # type: ignore[arg-type]
        raise InjectionError(f'annotation {self.annotation}: "{echo(value)}" must be "true" (inject the proxy) or '
                             f'"false" (opt out), in lower case')

    def _read_choice(self, pod: Pod) -> bool | None:
        """``choice`` for the rules, where a bad value was refused already (or is an old one)."""
        return _CHOICES.get(pod.annotations.get(self.annotation, ""))

    def opted_out(self, pod: Pod) -> bool:
        return self.allow_opt_out and self._read_choice(pod) is False

    def requires(self, pod: Pod, namespace_labels: Labels | None) -> bool:
        """The policy says this Pod must carry the proxy (opt-in, namespace, or Pod labels)."""
        return not self.opted_out(pod) and self.selects(pod, namespace_labels)

    def selects(self, pod: Pod, namespace_labels: Labels | None) -> bool:
        """The policy puts this Pod in the mesh unless it opts out."""
        if self._read_choice(pod) is True or pod.namespace in self.namespaces:
            return True
        if self.namespace_selector is not None and namespace_labels is not None \
                and self.namespace_selector(namespace_labels):
            return True
        return self.pod_selector is not None and self.pod_selector(pod.labels)


@dataclass(frozen=True)
class Policy:
    """One compiled Policy document."""

    name: str
    source: str
    actions: Mapping[str, Action]
    match_namespaces: frozenset[str] | None = None
    match_selector: Selector | None = None
    exempt_namespaces: frozenset[str] = frozenset()
    exempt_selector: Selector | None = None
    mesh: MeshSelection | None = None
    bypass: BypassPolicy | None = None  # the meshBypass section; None: anyone may bypass the mesh

    @property
    def is_default(self) -> bool:
        return self.match_namespaces is None and self.match_selector is None

    def governs(self, namespace: str, namespace_labels: Labels | None) -> bool:
        if self.match_namespaces is not None and namespace in self.match_namespaces:
            return True
        return self.match_selector is not None and namespace_labels is not None \
            and self.match_selector(namespace_labels)

    def exemption(self, pod: Pod) -> str | None:
        """Why the Pod is exempt from this policy, or None."""
        if pod.namespace in self.exempt_namespaces:
            return f'namespace "{pod.namespace}" is exempt in policy "{self.name}"'
        if self.exempt_selector is not None and self.exempt_selector(pod.labels):
            return f'pod labels match the exemptions of policy "{self.name}"'
        return None

    def subject(self, pod: Pod, namespace_labels: Labels | None, requester: Requester | None = None,
                ephemeral: tuple[Container, ...] | None = None, running: bool = False) -> Subject:
        """The input of the rules: the Pod plus what this policy says about its mesh, who asked
        (where that is a real identity), for an ephemeralcontainers update what it adds, and
        whether the Pod already runs (podgate audit)."""
        assert pod.detailed, "the rules read listeners, probes and UIDs: parse_pod(detailed=True)"
        if self.mesh is None:
            return Subject(pod, ephemeral=ephemeral, running=running)
        selected = self.mesh.selects(pod, namespace_labels)
        state = proxy_state(pod, namespace_labels, self.mesh)
        return Subject(pod, state.judging_profile.proxy, selected and not self.mesh.opted_out(pod), selected,
                       requester, self.bypass, ephemeral,
                       opt_out=self.mesh.annotation if self.mesh.allow_opt_out else None, proxy_state=state,
                       running=running)


BUILTIN_POLICY = Policy(name="builtin", source="<builtin>", actions={})


@dataclass(frozen=True)
class PolicySet:
    """All policies of a directory, in file order; the first whose ``match`` fits governs a Pod."""

    policies: tuple[Policy, ...]
    profiles: Mapping[str, MeshProfile]
    sources: tuple[str, ...]
    default: Policy = BUILTIN_POLICY
    warnings: tuple[str, ...] = ()  # what loading skipped: the server logs it, lint shows it
    _scoped: tuple[Policy, ...] = field(default=(), repr=False)

    def governing(self, namespace: str, namespace_labels: Labels | None) -> Policy:
        for policy in self._scoped:
            if policy.governs(namespace, namespace_labels):
                return policy
        return self.default


def schema_problems(doc: Any, file_name: str = SCHEMA_FILE) -> list[tuple[jsonschema.ValidationError, str]]:
    """The errors of a document against a bundled schema (the policy schema unless named; the
    first MAX_SCHEMA_ERRORS found: enough to fix, and a bound on the work for a file of thousands
    of wrong entries), in document order, as explain_schema_error gives them. A null fails its
    type; other keywords failing on the same null say nothing more."""
    found = islice(schema_validator(file_name).iter_errors(doc), MAX_SCHEMA_ERRORS)
    errors = sorted(found, key=lambda e: (list(map(str, e.absolute_path)), e.message))
    nulls = {tuple(e.absolute_path) for e in errors if e.instance is None and e.validator == "type"}
    return [explain_schema_error(e) for e in errors
            if not (e.instance is None and e.validator != "type" and tuple(e.absolute_path) in nulls)]


def _schema_errors(doc: Any, where: str) -> list[str]:
    return [f"{where}: {json_pointer(best.absolute_path)}: {message}" for best, message in schema_problems(doc)]


class PolicyLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. Under YAML 1.1 the action ``off`` would read as False."""


PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def policy_files(directory: Path) -> tuple[list[Path], list[str]]:
    """Policy files in name order, and a warning for each entry skipped that looks like one but
    is no regular file (a FIFO, a device, a dangling symlink): reading those would block, or never
    end. Hidden entries are skipped silently: ConfigMap volumes keep their versioned copies in
    ``..2024_...`` folders behind the ``..data`` symlink."""
    files, skipped = [], []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix not in POLICY_SUFFIXES:
            continue
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            skipped.append(f"{path}: skipped: {exc.strerror or exc}")
            continue
        if stat.S_ISREG(mode):
            files.append(path)
        elif not stat.S_ISDIR(mode):
            skipped.append(f"{path}: skipped: not a regular file ({file_kind(mode)})")
    return files, skipped


def read_documents(path: Path, label: str) -> list[tuple[str, Any]]:
    """Parse every YAML document of a file (a regular file of at most POLICY_FILE_MAX bytes);
    raise PolicyError naming the file and line."""
    try:
        docs = load_documents(read_text(path, POLICY_FILE_MAX, regular_only=True), PolicyLoader)
    except InputFileError as exc:
        raise PolicyError(f"{label}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        line = error_line(exc)
        where = f"{label}:{line}" if line else label
        raise PolicyError(f"{where}: invalid YAML: {error_text(exc)}") from None
    numbered = len(docs) > 1 or any(d.index for d in docs)
    return [(f"{label} (document {d.index})" if numbered else label, d.data) for d in docs]


def mesh_profile_name(doc: Any) -> str | None:
    """The name of a MeshProfile document, however broken the rest of it is (None: not one)."""
    if isinstance(doc, dict) and doc.get("kind") == "MeshProfile" and isinstance(doc.get("metadata"), dict):
        name = doc["metadata"].get("name")
        return name if isinstance(name, str) else None
    return None


def reserved_ports(entries: list[Any]) -> list[tuple[int, str]]:
    """``reservedPorts`` entries (a number, or {port, protocol}) as (port, protocol), in order."""
    return [(e, "TCP") if isinstance(e, int) else (e["port"], e.get("protocol", "TCP")) for e in entries]


def _compile_profile(spec: Mapping[str, Any], name: str, where: str, errors: list[str]) -> MeshProfile:
    proxy = spec["proxy"]
    injection = spec.get("injection") or {}
    redirect = injection.get("redirect") or {}
    helpers = frozenset({redirect["name"]}) if redirect.get("name") else frozenset()
    try:
        injector = compile_injector(name, proxy["name"], proxy["uid"], injection)
    except PolicyError as exc:
        errors.append(f"{where}: {exc}")
        injector = None
    for path, message in template_problems(injection, proxy["name"]):
        errors.append(f"{where}: {json_pointer(['spec', 'injection', *path])}: {message}")
    reserved = frozenset(reserved_ports(proxy["reservedPorts"]))
    probes = injector.probes if injector is not None else None
    return MeshProfile(name, ProxySpec(proxy["name"], proxy["uid"], reserved, helpers, probes, name,
                                       injector.profile_hash if injector else ""),
                       injector, where, revision_of(spec, name))


def _compile_policy(spec: Mapping[str, Any], name: str, where: str, profiles: Mapping[str, MeshProfile],
                    revisions: Mapping[str, MeshProfile], refused: set[str], errors: list[str]) -> Policy:
    actions: dict[str, Action] = {}
    for rule_id, action in (spec.get("rules") or {}).items():
        if rule_id not in RULES:
            errors.append(f"{where}: /spec/rules/{rule_id}: unknown rule; known rules: {', '.join(RULES)}")
        actions[rule_id] = action
    match = spec.get("match")
    exemptions = spec.get("exemptions") or {}
    mesh = None
    if (mesh_spec := spec.get("mesh")) is not None:
        if "revision" in mesh_spec:
            profile = revisions.get(mesh_spec["revision"])
            if profile is None and mesh_spec["revision"] not in refused:
                errors.append(f"{where}: /spec/mesh/revision: {unknown_revision(mesh_spec['revision'], revisions)}")
        else:
            profile = profiles.get(mesh_spec["profile"])
            if profile is None and mesh_spec["profile"] not in refused:
                errors.append(f"{where}: /spec/mesh/profile: no MeshProfile named {mesh_spec['profile']!r} "
                              f"(known: {', '.join(sorted(profiles)) or 'none'})")
        if profile is not None:
            mesh = MeshSelection(
                profile=profile,
                namespaces=frozenset(mesh_spec.get("namespaces") or ()),
                namespace_selector=_selector(mesh_spec.get("namespaceSelector")),
                pod_selector=_selector(mesh_spec.get("podSelector")),
                annotation=mesh_spec.get("annotation", DEFAULT_ANNOTATION),
                allow_opt_out=mesh_spec.get("allowOptOut", True),
                revisions=revisions, profiles=profiles)
    bypass = None
    if (bypass_spec := spec.get("meshBypass")) is not None:
        if mesh is None and mesh_spec is None:
            errors.append(f"{where}: /spec/meshBypass: the policy has no mesh, so there is nothing to bypass; "
                          f"add spec.mesh or remove the section")
        opt_out = mesh.annotation if mesh is not None and mesh.allow_opt_out else None
        bypass = compile_bypass(bypass_spec, opt_out)
    return Policy(
        name=name, source=where, actions=actions,
        match_namespaces=frozenset(match.get("namespaces") or ()) if match else None,
        match_selector=_selector(match.get("namespaceSelector")) if match else None,
        exempt_namespaces=frozenset(exemptions.get("namespaces") or ()),
        exempt_selector=_selector(exemptions.get("podSelector")),
        mesh=mesh, bypass=bypass)


def unknown_revision(revision: str, revisions: Mapping[str, Any]) -> str:
    """The message for a revision no loaded MeshProfile has (lint and the loader say the same)."""
    return f'no mesh profile for revision "{revision}" (known revisions: {", ".join(sorted(revisions)) or "none"})'


def _selector(spec: Mapping[str, Any] | None) -> Selector | None:
    return None if spec is None else compile_selector(spec)


def load_policy_set(directory: str | Path | None = None) -> PolicySet:
    """Load, check and compile every policy file of a directory; all errors in one PolicyError."""
    root = Path(directory) if directory is not None else default_policy_dir()
    if not root.is_dir():
        raise PolicyError(f"{root}: not a directory of policy files")
    docs: list[tuple[str, Any]] = []
    errors: list[str] = []
    sources = []
    files, skipped = policy_files(root)
    for path in files:
        label = str(path)
        sources.append(label)
        try:
            docs.extend(read_documents(path, label))
        except PolicyError as exc:
            errors.append(str(exc))
    valid = []
    # invalid MeshProfiles (names and revisions): their own errors say why, policies naming them need not
    refused: set[str] = set()
    for where, doc in docs:
        problems = _schema_errors(doc, where)
        errors.extend(problems)
        if not problems:
            valid.append((where, doc))
        elif (profile_name := mesh_profile_name(doc)) is not None:
            spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
            refused.update((profile_name, revision_of(spec, profile_name)))
    if not sources:
        errors.append(f"{root}: no policy files (*.yaml) found")
        errors.extend(skipped)

    profiles: dict[str, MeshProfile] = {}
    for where, doc in valid:
        if doc["kind"] == "MeshProfile":
            name = doc["metadata"]["name"]
            if name in profiles:
                errors.append(f"{where}: /metadata/name: MeshProfile {name!r} is also defined in {profiles[name].source}")
            profiles[name] = _compile_profile(doc["spec"], name, where, errors)
    revisions: dict[str, MeshProfile] = {}
    for profile in profiles.values():
        if (other := revisions.get(profile.revision)) is not None:
            at = "/spec/revision" if profile.revision != profile.name else "/metadata/name"
            errors.append(f"{profile.source}: {at}: revision {profile.revision!r} is also the revision of "
                          f"MeshProfile {other.name!r} ({other.source}); each revision names one profile")
        revisions.setdefault(profile.revision, profile)
    policies: list[Policy] = []
    for where, doc in valid:
        if doc["kind"] == "Policy":
            name = doc["metadata"]["name"]
            if any(p.name == name for p in policies):
                errors.append(f"{where}: /metadata/name: Policy {name!r} is defined twice")
            policies.append(_compile_policy(doc["spec"], name, where, profiles, revisions, refused, errors))
    defaults = [p for p in policies if p.is_default]
    if len(defaults) > 1:
        errors.append(f"{defaults[1].source}: /spec/match: only one policy may omit match (the default); "
                      f"{defaults[0].source} already does")
    if errors:
        raise PolicyError("\n".join(errors))
    return PolicySet(
        policies=tuple(policies), profiles=profiles, sources=tuple(sources),
        default=defaults[0] if defaults else BUILTIN_POLICY, warnings=tuple(skipped),
        _scoped=tuple(p for p in policies if not p.is_default))
