"""``podgate inject`` prints each file as it came but for the injection: comments, key order,
quoting, indentation and document separators stay, so that a reviewed diff of input and output
shows the injected lines and nothing else; the injected objects are still what /mutate makes."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from hypothesis import given, strategies as st

from webhook.admission import Context, decide
from webhook.cli import roundtrip
from webhook.cli.commands import main
from webhook.cli.manifests import read_documents
from webhook.cli.offline import pod_review
from webhook.cli.splice import _Splicer, splice
from webhook.review import parse_review
from webhook.workloads import with_template_pod

from . import k8s_schema
from .conftest import DATA
from .test_inject_corpus import everything_meshed

REAL = sorted(p for p in (DATA / "roundtrip").iterdir() if p.suffix in (".yaml", ".yml"))
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def inject(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["inject", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def expected(path: Path, ctx: Context) -> list[Any]:
    """Every object of the file as /mutate's patch leaves it (Lists item by item)."""
    out = []
    for doc in read_documents(str(path)):
        if not doc.has_pod or doc.problem:
            out.append(doc.obj)
            continue
        namespace = doc.namespace("default")
        pod = doc.pod(namespace)
        decision = decide(parse_review(pod_review(pod, namespace)), "mutate", ctx)
        injected = jsonpatch.apply_patch(pod, decision.patch) if decision.injected else pod
        out.append(injected if doc.workload is None else with_template_pod(doc.obj, doc.workload, injected))
    return out


