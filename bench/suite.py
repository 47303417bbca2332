"""``podgate test`` against ``podgate check`` on the same Pods: a suite costs about what checking costs.

    .venv/bin/python bench/suite.py                 # 5,000 cases from one manifest file (about a minute)
    .venv/bin/python bench/suite.py --cases 500     # a few seconds

One manifest file holds N Pods (two containers each; every fifth pair collides on a port, every
seventh Pod opts in to the mesh); the suite has one case per Pod (``manifest:`` + ``document:``),
each expecting what podgate answers. Both commands run as a user runs them (the console script,
output to a pipe), in A B B A order, and the figure is the ratio of their best wall times. The
target: the suite within 3x of check. Also printed: how long the suite takes to print its first
case (streaming: results come as cases finish, not at the end).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TARGET = 3.0  # podgate test at most this times podgate check of the same Pods
PODGATE = Path(sys.executable).with_name("podgate")


def pod(i: int) -> dict[str, Any]:
    collide = i % 5 == 0
    meta: dict[str, Any] = {"name": f"pod-{i}", "namespace": "bench"}
    if i % 7 == 0:
        meta["annotations"] = {"podgate.io/inject": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [
        {"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]},
        {"name": "metrics", "image": "example/metrics:1",
         "ports": [{"containerPort": 8080 if collide else 9090}]}]}}


def expectation(i: int) -> dict[str, Any]:
    if i % 5 == 0:
        return {"allowed": False, "rules": ["port-collision"]}
    return {"allowed": True, "rules": [], "injected": i % 7 == 0}


def write(directory: Path, n: int) -> tuple[Path, Path]:
    """The manifest (one file, N documents) and the suite directory naming each of its Pods."""
    manifest = directory / "suite" / "pods.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(yaml.safe_dump_all([pod(i) for i in range(n)], sort_keys=False))
    cases = [{"name": f"pod-{i}", "manifest": "pods.yaml", "document": i, "expect": expectation(i)}
             for i in range(n)]
    suite = {"apiVersion": "podgate.io/v1alpha1", "kind": "TestSuite", "name": "bench", "cases": cases}
    (manifest.parent / "podgate-test.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return manifest, manifest.parent


def timed(argv: list[str], expect_rc: int) -> tuple[float, float]:
    """Wall time of one run, and the time until its first line of output."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_at = time.perf_counter() - started
    rest = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else ""
    rc = proc.wait()
    wall = time.perf_counter() - started
    if rc != expect_rc:
        raise SystemExit(f"{' '.join(argv)}: exit {rc}, expected {expect_rc}\n{first}{rest[-2000:]}{err[-2000:]}")
    return wall, first_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5000, help="Pods in the manifest, cases in the suite")
    parser.add_argument("--rounds", type=int, default=1, help="A B B A rounds (default 1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="podgate-bench-suite-") as tmp:
        manifest, suite_dir = write(Path(tmp), args.cases)
        check_argv = [str(PODGATE), "check", str(manifest)]
        test_argv = [str(PODGATE), "test", str(suite_dir)]
        checks: list[float] = []
        tests: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            checks.append(timed(check_argv, 1)[0])  # 1: the colliding Pods are denied
            tests.append(timed(test_argv, 0))
            tests.append(timed(test_argv, 0))
            checks.append(timed(check_argv, 1)[0])
    check_s = min(checks)
    test_s, first_s = min(tests)
    ratio = test_s / check_s
    print(f"podgate check, {args.cases} Pods in one file: {check_s:.2f} s (best of {len(checks)})")
    print(f"podgate test, {args.cases} cases naming them:  {test_s:.2f} s (best of {len(tests)}), "
          f"first line after {first_s:.2f} s")
    ok = ratio <= TARGET
    print(f"{'ok  ' if ok else 'MISS'} suite: test {ratio:.2f}x check on the same Pods (<= {TARGET})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
