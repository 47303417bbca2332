"""``podgate inject`` over real-world input: what cannot be injected is reported, the rest still
comes out, and every document keeps its shape (a List stays one List)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webhook.cli.commands import main

MESHED = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {podgate.io/mesh: enabled}}\n"
POD = """apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: shop%s}
spec:
  containers: [{name: app, image: app}]
"""
GOOD, HUNGRY = POD % ("web", ""), POD % ("hungry", ", annotations: {podgate.io/proxy-memory: 64Gi}")


def inject(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, list[object], str]:
    code = main(["inject", *map(str, paths)])
    out, err = capsys.readouterr()
    return code, list(yaml.safe_load_all(out)), err


def containers(pod: dict) -> list[str]:
    spec = pod["spec"]
    return [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]


def test_a_file_that_cannot_be_read_does_not_stop_the_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-broken.yaml").write_text("kind: Pod\nmetadata: {name: [\n")
    (tmp_path / "b.yaml").write_text(MESHED + "---\n" + GOOD)
    code, docs, err = inject(capsys, tmp_path)
    assert code == 2
    assert "a-broken.yaml" in err and "invalid YAML" in err
    assert [d["kind"] for d in docs] == ["Namespace", "Pod"]
    assert "mesh-proxy" in containers(docs[1])  # type: ignore[arg-type]


def test_an_object_that_is_denied_is_reported_and_printed_as_it_came(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pods.yaml").write_text(MESHED + "---\n" + HUNGRY + "---\n" + GOOD)
    code, docs, err = inject(capsys, tmp_path / "pods.yaml")
    assert code == 2
    assert "document 1" in err and "shop/hungry" in err and "proxy-memory" in err
    assert docs[1] == yaml.safe_load(HUNGRY)  # unchanged: nothing lost, and exit 2 says it lacks its proxy
    assert "mesh-proxy" in containers(docs[2])  # type: ignore[arg-type]


def test_a_list_stays_one_list_with_its_items_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
                  "spec": {"selector": {"matchLabels": {"app": "api"}},
                           "template": {"metadata": {"labels": {"app": "api"}},
                                        "spec": {"containers": [{"name": "app", "image": "app"}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"}, "spec": {"ports": [{"port": 80}]}}
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [service, None, deployment]}
    empty = {"apiVersion": "v1", "kind": "List", "items": []}
    (tmp_path / "list.yaml").write_text(MESHED + "---\n" + yaml.safe_dump_all([listed, empty]))
    code, docs, err = inject(capsys, tmp_path / "list.yaml")
    assert code == 0, err
    assert len(docs) == 3 and docs[2] == empty
    out = docs[1]
    assert isinstance(out, dict) and out["kind"] == "List" and out["items"][:2] == [service, None]
    assert "mesh-proxy" in containers(out["items"][2]["spec"]["template"])


def test_a_workload_of_a_kind_podgate_does_not_read_is_named_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig", "metadata": {"name": "legacy"},
              "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app"}]}}}}
    (tmp_path / "dc.yaml").write_text(yaml.safe_dump(config))
    code, docs, err = inject(capsys, tmp_path / "dc.yaml")
    assert code == 0 and docs == [config]
    assert "DeploymentConfig default/legacy: not injected" in err  # Kind namespace/name, as check names it


def test_a_custom_resource_named_deployment_is_not_injected_and_says_its_api_group(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    custom = {"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
              "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app"}]}}}}
    (tmp_path / "custom.yaml").write_text(MESHED + "---\n" + yaml.safe_dump(custom))
    code, docs, err = inject(capsys, tmp_path / "custom.yaml")
    assert code == 0 and docs[1] == custom
    assert "Deployment shop/web: not injected: podgate reads Pods and the Pod templates of Deployment," in err
    assert err.rstrip().endswith("not Deployment of apiVersion example.com/v1")
