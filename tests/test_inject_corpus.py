"""Every Pod and Pod template of the corpus (Istio, Linkerd, Kuma, Gatekeeper manifests), meshed
by a policy that selects every Pod: each gets a schema-valid injected Pod with the proxy in the
right place, or a documented reason it was skipped; injecting twice changes nothing."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from webhook.admission import Context, decide
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
    print(dict(outcomes))
    assert outcomes["injected, schema-valid"] > 300