def changes(before: str, after: str) -> list[tuple[list[str], list[str]]]:
    """(lines removed, lines added) of each hunk of a line diff."""
    a, b = before.splitlines(), after.splitlines()
    return [(a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in
            difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if tag != "equal"]


def ancestors(lines: list[str], index: int) -> list[str]:
    """The keys a line of block YAML is under."""
    keys, indent = [], len(lines[index]) - len(lines[index].lstrip(" -"))
    for line in reversed(lines[:index]):
        stripped = line.lstrip(" -")
        column = len(line) - len(stripped)
        if stripped and not stripped.startswith("#") and column < indent:
            keys.append(stripped.split(":")[0])
            indent = column
    return keys


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_a_real_manifest_comes_out_as_it_came_but_for_the_injection(
        path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    ctx = Context(everything_meshed(policies))
    code, out, err = inject(capsys, "--policies", policies, path)
    assert code == 0, err
    source = path.read_text()
    (tmp_path / path.name).write_text(out)
    got = read_documents(str(tmp_path / path.name))
    assert [d.obj for d in got] == expected(path, ctx)  # what /mutate makes
    assert any(d.obj != e for d, e in zip(got, read_documents(str(path)))), "nothing was injected"
    lines = source.splitlines()
    for removed, _ in changes(source, out):
        for line in removed:  # a line goes only where the injection changed a value: a probe's handler,
            if line.endswith(": {}"):  # or metadata: {} that now has annotations
                continue
            assert set(ancestors(lines, lines.index(line))) & set(PROBES), f"{path.name}: {line!r} changed"
    comments = [line for line in lines if line.lstrip().startswith("#")]
    assert [line for line in out.splitlines() if line.lstrip().startswith("#")] == comments
    for before, after in zip(read_documents(str(path)), got):
        pod = after.pod(after.namespace("default"))
        as_pod = {"apiVersion": "v1", "kind": "Pod"}
        if isinstance(pod, dict) and k8s_schema.is_valid({**before.pod(before.namespace("default")), **as_pod}):
            assert k8s_schema.errors({**pod, **as_pod}) == [], f"{path.name}: the injected Pod fails the schema"


SHOP = """\
# Shop, as the platform team reviewed it
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {podgate.io/mesh: enabled}   # meshed
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-web     # the storefront
  namespace: shop
  labels:
    app: "web"
    tier: 'front'
spec:
  # the app itself
  containers:
    - name: app
      image: "nginx:1.27"   # pinned
      ports:
        - containerPort: 8080
          name: http
      readinessProbe:
        httpGet: {path: /ready, port: http}
---
# a ConfigMap: not a Pod, printed as it came
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config, namespace: shop}
data:
  greeting: "hello"     # quoted
  empty: ''
---
apiVersion: v1
kind: List
items:
  # the API
  - apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: shop-api
      namespace: shop
    spec:
      selector:
        matchLabels: {app: api}
      template:
        metadata:
          labels: {app: api}
        spec:
          containers:
          - name: api
            image: api:2
  - apiVersion: v1
    kind: Service
    metadata: {name: shop-api, namespace: shop}
    spec:
      ports: [{port: 80}]
---
# opts out
apiVersion: v1
kind: Pod
metadata:
  name: shop-batch
  namespace: shop
  annotations: {podgate.io/inject: "false"}
spec:
  containers: [{name: app, image: batch}]
"""
HUNGRY = """\
---
# denied: asks more memory for its proxy than the policy allows
apiVersion: v1
kind: Pod
metadata:
  name: shop-hungry
  namespace: shop
  annotations:
    podgate.io/proxy-memory: 64Gi
spec:
  containers: [{name: app, image: app}]
...
"""


def test_comments_quoting_lists_and_separators_stay_and_stderr_names_objects_as_check_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "shop.yaml").write_text(SHOP + HUNGRY)
    code, out, err = inject(capsys, tmp_path / "shop.yaml")
    assert code == 2  # the denied Pod lacks its proxy
    for untouched in (SHOP.split("---\n")[0], SHOP.split("---\n")[2], SHOP.split("---\n")[4], HUNGRY):
        assert untouched in out  # Namespace, ConfigMap, the Pod that opts out, the denied one: byte for byte
    hunks = changes(SHOP + HUNGRY, out)
    assert [line for lines, _ in hunks for line in lines] == ["        httpGet: {path: /ready, port: http}"]
    added = [line for _, lines in hunks for line in lines]
    assert "        httpGet: {path: /app-health/app/readyz, port: 15020}" in added
    assert "  annotations:" in added and "    - name: mesh-init" in added  # shop-web's own indentation
    assert "          initContainers:" in added and "          - name: mesh-proxy" in added  # the List's Deployment
    lines = err.splitlines()
    assert any("document 5: Pod shop/shop-hungry: " in line and "proxy-memory" in line for line in lines), err
    assert any("[document 4] Pod shop/shop-batch: " in line for line in lines), err
    check = main(["check", str(tmp_path / "shop.yaml")])
    assert check == 1 and "Pod shop/shop-hungry: DENIED" in capsys.readouterr().out
    docs = list(yaml.safe_load_all(out))
    assert docs[3]["items"][1] == yaml.safe_load(SHOP.split("---\n")[3])["items"][1]  # the Service in the List


def test_a_file_with_nothing_to_inject_comes_out_byte_for_byte(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    text = "# only a ConfigMap\n--- # first\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}   # here\n...\n"
    (tmp_path / "c.yaml").write_text(text)
    assert inject(capsys, tmp_path / "c.yaml")[:2] == (0, text)


def test_json_stays_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = yaml.safe_load(SHOP.split("---\n")[1])
    (tmp_path / "pod.json").write_text(json.dumps(pod, indent=4) + "\n")
    (tmp_path / "ns.yaml").write_text(SHOP.split("---\n")[0])
    code, out, err = inject(capsys, tmp_path / "ns.yaml", tmp_path / "pod.json")
    assert code == 0, err
    printed = out.split("---\n")[1]
    injected = json.loads(printed)
    assert "mesh-proxy" in [c["name"] for c in injected["spec"]["initContainers"]]
    assert printed == json.dumps(injected, indent=4) + "\n"  # the file's own indentation, its key order
    assert list(injected) == list(pod)


def test_a_pod_with_anchors_keeps_them_and_the_alias_keeps_its_value(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SHOP.split("---\n")[0] + """---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api   # the API
  namespace: shop
  annotations: &notes
    owner: team-a
spec:
  selector:
    matchLabels: &labels {app: api}
  template:
    metadata:
      labels: *labels
      annotations: *notes
    spec:
      containers: [{name: api, image: "api:2"}]
"""
    (tmp_path / "anchors.yaml").write_text(text)
    code, out, err = inject(capsys, tmp_path / "anchors.yaml")
    assert code == 0, err
    deployment = list(yaml.safe_load_all(out))[1]
    assert deployment["metadata"]["annotations"] == {"owner": "team-a"}  # the anchor's own place: unchanged
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["owner"] == "team-a" and "podgate.io/status" in \
        template["metadata"]["annotations"]
    assert [c["name"] for c in template["spec"]["initContainers"]] == ["mesh-init", "mesh-proxy"]
    assert "&labels" in out and "*labels" in out and "# the API" in out


def test_flow_style_lists_take_the_injection_and_keep_their_comments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SHOP.split("---\n")[0] + """---
apiVersion: v1
kind: Pod
metadata: {name: tiny, namespace: shop}   # all flow
spec: {containers: [{name: app, image: app}], initContainers: [{name: setup, image: busybox}]}
"""
    (tmp_path / "flow.yaml").write_text(text)
    code, out, err = inject(capsys, tmp_path / "flow.yaml")
    assert code == 0, err
    pod = list(yaml.safe_load_all(out))[1]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["mesh-init", "mesh-proxy", "setup"]
    assert "# all flow" in out and out.startswith(SHOP.split("---\n")[0])


def test_hostile_yaml_is_refused_before_any_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = SHOP.split("---\n")[1]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7))
    deep = "spec:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(150)) + "  " * 151 + "v: 1\n"
    for name, hostile in (("bomb", bomb), ("deep", deep)):
        (tmp_path / f"{name}.yaml").write_text(SHOP.split("---\n")[0] + "---\n" + pod + "---\n" + hostile)
        code, out, err = inject(capsys, tmp_path / f"{name}.yaml")
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and f"{name}.yaml:" in err and "invalid YAML/JSON" in err
        assert ("aliases expand" if name == "bomb" else "nested deeper") in err


def test_a_document_edit_cannot_say_other_than_the_injected_object() -> None:
    """Where neither the text edit nor the round trip says the object, it is printed plainly."""
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: !!map {containers: []}\n"
    node = yaml.compose(text)
    old = yaml.safe_load(text)
    new = {**old, "spec": {"containers": [{"name": "app"}]}}
    edited = roundtrip.edit(text, node, old, new)
    assert yaml.safe_load(edited) == new


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                       max_leaves=12)


@given(value=_values, mapping=st.sampled_from([2, 4]), offset=st.sampled_from([0, 2]))
def test_what_is_written_for_a_new_value_reads_back_as_that_value(value: Any, mapping: int, offset: int) -> None:
    written = _Splicer("", mapping, offset).pair("key", value, 0)
    assert yaml.safe_load(written) == {"key": value}
    text = "a: 1\nlist:\n- x\n"
    node = yaml.compose(text)
    new = {"a": value, "list": ["x", value], "b": value}
    assert yaml.safe_load(splice(text, node, yaml.safe_load(text), new)) == new


def test_new_items_take_the_indentation_of_the_list_they_go_into() -> None:
    text = "spec:\n  containers:\n    - name: a\n  volumes:\n  - name: v\n"
    node = yaml.compose(text)
    old = yaml.safe_load(text)
    new = {"spec": {"containers": [{"name": "a"}, {"name": "b"}], "volumes": [{"name": "v"}, {"name": "w"}]}}
    assert splice(text, node, old, new) == ("spec:\n  containers:\n    - name: a\n    - name: b\n"
                                            "  volumes:\n  - name: v\n  - name: w\n")
