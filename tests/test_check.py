"""``podgate check`` on real trees: directories, stdin, multi-document YAML, List, every workload
kind, the JSON contract, colour only on a terminal, and exit codes 0/1/2 (bad files are
reported by name and the rest is still checked)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import yaml

from webhook.cli import check
from webhook.cli.commands import main
from webhook.cli.manifests import read_documents

from .conftest import CORPUS

MANIFESTS = CORPUS / "manifests"

POD_SPEC = {"containers": [{"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]},
                           {"name": "metrics", "image": "example/m:1", "ports": [{"containerPort": 8080}]}]}
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": POD_SPEC}
WORKLOADS = {
    "Pod": {"apiVersion": "v1", "spec": POD_SPEC},
    "Deployment": {"apiVersion": "apps/v1", "spec": {"selector": {}, "template": TEMPLATE}},
    "StatefulSet": {"apiVersion": "apps/v1", "spec": {"selector": {}, "serviceName": "x", "template": TEMPLATE}},
    "DaemonSet": {"apiVersion": "apps/v1", "spec": {"selector": {}, "template": TEMPLATE}},
    "ReplicaSet": {"apiVersion": "apps/v1", "spec": {"selector": {}, "template": TEMPLATE}},
    "ReplicationController": {"apiVersion": "v1", "spec": {"template": TEMPLATE}},
    "Job": {"apiVersion": "batch/v1", "spec": {"template": TEMPLATE}},
    "CronJob": {"apiVersion": "batch/v1", "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}},
}


def obj(kind: str, name: str, namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, **copy.deepcopy(WORKLOADS[kind])}  # a test may change its copy


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def unparseable(path: Path) -> bool:
    try:
        list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        return False
    except (yaml.YAMLError, UnicodeDecodeError):
        return True


CORPUS_FILES = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
BAD_FILES = [p for p in CORPUS_FILES if unparseable(p)]


def test_whole_corpus_without_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    """Every manifest of the corpus in one run: bad files are named, the rest is still checked."""
    assert len(CORPUS_FILES) > 400 and BAD_FILES
    code, out, err = run(capsys, "-o", "json", str(MANIFESTS))
    assert "Traceback" not in err
    report = json.loads(out)
    assert code == 2  # some files cannot be parsed, some are fragments
    for bad in BAD_FILES:
        assert f"podgate: {bad}:" in err
    # Pod fragments without kind (Kuma's controller test data) are named, document by document, and
    # so are Pods of apiVersion apps/v1 (Linkerd's injector test data), which the API server refuses;
    # empty files (Linkerd's empty goldens) and null List items are skipped silently
    fragments = [(p, d) for p in CORPUS_FILES if p not in BAD_FILES for d in read_documents(str(p)) if d.problem]
    assert fragments
    for path, doc in fragments:
        what = "Pod of apiVersion apps/v1" if isinstance(doc.obj, dict) and doc.obj.get("apiVersion") == "apps/v1" else "not a Kubernetes object: no kind"
        assert f"podgate: {path}:{doc.line}: document {doc.index}: {what}" in err
    empty = [p for p in CORPUS_FILES if p not in BAD_FILES and not read_documents(str(p))]
    assert empty and not [p for p in empty if str(p) in err]
    unreadable = [r for r in report["results"] if "error" in r]  # objects podgate cannot check: on stderr too
    for r in unreadable:
        assert f"podgate: {r['source']}:" in err and f": document {r['document']}: {r['kind']} " in err
    assert len(err.splitlines()) == len(BAD_FILES) + len(fragments) + len(unreadable) == len(report["errors"])
    assert report["summary"]["files"] == len(CORPUS_FILES)
    checked = {r["source"] for r in report["results"]}
    assert checked and not checked & {str(b) for b in BAD_FILES}
    for r in report["results"]:
        assert set(r) >= {"source", "document", "kind", "namespace", "name", "allowed", "injected", "violations"}
        assert isinstance(r["allowed"], bool) and isinstance(r["violations"], list)
        if "error" in r:  # podgate could not check it (e.g. two containers with one name): says where
            assert r["allowed"] is False and r["error"].startswith("podgate cannot check this Pod:")
    assert report["summary"]["denied"] > 0 and report["summary"]["warned"] > 0


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda p: p.name)
def test_unparseable_corpus_file_exits_2_naming_it(capsys: pytest.CaptureFixture[str], bad: Path) -> None:
    code, out, err = run(capsys, str(bad))
    assert code == 2
    assert err.startswith(f"podgate: {bad}:") and "Traceback" not in err
    assert out.splitlines()[-1] == "0 objects checked: 0 denied, 0 warned, 1 not checked (errors)"


def test_every_workload_kind_multi_document_list_and_directories(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    nested = tmp_path / "apps" / "team-a"
    nested.mkdir(parents=True)
    kinds = list(WORKLOADS)
    (nested / "all.yaml").write_text(yaml.safe_dump_all([obj(k, k.lower(), "team-a") for k in kinds[:4]]))
    (tmp_path / "apps" / "list.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [obj(k, k.lower()) for k in kinds[4:]]}))
    (tmp_path / "apps" / "cm.yml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (tmp_path / "README.txt").write_text("not a manifest")
    code, out, err = run(capsys, "-o", "json", "--no-inject", str(tmp_path))
    assert code == 1, err
    results = json.loads(out)["results"]
    assert sorted(r["kind"] for r in results) == sorted(kinds)
    for r in results:
        assert r["allowed"] is False
        assert [v["rule"] for v in r["violations"]] == ["port-collision"]
        assert r["violations"][0]["containers"] == ["app", "metrics"]
    by_kind = {r["kind"]: r for r in results}
    assert by_kind["Deployment"]["namespace"] == "team-a" and by_kind["Job"]["namespace"] == "default"
    assert by_kind["Job"]["source"].endswith("apps/list.json") and by_kind["Job"]["document"] == 0
    assert by_kind["StatefulSet"]["document"] == 2
    # the items of a List share its document number; item tells them apart (and only they have it)
    assert [(by_kind[k]["document"], by_kind[k]["item"]) for k in kinds[4:]] == [(0, i) for i in range(4)]
    assert not any("item" in by_kind[k] for k in kinds[:4])
    assert list(by_kind["Job"])[:3] == ["source", "document", "item"]
    code, out, _ = run(capsys, "--no-inject", str(tmp_path / "apps" / "list.json"))
    assert f"{tmp_path / 'apps' / 'list.json'} [document 0, item 1] ReplicationController default/replicationcontroller:" \
        in out


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"},
          "spec": {"containers": [{"name": "app", "image": "a"}]}}
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all([ok, obj("Pod", "bad")])))
    code, out, _ = run(capsys, "-")
    assert code == 1
    assert out.splitlines() == [
        "<stdin> [document 0] Pod default/ok: allowed",
        "<stdin> [document 1] Pod default/bad: DENIED",
        '  deny  [port-collision] containers "app" and "metrics" both listen on 8080/TCP in the pod\'s shared '
        "network namespace; give one of them another containerPort",
        "2 objects checked: 1 denied, 0 warned",
    ]


def test_all_allowed_exits_0_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"podgate.io/mesh": "enabled"}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump_all([ns, pod]))
    code, out, _ = run(capsys, str(tmp_path / "p.yaml"))
    assert code == 0
    assert out.splitlines()[0] == f"{tmp_path / 'p.yaml'} [document 1] Pod shop/web: allowed (proxy injected)"
    assert out.splitlines()[1].startswith("  warn  [proxy-udp-port]")
    assert out.splitlines()[-1] == "1 object checked: 0 denied, 1 warned"
    assert "\033[" not in out  # not a terminal: no colour


def test_bad_file_is_reported_and_the_rest_still_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-bad.yaml").write_text("kind: Pod\nmetadata: [\n")
    (tmp_path / "b-good.yaml").write_text(yaml.safe_dump(obj("Pod", "web")))
    (tmp_path / "c-latin1.yaml").write_bytes("kind: Pod # caf\xe9\n".encode("latin-1"))
    code, out, err = run(capsys, str(tmp_path), str(tmp_path / "missing.yaml"))
    assert code == 2
    assert f"podgate: {tmp_path / 'a-bad.yaml'}:3: invalid YAML/JSON" in err
    assert f"podgate: {tmp_path / 'c-latin1.yaml'}: cannot read" in err
    assert f"podgate: {tmp_path / 'missing.yaml'}: no such file or directory" in err
    assert "Pod default/web: DENIED" in out
    assert out.splitlines()[-1] == "1 object checked: 1 denied, 0 warned, 3 not checked (errors)"


def test_object_podgate_cannot_check_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = obj("Deployment", "api")
    bad["spec"]["template"] = {"spec": {"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": "x"}]}]}}
    no_template = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump_all([bad, no_template]))
    code, out, err = run(capsys, str(tmp_path / "d.yaml"))
    assert code == 2
    assert "Deployment default/api: ERROR" in out
    # the field is named from the top of the workload, as the server names it in a denial
    assert 'error podgate cannot check deployment "default/api": /spec/template/spec/containers/0/ports/0/' \
           'containerPort: expected a port number' in out
    assert 'error podgate cannot check job "default/j": /spec/template: is missing' in out
    # stderr names each of them too: the report on stdout may go to a file
    # each at the line of the field at fault: the port, and the Job's spec (where the template is missing)
    lines = (tmp_path / "d.yaml").read_text().splitlines()
    port_line = next(i for i, line in enumerate(lines, 1) if "containerPort: x" in line)
    job_line = next(i for i, line in enumerate(lines, 1) if i > lines.index("apiVersion: batch/v1") and
                    line.startswith("spec:"))
    assert err.splitlines() == [
        f"podgate: {tmp_path / 'd.yaml'}:{port_line}: document 0: Deployment default/api: podgate cannot check deployment "
        '"default/api": /spec/template/spec/containers/0/ports/0/containerPort: expected a port number, got a string',
        f"podgate: {tmp_path / 'd.yaml'}:{job_line}: document 1: Job default/j: podgate cannot check job "
        '"default/j": /spec/template: is missing: the workload has no Pod template']


UNREADABLE_PODS = [
    pytest.param({"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": "8080"}]}]}, None,
                 "/spec/containers/0/ports/0/containerPort: expected a port number, got a string", id="port-string"),
    pytest.param({"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 70000}]}]}, None,
                 "/spec/containers/0/ports/0/containerPort: ", id="port-out-of-range"),
    pytest.param({"containers": [{"name": "a", "image": "a", "ports": [{"containerPort": 80, "protocol": "tcp"}]}]},
                 None, "/spec/containers/0/ports/0/protocol: ", id="protocol-lowercase"),
    pytest.param({"containers": [{"name": "a", "image": "a"}]}, {"podgate.io/inject": True},
                 "/metadata/annotations", id="annotation-not-a-string"),
]


@pytest.mark.parametrize(("spec", "annotations", "problem"), UNREADABLE_PODS)
def test_a_pod_podgate_cannot_read_is_named_on_stderr_and_in_json_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict, annotations: dict | None, problem: str) -> None:
    ok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"},
          "spec": {"containers": [{"name": "app", "image": "a"}]}}
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", **({"annotations": annotations}
                                                                            if annotations else {})}, "spec": spec}
    source = tmp_path / "pods.yaml"
    source.write_text(yaml.safe_dump_all([ok, bad]))
    code, out, err = run(capsys, str(source))
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(f"podgate: {source}:") and f": document 1: Pod default/bad: podgate cannot check this Pod: " \
        f"object {problem}" in line, line
    assert f"[document 1] Pod default/bad: ERROR" in out  # the report on stdout is as it was
    assert out.splitlines()[-1] == "1 object checked: 0 denied, 0 warned, 1 not checked (errors)"

    code, out, err = run(capsys, "-o", "json", str(source))
    assert code == 2 and len(err.splitlines()) == 1
    report = json.loads(out)
    [result] = [r for r in report["results"] if "error" in r]
    [error] = report["errors"]
    assert error == {"message": line.removeprefix("podgate: "), "source": str(source), "line": error["line"],
                     "document": 1}
    assert result["error"] in error["message"] and result["document"] == error["document"]
    assert report["summary"]["errors"] == 1 and report["summary"]["objects"] == 2


def test_json_errors_name_the_file_and_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text("kind: Pod\nmetadata: [\n")
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: List\nitems:\n  - foo: bar\n")
    code, out, err = run(capsys, "-o", "json", str(tmp_path), str(tmp_path / "missing.yaml"))
    assert code == 2
    errors = json.loads(out)["errors"]
    assert [e["message"] for e in errors] == [line.removeprefix("podgate: ") for line in err.splitlines()]
    assert [{k: v for k, v in e.items() if k != "message"} for e in errors] == [
        {"source": str(tmp_path / "a.yaml"), "line": 3},
        {"source": str(tmp_path / "b.yaml"), "line": 4, "document": 0, "item": 0},
        {"source": str(tmp_path / "missing.yaml")}]
    assert json.loads(out)["summary"]["errors"] == 3


NOT_OBJECTS = [
    pytest.param("- a\n- b\n", "f.yaml:1: document 0: not a Kubernetes object: a list, not a mapping", id="list"),
    pytest.param("just text\n", "f.yaml:1: document 0: not a Kubernetes object: a string ('just text')", id="scalar"),
    pytest.param("foo: bar\n", "f.yaml:1: document 0: not a Kubernetes object: no kind (a mapping with keys foo)",
                 id="mapping-without-kind"),
    pytest.param("metadata: {name: web}\nspec:\n  containers: []\n",
                 "f.yaml:1: document 0: not a Kubernetes object: no kind (it looks like a Pod: add apiVersion: v1 "
                 "and kind: Pod)", id="pod-fragment"),
    pytest.param("kind: [Pod]\n", "f.yaml:1: document 0: not a Kubernetes object: kind must be a non-empty string",
                 id="kind-not-a-string"),
    pytest.param("apiVersion: v1\nkind: List\nitems: 3\n", "f.yaml:1: document 0: List items must be a list",
                 id="list-items-not-a-list"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\n---\n# second\n42\n",
                 "f.yaml:5: document 1: not a Kubernetes object: a number (42)", id="second-document"),
]


@pytest.mark.parametrize(("text", "message"), NOT_OBJECTS)
def test_a_document_that_is_not_a_kubernetes_object_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch, text: str,
                                                                 message: str) -> None:
    (tmp_path / "f.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "f.yaml")
    assert code == 2
    assert err.startswith(f"podgate: {message}"), err
    assert len(err.splitlines()) == 1
    assert out.splitlines()[-1] == "0 objects checked: 0 denied, 0 warned, 1 not checked (errors)"


def test_list_items_that_are_not_objects_are_named_by_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = [obj("Pod", "web"), 1, "x", None]
    (tmp_path / "list.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    code, out, err = run(capsys, str(tmp_path / "list.yaml"))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2  # the null item is skipped like an empty document
    assert lines[0].startswith(f"podgate: {tmp_path / 'list.yaml'}:") and \
        lines[0].endswith(": document 0, item 1: not a Kubernetes object: a number (1), not a mapping with apiVersion "
                          "and kind")
    assert ": document 0, item 2: not a Kubernetes object: a string ('x')" in lines[1]
    assert "Pod default/web: DENIED" in out  # the rest is still checked


@pytest.mark.parametrize(("setup", "where"), [
    pytest.param(lambda d: (d / "empty.yaml").write_text(""), "empty.yaml (1 file read: empty, or only comments and "
                 "empty documents)", id="empty-file"),
    pytest.param(lambda d: (d / "empty.yaml").write_text("---\n# nothing here\n---\n"),
                 "empty.yaml (1 file read: empty, or only comments and empty documents)", id="only-empty-documents"),
    pytest.param(lambda d: (d / "dir").mkdir() or (d / "dir" / "notes.txt").write_text("kind: Pod\n"),
                 "dir (no .yaml, .yml or .json file)", id="directory-without-manifests"),
    pytest.param(lambda d: (d / "dir").mkdir() or (d / "dir" / "a.yaml").write_text("") or
                 (d / "dir" / "b.json").write_text("  \n"),
                 "dir (2 files read: empty, or only comments and empty documents)", id="directory-of-empty-files"),
])
def test_a_run_that_finds_no_object_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, setup, where: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, where.split(" ")[0])
    assert code == 2
    assert err == f"podgate: no Kubernetes objects found in {where}\n"
    code, out, _ = run(capsys, "-o", "json", where.split(" ")[0])
    assert code == 2 and json.loads(out)["summary"]["objects"] == 0


@pytest.mark.parametrize("stdin", ["", "---\n# rendered nothing\n---\n"], ids=["empty", "only-comments"])
def test_empty_stdin_is_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                  stdin: str) -> None:
    """``helm template ... | podgate check -`` must not pass when the chart rendered nothing."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code, _, err = run(capsys, "-")
    assert code == 2
    assert err == "podgate: no Kubernetes objects found in <stdin> (empty, or only comments and empty documents)\n"


