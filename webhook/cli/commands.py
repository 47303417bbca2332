"""The ``podgate`` command: serve, review, check, inject, test, audit, explain, policy lint, certs.

Exit codes are a contract for scripts and CI: 0 all allowed, 1 something denied (or a lint
error), 2 bad input or usage, with a message on stderr naming the file and what is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from .. import __version__
from ..admission import Context, review
from ..errors import PodgateError
from ..files import InputFileError, read_bytes
from ..namespaces import StaticNamespaceLabels, load_namespace_labels
from ..policy import PolicySet
from ..rules import RULES
from ..server.certs import (DEFAULT_NAMES, DEFAULT_NAMESPACE, DEFAULT_SERVICE, CertPaths, ensure_self_signed,
                            service_names, write_certificates)
from ..server.logs import LEVELS
from ..server.settings import Settings
from ..yamlpos import error_line, error_text, load_documents
from . import check, ci_report, explain, inject_manifests, lint, suite
from .arguments import (Parser, UsageError, dns_label, existing_dir, existing_file, existing_path, host_port, integer,
                        kube_api, output_dir, san, seconds)
from .check import EXIT_DENIED, EXIT_OK, EXIT_USAGE
from .offline import OFFLINE_USER, STEPS, webhook_from_name


def _policies(args: argparse.Namespace) -> PolicySet:
    return lint.load_policies(args.policies)


def _namespace_labels(args: argparse.Namespace) -> StaticNamespaceLabels:
    path = getattr(args, "namespace_labels", None)
    return load_namespace_labels(path) if path else StaticNamespaceLabels()


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


# --- serve ------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.runner import BindError, PodgateServer, ServerOptions, prepare_metrics_dir

    _policies(args)  # fail here, with the file, line and path, not in a booting worker
    if args.namespace_labels:
        load_namespace_labels(args.namespace_labels)
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    cert, key, ca = args.cert, args.key, None
    if cert:
        _check_key_pair(cert, key)
    else:
        paths = ensure_self_signed(output_dir("--cert-dir", args.cert_dir))
        cert, key, ca = str(paths.cert), str(paths.key), str(paths.ca_cert)
    if args.client_ca:
        _check_ca(args.client_ca)
    if args.record:
        output_dir("--record", args.record)
    host = args.bind.rpartition(":")[0]
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
                            max_connections=args.max_connections,
                            log_level=args.log_level, **{k: v for k, v in timeouts.items() if v is not None})
    metrics_dir, made_here = prepare_metrics_dir() if settings.metrics else (None, False)
    master = os.getpid()
    try:
        server = PodgateServer(settings, options)
        try:
            port = server.bind()[0][1]  # bound before announced: a taken port is one line, exit 2
        except BindError as exc:
            option = "--health-bind" if exc.address == options.health_bind else "--bind"
            raise UsageError(f"{option} {exc.address}: cannot listen: {exc.reason}") from None
        _announce(args, settings, host, port, cert, ca)
        server.run()
    finally:
        # A worker is a fork of this process and leaves through here too (recycled, or stopped):
        # only the master may remove the directory that every worker writes to.
        if made_here and metrics_dir is not None and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK


def _check_key_pair(cert: str, key: str) -> None:
    """The certificate and key load together (else every gunicorn worker would fail in turn)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except (ValueError, OSError):
        raise UsageError(f"--cert {cert}: not a PEM certificate") from None
    try:
        load_pem_private_key(Path(key).read_bytes(), password=None)
    except (ValueError, TypeError, OSError):
        raise UsageError(f"--key {key}: not an unencrypted PEM private key") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError):
        raise UsageError(f"--key {key}: not the private key of --cert {cert}") from None


def _check_ca(path: str) -> None:
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--client-ca {path}: not a PEM CA certificate ({getattr(exc, 'reason', None) or exc})") \
            from None


def _announce(args: argparse.Namespace, settings: Settings, host: str, port: int, cert: str, ca: str | None) -> None:
    """What ``serve`` says once it listens: where, with what, and a request to try."""
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


