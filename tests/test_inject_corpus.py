"""Every Pod and Pod template of the corpus (Istio, Linkerd, Kuma, Gatekeeper manifests), meshed
by a policy that selects every Pod: each gets a schema-valid injected Pod with the proxy in the
right place, or a documented reason it was skipped; injecting twice changes nothing."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from webhook.admission import Context, decide
from webhook.inject import apply_patch
from webhook.cli.offline import pod_review
from webhook.policy import default_policy_dir, load_policy_set
from webhook.review import parse_review

from . import k8s_schema
from .conftest import CORPUS

MANIFESTS = sorted(p for p in (CORPUS / "manifests").rglob("*") if p.is_file())
# The documented reasons a Pod is not injected (webhook/inject.py skip_reason), and the bad inputs.
EXPECTED_SKIPS = ("hostNetwork pod", "mirror pod", "already has", "malformed object", "already injected")


def everything_meshed(tmp: Path) -> Any:
    shutil.copy(default_policy_dir() / "mesh-proxy.yaml", tmp)
    (tmp / "policy.yaml").write_text(
        "apiVersion: podgate.io/v1alpha1\nkind: Policy\nmetadata: {name: all}\n"
        "spec:\n  mesh:\n    profile: mesh-proxy\n    podSelector: {}\n")
    return load_policy_set(tmp)


@pytest.mark.skipif(not MANIFESTS, reason="../shared/corpus is not beside the checkout")
def test_every_corpus_pod_is_injected_once_or_skipped_for_a_reason(tmp_path: Path, corpus_manifests: Any) -> None:
    ctx = Context(everything_meshed(tmp_path))
    outcomes: Counter[str] = Counter()
    for path, docs in corpus_manifests:
        if docs is None:
            outcomes["unreadable file"] += 1
            continue
        for doc in docs:
            if not doc.has_pod:
                continue
            pod = doc.pod("corpus")
            if not isinstance(pod, dict):
                outcomes["no pod template"] += 1
                continue
            where = f"{path.relative_to(CORPUS)} document {doc.index}"
            decision = decide(parse_review(pod_review(pod, "corpus")), "mutate", ctx)
            if not decision.injected:
                reason = f"{decision.reason}: {decision.message}"
                assert any(skip in reason for skip in EXPECTED_SKIPS), f"{where}: {reason}"
                outcomes[decision.reason.split(" (")[0]] += 1
                continue
            got = jsonpatch.apply_patch(pod, decision.patch)
            init = [c["name"] for c in got["spec"]["initContainers"]]
            own_init = [c["name"] for c in pod["spec"].get("initContainers") or []]
            assert init == ["mesh-init", "mesh-proxy"] + own_init, where
            as_pod = {"apiVersion": "v1", "kind": "Pod"}  # a few corpus documents carry another apiVersion
            if k8s_schema.is_valid({**pod, **as_pod}):
                assert k8s_schema.errors({**got, **as_pod}) == [], f"{where}: the injected Pod fails the schema"
                outcomes["injected, schema-valid"] += 1
            else:
                outcomes["injected (input not schema-valid)"] += 1
            again = decide(parse_review(pod_review(got, "corpus")), "mutate", ctx)
            assert not again.patch, f"{where}: second injection changed the Pod"
            for verdict in probe_verdicts(pod, got, where):
                outcomes[verdict] += 1
                if verdict == "probe rewritten" and "hello-probes" in path.name:
                    outcomes["hello-probes probe rewritten"] += 1
    print(dict(outcomes))
    assert outcomes["injected, schema-valid"] > 300
    assert outcomes["probe rewritten"] > 200 and outcomes["hello-probes probe rewritten"] >= 6


def _resolved(port: Any, container: dict[str, Any]) -> int | None:
    if isinstance(port, str):
        named = [p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == port]
        port = int(port) if port.isdigit() else (named[0] if named else None)
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None


def probe_verdicts(pod: dict[str, Any], got: dict[str, Any], where: str) -> list[str]:
    """Each probe of the input's app containers and native sidecars, after injection: an httpGet,
    tcpSocket or grpc probe on a port the kubelet can resolve targets the agent, its timing fields
    kept and its original (port resolved) in the proxy's env var; anything else (exec, a name the
    container does not declare, the agent's own port) is as it came."""
    spec, out = got["spec"], []
    proxy = next(c for c in spec["initContainers"] if c["name"] == "mesh-proxy")
    env = {e["name"]: e.get("value") for e in proxy.get("env") or []}
    stored = json.loads(env.get("PODGATE_APP_PROBES") or "{}")
    status = json.loads(got["metadata"]["annotations"]["podgate.io/status"])
    for key in ("initContainers", "containers"):
        before = pod["spec"].get(key) or []
        after = [c for c in spec.get(key) or [] if c["name"] not in ("mesh-init", "mesh-proxy")]
        for old, new in zip(before, after, strict=True):
            for kind, slug in (("livenessProbe", "livez"), ("readinessProbe", "readyz"), ("startupProbe", "startupz")):
                probe = old.get(kind)
                if probe is None:
                    continue
                handler = next((h for h in ("httpGet", "tcpSocket", "grpc") if h in probe), None)
                port = _resolved(probe[handler].get("port"), old) if handler else None
                # a probe that already asks port 15020 (Istio's agent, rewritten by Istio) is left too
                if handler is None or port in (None, 15020) \
                        or key == "initContainers" and old.get("restartPolicy") != "Always":
                    assert new[kind] == probe, f"{where}: {old['name']} {kind} changed"
                    out.append("probe left as it was")
                    continue
                assert new[kind]["httpGet"] == {"path": f"/app-health/{old['name']}/{slug}", "port": 15020}, where
                assert {k: v for k, v in new[kind].items() if k != "httpGet"} == \
                    {k: v for k, v in probe.items() if k != handler}, f"{where}: timing fields changed"
                assert stored[old["name"]][kind][handler] == {**probe[handler], "port": port}, where
                assert kind in status["probes"][old["name"]], where
                out.append("probe rewritten")
    return out