def test_other_kinds_and_empty_documents_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid object podgate does not check is no error, and neither is an empty file beside it."""
    (tmp_path / "a.yaml").write_text("---\n# a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                     "---\napiVersion: v1\nkind: List\nitems: [null]\n")
    (tmp_path / "b.yaml").write_text("")
    code, out, err = run(capsys, str(tmp_path))
    assert (code, err) == (0, "")
    assert out == "0 objects checked: 0 denied, 0 warned\n"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(obj("Pod", "web")))
    code, out, err = run(capsys, str(tmp_path))
    assert (code, err) == (1, "")


def test_a_pod_named_by_the_api_server_shows_as_review_names_it(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A Pod with only generateName is "web-<generated>" in check's text and JSON, as in the
    denial message that review (and the server) write for it."""
    pod = obj("Pod", "x")
    pod["metadata"] = {"generateName": "web-"}
    nameless = obj("Pod", "x")
    del nameless["metadata"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump_all([pod, nameless]))
    code, out, _ = run(capsys, "--no-inject", str(tmp_path / "p.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 'p.yaml'} [document 0] Pod default/web-<generated>: DENIED"
    assert f"{tmp_path / 'p.yaml'} [document 1] Pod default/<unnamed>: DENIED" in lines
    code, out, _ = run(capsys, "--no-inject", "-o", "json", str(tmp_path / "p.yaml"))
    first, second = json.loads(out)["results"]
    assert (first["name"], second["name"]) == ("web-<generated>", "<unnamed>")

    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                          "namespace": "default", "object": pod}}
    (tmp_path / "r.json").write_text(json.dumps(review))
    assert main(["review", str(tmp_path / "r.json")]) == 1
    message = json.loads(capsys.readouterr().out)["response"]["status"]["message"]
    assert '"default/web-<generated>"' in message


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert check.use_colour(Tty()) and not check.use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not check.use_colour(Tty())


