"""Policy files: schema errors name the file and JSON path; reloads are whole or not at all."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from webhook.errors import PolicyError
from webhook.policy import default_policy_dir, load_policy_set
from webhook.store import PolicyStore

BUNDLED = default_policy_dir()


def write_dir(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def policy_doc(spec: str, name: str = "p") -> str:
    return f"apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n" + \
        textwrap.indent(textwrap.dedent(spec), "  ")


def test_bundled_policies_load() -> None:
    policies = load_policy_set()
    assert [p.name for p in policies.policies] == ["default"]
    profile = policies.profiles["mesh-proxy"]
    assert profile.proxy.uid == 1337 and profile.proxy.name == "mesh-proxy"
    assert {port for port, _ in profile.proxy.reserved} == {
        15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15053, 15090}
    assert policies.default.actions["duplicate-port-name"] == "warn"


INVALID = [
    pytest.param(policy_doc("rules: {port-collision: block}"),
                 "a.yaml: /spec/rules/port-collision: 'block' is not one of ['deny', 'warn', 'audit', 'off']",
                 id="bad-action"),
    pytest.param(policy_doc("rules: {port-colision: deny}"),
                 "a.yaml: /spec/rules/port-colision: unknown rule; known rules: port-collision,", id="unknown-rule"),
    pytest.param(policy_doc("mesh: {profile: nope}"),
                 "a.yaml: /spec/mesh/profile: no MeshProfile named 'nope'", id="unknown-profile"),
    pytest.param(policy_doc("exemptions: {namespaceSelector: {}}"),
                 "a.yaml: /spec/exemptions: Additional properties are not allowed ('namespaceSelector' was unexpected)",
                 id="namespace-label-exemption-is-not-a-thing"),
    pytest.param(policy_doc("match: {namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}"),
                 "a.yaml: /spec/match/namespaceSelector/matchExpressions/0: 'values' is a required property",
                 id="selector-in-needs-values"),
    pytest.param("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: Bad_Name}\nspec: {}\n",
                 "a.yaml: /metadata/name: 'Bad_Name' does not match", id="bad-name"),
    pytest.param("kind: Policy\n", "a.yaml: /: 'apiVersion' is a required property", id="missing-fields"),
    pytest.param("rules: [\n", "a.yaml:2: invalid YAML", id="invalid-yaml"),
    pytest.param("- just\n- a list\n", "a.yaml: /: ['just', 'a list'] is not of type 'object'", id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_policy_names_file_and_path(tmp_path: Path, text: str, message: str) -> None:
    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path / "mesh-proxy.yaml")
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy_set(tmp_path)
    assert message in str(err.value).replace(str(tmp_path) + "/", "")


def test_two_default_policies_are_rejected(tmp_path: Path) -> None:
    write_dir(tmp_path, **{"a.yaml": policy_doc("{}", "a"), "b.yaml": policy_doc("{}", "b")})
    with pytest.raises(PolicyError, match="only one policy may omit match"):
        load_policy_set(tmp_path)


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy_set(tmp_path)


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    write_dir(tmp_path, **{"a.yaml": policy_doc("rules: {nope: deny}", "a"),
                           "b.yaml": policy_doc("rules: {port-collision: maybe}", "b")})
    with pytest.raises(PolicyError) as err:
        load_policy_set(tmp_path)
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


def test_first_matching_policy_governs(tmp_path: Path) -> None:
    write_dir(tmp_path, **{
        "00-team.yaml": policy_doc("match: {namespaces: [team-a]}\nrules: {port-collision: warn}", "team"),
        "10-labelled.yaml": policy_doc("match: {namespaceSelector: {matchLabels: {tier: dev}}}\n"
                                       "rules: {port-collision: audit}", "dev"),
        "99-default.yaml": policy_doc("rules: {}", "default")})
    policies = load_policy_set(tmp_path)
    assert policies.governing("team-a", {"tier": "dev"}).name == "team"
    assert policies.governing("other", {"tier": "dev"}).name == "dev"
    assert policies.governing("other", None).name == "default"


# --- the live store -----------------------------------------------------------------------------

def configmap_volume(root: Path, version: str, files: dict[str, str]) -> None:
    """Lay files out as the kubelet does for a ConfigMap volume, swapping ..data atomically."""
    target = root / f"..{version}"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    tmp = root / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, root / "..data")


def test_store_follows_configmap_swaps_and_keeps_last_good(tmp_path: Path) -> None:
    mesh = (BUNDLED / "mesh-proxy.yaml").read_text()
    configmap_volume(tmp_path, "v1", {"mesh-proxy.yaml": mesh, "p.yaml": policy_doc("rules: {port-collision: deny}")})
    reloads: list[bool] = []
    store = PolicyStore(tmp_path, on_reload=lambda ok, _detail: reloads.append(ok))
    assert store.load()
    first = store.current
    assert first is not None and first.default.actions["port-collision"] == "deny"
    assert not store.changed()

    configmap_volume(tmp_path, "v2", {"mesh-proxy.yaml": mesh, "p.yaml": policy_doc("rules: {port-collision: warn}")})
    assert store.changed()
    store.poll()
    assert store.current is not first and store.current.default.actions["port-collision"] == "warn"

    good = store.current
    configmap_volume(tmp_path, "v3", {"mesh-proxy.yaml": mesh, "p.yaml": policy_doc("rules: {port-collision: nah}")})
    store.poll()
    assert store.current is good  # the broken set never replaces the good one
    assert "port-collision: 'nah'" in (store.last_error or "")
    store.poll()  # the same broken files are not retried every tick
    assert reloads == [True, True, False]

    configmap_volume(tmp_path, "v4", {"mesh-proxy.yaml": mesh, "p.yaml": policy_doc("rules: {port-collision: off}")})
    store.poll()
    assert store.current.default.actions["port-collision"] == "off" and store.last_error is None


def test_store_watch_thread_reloads(tmp_path: Path) -> None:
    import time

    shutil.copy(BUNDLED / "mesh-proxy.yaml", tmp_path)
    (tmp_path / "p.yaml").write_text(policy_doc("rules: {port-collision: deny}"))
    store = PolicyStore(tmp_path)
    store.load()
    store.watch(0.05)
    try:
        (tmp_path / "p.yaml").write_text(policy_doc("rules: {port-collision: warn}      "))
        deadline = time.monotonic() + 30  # two ticks; the rest is for a loaded machine
        while store.current.default.actions["port-collision"] != "warn" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.current.default.actions["port-collision"] == "warn"
    finally:
        store.stop()


def test_bad_quantity_in_a_profile_is_a_policy_error(tmp_path: Path) -> None:
    text = (BUNDLED / "mesh-proxy.yaml").read_text().replace('maxCPU: "2"', "maxCPU: lots")
    (tmp_path / "mesh-proxy.yaml").write_text(text)
    (tmp_path / "p.yaml").write_text(policy_doc("mesh: {profile: mesh-proxy}"))
    with pytest.raises(PolicyError) as err:
        load_policy_set(tmp_path)
    assert "mesh-proxy.yaml: /spec/injection/overrides/maxCPU: 'lots' is not a Kubernetes quantity" in str(err.value)


def test_allow_opt_out_defaults_to_what_the_schema_says(tmp_path: Path) -> None:
    """The schema carries the default (editors and docs show it); the loader applies the same."""
    import json

    from webhook.policy import default_policy_dir, load_policy_set

    schema = json.loads((default_policy_dir() / "policy.schema.json").read_text())
    [mesh] = [v for v in _walk(schema) if isinstance(v, dict) and "allowOptOut" in v.get("properties", {})]
    assert mesh["properties"]["allowOptOut"]["default"] is True
    shutil.copy(default_policy_dir() / "mesh-proxy.yaml", tmp_path)
    (tmp_path / "p.yaml").write_text("apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\n"
                                     "spec:\n  mesh: {profile: mesh-proxy, namespaces: [shop]}\n")
    [policy] = load_policy_set(tmp_path).policies
    assert policy.mesh is not None and policy.mesh.allow_opt_out is True


def _walk(node):  # type: ignore[no-untyped-def]
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
