"""``podgate check``: what this cluster's podgate would do to the Pods in a tree of manifests.

Every Pod and Pod template goes through ``offline.admit`` (mutate, apply the patch, validate),
the path the API server takes. A file that cannot be read or parsed, a document that is not a
Kubernetes object (not a mapping, or no kind), or an object podgate cannot check, is reported and
the rest is still checked; the exit code says the worst thing seen: 2 bad input, 1 something
denied, 0 all allowed. Objects of other kinds (ConfigMap, Service) are skipped, and so are empty
documents and custom resources named as a workload is (their API group tells them apart); but a run that finds no Kubernetes object at all is bad input too, so that an empty
``helm template ... | podgate check -`` does not pass.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..admission import Context, Decision
from ..namespaces import StaticNamespaceLabels
from ..resources import formatted, pod_requests
from .manifests import MANIFEST_SUFFIXES, Document, Manifest, ManifestError, iter_files, read_manifest
from .offline import OFFLINE_USER, admit, pod_review, workload_review
from .progress import Progress

EXIT_OK, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


@dataclass
class InputError:
    """Something ``check`` could not check: a file, a document, an object, or the whole run.

    ``message`` is the line printed on stderr (after ``podgate: ``); it names the file, line and
    document. The other fields say the same for scripts (None where they do not apply)."""

    message: str
    source: str | None = None
    line: int | None = None
    document: int | None = None
    item: int | None = None

    @classmethod
    def at(cls, doc: Document, message: str, line: int | None = None) -> InputError:
        """An error of a document, at its first line or at ``line`` (of the field at fault)."""
        line = line or doc.line
        return cls(f"{doc.source}:{line}: {doc.where}: {message}", doc.source, line, doc.index, doc.item)

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        for key in ("source", "line", "document", "item"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        return out


@dataclass
class CheckResult:
    document: Document
    namespace: str
    name: str
    allowed: bool
    injected: bool
    decision: Decision | None
    error: str | None = None  # podgate could not check the object (bad input): exit 2
    error_line: int | None = None  # the line of the field at fault, where the error names one
    # an injected Pod's effective requests with the proxy, and how much of them the injection added
    requests: dict[str, str] | None = None
    proxy_requests: dict[str, str] | None = None

    @property
    def findings(self) -> list[Any]:
        return self.decision.findings if self.decision else []

    @property
    def warned(self) -> bool:
        return any(f.action == "warn" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.document.source, "document": self.document.index}
        if self.document.item is not None:  # an item of a List: the items share the document number
            out["item"] = self.document.item
        out.update({"kind": self.document.kind, "namespace": self.namespace, "name": self.name,
                    "allowed": self.allowed, "injected": self.injected,
                    "violations": [f.to_json() for f in self.findings]})
        if self.requests is not None:
            out.update(effective_requests=self.requests, proxy_requests=self.proxy_requests)
        if self.error:
            out["error"] = self.error
            if self.error_line is not None:
                out["line"] = self.error_line
        elif not self.allowed and not self.findings and self.decision and self.decision.message:
            out["message"] = self.decision.message
        return out


def failed(result: CheckResult, fail_on: str) -> bool:
    """Whether an object fails the run: denied, or (``--fail-on warn``) warned too."""
    return not result.allowed or (fail_on == "warn" and result.warned)


@dataclass
class Report:
    """Everything one ``check`` run found: per-object results and per-file errors."""

    results: list[CheckResult] = field(default_factory=list)
    # everything that could not be checked, in the order met: files that could not be read,
    # documents that are not Kubernetes objects, objects podgate cannot read (these also have a
    # result with ``error``), a run that found nothing
    errors: list[InputError] = field(default_factory=list)
    files: int = 0

    def exit_for(self, fail_on: str) -> int:
        """2 if anything could not be checked, 1 if an object fails (see ``failed``), else 0."""
        if self.errors:
            return EXIT_USAGE
        return EXIT_DENIED if any(failed(r, fail_on) for r in self.results) else EXIT_OK

    def summary(self) -> str:
        # an object podgate could not read has a result (with ``error``) and an entry in
        # ``errors``: it counts as not checked, once
        n = sum(not r.error for r in self.results)
        denied = sum(not r.allowed and not r.error for r in self.results)
        warned = sum(r.warned for r in self.results)
        bad = len(self.errors)
        text = f"{n} object{'s' if n != 1 else ''} checked: {denied} denied, {warned} warned"
        return text + (f", {bad} not checked (errors)" if bad else "")

    def to_json(self) -> dict[str, Any]:
        denied = sum(not r.allowed and not r.error for r in self.results)
        return {"results": [r.to_json() for r in self.results],
                "errors": [e.to_json() for e in self.errors],
                "summary": {"files": self.files, "objects": len(self.results), "denied": denied,
                            "warned": sum(r.warned for r in self.results), "errors": len(self.errors)}}


_FIELD = re.compile(r"(?:^|[ (])(/[^\s:]*): ")  # the JSON pointer of the field at fault, in an error


def check_document(doc: Document, ctx: Context, default_namespace: str, inject: bool,
                   user: Mapping[str, Any] = OFFLINE_USER) -> CheckResult:
    """``_check_document``, with the line of the field that an error names (not the document's)."""
    result = _check_document(doc, ctx, default_namespace, inject, user)
    if result.error and (found := _FIELD.search(result.error)):
        # a Pod's own pointers are into the Pod made from a workload's template ("Pod template /spec/...")
        into_pod = "Pod template /" in result.error
        result.error_line = doc.line_at(found[1], into_pod=into_pod)
    return result


def _check_document(doc: Document, ctx: Context, default_namespace: str, inject: bool,
                    user: Mapping[str, Any]) -> CheckResult:
    """Mutate (unless told not to), then validate, as the API server would for this object sent
    by ``user``. A workload is sent to the validating webhook as it is applied: the server judges
    its template as /mutate would inject it (``admission``); with ``--no-inject``, its template Pod
    as it is."""
    namespace = doc.namespace(default_namespace)
    name = doc.display_name  # as the server's messages name it: web-<generated> for generateName: web-
    pod = doc.pod(namespace)
    as_workload = doc.workload is not None and inject
    if as_workload:
        result = admit(workload_review(doc.obj, namespace, doc.workload, uid="podgate-check", user=user), "validate", ctx)
    elif pod is None:
        return CheckResult(doc, namespace, name, False, False, None, error=f"{doc.kind} {name!r} has no Pod template")
    else:
        result = admit(pod_review(pod, namespace, uid="podgate-check", user=user), "admit" if inject else "validate", ctx)
    decision = result.decision
    error = result.error
    if decision is not None and decision.reason == "malformed object" and decision.message:
        # a workload's message names the field from the workload's top; a Pod's, from the Pod's
        error = decision.message.replace(": request.object", ": ", 1) if as_workload \
            else decision.message.replace("request.object", f"{'object' if doc.is_pod else 'Pod template'} ", 1)
    injected = bool(decision and decision.injects) if as_workload else result.injected
    out = CheckResult(doc, namespace, name, result.allowed, injected, decision, error)
    if injected:
        _add_requests(out, pod, decision.made_pod if as_workload and decision else result.object)
    return out


def _add_requests(out: CheckResult, pod: Any, injected: Any) -> None:
    """The injected Pod's effective requests, and what the proxy adds to them."""
    with_proxy, without = pod_requests(injected), pod_requests(pod)
    out.requests = formatted(with_proxy)
    out.proxy_requests = formatted({k: max(v - without.get(k, 0), 0) for k, v in with_proxy.items()})


def read_files(paths: Sequence[str], errors: list[InputError]) -> Iterator[list[Document]]:
    """The Documents of every file under ``paths``, a list per file, one file at a time (so that
    what the caller records comes in the order met). A list is empty for an empty file and for
    one that cannot be read or parsed: that is recorded in ``errors``, as is a missing path."""
    return (manifest.documents for manifest in read_manifests(paths, errors))


def read_manifests(paths: Sequence[str], errors: list[InputError]) -> Iterator[Manifest]:
    """``read_files``, each file with its text (none, for a file that cannot be read or parsed)."""
    for path in paths:
        try:
            sources = list(iter_files([path]))
        except ManifestError as exc:
            errors.append(InputError(str(exc), exc.source, exc.line))
            continue
        for source in sources:
            try:
                yield read_manifest(source)
            except ManifestError as exc:
                errors.append(InputError(str(exc), exc.source, exc.line))
                yield Manifest(exc.source or source, "", [])


def load(paths: Sequence[str], report: Report, labels: StaticNamespaceLabels) -> list[Document]:
    """Read every file, recording those that fail and the documents that are not Kubernetes
    objects; Namespace objects found add their labels."""
    docs: list[Document] = []
    for found in read_files(paths, report.errors):
        report.files += 1
        for doc in found:
            if (problem := doc.problem) is not None:
                report.errors.append(InputError.at(doc, problem))
            else:
                docs.append(doc)
    labels.add_namespaces(d.obj for d in docs)
    return docs


def nothing_found(paths: Sequence[str], files: int) -> str:
    """The error for a run that read no Kubernetes object at all."""
    where = ", ".join("<stdin>" if p == "-" else p for p in paths)
    if files == 0:
        why = f"no {', '.join(MANIFEST_SUFFIXES[:-1])} or {MANIFEST_SUFFIXES[-1]} file"
    else:
        why = "empty, or only comments and empty documents"
        if list(paths) != ["-"]:
            why = f"{files} file{'s' if files != 1 else ''} read: {why}"
    return f"no Kubernetes objects found in {where} ({why})"


def run(paths: Sequence[str], ctx: Context, labels: StaticNamespaceLabels, namespace: str,
        inject: bool, progress: TextIO | None = None, user: Mapping[str, Any] = OFFLINE_USER) -> Report:
    """Check everything under ``paths``, as sent by ``user`` (``request.userInfo``: whom the
    meshBypass section judges); ``progress``: a stream for a progress line (a terminal)."""
    report = Report()
    docs = load(paths, report, labels)
    if not docs and not report.errors:
        report.errors.append(InputError(nothing_found(paths, report.files)))
    pods = [d for d in docs if d.has_pod]
    shown = Progress(progress, len(pods)) if progress is not None else None
    for done, doc in enumerate(pods, 1):
        report.results.append(check_document(doc, ctx, namespace, inject, user))
        if shown is not None:
            shown.update(done)
    if shown is not None:
        shown.close()
    for r in report.results:
        if r.error:  # also on stderr: the report on stdout may go to a file or a pipe
            report.errors.append(InputError.at(r.document, f"{r.document.kind} {r.namespace}/{r.name}: {r.error}",
                                               r.error_line))
    return report


_COLOURS = {"deny": "\033[31m", "warn": "\033[33m", "audit": "\033[36m", "ok": "\033[32m", "error": "\033[35m",
            "end": "\033[0m"}


COLOUR_MODES = ("auto", "always", "never")


def use_colour(stream: TextIO, mode: str = "auto") -> bool:
    """``--color``: always, never, or auto: for a person at a terminal, where FORCE_COLOR (set,
    not 0) forces it on and NO_COLOR (https://no-color.org) or TERM=dumb turn it off."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def print_text(report: Report, out: TextIO | None = None, colour: bool = False, quiet: bool = False) -> None:
    """One line per object and one per finding, then the summary; ``quiet``: only the objects
    that were denied, warned or could not be checked (and the summary)."""
    out = out or sys.stdout
    def c(key: str, text: str) -> str:
        return f"{_COLOURS[key]}{text}{_COLOURS['end']}" if colour else text

    for r in report.results:
        if quiet and r.allowed and not r.warned and not r.error:
            continue
        if r.error:
            verdict = c("error", "ERROR")
        else:
            verdict = c("ok", "allowed") if r.allowed else c("deny", "DENIED")
        extra = " (proxy injected)" if r.injected else ""
        out.write(f"{r.document.source} [{r.document.where}] {r.document.kind} {r.namespace}/{r.name}: "
                  f"{verdict}{extra}\n")
        for f in r.findings:
            out.write(f"  {c(f.action, f.action.ljust(5))} {f.violation.message}\n")
        if r.error:
            out.write(f"  {c('error', 'error')} {r.error}\n")
        elif not r.allowed and not r.findings and r.decision and r.decision.message:
            out.write(f"  {c('deny', 'deny ')} {r.decision.message}\n")
    out.write(report.summary() + "\n")


def print_errors(errors: Iterable[InputError | str], err: TextIO | None = None) -> None:
    for message in errors:
        (err or sys.stderr).write(f"podgate: {message}\n")