_DEMO_REVIEW = json.dumps({
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "demo", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "namespace": "default",
                "object": {"metadata": {"name": "web"}, "spec": {"containers": [
                    {"name": "app", "image": "app", "ports": [{"containerPort": 8080}]},
                    {"name": "metrics", "image": "metrics", "ports": [{"containerPort": 8080}]}]}}}},
    separators=(",", ":"))


# --- review -----------------------------------------------------------------------------------

def _request_body(source: str, data: bytes) -> bytes | dict[str, Any]:
    """The request as sent (bytes, for JSON: parsed exactly as the server parses it), or the
    mapping of a YAML file (suites take recorded requests in YAML too)."""
    try:
        orjson.loads(data)
        return data
    except orjson.JSONDecodeError:
        pass
    if not source.endswith((".yaml", ".yml")) and data.lstrip()[:1] in (b"{", b"["):
        return data  # JSON with a mistake: the server's message says where
    try:
        docs = load_documents(data.decode("utf-8"))
    except UnicodeDecodeError:
        return data
    except yaml.YAMLError as exc:
        line = error_line(exc)
        raise UsageError(f"{source}{f':{line}' if line else ''}: invalid JSON/YAML: {error_text(exc)}") from None
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise UsageError(f"{source}: expected one AdmissionReview object, found "
                         f"{len(docs)} document{'s' if len(docs) != 1 else ''}" if len(docs) != 1
                         else f"{source}: expected an AdmissionReview object, not a {type(docs[0].data).__name__}")
    return docs[0].data


def cmd_review(args: argparse.Namespace) -> int:
    source = args.request
    try:
        data = read_bytes(source, Settings.max_body_bytes)  # what the server would take
    except InputFileError as exc:
        raise UsageError(f"{source}: cannot read: {exc}") from None
    body = _request_body(source, data)
    webhook = args.webhook
    if webhook is None:  # as test --init does: a recorded /mutate request says so in its name
        webhook = webhook_from_name(Path(source).name) if source != "-" else "validate"
        why = "from the file name" if webhook == "mutate" else "the file name does not say mutate"
        print(f"podgate: {source}: answered as the {webhook} webhook ({why}; choose with --webhook)",
              file=sys.stderr)
    ctx = Context(_policies(args), _namespace_labels(args))
    outcome = review(body, webhook, ctx)
    if outcome.response is None:
        assert outcome.error is not None
        raise UsageError(f"{source}: {outcome.error.message}")
    _print_json(outcome.response)
    return EXIT_OK if outcome.response["response"]["allowed"] else EXIT_DENIED


# --- check and inject -------------------------------------------------------------------------

def _paths(args: argparse.Namespace) -> list[str]:
    """The manifests named by -f/--filename and as PATH, in that order (main saw there is one)."""
    return [*args.filenames, *args.paths]


def _requester(args: argparse.Namespace) -> dict[str, Any]:
    """``request.userInfo`` of check's requests: --as and --as-group, as kubectl's impersonation."""
    if args.as_groups and args.as_user is None:
        raise UsageError("--as-group goes with --as (the user who is in those groups)")
    if args.as_user is None:
        return dict(OFFLINE_USER)
    return {"username": args.as_user, **({"groups": args.as_groups} if args.as_groups else {})}


def cmd_check(args: argparse.Namespace) -> int:
    user = _requester(args)
    labels = _namespace_labels(args)
    ctx = Context(_policies(args), labels)
    progress = sys.stderr if sys.stderr.isatty() else None
    report = check.run(_paths(args), ctx, labels, args.namespace, not args.no_inject, progress=progress, user=user)
    check.print_errors(report.errors)
    if args.output == "json":
        _print_json(report.to_json())
    elif args.output == "sarif":
        _print_json(ci_report.sarif(report))
    elif args.output == "junit":
        sys.stdout.write(ci_report.junit(report, args.fail_on))
    else:
        check.print_text(report, sys.stdout, colour=check.use_colour(sys.stdout, args.color), quiet=args.quiet)
    return report.exit_for(args.fail_on)


