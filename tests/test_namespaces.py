"""Offline namespace labels: the labels file and Namespace objects found in the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webhook.cli.commands import main
from webhook.namespaces import load_namespace_labels

MESHED = "shop: {podgate.io/mesh: enabled}\n"
UNLABELLED_SHOP = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
POD = """apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]
"""


def test_the_labels_file_wins_over_a_namespace_object_in_the_input(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text(MESHED)
    labels = load_namespace_labels(tmp_path / "ns.yaml")
    labels.add_namespaces([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                           {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "other", "labels": {"team": "a"}}}])
    assert labels("shop") == {"podgate.io/mesh": "enabled"}
    assert labels("other") == {"team": "a"}  # a namespace the file does not name is taken from the input


@pytest.mark.parametrize("command", ["check", "inject"])
def test_a_namespace_object_in_another_file_does_not_undo_the_labels_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    (tmp_path / "ns.yaml").write_text(MESHED)
    (tmp_path / "pod.yaml").write_text(POD)
    (tmp_path / "other.yaml").write_text(UNLABELLED_SHOP)
    args = [command, "--namespace-labels", str(tmp_path / "ns.yaml"), str(tmp_path / "pod.yaml"),
            str(tmp_path / "other.yaml")]
    assert main([*args, "-o", "json"] if command == "check" else args) == 0
    out = capsys.readouterr().out
    if command == "check":
        assert [r["injected"] for r in json.loads(out)["results"]] == [True]
    else:
        assert "mesh-proxy" in out