@pytest.mark.skipif(not MANIFESTS, reason="../shared/corpus is not beside the checkout")
def test_inject_of_inject_is_unchanged_for_the_corpus_manifests_with_probes(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``podgate inject`` of its own output prints the same bytes: Istio's hello-probes* inputs and
    the Linkerd and Kuma inputs with probes, through the command a user runs."""
    from webhook.cli.commands import main

    policies = tmp_path / "policies"
    policies.mkdir()
    everything_meshed(policies)
    chosen = [p for p in MANIFESTS if p.suffix in (".yaml", ".yml") and (
        "hello-probes" in p.name or p.parts[-3] in ("linkerd-linkerd2", "kumahq-kuma")
        or p.parts[-2] in ("linkerd-linkerd2", "kumahq-kuma")) and "Probe:" in p.read_text(errors="replace")]
    assert len(chosen) >= 20, chosen
    rewritten = 0
    for path in chosen:
        main(["inject", "--policies", str(policies), str(path)])
        once = capsys.readouterr().out
        again_in = tmp_path / "once.yaml"
        again_in.write_text(once)
        main(["inject", "--policies", str(policies), str(again_in)])
        assert capsys.readouterr().out == once, f"{path}: inject of inject changed it"
        rewritten += once.count("/app-health/")
    assert rewritten > 50


@pytest.mark.skipif(not MANIFESTS, reason="../shared/corpus is not beside the checkout")
def test_apply_patch_is_jsonpatch_without_the_copies(tmp_path: Path, corpus_manifests: Any) -> None:
    """What a workload's template is judged on (inject.apply_patch, copying only the paths the
    ops touch) is exactly what jsonpatch, as the API server, makes of every corpus Pod, under the
    bundled profile and one that rewrites probes (replace ops); the input stays as it was."""
    profiles = [Context(everything_meshed(tmp_path))]
    rewrite = tmp_path / "rewrite"
    rewrite.mkdir()
    for path in default_policy_dir().glob("*.yaml"):
        shutil.copy(path, rewrite)
    profiles.append(Context(load_policy_set(rewrite)))
    applied = 0
    for ctx in profiles:
        for _path, docs in corpus_manifests:
            for doc in docs or ():
                pod = doc.pod("corpus") if doc.has_pod else None
                if not isinstance(pod, dict):
                    continue
                review_doc = pod_review(pod, "corpus")
                review_doc["request"]["object"]["metadata"] = {**(pod.get("metadata") or {}),
                                                               "annotations": {**((pod.get("metadata") or {})
                                                                                  .get("annotations") or {}),
                                                                               "podgate.io/inject": "true"}}
                decision = decide(parse_review(review_doc), "mutate", ctx)
                if not decision.injected:
                    continue
                source = review_doc["request"]["object"]
                before = copy.deepcopy(source)
                assert apply_patch(source, decision.patch) == jsonpatch.apply_patch(source, decision.patch)
                assert source == before
                applied += 1
    assert applied > 100


def test_apply_patch_follows_rfc_6902_where_plans_go() -> None:
    doc = {"metadata": {"annotations": {"a/b": "1"}}, "spec": {"containers": [{"name": "app"}]}}
    ops = [{"op": "add", "path": "/spec/initContainers", "value": [{"name": "x"}]},
           {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "first"}},
           {"op": "add", "path": "/spec/containers/-", "value": {"name": "last"}},
           {"op": "add", "path": "/spec/containers/1/env", "value": []},
           {"op": "add", "path": "/spec/containers/1/env/-", "value": {"name": "E"}},
           {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
           {"op": "add", "path": "/metadata/annotations/c~0d", "value": "3"}]
    shared = ops[2]["value"]
    assert apply_patch(doc, ops) == jsonpatch.apply_patch(doc, ops)
    assert shared == {"name": "last"}, "a value taken from the patch is copied before it is changed"
    for bad in ({"op": "replace", "path": "/metadata/annotations/none", "value": 1},
                {"op": "add", "path": "/spec/containers/5", "value": {}},
                {"op": "remove", "path": "/spec"}):
        with pytest.raises((KeyError, IndexError, ValueError)):
            apply_patch(doc, [bad])