def cmd_inject(args: argparse.Namespace) -> int:
    result = inject_manifests.run(_paths(args), _policies(args), _namespace_labels(args), args.namespace)
    sys.stdout.write(result.text)
    for note in result.notes:
        print(note, file=sys.stderr)
    check.print_errors(result.errors)
    return EXIT_USAGE if result.errors else EXIT_OK


# --- audit ----------------------------------------------------------------------------------

def cmd_audit(args: argparse.Namespace) -> int:
    from ..server.nscache import api_connection
    from .audit import Options, run
    from .cluster import Cluster

    policies = _policies(args)  # a bad policy directory fails before the cluster is asked anything
    try:
        connection = api_connection(args.kube_api)
    except Exception as exc:  # no kubeconfig, no service account: config errors of the client
        raise UsageError(f"--kube-api {args.kube_api}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    cluster = Cluster(connection, page_size=args.page_size, timeout=args.request_timeout)
    options = Options(namespace=args.namespace, output=args.output, write_reports=args.write_reports,
                      exit_zero=args.exit_zero)
    return run(cluster, policies, options)


# --- test, explain ----------------------------------------------------------------------------

def cmd_test(args: argparse.Namespace) -> int:
    runner = suite.Runner(args.policies, _namespace_labels(args).labels)
    if args.init:
        return _test_init(args, runner)
    if args.dir is None:
        raise UsageError("test needs DIR, a directory of suites or one suite file")
    text = args.output == "text"
    colour = check.use_colour(sys.stdout, args.color) and text
    runs = []
    for run in suite.run_all(args.dir, runner, args.run, args.update_golden):
        # every problem of every suite, as met; the suites that load still run
        check.print_errors(run.problems)
        if text and run.suite is not None:
            name = run.suite.name
            print(f"{run.path}: {name}" if name != str(run.path) else str(run.path), flush=True)
        for result in run.results():  # each case shows as it ends
            if text:
                _print_case(result, colour)
                sys.stdout.flush()
        runs.append(run)
    totals = suite.summary(runs)
    if args.output == "json":
        _print_json({"suites": [run.to_json() for run in runs], "summary": totals})
    elif args.output == "junit":
        sys.stdout.write(suite.junit_xml(runs))
    else:
        n = totals["cases"]
        malformed = totals["malformed"]
        print(f"{n} case{'s' if n != 1 else ''}: {totals['passed']} passed, {totals['failed']} failed"
              + (f"; {malformed} suite{'s' if malformed != 1 else ''} could not run" if malformed else ""))
    if totals["malformed"]:
        return EXIT_USAGE
    if args.run and not totals["cases"]:
        raise UsageError(f"no case name contains {args.run!r}")
    return EXIT_OK if totals["failed"] == 0 else EXIT_DENIED


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
    if args.dir is None:  # --init FILE... took them all: say where the directory goes
        files = " ".join(args.init[:-1]) or "FILE..."
        raise UsageError(f"test --init: no suite directory given (--init took {args.init[-1]!r} as a file to "
                         f"add); the directory comes first: podgate test {args.init[-1]} --init {files}")
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


# --- completion -----------------------------------------------------------------------------

def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["podgate"], shell=args.shell))
    return EXIT_OK


# --- version ----------------------------------------------------------------------------------

# what a bug report needs: the libraries that decide what podgate answers and how it serves
_LIBRARIES = ("flask", "gunicorn", "jsonschema", "kubernetes", "PyYAML", "cryptography", "orjson",
              "prometheus-client", "jsonpatch", "argcomplete")


