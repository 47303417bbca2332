"""The ``podgate`` command: serve, review, check, inject, test, explain, policy lint, certs.

Exit codes are a contract for scripts and CI: 0 all allowed, 1 something denied (or a lint
error), 2 bad input or usage, with a message on stderr naming the file and what is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..admission import Context, review
from ..errors import PodgateError
from ..namespaces import StaticNamespaceLabels, load_namespace_labels
from ..policy import PolicySet, load_policy_set
from ..rules import RULES
from ..server.certs import DEFAULT_NAMES, ensure_self_signed, service_names, write_certificates
from ..server.settings import Settings
from . import check, explain, inject_manifests, lint, suite
from .check import EXIT_DENIED, EXIT_OK, EXIT_USAGE
from .manifests import dump_documents
from .offline import STEPS


class UsageError(PodgateError):
    """Bad input or usage: printed on stderr, exit code 2."""


def _policies(args: argparse.Namespace) -> PolicySet:
    return load_policy_set(args.policies)


def _namespace_labels(args: argparse.Namespace) -> StaticNamespaceLabels:
    path = getattr(args, "namespace_labels", None)
    return load_namespace_labels(path) if path else StaticNamespaceLabels()


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- serve ------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.runner import PodgateServer, ServerOptions, prepare_metrics_dir

    load_policy_set(args.policies)  # fail here, with the file and path, not in a booting worker
    if args.namespace_labels:
        load_namespace_labels(args.namespace_labels)
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--bind must be HOST:PORT, got {args.bind!r}")
    if args.health_bind and not args.health_bind.rpartition(":")[2].isdigit():
        raise UsageError(f"--health-bind must be HOST:PORT, got {args.health_bind!r}")
    cert, key, ca = args.cert, args.key, None
    if not cert:
        paths = ensure_self_signed(args.cert_dir)
        cert, key, ca = str(paths.cert), str(paths.key), str(paths.ca_cert)
    settings = dataclasses.replace(
        Settings.from_env(), policy_dir=Path(args.policies) if args.policies else None,
        reload_interval=args.reload_interval, request_timeout=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
        namespace_labels_file=Path(args.namespace_labels) if args.namespace_labels else None,
        metrics=args.metrics)
    if args.kube_api:
        if args.namespace_labels:
            raise UsageError("--kube-api and --namespace-labels are two sources of namespace labels: pick one")
        settings = dataclasses.replace(settings, kube_api=args.kube_api, namespace_fallback=args.namespace_fallback)
    if args.record:
        settings = dataclasses.replace(settings, record_dir=Path(args.record), record_max_files=args.record_max,
                                       record_max_bytes=args.record_max_bytes, record_user_info=args.record_user_info)
    timeouts = {"timeout": args.worker_timeout, "graceful_timeout": args.graceful_timeout,
                "drain_seconds": args.drain_seconds}
    options = ServerOptions(bind=args.bind, certfile=cert, keyfile=key, workers=args.workers,
                            threads=args.threads, max_requests=args.max_requests,
                            client_ca=args.client_ca or "", health_bind=args.health_bind or "",
                            **{k: v for k, v in timeouts.items() if v is not None})
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "[::]") else host
    print(f"podgate {__version__} listening on https://{host}:{port} "
          f"(policies: {args.policies or 'bundled'}, certificate: {cert})", flush=True)
    if settings.record_dir is not None:
        print(f"recording AdmissionReview requests to {settings.record_dir} (at most {settings.record_max_files} "
              f"files, userInfo {'kept' if settings.record_user_info else 'redacted'}); "
              f"make test cases with: podgate test DIR --init {settings.record_dir}/*.json", flush=True)
    cacert = f"--cacert {ca}" if ca else "-k"
    print("try it:\n  curl -s " + cacert + " -H 'Content-Type: application/json' "
          f"https://{shown}:{port}/validate -d '{_DEMO_REVIEW}'", flush=True)
    metrics_dir, made_here = prepare_metrics_dir() if settings.metrics else (None, False)
    master = os.getpid()
    try:
        PodgateServer(settings, options).run()
    finally:
        # A worker is a fork of this process and leaves through here too (recycled, or stopped):
        # only the master may remove the directory that every worker writes to.
        if made_here and metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK


_DEMO_REVIEW = json.dumps({
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "demo", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "namespace": "default",
                "object": {"metadata": {"name": "web"}, "spec": {"containers": [
                    {"name": "app", "image": "app", "ports": [{"containerPort": 8080}]},
                    {"name": "metrics", "image": "metrics", "ports": [{"containerPort": 8080}]}]}}}},
    separators=(",", ":"))


# --- review -----------------------------------------------------------------------------------

def cmd_review(args: argparse.Namespace) -> int:
    source = args.request
    try:
        body = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"{source}: cannot read: {exc.strerror}") from exc
    ctx = Context(_policies(args), _namespace_labels(args))
    outcome = review(body, args.webhook, ctx)
    if outcome.response is None:
        assert outcome.error is not None
        raise UsageError(f"{source}: {outcome.error.message}")
    _print_json(outcome.response)
    return EXIT_OK if outcome.response["response"]["allowed"] else EXIT_DENIED


# --- check and inject -------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    labels = _namespace_labels(args)
    ctx = Context(_policies(args), labels)
    report = check.run(args.paths, ctx, labels, args.namespace, not args.no_inject)
    check.print_errors(report.errors)
    if args.output == "json":
        _print_json(report.to_json())
    else:
        check.print_text(report, sys.stdout, colour=check.use_colour(sys.stdout))
    return report.exit_code


def cmd_inject(args: argparse.Namespace) -> int:
    result = inject_manifests.run(args.paths, _policies(args), _namespace_labels(args), args.namespace)
    sys.stdout.write(dump_documents(result.objects))
    for note in result.notes:
        print(note, file=sys.stderr)
    check.print_errors(result.errors)
    return EXIT_USAGE if result.errors else EXIT_OK


# --- test, explain ----------------------------------------------------------------------------

def cmd_test(args: argparse.Namespace) -> int:
    runner = suite.Runner(args.policies)
    if args.init:
        return _test_init(args, runner)
    suites = [suite.load_suite(path, args.update_golden) for path in suite.find_suites(args.dir)]
    colour = check.use_colour(sys.stdout) and args.output == "text"
    results: list[tuple[suite.Suite, list[suite.CaseResult]]] = []
    for s in suites:
        if args.output == "text":
            print(f"{s.path}: {s.name}" if s.name != str(s.path) else str(s.path))
        got = []
        for result in runner.run(s, args.run, args.update_golden):
            got.append(result)
            if args.output == "text":
                _print_case(result, colour)
        results.append((s, got))
    cases = [r for _, got in results for r in got]
    failed = sum(not r.passed for r in cases)
    if args.output == "json":
        _print_json({"suites": [{"file": str(s.path), "name": s.name, "cases": [r.to_json() for r in got]}
                                for s, got in results],
                     "summary": {"cases": len(cases), "passed": len(cases) - failed, "failed": failed}})
    elif args.output == "junit":
        sys.stdout.write(suite.junit_xml(results))
    else:
        print(f"{len(cases)} case{'s' if len(cases) != 1 else ''}: {len(cases) - failed} passed, {failed} failed")
    if args.run and not cases:
        raise UsageError(f"no case name contains {args.run!r}")
    return EXIT_OK if failed == 0 else EXIT_DENIED


def _print_case(result: suite.CaseResult, colour: bool) -> None:
    def c(code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    if result.passed:
        print(f"  {c('32', 'PASS')} {result.case.name}")
        return
    print(f"  {c('31', 'FAIL')} {result.case.name}  ({result.case.suite}:{result.case.line})")
    for failure in result.failures:
        for i, line in enumerate(failure.splitlines()):
            if colour and i and line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                line = c("32" if line.startswith("+") else "31", line)
            print(f"       {line}")


def _test_init(args: argparse.Namespace, runner: suite.Runner) -> int:
    target = Path(args.dir)
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target}: --init writes into a suite directory; give a directory")
    suite_file, cases, skipped = suite.init_cases(args.init, target, runner, args.webhook, args.namespace)
    suite.append_cases(suite_file, cases)
    for line in skipped:
        print(f"skipped {line}")
    for case in cases:
        expect = case["expect"]
        verdict = "rejected" if "error" in expect else ("allowed" if expect["allowed"] else "denied")
        rules = ", ".join(expect.get("rules", [])) or "no rules fired"
        print(f"added case {case['name']!r} to {suite_file}: {verdict} ({rules})")
    if cases:
        print("the expectations are what podgate answers today: review them, then run podgate test "
              f"{args.dir}")
    else:
        print(f"no case added to {suite_file}: it already has them all")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(explain.markdown())
    elif args.rule is None:
        sys.stdout.write(explain.rule_list())
    elif args.rule in RULES:
        sys.stdout.write(explain.rule_text(RULES[args.rule]))
    else:
        raise UsageError(explain.unknown_rule_message(args.rule))
    return EXIT_OK


# --- policy lint, certs -----------------------------------------------------------------------

def cmd_policy_lint(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory of policy files")
    report = lint.lint(directory)
    if args.output == "json":
        _print_json({"problems": [p.to_json() for p in report.problems],
                     "summary": {"policies": report.policies, "profiles": report.profiles,
                                 "errors": report.errors, "warnings": report.warnings}})
    else:
        for problem in report.problems:
            print(problem)
        print(f"{directory}: {report.policies} polic{'ies' if report.policies != 1 else 'y'}, {report.profiles} "
              f"mesh profile{'s' if report.profiles != 1 else ''}: {report.errors} error"
              f"{'s' if report.errors != 1 else ''}, {report.warnings} warning{'s' if report.warnings != 1 else ''}")
    failed = report.errors or (args.strict and report.warnings)
    return EXIT_DENIED if failed else EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    names = list(args.dns or [])
    if args.service:
        names = service_names(args.service, args.namespace) + names
    paths = write_certificates(args.out, names or list(DEFAULT_NAMES))
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key} (and {paths.ca_key}: keep it secret)")
    print(f"names: {', '.join(names or DEFAULT_NAMES)}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podgate", description="Admission webhook for multi-container Pods.")
    parser.add_argument("--version", action="version", version=f"podgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_policies(p: argparse.ArgumentParser) -> None:
        p.add_argument("--policies", metavar="DIR", help="policy directory (default: the bundled policies)")
        p.add_argument("--namespace-labels", metavar="FILE",
                       help="namespace labels: a YAML map {namespace: {label: value}} or Namespace objects")

    p = sub.add_parser("serve", help="serve /validate and /mutate over TLS")
    with_policies(p)
    p.add_argument("--bind", default="127.0.0.1:8443", metavar="HOST:PORT")
    p.add_argument("--cert", metavar="FILE", help="serving certificate (PEM); default: a self-signed one")
    p.add_argument("--key", metavar="FILE", help="its private key (PEM)")
    p.add_argument("--cert-dir", default="certs", metavar="DIR",
                   help="where the self-signed certificate is kept when --cert is not given (default: certs)")
    p.add_argument("--client-ca", metavar="FILE", help="require client certificates signed by this CA")
    p.add_argument("--health-bind", metavar="HOST:PORT",
                   help="also serve GET /healthz, /readyz and /metrics (nothing else) over plain HTTP here, "
                        "for probes when --client-ca is set")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--max-requests", type=int, default=0, help="recycle a worker after N requests (0: never)")
    p.add_argument("--max-body-bytes", type=int, default=Settings.max_body_bytes, metavar="N",
                   help="refuse larger request bodies with 413, before reading them (default: 3 MiB + 64 KiB)")
    p.add_argument("--request-timeout", type=float, default=Settings.request_timeout, metavar="SECONDS",
                   help="upper bound on a request's time; podgate answers within 80%% of this or of the API "
                        "server's ?timeout, whichever is shorter (default: 10)")
    p.add_argument("--worker-timeout", type=int, metavar="SECONDS",
                   help="restart a worker whose main loop is silent this long (default: 30)")
    p.add_argument("--graceful-timeout", type=int, metavar="SECONDS",
                   help="on shutdown, time for in-flight requests after the listener closes (default: 20)")
    p.add_argument("--drain-seconds", type=float, metavar="SECONDS",
                   help="on SIGTERM, report unready on /readyz this long while still serving (default: 5)")
    p.add_argument("--reload-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often to look for changed policy files (0: never)")
    p.add_argument("--kube-api", metavar="SOURCE",
                   help="keep namespace labels from the API server: in-cluster, kubeconfig, or a URL such as "
                        "kubectl proxy's http://127.0.0.1:8001")
    p.add_argument("--namespace-fallback", choices=("deny", "no-labels"), default="deny",
                   help="with --kube-api, for a namespace never seen while the API is unreachable: deny the "
                        "request (retryable; default) or evaluate it as if the namespace had no labels")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="serve Prometheus metrics on /metrics, summed over the workers (default: on)")
    p.add_argument("--record", metavar="DIR",
                   help="save the AdmissionReview requests received in DIR, for podgate test --init")
    p.add_argument("--record-max", type=_positive, default=1000, metavar="N",
                   help="with --record: stop after N files, across workers and restarts (default: 1000)")
    p.add_argument("--record-max-bytes", type=_positive, default=1024 * 1024, metavar="BYTES",
                   help="with --record: skip larger requests (default: 1 MiB)")
    p.add_argument("--record-user-info", action="store_true",
                   help="with --record: keep request.userInfo (who sent it); default: redacted")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("review", help="answer one AdmissionReview request file, as the server would")
    with_policies(p)
    p.add_argument("--webhook", choices=("validate", "mutate"), default="validate")
    p.add_argument("request", metavar="REQUEST.json", help="an AdmissionReview request, or - for stdin")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("check", help="check Pods and workload templates in manifests")
    with_policies(p)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("--no-inject", action="store_true", help="validate objects as they are, without injection")
    p.add_argument("--namespace", default="default", help="namespace for objects that name none")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, directories, or - for stdin")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inject", help="print manifests with the mesh proxy injected")
    with_policies(p)
    p.add_argument("--namespace", default="default", help="namespace for objects that name none")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, directories, or - for stdin")
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("test", help="run test suites of recorded requests and manifests (podgate-test.yaml)",
                       description="Run every podgate-test.yaml under DIR (or the suite file DIR). "
                                   "Exit 0: all cases pass; 1: a case failed; 2: a suite is malformed.")
    with_policies(p)
    p.add_argument("-o", "--output", choices=("text", "json", "junit"), default="text",
                   help="text for people, json for scripts, junit for CI test reports")
    p.add_argument("--run", metavar="TEXT", help="only the cases whose name contains TEXT")
    p.add_argument("--update-golden", action="store_true",
                   help="write the patched object into expect.patched files that differ (then review the diff)")
    p.add_argument("--init", nargs="+", metavar="FILE",
                   help="add a case to DIR/podgate-test.yaml for each recorded request or manifest, "
                        "expecting what podgate answers today")
    p.add_argument("--webhook", choices=STEPS,
                   help="with --init: the webhook to call (default: from the file name for requests, "
                        "admit for manifests)")
    p.add_argument("--namespace", default="default", help="with --init: namespace for manifests that name none")
    p.add_argument("dir", metavar="DIR", help="a directory of suites, or one suite file")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("explain", help="what a rule checks, why it matters, how to fix it")
    p.add_argument("rule", nargs="?", metavar="RULE", help="a rule ID; none: list the rules")
    p.add_argument("--markdown", action="store_true", help="print the rule reference (docs/rules.md)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("policy", help="work with policy files")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    p = psub.add_parser("lint", help="check a policy directory: schema, rule IDs, contradictions",
                        description="Exit 0: no errors (warnings allowed); 1: errors (or warnings with --strict).")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_policy_lint)

    p = sub.add_parser("certs", help="make a CA and a serving certificate")
    p.add_argument("--out", default="certs", metavar="DIR")
    p.add_argument("--dns", action="append", metavar="NAME", help="a DNS name or IP for the certificate")
    p.add_argument("--service", help="add the DNS names of this Service")
    p.add_argument("--namespace", default="podgate", help="the Service's namespace (with --service)")
    p.set_defaults(func=cmd_certs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PodgateError as exc:
        print(f"podgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK

