"""The ``podgate`` command: serve, review, check, inject, policy lint, certs.

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

from . import __version__
from .admission import Context, Decision, decide, review
from .certs import DEFAULT_NAMES, ensure_self_signed, service_names, write_certificates
from .errors import PodgateError, PodShapeError
from .manifests import Document, dump_documents, iter_files, read_documents
from .namespaces import StaticNamespaceLabels, load_namespace_labels
from .pods import parse_pod
from .policy import PolicySet, load_policy_set
from .review import AdmissionRequest

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


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
    from .server import PodgateServer, ServerOptions, prepare_metrics_dir
    from .settings import Settings

    load_policy_set(args.policies)  # fail here, with the file and path, not in a booting worker
    if args.namespace_labels:
        load_namespace_labels(args.namespace_labels)
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--bind must be HOST:PORT, got {args.bind!r}")
    cert, key, ca = args.cert, args.key, None
    if not cert:
        paths = ensure_self_signed(args.cert_dir)
        cert, key, ca = str(paths.cert), str(paths.key), str(paths.ca_cert)
    settings = dataclasses.replace(
        Settings.from_env(), policy_dir=Path(args.policies) if args.policies else None,
        reload_interval=args.reload_interval,
        namespace_labels_file=Path(args.namespace_labels) if args.namespace_labels else None,
        metrics=args.metrics)
    options = ServerOptions(bind=args.bind, certfile=cert, keyfile=key, workers=args.workers,
                            threads=args.threads, max_requests=args.max_requests,
                            client_ca=args.client_ca or "")
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "[::]") else host
    print(f"podgate {__version__} listening on https://{host}:{port} "
          f"(policies: {args.policies or 'bundled'}, certificate: {cert})", flush=True)
    cacert = f"--cacert {ca}" if ca else "-k"
    print("try it:\n  curl -s " + cacert + " -H 'Content-Type: application/json' "
          f"https://{shown}:{port}/validate -d '{_DEMO_REVIEW}'", flush=True)
    metrics_dir, made_here = prepare_metrics_dir() if settings.metrics else (None, False)
    try:
        PodgateServer(settings, options).run()
    finally:
        if made_here and metrics_dir is not None:
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

@dataclasses.dataclass
class CheckResult:
    document: Document
    namespace: str
    name: str
    allowed: bool
    injected: bool
    decision: Decision | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.document.source, "document": self.document.index, "kind": self.document.kind,
            "namespace": self.namespace, "name": self.name, "allowed": self.allowed, "injected": self.injected,
            "violations": [f.to_json() for f in self.decision.findings] if self.decision else []}
        if self.error:
            out["error"] = self.error
        return out


def _pod_request(pod: Any, namespace: str) -> AdmissionRequest:
    """What the API server would send for creating this Pod."""
    return AdmissionRequest(api_version="admission.k8s.io/v1", uid="podgate-check", kind="Pod", group="",
                            resource="pods", sub_resource="", operation="CREATE", namespace=namespace,
                            name=None, object=pod, old_object=None, dry_run=True, user={})


def _load_documents(paths: list[str], labels: StaticNamespaceLabels) -> list[Document]:
    docs = [doc for source in iter_files(paths) for doc in read_documents(source)]
    labels.add_namespaces(d.obj for d in docs)
    return docs


def check_document(doc: Document, ctx: Context, default_namespace: str, inject: bool) -> CheckResult:
    """Mutate (unless told not to), then validate, as the API server would for this object."""
    namespace = doc.namespace(default_namespace)
    pod = doc.pod(namespace)
    name = doc.name
    if pod is None:
        raise UsageError(f"{doc.source}: document {doc.index}: {doc.kind} {doc.name!r} has no pod template")
    try:
        parse_pod(pod, namespace)
    except PodShapeError as exc:
        raise UsageError(f"{doc.source}: document {doc.index}: {doc.kind} {name!r}: {exc}") from exc
    request = _pod_request(pod, namespace)
    injected = False
    if inject:
        mutation = decide(request, "mutate", ctx)
        if not mutation.allowed:
            return CheckResult(doc, namespace, name, False, False, mutation, error=mutation.message)
        if mutation.injected:
            injected = True
            request = dataclasses.replace(request, object=mutation.patched_object)
    decision = decide(request, "validate", ctx)
    return CheckResult(doc, namespace, name, decision.allowed, injected, decision,
                       error=None if decision.allowed or decision.findings else decision.message)


_COLOURS = {"deny": "\033[31m", "warn": "\033[33m", "audit": "\033[36m", "ok": "\033[32m", "end": "\033[0m"}


def _print_text(results: list[CheckResult], colour: bool) -> None:
    def c(key: str, text: str) -> str:
        return f"{_COLOURS[key]}{text}{_COLOURS['end']}" if colour else text

    for r in results:
        verdict = c("ok", "allowed") if r.allowed else c("deny", "DENIED")
        extra = " (proxy injected)" if r.injected else ""
        print(f"{r.document.source} [document {r.document.index}] {r.document.kind} {r.namespace}/{r.name}: "
              f"{verdict}{extra}")
        for f in r.decision.findings if r.decision else ():
            print(f"  {c(f.action, f.action.ljust(5))} {f.violation.message}")
        if r.error and not (r.decision and r.decision.findings):
            print(f"  {c('deny', 'error')} {r.error}")
    denied = sum(not r.allowed for r in results)
    warned = sum(any(f.action == "warn" for f in (r.decision.findings if r.decision else ())) for r in results)
    print(f"{len(results)} object{'s' if len(results) != 1 else ''} checked: {denied} denied, {warned} warned")


def cmd_check(args: argparse.Namespace) -> int:
    labels = _namespace_labels(args)
    docs = _load_documents(args.paths, labels)
    ctx = Context(_policies(args), labels)
    results = [check_document(d, ctx, args.namespace, not args.no_inject) for d in docs if d.has_pod]
    if args.output == "json":
        _print_json({"results": [r.to_json() for r in results]})
    else:
        _print_text(results, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    return EXIT_OK if all(r.allowed for r in results) else EXIT_DENIED


def cmd_inject(args: argparse.Namespace) -> int:
    labels = _namespace_labels(args)
    docs = _load_documents(args.paths, labels)
    ctx = Context(_policies(args), labels)
    out = []
    for doc in docs:
        if not doc.has_pod:
            out.append(doc.obj)
            continue
        namespace = doc.namespace(args.namespace)
        pod = doc.pod(namespace)
        if pod is None:
            raise UsageError(f"{doc.source}: document {doc.index}: {doc.kind} {doc.name!r} has no pod template")
        mutation = decide(_pod_request(pod, namespace), "mutate", ctx)
        if not mutation.allowed:
            raise UsageError(f"{doc.source}: document {doc.index}: {mutation.message}")
        if mutation.reason == "malformed object":
            raise UsageError(f"{doc.source}: document {doc.index}: {mutation.message}")
        out.append(doc.with_pod(mutation.patched_object) if mutation.injected else doc.obj)
        if not mutation.injected:
            print(f"{doc.source} [document {doc.index}] {doc.kind} {doc.name}: {mutation.reason}", file=sys.stderr)
    sys.stdout.write(dump_documents(out))
    return EXIT_OK


# --- policy lint, certs -----------------------------------------------------------------------

def cmd_policy_lint(args: argparse.Namespace) -> int:
    try:
        policies = load_policy_set(args.dir)
    except PodgateError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_DENIED
    print(f"{args.dir}: {len(policies.policies)} polic{'ies' if len(policies.policies) != 1 else 'y'}, "
          f"{len(policies.profiles)} mesh profile{'s' if len(policies.profiles) != 1 else ''}: OK")
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    names = list(args.dns or [])
    if args.service:
        names = service_names(args.service, args.namespace) + names
    paths = write_certificates(args.out, names or list(DEFAULT_NAMES))
    print(f"wrote {paths.ca_cert}, {paths.cert}, {paths.key} (and {paths.ca_key}: keep it secret)")
    print(f"names: {', '.join(names or DEFAULT_NAMES)}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------

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
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--max-requests", type=int, default=0, help="recycle a worker after N requests (0: never)")
    p.add_argument("--reload-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often to look for changed policy files (0: never)")
    p.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="serve Prometheus metrics on /metrics, summed over the workers (default: on)")
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

    p = sub.add_parser("policy", help="work with policy files")
    psub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    lint = psub.add_parser("lint", help="check a policy directory")
    lint.add_argument("dir", metavar="DIR")
    lint.set_defaults(func=cmd_policy_lint)

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


if __name__ == "__main__":
    sys.exit(main())
