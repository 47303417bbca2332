"""Shared fixtures: the bundled policies, a review builder, and the data directories."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from webhook.admission import Context
from webhook.errors import PodgateError
from webhook.cli.manifests import Document, read_documents
from webhook.namespaces import StaticNamespaceLabels
from webhook.policy import PolicySet, load_policy_set

TESTS = Path(__file__).parent
DATA = TESTS / "data"
REPO = TESTS.parent
CORPUS = REPO.parent / "shared" / "corpus"
APISERVER_REVIEWS = DATA / "reviews" / "apiserver"

# Property tests judge answers, not speed: no per-example deadline (200 ms by default) and no
# health check on how fast examples are made, both of which a loaded machine can fail. A test's
# own @settings still applies on top of this.
settings.register_profile("podgate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("podgate")


@pytest.fixture(autouse=True)
def _reset_environ():
    """Tests must not leak PODGATE_* settings into each other."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def default_policies() -> PolicySet:
    return load_policy_set()


@pytest.fixture
def ctx(default_policies: PolicySet) -> Context:
    """The bundled policies; namespace "meshed" carries the mesh label."""
    return Context(default_policies, StaticNamespaceLabels({"meshed": {"podgate.io/mesh": "enabled"}}))


@pytest.fixture(scope="session")
def corpus_manifests() -> list[tuple[Path, list[Document] | None]]:
    """Every corpus manifest, parsed once per session (None: unreadable): parsing the YAML is most
    of what the corpus-wide tests cost."""
    out: list[tuple[Path, list[Document] | None]] = []
    for path in sorted(p for p in (CORPUS / "manifests").rglob("*") if p.is_file()):
        try:
            out.append((path, read_documents(str(path))))
        except PodgateError:
            out.append((path, None))
    return out


def recorded(name: str) -> dict[str, Any]:
    """A recorded AdmissionReview request from the real API server, by file-name prefix."""
    matches = sorted(APISERVER_REVIEWS.glob(f"{name}*.json"))
    assert len(matches) == 1, f"{name}: {matches}"
    return json.loads(matches[0].read_text())


def review_for(pod: dict[str, Any], *, operation: str = "CREATE", namespace: str = "default",
               old: dict[str, Any] | None = None, api_version: str = "admission.k8s.io/v1",
               uid: str = "test-uid", sub_resource: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """A real recorded request with its object (and operation) replaced: the envelope stays authentic."""
    review = copy.deepcopy(recorded("0004_validate_CREATE"))
    review["apiVersion"] = api_version
    req = review["request"]
    req.update(uid=uid, operation=operation, namespace=namespace, object=pod, oldObject=old, dryRun=dry_run,
               name=(pod.get("metadata") or {}).get("name"))
    if sub_resource:
        req["subResource"] = sub_resource
    return review