def test_the_summary_counts_an_unreadable_object_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two Pods podgate cannot read are two not checked, not "2 checked ... 2 not checked"."""
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: 3}\n---\n"
                 "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: x, ports: 7}]}\n"
                 "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {containers: [{name: x}]}\n")
    code = main(["check", str(f)])
    out = capsys.readouterr().out
    assert code == 2
    assert out.splitlines()[-1] == "1 object checked: 0 denied, 0 warned, 2 not checked (errors)"


def test_a_kind_of_another_api_group_is_not_read_as_the_workload_of_that_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A custom resource named Deployment (or Pod) is not an apps Deployment: its spec.template is
    not a Pod template, and the cluster's podgate never sees it as one. It is skipped as other kinds
    are; a Pod or workload in a Kubernetes group that does not serve it is bad input."""
    crd = [{**obj(kind, f"custom-{kind.lower()}"), "apiVersion": "example.com/v1"} for kind in ("Deployment", "Pod")]
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump_all([*crd, obj("Deployment", "real")]))
    code, out, err = run(capsys, "-o", "json", "--no-inject", str(tmp_path))
    assert code == 1
    assert [(r["kind"], r["name"]) for r in json.loads(out)["results"]] == [("Deployment", "real")]
    docs = read_documents(str(tmp_path / "custom.yaml"))
    assert [(d.has_pod, d.workload.group if d.workload else None) for d in docs] == [
        (False, None), (False, None), (True, "apps")]
    no_version = {k: v for k, v in obj("Deployment", "bare").items() if k != "apiVersion"}
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(no_version))  # read by its kind, as before
    assert [d.has_pod for d in read_documents(str(tmp_path / "custom.yaml"))] == [True]
    old = {**obj("Deployment", "old"), "apiVersion": "extensions/v1beta1"}  # not served since 1.16
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump_all([old, {**obj("Pod", "p"), "apiVersion": "apps/v1"}]))
    code, out, err = run(capsys, "--no-inject", str(tmp_path))
    assert code == 2 and out == "0 objects checked: 0 denied, 0 warned, 2 not checked (errors)\n"
    assert err.splitlines() == [
        f"podgate: {tmp_path / 'custom.yaml'}:1: document 0: Deployment of apiVersion extensions/v1beta1: the API "
        "server serves no Deployment there and would refuse it (a Deployment is apiVersion apps/v1)",
        f"podgate: {tmp_path / 'custom.yaml'}:22: document 1: Pod of apiVersion apps/v1: the API server serves no "
        "Pod there and would refuse it (a Pod is apiVersion v1)"]