def cmd_version(args: argparse.Namespace) -> int:
    import platform
    from importlib import metadata

    def version_of(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    libraries = {name: version_of(name) for name in _LIBRARIES}
    python = f"{platform.python_implementation()} {platform.python_version()}"
    if args.output == "json":
        _print_json({"podgate": __version__, "python": python, "platform": platform.platform(),
                     "libraries": libraries})
        return EXIT_OK
    print(f"podgate {__version__}")
    print(f"python {python} on {platform.platform()}")
    for name, version in libraries.items():
        print(f"  {name} {version or '(not installed)'}")
    return EXIT_OK


# --- policy lint, certs -----------------------------------------------------------------------

def cmd_policy_lint(args: argparse.Namespace) -> int:
    directory = Path(args.dir)  # or one policy file
    report = lint.lint(directory)
    if args.output == "json":
        _print_json({"problems": [p.to_json() for p in report.problems],
                     "summary": {"policies": report.policies, "profiles": report.profiles,
                                 "errors": report.errors, "warnings": report.warnings}})
    else:
        colour = check.use_colour(sys.stdout, args.color)
        for problem in report.problems:
            print(lint.coloured(problem) if colour else problem)
        print(f"{directory}: {report.policies} polic{'ies' if report.policies != 1 else 'y'}, {report.profiles} "
              f"mesh profile{'s' if report.profiles != 1 else ''}: {report.errors} error"
              f"{'s' if report.errors != 1 else ''}, {report.warnings} warning{'s' if report.warnings != 1 else ''}")
    failed = report.errors or (args.strict and report.warnings)
    return EXIT_DENIED if failed else EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    names = list(args.dns or [])
    if args.namespace and not args.service:
        print(f"--namespace {args.namespace} without --service: names for Service {DEFAULT_SERVICE} "
              "(the chart's Service)", file=sys.stderr)
    if args.service or args.namespace:
        names = service_names(args.service or DEFAULT_SERVICE, args.namespace or DEFAULT_NAMESPACE) + names
    names = list(dict.fromkeys(names or DEFAULT_NAMES))
    paths = CertPaths(output_dir("--out", args.out))
    present = [p.name for p in paths.files if p.exists()]
    if present and not args.force:
        raise UsageError(f"--out {args.out}: already holds {', '.join(present)}; a new CA would no longer match "
                         "what the webhook configurations trust: add --force to replace them")
    try:
        write_certificates(paths.directory, names)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write the certificates: {exc.strerror}") from None
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key} (and {paths.ca_key}: keep it secret)")
    print(f"names: {', '.join(names)}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------

# Bounds of the serving numbers: beyond them a value is a typo, not a configuration (a master with
# no workers, a worker table of a million slots, a timeout of a century).
MAX_WORKERS, MAX_THREADS = 256, 1000
DAY = 86400.0


def build_parser() -> Parser:
    parser = Parser(prog="podgate", description="Admission webhook for multi-container Pods.")
    parser.add_argument("-V", "--version", action="version", version=f"podgate {__version__}",
                        help="print the version and exit (podgate version: with the build details)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def with_policies(p: argparse.ArgumentParser) -> None:
        p.add_argument("--policies", metavar="DIR", type=existing_dir,
                       help="policy directory (default: the bundled policies)")
        p.add_argument("--namespace-labels", metavar="FILE", type=existing_file,
                       help="namespace labels: a YAML map {namespace: {label: value}} or Namespace objects")

    def with_colour(p: argparse.ArgumentParser) -> None:
        p.add_argument("--color", choices=check.COLOUR_MODES, default="auto",
                       help="colour the text: auto (a terminal, unless NO_COLOR; FORCE_COLOR forces it), always, "
                            "never")

    def with_manifests(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", default="default", type=dns_label,
                       help="namespace for objects that name none (default: default)")
        p.add_argument("-f", "--filename", action="append", default=[], metavar="PATH", dest="filenames",
                       help="a file, directory or - for stdin, as kubectl's -f (repeatable; same as PATH)")
        p.add_argument("paths", nargs="*", metavar="PATH", help="files, directories, or - for stdin")

    p = sub.add_parser("serve", help="serve /validate and /mutate over TLS",
                       description="Serve the webhooks over TLS with gunicorn. Exit 2: a bad argument, or the "
                                   "address cannot be bound.")
    with_policies(p)
    p.add_argument("--bind", default="127.0.0.1:8443", metavar="HOST:PORT", type=host_port(allow_any_port=True),
                   help="address to listen on; port 0: any free port, announced (default: 127.0.0.1:8443)")
    p.add_argument("--cert", metavar="FILE", type=existing_file,
                   help="serving certificate (PEM); default: a self-signed one")
    p.add_argument("--key", metavar="FILE", type=existing_file, help="its private key (PEM)")
    p.add_argument("--cert-dir", default="certs", metavar="DIR",
                   help="where the self-signed certificate is kept when --cert is not given (default: certs)")
    p.add_argument("--client-ca", metavar="FILE", type=existing_file,
                   help="require client certificates signed by this CA")
    p.add_argument("--health-bind", metavar="HOST:PORT", type=host_port(allow_any_port=False),
                   help="also serve GET /healthz, /readyz and /metrics (nothing else) over plain HTTP here, "
                        "for probes when --client-ca is set")
    p.add_argument("--workers", type=integer(1, MAX_WORKERS), default=2, metavar="N",
                   help=f"gunicorn worker processes, 1-{MAX_WORKERS} (default: 2; about one per CPU core)")
    p.add_argument("--threads", type=integer(1, MAX_THREADS), default=4, metavar="N",
                   help=f"threads per worker, 1-{MAX_THREADS}: requests each worker serves at once (default: 4)")
    p.add_argument("--max-requests", type=integer(0, 10**9), default=0, metavar="N",
                   help="recycle a worker after N requests, with 10%% jitter (default: 0, never)")
    p.add_argument("--max-connections", type=integer(1, 100_000), default=256, metavar="N",
                   help="connections per worker; at the bound the oldest that has not yet sent a whole "
                        "request is dropped to take the new one (default: 256)")
    p.add_argument("--max-body-bytes", type=integer(1024, 1 << 30), default=Settings.max_body_bytes, metavar="N",
                   help="refuse larger request bodies with 413, before reading them (default: 3 MiB + 64 KiB)")
    p.add_argument("--request-timeout", type=seconds(0, 300, allow_low=False), default=Settings.request_timeout,
                   metavar="SECONDS",
                   help="upper bound on a request's time, from the connection's accept (TLS handshake and "
                        "headers included); podgate answers within 80%% of this or of the API "
                        "server's ?timeout, whichever is shorter (default: 10)")
    p.add_argument("--worker-timeout", type=integer(1, 86400), metavar="SECONDS",
                   help="restart a worker whose main loop is silent this long (default: 30)")
    p.add_argument("--graceful-timeout", type=integer(0, 86400), metavar="SECONDS",
                   help="on shutdown, time for in-flight requests after the listener closes (default: 20)")
    p.add_argument("--drain-seconds", type=seconds(0, 3600), metavar="SECONDS",
                   help="on SIGTERM, report unready on /readyz this long while still serving (default: 5)")
    p.add_argument("--reload-interval", type=seconds(0, DAY), default=2.0, metavar="SECONDS",
                   help="how often to look for changed policy files (0: never; default: 2)")
    p.add_argument("--kube-api", metavar="SOURCE", type=kube_api,
                   help="keep namespace labels from the API server: in-cluster, kubeconfig, or a URL such as "
                        "kubectl proxy's http://127.0.0.1:8001")
    p.add_argument("--namespace-fallback", choices=("deny", "no-labels"), default="deny",
                   help="with --kube-api, for a namespace never seen while the API is unreachable: deny the "
                        "request (retryable; default) or evaluate it as if the namespace had no labels")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="serve Prometheus metrics on /metrics, summed over the workers (default: on)")
    p.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower,
                   help="least severe log lines written, podgate's and gunicorn's, as JSON on stderr; "
                        "decisions are info (default: info)")
    p.add_argument("--record", metavar="DIR",
                   help="save the AdmissionReview requests received in DIR, for podgate test --init")
    p.add_argument("--record-max", type=integer(1, 10**7), default=1000, metavar="N",
                   help="with --record: stop after N files, across workers and restarts (default: 1000)")
    p.add_argument("--record-max-bytes", type=integer(1, 1 << 30), default=1024 * 1024, metavar="BYTES",
                   help="with --record: skip larger requests (default: 1 MiB)")
    p.add_argument("--record-user-info", action="store_true",
                   help="with --record: keep request.userInfo (who sent it); default: redacted")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("review", help="answer one AdmissionReview request file, as the server would")
    with_policies(p)
    p.add_argument("--webhook", choices=("validate", "mutate"),
                   help="the webhook the request was sent to: /validate or /mutate (default: mutate when the "
                        "file name says mutate, as serve --record names them, else validate)")
    p.add_argument("request", metavar="REQUEST", help="an AdmissionReview request (JSON or YAML), or - for stdin")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("check", help="check Pods and workload templates in manifests",
                       description="Exit 0: all allowed; 1: something denied; 2: bad input or usage.")
    with_policies(p)
    p.add_argument("-o", "--output", choices=("text", "json", "sarif", "junit"), default="text",
                   help="text for people, json for scripts, sarif for code scanning, junit for CI test reports "
                        "(default: text)")
    p.add_argument("--fail-on", choices=ci_report.FAIL_ON, default="deny",
                   help="exit 1 when an object is denied (deny, the default) or also when one is warned (warn)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="text: print only the objects denied, warned or not checked, and the summary")
    with_colour(p)
    p.add_argument("--no-inject", action="store_true", help="validate objects as they are, without injection")
    p.add_argument("--as", dest="as_user", metavar="USER",
                   help="the user who will apply the objects, as kubectl's --as (a ServiceAccount: "
                        "system:serviceaccount:NS:NAME): whom a policy's meshBypass section judges "
                        "(default: podgate-offline, whom no grant names)")
    p.add_argument("--as-group", dest="as_groups", action="append", default=[], metavar="GROUP",
                   help="a group of the --as user (repeatable)")
    with_manifests(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("inject", help="print manifests with the mesh proxy injected")
    with_policies(p)
    with_manifests(p)
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("test", help="run test suites of recorded requests and manifests (podgate-test.yaml)",
                       description="Run every podgate-test.yaml under DIR (or the suite file DIR). "
                                   "Exit 0: all cases pass; 1: a case failed; 2: a suite is malformed.")
    with_policies(p)
    p.add_argument("-o", "--output", choices=("text", "json", "junit"), default="text",
                   help="text for people, json for scripts, junit for CI test reports")
    with_colour(p)
    p.add_argument("--run", metavar="TEXT", help="only the cases whose name contains TEXT")
    p.add_argument("--update-golden", action="store_true",
                   help="write the patched object into expect.patched files that differ (then review the diff)")
    p.add_argument("--init", nargs="+", metavar="FILE",
                   help="add a case to DIR/podgate-test.yaml for each recorded request or manifest, "
                        "expecting what podgate answers today")
    p.add_argument("--webhook", choices=STEPS,
                   help="with --init: the webhook to call (default: from the file name for requests, "
                        "admit for manifests)")
    p.add_argument("--namespace", default="default", type=dns_label,
                   help="with --init: namespace for manifests that name none")
    p.add_argument("dir", metavar="DIR", nargs="?", help="a directory of suites, or one suite file "
                   "(with --init: the suite directory, given before --init)")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("audit", help="audit the cluster's running Pods under these policies (PolicyReports)",
                       description="Evaluate every running Pod with the validate step of /validate, under its "
                                   "namespace's labels as they are now: rule findings, missing and stale proxies, "
                                   "grouped by workload. Exit 0: nothing at deny level; 1: deny-level findings; "
                                   "2: errors (API unreachable, refused, a Pod that cannot be evaluated). Changes "
                                   "nothing in the cluster unless --write-reports is given.")
    p.add_argument("--policies", metavar="DIR", type=existing_dir,
                   help="policy directory (default: the bundled policies; in the cluster, the mounted ConfigMap)")
    p.add_argument("--kube-api", metavar="SOURCE", default="kubeconfig", type=kube_api,
                   help="the API server: in-cluster, kubeconfig (default: $KUBECONFIG or ~/.kube/config), or a "
                        "URL such as kubectl proxy's http://127.0.0.1:8001")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", metavar="NS", type=dns_label, help="audit this namespace only")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="audit every namespace (the default)")
    p.add_argument("-o", "--output", choices=("text", "json", "policyreport"), default="text",
                   help="text: one line per workload with findings; json: one result per Pod; policyreport: "
                        "the wgpolicyk8s.io/v1alpha2 PolicyReports, one per namespace, as YAML")
    p.add_argument("--write-reports", action="store_true",
                   help="create or update a PolicyReport per namespace (and empty podgate's reports of "
                        "namespaces that became clean)")
    p.add_argument("--exit-zero", action="store_true",
                   help="exit 0 even with deny-level findings (errors still exit 2): for scheduled runs whose "
                        "findings go to PolicyReports")
    p.add_argument("--page-size", type=integer(1, 10000), default=500, metavar="N",
                   help="Pods per list request: memory grows with this, not with the cluster (default: 500)")
    p.add_argument("--request-timeout", type=seconds(0, 600, allow_low=False), default=30.0, metavar="SECONDS",
                   help="timeout of each API request (default: 30)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("explain", help="what a rule checks, why it matters, how to fix it")
    p.add_argument("rule", nargs="?", metavar="RULE",
                   help="a rule ID; none: list the rules").completer = lambda **_: list(RULES)  # type: ignore[attr-defined]
    p.add_argument("--markdown", action="store_true", help="print the rule reference (docs/rules.md)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("policy", help="work with policy files")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND", parser_class=Parser)
    p = psub.add_parser("lint", help="check a policy directory: schema, rule IDs, contradictions",
                        description="Exit 0: no errors (warnings allowed); 1: errors (or warnings with --strict).")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default: text)")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    with_colour(p)
    p.add_argument("dir", metavar="PATH", type=existing_path, help="a policy directory, or one policy file")
    p.set_defaults(func=cmd_policy_lint)

    p = sub.add_parser("certs", help="make a CA and a serving certificate",
                       description=f"Write ca.crt, ca.key, tls.crt and tls.key into --out. Without --dns, "
                                   f"--service or --namespace the names are {', '.join(DEFAULT_NAMES)}.")
    p.add_argument("--out", default="certs", metavar="DIR", help="where to write them (default: certs)")
    p.add_argument("--dns", action="append", metavar="NAME", type=san,
                   help="a DNS name or IP for the certificate (repeatable)")
    p.add_argument("--service", type=dns_label, help=f"add the DNS names of this Service (default with "
                                                     f"--namespace: {DEFAULT_SERVICE})")
    p.add_argument("--namespace", type=dns_label,
                   help=f"the Service's namespace (default with --service: {DEFAULT_NAMESPACE})")
    p.add_argument("--force", action="store_true",
                   help="replace a CA and certificate already in --out (the webhooks must then trust the new CA)")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("completion", help="print the shell completion script for bash or zsh",
                       description='bash: eval "$(podgate completion bash)" in ~/.bashrc; zsh: eval '
                                   '"$(podgate completion zsh)" in ~/.zshrc.')
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    p.set_defaults(func=cmd_completion)

    p = sub.add_parser("version", help="the version, and the Python and libraries it runs on")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="text for people, json for bug reports and scripts (default: text)")
    p.set_defaults(func=cmd_version)
    return parser


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Parser:
    """The (sub)command parser that ``args`` went through, for its usage in an error."""
    current = parser
    for dest in ("command", "policy_command"):
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, dest, None)
        if not actions or name is None or name not in actions[0].choices:
            break
        current = actions[0].choices[name]
    assert isinstance(current, Parser)
    return current


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (podgate completion): answer, exit
        import argcomplete

        argcomplete.autocomplete(parser)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _subparser(parser, args).unrecognized(extras)
    if getattr(args, "filenames", None) == [] and not args.paths:
        _subparser(parser, args).error("the following arguments are required: PATH (or -f PATH; - for stdin)")
    try:
        return int(args.func(args))
    except PodgateError as exc:
        print(f"podgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK

