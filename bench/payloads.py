"""The request bodies the benchmark sends: realistic Pods in a real API server envelope.

Every synthetic body reuses the envelope of a recorded kube-apiserver request (headers of the
review, userInfo, managedFields style) with its object replaced, so the JSON work per request
is what the API server really makes a webhook do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
RECORDED = REPO / "tests" / "data" / "reviews" / "apiserver"
ENVELOPE = "0004_validate_CREATE_default_multi-ports.request.json"
WORKLOAD_ENVELOPE = REPO / "tests" / "data" / "reviews" / "workloads" / "0001_validate_CREATE_Deployment_shop_web.request.json"
INJECT_ANNOTATION = "podgate.io/inject"


@dataclass(frozen=True)
class Payload:
    """One request body and the webhook the API server would send it to."""

    name: str
    webhook: str  # "validate" or "mutate"
    body: bytes


def recorded() -> list[Payload]:
    """The recorded kube-apiserver requests, each for the webhook it was recorded for."""
    out = []
    for path in sorted(RECORDED.glob("*.request.json")):
        webhook = "mutate" if "_mutate_" in path.name else "validate"
        out.append(Payload(path.name.split(".")[0], webhook, path.read_bytes()))
    if not out:
        raise SystemExit(f"no recorded requests in {RECORDED}")
    return out


def envelope(pod: dict[str, Any], uid: str) -> bytes:
    """An AdmissionReview CREATE for ``pod``, in the envelope of a recorded request."""
    review = json.loads((RECORDED / ENVELOPE).read_text())
    req = review["request"]
    meta = pod.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    req.update(uid=uid, operation="CREATE", namespace=meta["namespace"], name=meta.get("name"),
               object=pod, oldObject=None, dryRun=False)
    return orjson.dumps(review)


def container(name: str, ports: list[int], *, image: str = "registry.example.com/team/app:1.4.2",
              probe: bool = True) -> dict[str, Any]:
    """A container as kubectl and the API server's defaulting leave it."""
    c: dict[str, Any] = {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": f"p{p}", "containerPort": p, "protocol": "TCP"} for p in ports],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": str(ports[0]) if ports else ""}],
        "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "readOnly": True}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    }
    if probe and ports:
        c["readinessProbe"] = {"httpGet": {"path": "/ready", "port": f"p{ports[0]}", "scheme": "HTTP"},
                               "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                               "failureThreshold": 3}
        c["livenessProbe"] = {"tcpSocket": {"port": ports[0]}, "periodSeconds": 10, "timeoutSeconds": 1,
                              "successThreshold": 1, "failureThreshold": 3}
    return c


def pod(name: str, containers: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name, "tier": "backend"},
                     "annotations": dict(annotations or {})},
        "spec": {
            "containers": containers,
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 300}],
        },
    }


def one_container() -> dict[str, Any]:
    return pod("web", [container("web", [8080])])


def meshed_five() -> dict[str, Any]:
    """Five containers, opted in to the mesh by annotation: /mutate injects the proxy."""
    names = ["api", "worker", "cache", "metrics", "log-shipper"]
    return pod("shop", [container(n, [8080 + 10 * i, 9080 + 10 * i]) for i, n in enumerate(names)],
               annotations={INJECT_ANNOTATION: "true"})


def many_listeners(listeners: int, per_container: int = 10) -> dict[str, Any]:
    """``listeners`` distinct ports, ``per_container`` to a container: no rule fires, every rule runs."""
    count = max(1, listeners // per_container)
    return pod(f"wide-{listeners}", [
        container(f"c{i}", [10000 + i * per_container + j for j in range(min(per_container, listeners))])
        for i in range(count)])


def fifty_containers() -> dict[str, Any]:
    return many_listeners(100, per_container=2)


def injected(body: bytes) -> bytes:
    """The body /validate sees after /mutate: the same review with the patched Pod."""
    from webhook.admission import Context
    from webhook.cli.offline import admit
    from webhook.policy import load_policy_set

    review_doc = orjson.loads(body)
    result = admit(review_doc, "mutate", Context(load_policy_set()))
    assert result.injected, "not injected"
    review_doc["request"]["object"] = result.object
    return orjson.dumps(review_doc)


def synthetic() -> list[Payload]:
    """The served scenarios besides the recorded ones: each Pod to both webhooks."""
    one = envelope(one_container(), "bench-1c")
    five = envelope(meshed_five(), "bench-5c-meshed")
    fifty = envelope(fifty_containers(), "bench-50c")
    return [
        Payload("1-container", "validate", one), Payload("1-container", "mutate", one),
        Payload("5-container-meshed", "validate", injected(five)), Payload("5-container-meshed", "mutate", five),
        Payload("50-container", "validate", fifty), Payload("50-container", "mutate", fifty),
    ]


def deployment(pod_doc: dict[str, Any], replicas: int = 3) -> dict[str, Any]:
    """A Deployment whose template is ``pod_doc``, as the API server's defaulting leaves it."""
    meta = pod_doc["metadata"]
    labels = dict(meta["labels"])
    template_meta = {"labels": labels, "annotations": dict(meta.get("annotations") or {})}
    return {"kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "generation": 1,
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": template_meta, "spec": pod_doc["spec"]},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%",
                                                                             "maxSurge": "25%"}},
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}, "status": {}}


def workload_envelope(obj: dict[str, Any], uid: str, old: dict[str, Any] | None = None) -> bytes:
    """A Deployment CREATE (UPDATE with ``old``) in the envelope of the recorded kubectl apply."""
    review = json.loads(WORKLOAD_ENVELOPE.read_text())
    req = review["request"]
    req.update(uid=uid, operation="UPDATE" if old else "CREATE", namespace=obj["metadata"]["namespace"],
               name=obj["metadata"]["name"], object=obj, oldObject=old, dryRun=False)
    return orjson.dumps(review)


def workload() -> list[Payload]:
    """The 5-container meshed Pod as a Deployment's template (to /validate, which judges the
    template as /mutate would inject it), next to what each Pod it makes costs: the Pod from its
    controller to /mutate, and injected to /validate. Also an UPDATE that changes the image."""
    from webhook.workloads import WORKLOAD_KINDS, template_pod

    dep = deployment(meshed_five())
    pod_doc = template_pod(dep, WORKLOAD_KINDS["Deployment"], "default")
    pod_body = envelope(pod_doc, "bench-5c-pod")
    new = json.loads(json.dumps(dep))
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/team/app:1.4.3"
    return [Payload("deployment 5-container-meshed", "validate", workload_envelope(dep, "bench-dep")),
            Payload("its pod", "mutate", pod_body),
            Payload("its pod injected", "validate", injected(pod_body)),
            Payload("deployment image update", "validate", workload_envelope(new, "bench-dep-up", dep))]
