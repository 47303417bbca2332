"""podgate's benchmark: what podgate costs beyond the HTTP and JSON work any webhook must do.

    .venv/bin/python bench/run.py            # everything, about two minutes (make bench)
    .venv/bin/python bench/run.py --quick    # a few seconds: does it run, roughly where are we
    .venv/bin/python bench/run.py --mode floor|served|inprocess|workers [--json results.json]

Figures are ratios measured in one run (podgate / baseline), because absolute numbers on a
shared machine drift by 15-20% between runs. bench/README.md explains the method.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inprocess  # noqa: E402
import payloads  # noqa: E402
import served  # noqa: E402
import wrk  # noqa: E402

# The targets, as ratios in one run.
FLOOR_P50 = 1.20  # podgate's p50 at most this times the standard-library floor webhook's
FLOOR_P99 = 1.50  # and its p99
FLOOR_CPU = 1.5  # server CPU per request at most this times the floor's
FLOOR_OUTLIER = 10.0  # no request above this times the floor's p50 (beyond the floor's own such requests)
# The served comparison (podgate's endpoints against /baseline in the same server) has no target:
# it shows what the review adds to a served request, per payload; what a request costs the API
# server is judged against the floor, which shares nothing with podgate.
INPROCESS = 2.0  # review at most this times json.loads + json.dumps (stdlib) of the same bytes
LINEAR = 12.0  # 1,000 listeners at most this times the cost of 100
# A Deployment's /validate at most this times the /mutate + /validate of each Pod it makes: the
# same work (inject, then judge) less one JSON parse; 1.10 for the noise of a shared machine.
WORKLOAD = 1.10
WORKERS = 1.6  # 4 connections on 2 workers at least this times the throughput of 1 worker (median round)
UNEVEN = 0.65  # and in every round, no worker does more than this share of the work


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model or platform.machine()}, Python {platform.python_version()}"


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


class Report:
    def __init__(self) -> None:
        self.checks: list[tuple[str, bool]] = []
        self.data: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%SZ",
                                                                                      time.gmtime())}

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))


def run_served(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    from webhook.admission import Context, review
    from webhook.policy import load_policy_set

    ctx = Context(load_policy_set())

    def expected(path: str, body: bytes) -> Any:
        if path == "/baseline":
            return _allowed(body)
        return review(body, path.strip("/"), ctx).response  # type: ignore[arg-type]

    scenarios: list[tuple[str, str, list[bytes]]] = [
        (p.name, f"/{p.webhook}", [p.body]) for p in payloads.synthetic()]
    recorded = payloads.recorded()
    for webhook in ("validate", "mutate"):
        scenarios.append((f"recorded ({sum(p.webhook == webhook for p in recorded)} requests)", f"/{webhook}",
                          [p.body for p in recorded if p.webhook == webhook]))

    server = served.Server.start("podgate", tmp, *args.server_args)
    load = None
    try:
        served.check_answers(server, expected, [(path, b) for _, path, bodies in scenarios for b in bodies]
                             + [("/baseline", b) for _, _, bodies in scenarios for b in bodies])
        load = served.Load([server], args.connections)
        print(f"\n## served: gunicorn over TLS, {args.connections} keep-alive connections, "
              f"{len(server.workers)} workers, blocks of {args.block * 1000:.0f} ms in A B B A order "
              f"x {args.rounds} rounds\n")
        print(f"{'scenario':28} {'endpoint':10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU':>11}"
              f" {'client CPU':>11}")
        pairs = []
        for name, path, bodies in scenarios:
            pair = served.run_pair(load, server, name, path, bodies, args.rounds, args.block)
            pairs.append(pair)
            for label, side in ((path, pair.podgate), ("/baseline", pair.baseline)):
                print(f"{name if label == path else '':28} {label:10} {side.rps:8.0f} "
                      f"{side.percentile(0.5) * 1000:8.3f} {side.percentile(0.99) * 1000:8.3f} "
                      f"{side.server_cpu_per_request * 1e6:8.0f} µs {side.client_cpu_per_request * 1e6:8.0f} µs")
            r = pair.ratios()
            workers = pair.podgate.server_ticks[1:]
            share = "/".join(f"{100 * t / max(1, sum(workers)):.0f}" for t in workers)
            print(f"{'':28} {'ratio':10} {r['rps']:8.2f} {r['p50']:8.2f} {r['p99']:8.2f} {r['cpu']:11.2f}"
                  f"   worker CPU split {share}%")
        print("\n(no target: these ratios are the review's share of a served request; the floor targets judge "
              "what a request costs)")
        report.data["served"] = [
            {"scenario": p.name, "path": p.path, **{f"ratio_{k}": round(v, 3) for k, v in p.ratios().items()},
             "podgate": _side(p.podgate), "baseline": _side(p.baseline)} for p in pairs]
    finally:
        if load is not None:
            load.close()
        server.stop()


def pod_creation() -> list[tuple[str, bytes]]:
    """What the API server sends for one Pod creation: /mutate, then /validate (a two-container Pod)."""
    pod = payloads.pod("web", [payloads.container("app", [8080]), payloads.container("sidecar", [9090])])
    body = payloads.envelope(pod, "bench-floor")
    return [("/mutate", body), ("/validate", body)]


def run_floor(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    from webhook.admission import Context, review
    from webhook.policy import load_policy_set

    ctx = Context(load_policy_set())
    requests = pod_creation()
    podgate = served.Server.start("podgate-floor", tmp, *args.server_args)
    floor = served.Server.floor(tmp, tmp / "certs")
    loads: list[tuple[str, served.Load]] = []
    try:
        served.check_answers(podgate, lambda path, body: review(body, path.strip("/"), ctx).response,  # type: ignore[arg-type]
                             requests)
        served.check_answers(floor, lambda path, body: _allowed(body), requests)
        loads = [("serial (1 connection, API server)", served.Load([podgate, floor], 1)),
                 (f"concurrent ({args.connections} connections)", served.Load([podgate, floor], args.connections))]
        print(f"\n## floor: podgate serve (defaults) against the standard-library webhook (bench/floor.py), "
              f"one Pod creation = /mutate + /validate, blocks of {args.floor_block * 1000:.0f} ms in A B B A "
              f"order x {args.floor_rounds} rounds, patterns taking turns\n")
        patterns = served.run_floor(loads, podgate, floor, requests, args.floor_rounds, args.floor_block)
        print(f"{'pattern':36} {'server':8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
              f"{'max ms':>8} {'server CPU':>11}")
        for pattern in patterns:
            for label, side in (("podgate", pattern.podgate), ("floor", pattern.floor)):
                print(f"{pattern.name if label == 'podgate' else '':36} {label:8} {side.requests:9} "
                      f"{side.percentile(0.5) * 1000:8.3f} {side.percentile(0.99) * 1000:8.3f} "
                      f"{side.percentile(0.999) * 1000:9.3f} {max(side.latencies) * 1000:8.2f} "
                      f"{side.server_cpu_per_request * 1e6:8.0f} µs")
            r = pattern.ratios()
            over, floor_over = pattern.outliers(FLOOR_OUTLIER)
            print(f"{'':36} {'ratio':8} {'':9} {r['p50']:8.2f} {r['p99']:8.2f} {r['p99.9']:9.2f} {'':8} "
                  f"{r['cpu']:11.2f}   above {FLOOR_OUTLIER:.0f}x floor p50: podgate {over}, floor {floor_over}")
            report.check(f"floor {pattern.name}: p50 {r['p50']:.2f}x (<= {FLOOR_P50})", r["p50"] <= FLOOR_P50)
            report.check(f"floor {pattern.name}: p99 {r['p99']:.2f}x (<= {FLOOR_P99})", r["p99"] <= FLOOR_P99)
            report.check(f"floor {pattern.name}: server CPU per request {r['cpu']:.2f}x (<= {FLOOR_CPU})",
                         r["cpu"] <= FLOOR_CPU)
            report.check(f"floor {pattern.name}: {over} podgate requests above {FLOOR_OUTLIER:.0f}x the floor's p50 "
                         f"(<= the floor's own {floor_over})", over <= floor_over)
        report.data["floor"] = [
            {"pattern": p.name, **{f"ratio_{k}": round(v, 3) for k, v in p.ratios().items()},
             "outliers": dict(zip(("podgate", "floor"), p.outliers(FLOOR_OUTLIER), strict=True)),
             "podgate": _side(p.podgate), "floor": _side(p.floor)} for p in patterns]
    finally:
        for _, load in loads:
            load.close()
        podgate.stop()
        floor.stop()


def _allowed(body: bytes) -> Any:
    req = orjson.loads(body)
    return {"apiVersion": req["apiVersion"], "kind": "AdmissionReview",
            "response": {"uid": req["request"]["uid"], "allowed": True}}


def _side(side: served.Side) -> dict[str, float]:
    return {"rps": round(side.rps, 1), "requests": side.requests, "p50_ms": round(side.percentile(0.5) * 1000, 3),
            "p99_ms": round(side.percentile(0.99) * 1000, 3), "p99.9_ms": round(side.percentile(0.999) * 1000, 3),
            "server_cpu_us": round(side.server_cpu_per_request * 1e6, 1),
            "client_cpu_us": round(side.client_cpu_per_request * 1e6, 1)}


def run_workers(args: argparse.Namespace, tmp: Path, report: Report) -> None:
    body = payloads.envelope(payloads.one_container(), "bench-workers")
    extra = [a for i, a in enumerate(args.server_args)
             if a != "--workers" and (i == 0 or args.server_args[i - 1] != "--workers")]
    two = served.Server.start("two-workers", tmp, *extra, "--workers", "2")
    one = served.Server.start("one-worker", tmp, *extra, "--workers", "1")
    load = None
    try:
        exe = wrk.available()
        if exe:
            print(f"\n## workers: 4 keep-alive connections from wrk, /validate, 2 workers vs 1, {args.wrk_groups} "
                  f"groups of {args.wrk_block} s blocks (A B B A), each block on fresh connections\n")
            result = served.run_scaling_wrk(exe, tmp, two, one, body, 4, args.wrk_groups, args.wrk_block)
        else:
            load = served.Load([two, one], 4)
            print(f"\n## workers: 4 keep-alive connections, /validate, 2 workers vs 1 (A B B A), "
                  f"{args.reconnects} rounds of fresh connections\n"
                  f"(no wrk on PATH: the Python client shares the cores with the workers; `make bench` installs "
                  f"wrk where it can)\n")
            result = served.run_scaling(load, two, one, body, args.reconnects, args.rounds_workers, args.block)
        for i, (a, b, ticks) in enumerate(result.rounds):
            share = "/".join(f"{100 * t / max(1, sum(ticks)):.0f}" for t in ticks)
            print(f"round {i + 1}: 2 workers {a:7.0f} req/s, 1 worker {b:7.0f} req/s: {a / b:.2f}x "
                  f"(worker CPU split {share}%)")
        print(f"median {result.median:.2f}x, worst {result.worst:.2f}x; busiest worker took at most "
              f"{100 * result.most_uneven:.0f}% of the CPU")
        print(f"CPU per request: client ({result.client}) {result.client_cpu_per_request * 1e6:.0f} µs on the "
              f"2-worker side; 1 worker {result.one_cpu_per_request * 1e6:.0f} µs, 2 workers "
              f"{result.two_cpu_per_request * 1e6:.0f} µs")
        report.check(f"workers: every round spread over both workers (busiest at most "
                     f"{100 * result.most_uneven:.0f}% <= {100 * UNEVEN:.0f}%)", result.most_uneven <= UNEVEN)
        report.check(f"workers: 4 connections on 2 workers {result.median:.2f}x of 1 worker, median round "
                     f"(>= {WORKERS})", result.median >= WORKERS)
        report.data["workers"] = {"median": round(result.median, 3), "worst": round(result.worst, 3),
                                  "client": result.client,
                                  "client_cpu_us": round(result.client_cpu_per_request * 1e6, 1),
                                  "one_worker_cpu_us": round(result.one_cpu_per_request * 1e6, 1),
                                  "two_workers_cpu_us": round(result.two_cpu_per_request * 1e6, 1),
                                  "most_uneven": round(result.most_uneven, 3),
                                  "rounds": [[round(a, 1), round(b, 1)] for a, b, _ in result.rounds]}
    finally:
        if load is not None:
            load.close()
        two.stop()
        one.stop()


def run_inprocess(args: argparse.Namespace, report: Report) -> None:
    print(f"\n## in process: request bytes -> response bytes (CPU time, best of {args.inproc_rounds} repeats, "
          f"A B B A order)\n")
    print(f"{'payload':44} {'webhook':9} {'bytes':>9} {'podgate':>10} {'stdlib json':>12} {'ratio':>6}"
          f" {'orjson':>9}")
    every = payloads.synthetic() + payloads.recorded()
    rows = inprocess.measure(every, args.inproc_rounds, args.inproc_target)
    for row in rows:
        print(f"{row.name[:44]:44} {row.webhook:9} {row.size:9} {row.podgate * 1e6:7.1f} µs {row.stdlib * 1e6:9.1f} µs"
              f" {row.ratio:6.2f} {row.orjson * 1e6:6.1f} µs")
    worst = max(rows, key=lambda r: r.ratio)
    total = sum(r.podgate for r in rows) / sum(r.stdlib for r in rows)
    print(f"\nall {len(rows)}: podgate / stdlib json = {total:.2f} in total, worst {worst.ratio:.2f} "
          f"({worst.name} {worst.webhook})")
    report.check(f"in process: review at most {worst.ratio:.2f}x json.loads+json.dumps (<= {INPROCESS})",
                 worst.ratio <= INPROCESS)

    print("\n## in process: scaling with listeners per Pod (10 to a container)\n")
    scale = inprocess.measure(inprocess.scaling_payloads(), args.inproc_rounds, args.inproc_target)
    print(f"{'listeners':>9} {'webhook':9} {'bytes':>9} {'podgate':>11} {'per listener':>13} {'stdlib json':>12}"
          f" {'ratio':>6}")
    by: dict[tuple[str, int], float] = {}
    for row in scale:
        n = int(row.name.split()[0])
        by[(row.webhook, n)] = row.podgate
        print(f"{n:9} {row.webhook:9} {row.size:9} {row.podgate * 1e3:8.3f} ms {row.podgate / n * 1e9:10.0f} ns"
              f" {row.stdlib * 1e3:9.3f} ms {row.ratio:6.2f}")
    for webhook in ("validate", "mutate"):
        growth = by[(webhook, 1000)] / by[(webhook, 100)]
        print(f"{webhook}: 1,000 / 100 listeners = {growth:.1f}x, "
              f"10,000 / 1,000 = {by[(webhook, 10000)] / by[(webhook, 1000)]:.1f}x")
        report.check(f"linear: /{webhook} 1,000 listeners {growth:.1f}x the cost of 100 (<= {LINEAR})",
                     growth <= LINEAR)
    report.data["inprocess"] = {
        "ratio_total": round(total, 3), "ratio_worst": round(worst.ratio, 3),
        "worst": f"{worst.name} {worst.webhook}",
        "scaling": {f"{w} {n}": round(v * 1e6, 1) for (w, n), v in by.items()}}

    print("\n## in process: a workload against the Pods it makes\n")
    dep, pod_mutate, pod_validate, update = inprocess.measure(payloads.workload(), args.inproc_rounds,
                                                              args.inproc_target)
    for row in (dep, pod_mutate, pod_validate, update):
        print(f"{row.name:34} /{row.webhook:9} {row.size:7} bytes {row.podgate * 1e6:8.1f} µs")
    per_pod = pod_mutate.podgate + pod_validate.podgate
    ratio = dep.podgate / per_pod
    print(f"deployment /validate = {ratio:.2f}x its Pod's /mutate + /validate ({per_pod * 1e6:.1f} µs), "
          f"{dep.podgate / pod_validate.podgate:.2f}x its Pod's /validate alone; an image update (old and new "
          f"template) {update.podgate / per_pod:.2f}x")
    report.check(f"workload: a Deployment costs {ratio:.2f}x the admission of one of its Pods (<= {WORKLOAD})",
                 ratio <= WORKLOAD)
    report.data["workload"] = {"deployment_us": round(dep.podgate * 1e6, 1), "pod_mutate_us": round(
        pod_mutate.podgate * 1e6, 1), "pod_validate_us": round(pod_validate.podgate * 1e6, 1),
        "update_us": round(update.podgate * 1e6, 1), "ratio": round(ratio, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds: short blocks, one round")
    parser.add_argument("--mode", choices=("all", "floor", "served", "workers", "inprocess"), default="all")
    parser.add_argument("--connections", type=int, default=4,
                        help="keep-alive connections (the API server keeps a handful; default 4)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--server-arg", dest="server_args", action="append", default=[], metavar="ARG",
                        help="extra argument for `podgate serve` (repeat), e.g. --server-arg=--threads=8")
    args = parser.parse_args(argv)
    args.server_args = [part for a in args.server_args for part in a.split("=", 1)]
    if args.quick:
        args.rounds, args.block, args.reconnects, args.rounds_workers = 1, 0.05, 1, 1
        args.wrk_groups, args.wrk_block = 1, 1
        args.inproc_rounds, args.inproc_target = 2, 0.002
        args.floor_rounds, args.floor_block = 1, 0.05
    else:
        args.rounds, args.block, args.reconnects, args.rounds_workers = 6, 0.2, 3, 2
        args.wrk_groups, args.wrk_block = 5, 1
        args.inproc_rounds, args.inproc_target = 6, 0.02
        args.floor_rounds, args.floor_block = 8, 0.4

    report = Report()
    print(f"podgate benchmark on {report.data['machine']}{' (quick)' if args.quick else ''}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="podgate-bench-") as tmp:
        if args.mode in ("all", "floor"):
            run_floor(args, Path(tmp), report)
        if args.mode in ("all", "served"):
            run_served(args, Path(tmp), report)
        if args.mode in ("all", "workers"):
            run_workers(args, Path(tmp), report)
    if args.mode in ("all", "inprocess"):
        run_inprocess(args, report)

    print(f"\n## targets ({time.perf_counter() - started:.0f} s)\n")
    for what, ok in report.checks:
        print(f"{verdict(ok)} {what}")
    report.data["checks"] = [{"check": w, "ok": ok} for w, ok in report.checks]
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report.data, option=orjson.OPT_INDENT_2))
    return 0 if all(ok for _, ok in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
