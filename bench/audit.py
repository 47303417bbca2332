"""``podgate audit`` against the stand-in API server, and ``podgate check`` on the same Pods from a file.

    .venv/bin/python bench/audit.py                 # 10,000 Pods (about a minute)
    .venv/bin/python bench/audit.py --pods 1000     # about half a minute
    .venv/bin/python bench/audit.py --pods 100 --quick   # one run of each: it runs (seconds)

The stand-in API server (tests/stand_in_apiserver.py, real HTTP, in this process) holds N live
Pods in 20 namespaces, half of them labelled for the mesh: Pods of Deployments (ReplicaSet ->
Deployment), with the status, ownerReferences and managedFields the API server keeps; in the
meshed namespaces three Pods in four carry the proxy (injected by podgate), the rest do not.
The same Pods go into one multi-document YAML file for ``podgate check --no-inject`` (the validate step,
as the audit runs it), with the namespaces' labels from ``--namespace-labels``.

Both commands run as a user runs them (the console script, JSON output to a pipe), in A B B A
order; per command the best wall time and its peak memory (the child's maximum RSS). Targets:
the audit's throughput within 2x of check's, and its memory bounded by the page size, not the
cluster: an audit of N Pods peaks within 25% (+10 MB) of an audit of N/5.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stand_in_apiserver import StandInAPIServer  # noqa: E402
from webhook.admission import Context  # noqa: E402
from webhook.cli.offline import admit, pod_review  # noqa: E402
from webhook.namespaces import StaticNamespaceLabels  # noqa: E402
from webhook.policy import load_policy_set  # noqa: E402

TARGET_RATIO = 2.0  # audit's seconds per Pod at most this times check's
MEMORY_SLACK = (1.25, 10 * 1024)  # peak KiB of N Pods <= this factor x peak of N/5, + this many KiB
PODGATE = Path(sys.executable).with_name("podgate")
NAMESPACES = 20
MESHED = {"podgate.io/mesh": "enabled"}


def live_pod(namespace: str, deployment: str, i: int) -> dict[str, Any]:
    rs = f"{deployment}-6d9f7c8b5"
    name = f"{rs}-{i:05x}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": f"{rs}-", "namespace": namespace,
            "labels": {"app": deployment, "pod-template-hash": "6d9f7c8b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": f"uid-{rs}",
                                 "controller": True, "blockOwnerDeletion": True}],
            "creationTimestamp": "2026-11-30T10:00:00Z",
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}}}}}]},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.example/app:1.4.2", "ports": [{"containerPort": 8080,
                                                                                "name": "http"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                 "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                 "imagePullPolicy": "IfNotPresent"},
                {"name": "metrics", "image": "registry.example/exporter:0.9", "ports": [{"containerPort": 9090}],
                 "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "nodeName": f"node-{i % 40}", "schedulerName": "default-scheduler",
            "terminationGracePeriodSeconds": 30, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority"},
        "status": {"phase": "Running", "podIP": f"10.1.{i // 250 % 250}.{i % 250}", "qosClass": "Burstable",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0},
                                         {"name": "metrics", "ready": True, "restartCount": 0}]}}


def populate(api: StandInAPIServer, n: int) -> list[dict[str, Any]]:
    policies = load_policy_set()
    labels = {f"team-{k:02d}": (MESHED if k % 2 == 0 else {}) for k in range(NAMESPACES)}
    ctx = Context(policies, StaticNamespaceLabels(labels))
    for namespace, ns_labels in labels.items():
        api.set(namespace, ns_labels)
    pods = []
    injected_template: dict[str, dict[str, Any]] = {}
    for i in range(n):
        namespace = f"team-{i % NAMESPACES:02d}"
        deployment = f"svc-{i % 100:02d}"
        pod = live_pod(namespace, deployment, i)
        if labels[namespace] and i % 4:
            key = namespace
            if key not in injected_template:  # inject once per namespace, copy the result
                injected_template[key] = admit(pod_review(pod, namespace), "mutate", ctx).object
            done = copy.deepcopy(injected_template[key])
            done["metadata"] = pod["metadata"] | {"annotations": done["metadata"]["annotations"]}
            pod = done
        pods.append(pod)
        if i < 100 * NAMESPACES:
            rs = pod["metadata"]["ownerReferences"][0]["name"]
            api.put("deployments", {"metadata": {"name": deployment, "namespace": namespace}})
            api.put("replicasets", {"metadata": {"name": rs, "namespace": namespace, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment, "uid": "x", "controller": True}]}})
    for pod in pods:
        api.put("pods", copy.deepcopy(pod))
    return pods


# Peak RSS is read by a small launcher process: a child forked from this one (which holds every
# Pod) would report this process's memory as its own peak (Linux keeps the high-water mark across
# exec).
LAUNCHER = """
import os, subprocess, sys, time
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    started = time.perf_counter()
    proc = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_child(argv: list[str], expect_rc: int) -> tuple[float, int, dict[str, Any]]:
    """Wall time, peak RSS (KiB) and the JSON summary of one run, its output to a file."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        line = subprocess.run([sys.executable, "-c", LAUNCHER, str(out), str(err), *argv], check=True,
                              capture_output=True, text=True).stdout.split()
        wall, rss, rc = float(line[0]), int(line[1]), int(line[2])
        if rc != expect_rc:
            raise SystemExit(f"{' '.join(argv)}: exit {rc}, expected {expect_rc}\n{err.read_text()[-2000:]}")
        summary = json.loads(out.read_bytes()).get("summary", {})
    return wall, rss, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10000, help="live Pods in the stand-in API server")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds (default 1)")
    parser.add_argument("--quick", action="store_true", help="one run of each command, no A B B A")
    args = parser.parse_args(argv)
    small = max(args.pods // 5, 1)
    with tempfile.TemporaryDirectory(prefix="podgate-bench-audit-") as tmp:
        api = StandInAPIServer().start()
        api_small = StandInAPIServer().start()
        try:
            pods = populate(api, args.pods)
            populate(api_small, small)
            pod_file = Path(tmp) / "pods.yaml"  # as manifests come: multi-document YAML
            pod_file.write_text(yaml.dump_all(pods, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                                              sort_keys=False))
            labels_file = Path(tmp) / "labels.json"
            labels_file.write_text(json.dumps(dict(api.namespaces)))
            del pods
            audit = [str(PODGATE), "audit", "--kube-api", api.url, "-o", "json", f"--page-size={args.page_size}"]
            audit_small = [str(PODGATE), "audit", "--kube-api", api_small.url, "-o", "json",
                           f"--page-size={args.page_size}"]
            check = [str(PODGATE), "check", "--no-inject", "-o", "json", "--namespace-labels", str(labels_file),
                     str(pod_file)]
            audits, checks = [], []
            for _ in range(1 if args.quick else args.rounds):
                audits.append(run_child(audit, 1))  # 1: the meshed Pods without the proxy
                checks.append(run_child(check, 1))
                if not args.quick:
                    checks.append(run_child(check, 1))
                    audits.append(run_child(audit, 1))
            small_run = min(run_child(audit_small, 1) for _ in range(1 if args.quick else 2))
        finally:
            api.stop()
            api_small.stop()
    audit_s, audit_rss, summary = min(audits)
    check_s, check_rss, _ = min(checks)
    if summary.get("pods") != args.pods:
        raise SystemExit(f"the audit saw {summary.get('pods')} Pods, not {args.pods}")
    ratio = audit_s / check_s
    print(f"podgate audit, {args.pods} live Pods from the stand-in API server (pages of {args.page_size}): "
          f"{audit_s:.2f} s, {args.pods / audit_s:,.0f} Pods/s, peak RSS {audit_rss / 1024:.0f} MB "
          f"(best of {len(audits)}; {summary.get('denied')} at deny level)")
    print(f"podgate check --no-inject, the same Pods from one YAML file: {check_s:.2f} s, "
          f"{args.pods / check_s:,.0f} Pods/s, peak RSS {check_rss / 1024:.0f} MB (best of {len(checks)})")
    print(f"podgate audit, {small} Pods: {small_run[0]:.2f} s, peak RSS {small_run[1] / 1024:.0f} MB")
    ok_speed = ratio <= TARGET_RATIO
    bound = small_run[1] * MEMORY_SLACK[0] + MEMORY_SLACK[1]
    ok_memory = audit_rss <= bound
    print(f"{'ok  ' if ok_speed else 'MISS'} audit: {ratio:.2f}x check's time on the same Pods (<= {TARGET_RATIO})")
    print(f"{'ok  ' if ok_memory else 'MISS'} audit memory: {audit_rss / 1024:.0f} MB for {args.pods} Pods, "
          f"{small_run[1] / 1024:.0f} MB for {small} (bounded by the page: <= {bound / 1024:.0f} MB)")
    return 0 if ok_speed and ok_memory else 1


if __name__ == "__main__":
    sys.exit(main())
