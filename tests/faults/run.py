"""Faults under load: thousands of AdmissionReviews over TLS while the server is disturbed.

Runs ``podgate serve`` (2 gthread workers, TLS, loopback only) and sends AdmissionReviews from a
few keep-alive clients, checking every answer against the decision it must have. Meanwhile it

- rewrites the policy files: swaps the ConfigMap-style ``..data`` link between version A
  (port-collision deny, duplicate-port-name warn) and version B (the two actions flipped),
  swaps in an invalid version (which must be rejected, the last good set staying), and edits
  the live file in place in two writes (its first half is valid YAML on its own);
- rotates the serving certificate (key, then certificate, each renamed into place);
- kills one worker with SIGKILL (gunicorn starts another);
- at the end sends SIGTERM to the master: /readyz must turn 503 while requests are still
  answered, the clients stop sending (as the Service's endpoints would), everything in flight
  is answered, and the server exits 0.

One request kind has a different right answer under A and under B, and mixing the two (both
rules deny, or both warn) is what a half-loaded policy set would produce: that is a wrong
answer, as is an answer whose version was not live at any time while the request was open.
The one exception is the server's documented limit: it loads what held still for one poll
interval, so an in-place edit that stalls longer than that between its two writes (a writer
on a loaded machine can) may have its first half loaded. The run measures how long each edit
took, and only after such a slow edit may an answer show the half file (both rules warn, no
injection: the mesh section is in the second half). Answers are judged once the run is over,
against the whole timeline.

Usage: python tests/faults/run.py [--requests N] [--seconds S] [--clients C] [--json]
Exit status 0 when nothing was wrong and nothing failed except requests on the killed worker.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import trustme  # noqa: E402
from cryptography import x509  # noqa: E402

from tests.live_server import live_server  # noqa: E402
from tests.serving import trust, workers, write_cert  # noqa: E402
from webhook.policy import default_policy_dir  # noqa: E402

RELOAD_INTERVAL = 0.1  # the server's policy poll; a change is live within about 3 of these
PARTIAL = "half file"  # the answer a half-written default.yaml gives (see verdict)
SETTLE = 1.0  # seconds after a policy swap during which the previous version may still answer
KILL_GRACE = 1.5  # failures this soon after the SIGKILL are counted against the killed worker
DRAIN = 2.0  # --drain-seconds
RECONNECT_EVERY = 40  # requests per connection: new handshakes see rotated certificates

# --- the requests and their right answers ---------------------------------------------------


def container(name: str, *ports: tuple[int, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": f"example/{name}:1",
            "ports": [{"containerPort": p, "name": n} for p, n in ports], **extra}


FLIP_POD = {"metadata": {"name": "flip"}, "spec": {"containers": [
    container("app", (8080, "http")), container("metrics", (8080, "web"), (9090, "http"))]}}
CLEAN_POD = {"metadata": {"name": "clean"}, "spec": {"containers": [
    container("app", (8080, "http")), container("metrics", (9090, "metrics"))]}}
PROBE_POD = {"metadata": {"name": "probe"}, "spec": {"containers": [
    container("app", (8080, "http"), readinessProbe={"httpGet": {"path": "/", "port": "health"}})]}}
MESHED_POD = {"metadata": {"name": "meshed"}, "spec": {"containers": [container("app", (8080, "http"))]}}
MALFORMED_POD = {"metadata": {"name": "bad"}, "spec": {"containers": "app"}}

KINDS = [  # (kind, webhook, namespace, pod); the mix repeats in this order
    ("flip", "validate", "default", FLIP_POD),
    ("clean", "validate", "default", CLEAN_POD),
    ("flip", "validate", "default", FLIP_POD),
    ("probe", "validate", "default", PROBE_POD),
    ("meshed", "mutate", "meshed", MESHED_POD),
    ("flip", "validate", "default", FLIP_POD),
    ("malformed", "validate", "default", MALFORMED_POD),
]


def review(uid: str, namespace: str, pod: dict[str, Any]) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "namespace": namespace, "name": pod["metadata"]["name"], "object": pod, "dryRun": False,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"}}}).encode()


def verdict(kind: str, uid: str, status: int, body: bytes) -> tuple[str | None, str | None]:
    """(policy version the answer shows, or None) and (what is wrong with it, or None)."""
    if status != 200:
        return None, f"HTTP {status}: {body[:200]!r}"
    try:
        response = json.loads(body)["response"]
    except (ValueError, KeyError, TypeError):
        return None, f"not an AdmissionReview: {body[:200]!r}"
    if response.get("uid") != uid:
        return None, f"uid {response.get('uid')!r} answers request {uid!r}"
    allowed = response.get("allowed")
    message = (response.get("status") or {}).get("message", "")
    warnings = " ".join(response.get("warnings") or ())
    if kind == "flip":
        if allowed is True and "[port-collision]" in warnings and "[duplicate-port-name]" in warnings:
            return PARTIAL, None  # B's first half: port-collision warn, duplicate-port-name not yet set
        if allowed is not False:
            return None, "flip: allowed"
        for version, denies, warns in (("A", "[port-collision]", "[duplicate-port-name]"),
                                       ("B", "[duplicate-port-name]", "[port-collision]")):
            if denies in message and warns not in message and warns in warnings and denies not in warnings:
                return version, None
        return None, f"flip: a mix of policy versions: message {message!r}, warnings {warnings!r}"
    if kind == "clean":
        ok = allowed is True and not warnings and "patch" not in response
        return None, None if ok else f"clean: {response}"
    if kind == "probe":
        ok = allowed is False and "[probe-port-missing]" in message and "[port-collision]" not in message
        return None, None if ok else f"probe: {response}"
    if kind == "meshed":
        if allowed is True and "patch" not in response:
            return PARTIAL, None  # a first half has no mesh section
        if allowed is not True or response.get("patchType") != "JSONPatch":
            return None, f"meshed: not injected: {response}"
        ops = json.loads(base64.b64decode(response["patch"]))
        names = [c.get("name") for op in ops if isinstance(op.get("value"), list) for c in op["value"]
                 if isinstance(c, dict)] + [op["value"].get("name") for op in ops if isinstance(op.get("value"), dict)]
        return None, None if "mesh-proxy" in names else f"meshed: no mesh-proxy in the patch: {ops}"
    if kind == "malformed":
        ok = allowed is False and (response.get("status") or {}).get("code") == 400
        return None, None if ok else f"malformed: {response}"
    raise AssertionError(kind)


# --- the policy directory, laid out like a ConfigMap volume ---------------------------------

class Policies:
    """``..data`` -> ``..vN/``; the policy files are symlinks through ``..data`` (as the kubelet
    lays out a ConfigMap volume). ``timeline`` records when each valid version went live, as the
    answers it may give from then on."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        bundled = default_policy_dir()
        self.files = {p.name: p.read_text() for p in sorted(bundled.glob("*.yaml"))}
        default = self.files["default.yaml"]
        for needle in ("    port-collision: deny\n", "    duplicate-port-name: warn\n"):
            if needle not in default:
                raise SystemExit(f"the bundled default.yaml no longer has {needle.strip()!r}")
        self.text = {
            "A": default,
            "B": default.replace("    port-collision: deny\n", "    port-collision: warn\n")
                        .replace("    duplicate-port-name: warn\n", "    duplicate-port-name: deny\n"),
            "invalid": default.replace("    port-collision: deny\n", "    port-collision: maybe\n"),
        }
        self.timeline: list[tuple[float, frozenset[str]]] = []
        self.edits: list[float] = []  # seconds each in-place edit took
        root.mkdir(parents=True)
        self.swap("A")

    def swap(self, version: str) -> None:
        """Point ``..data`` at a new directory holding ``version``: one atomic rename."""
        self.generation += 1
        target = self.root / f"..v{self.generation}"
        target.mkdir()
        for name, text in self.files.items():
            (target / name).write_text(self.text[version] if name == "default.yaml" else text)
        link = self.root / "..data_tmp"
        link.symlink_to(target.name)
        self._went_live(version)
        os.replace(link, self.root / "..data")
        for name in self.files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")

    def edit_in_place(self, version: str) -> None:
        """Rewrite the live default.yaml through its symlink, in two writes 50 ms apart; the first
        half parses on its own (a policy with only one of the two flipped rules, and no mesh).

        The half file is never loaded if the edit takes less than one poll interval (the server
        loads only what held still that long). If the writer stalled longer, it may be: from
        the start of the edit until the whole file is written (and SETTLE after), the half
        file's answers are as possible as the new version's."""
        text = self.text[version]
        cut = text.index("    duplicate-port-name:")
        started = time.monotonic()
        with (self.root / "default.yaml").open("w") as f:
            f.write(text[:cut])
            f.flush()
            time.sleep(0.05)
            f.write(text[cut:])
        ended = time.monotonic()
        self.edits.append(ended - started)
        if ended - started >= RELOAD_INTERVAL:
            self.timeline += [(started, frozenset({version, PARTIAL})), (ended, frozenset({version}))]
        else:
            self.timeline.append((started, frozenset({version})))

    def _went_live(self, version: str) -> None:
        if version != "invalid":  # an invalid set never goes live: the last good one stays
            self.timeline.append((time.monotonic(), frozenset({version})))

    def could_answer(self, version: str, sent: float, answered: float) -> bool:
        """Could an answer show ``version`` at some moment between ``sent - SETTLE`` and ``answered``?"""
        for i, (start, versions) in enumerate(self.timeline):
            end = self.timeline[i + 1][0] + SETTLE if i + 1 < len(self.timeline) else float("inf")
            if version in versions and start <= answered and sent <= end:
                return True
        return False


# --- the load ---------------------------------------------------------------------------------

@dataclass
class Figures:
    sent: int = 0
    answered: int = 0
    wrong: int = 0
    failed_on_killed_worker: int = 0
    failed_other: int = 0
    sent_after_sigterm: int = 0
    answered_after_sigterm: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    edits: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    serials: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    shutdown: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.failed_on_killed_worker + self.failed_other


class Load:
    def __init__(self, port: int, context: ssl.SSLContext, policies: Policies, total: int, clients: int,
                 seconds: float, pace: float) -> None:
        self.port, self.context, self.policies = port, context, policies
        self.total, self.clients, self.deadline = total, clients, time.monotonic() + seconds
        # request n goes out no sooner than start + n * interval: the faults land between requests
        # at the same points of every run, however fast the machine
        self.start, self.interval = time.monotonic(), pace / total
        self.figures = Figures()
        self.lock = threading.Lock()
        self.next = 0
        self.kill_time: float | None = None
        self.sigterm_time: float | None = None
        self.stop_sending = threading.Event()  # set when /readyz turns 503 after SIGTERM
        self.versioned: list[tuple[str, str, float, float]] = []  # (uid, version, sent, answered)

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.total or self.stop_sending.is_set() or time.monotonic() > self.deadline:
                return None
            self.next += 1
            return self.next - 1

    def connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=15, context=self.context)
        conn.connect()
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        if der:
            with self.lock:
                self.figures.serials.add(x509.load_der_x509_certificate(der).serial_number)
        return conn

    def client(self) -> None:
        conn: http.client.HTTPSConnection | None = None
        used = 0
        while (n := self.take()) is not None:
            if (wait := self.start + n * self.interval - time.monotonic()) > 0:
                time.sleep(wait)
            kind, webhook, namespace, pod = KINDS[n % len(KINDS)]
            uid = f"{kind}-{n:06d}"
            sent = time.monotonic()
            after_sigterm = self.sigterm_time is not None
            with self.lock:
                self.figures.sent += 1
                self.figures.sent_after_sigterm += after_sigterm
            try:
                if conn is None or used >= RECONNECT_EVERY:
                    if conn is not None:
                        conn.close()
                    conn, used = self.connect(), 0
                used += 1
                conn.request("POST", f"/{webhook}?timeout=10s", review(uid, namespace, pod),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, body = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                self.failure(uid, sent, exc)
                continue
            answered = time.monotonic()
            version, problem = verdict(kind, uid, status, body)
            with self.lock:
                self.figures.answered += 1
                self.figures.answered_after_sigterm += after_sigterm
                self.figures.kinds[kind] += 1
                if version:
                    self.figures.versions[version] += 1
                    self.versioned.append((uid, version, sent, answered))
                if problem:
                    self.figures.wrong += 1
                    self.figures.problems.append(f"{uid}: {problem}")
        if conn is not None:
            conn.close()

    def judge(self) -> None:
        """Check every answer's policy version against the whole timeline (once the run is over:
        how long an edit took is known only after it)."""
        for uid, version, sent, answered in self.versioned:
            if not self.policies.could_answer(version, sent, answered):
                self.figures.wrong += 1
                self.figures.problems.append(f"{uid}: {version} answer, but that was not live between "
                                             f"sending and answering")

    def failure(self, uid: str, sent: float, exc: Exception) -> None:
        now = time.monotonic()
        on_killed = self.kill_time is not None and self.kill_time - 5 <= sent and now <= self.kill_time + KILL_GRACE
        with self.lock:
            if on_killed:
                self.figures.failed_on_killed_worker += 1
            else:
                self.figures.failed_other += 1
                self.figures.problems.append(f"{uid}: failed: {type(exc).__name__}: {exc}")


def readiness(port: int, context: ssl.SSLContext) -> int | None:
    """/readyz on a fresh connection: its status, None if the connection is refused (the listener
    is closed), 0 for no answer in time (a loaded machine: ask again)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status
    except ConnectionRefusedError:
        return None
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def run(total: int = 3000, seconds: float = 60.0, clients: int = 4, work: Path | None = None,
        pace: float = 12.0) -> Figures:
    """Send ``total`` requests spread over ``pace`` seconds (stopping at ``seconds`` in any case)."""
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="podgate-faults-")) if work is None else work
    started = time.monotonic()
    try:
        return _run(work, total, seconds, clients, started, pace)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, total: int, seconds: float, clients: int, started: float, pace: float) -> Figures:
    ca = trustme.CA()
    context = trust(work, ca)
    cert, key = work / "tls.crt", work / "tls.key"
    write_cert(ca, cert, key)
    policies = Policies(work / "policies")
    labels = work / "namespaces.yaml"
    labels.write_text("meshed: {podgate.io/mesh: enabled}\n")
    args = ("--cert", str(cert), "--key", str(key), "--policies", str(policies.root), "--namespace-labels",
            str(labels), "--reload-interval", str(RELOAD_INTERVAL), "--drain-seconds", str(DRAIN))
    with live_server(work, *args, workers=2) as server:
        master = server.process.pid
        load = Load(server.port, context, policies, total, clients, seconds, pace)
        fig = load.figures
        fig.serials.add(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number)
        threads = [threading.Thread(target=load.client, name=f"client-{i}") for i in range(clients)]
        for t in threads:
            t.start()

        # (fraction of the requests sent, fault); the last one is the SIGTERM
        # (fraction of the requests sent, fault); the worker is killed while the policy files on
        # disk are invalid, so its replacement must boot with the last good set; the last fault
        # is the SIGTERM
        plan = [(0.07, "swap B"), (0.14, "swap invalid"), (0.21, "swap A"), (0.28, "rotate certificate"),
                (0.33, "swap invalid"), (0.38, "kill worker"), (0.45, "edit in place B"), (0.52, "edit in place A"),
                (0.59, "rotate certificate"), (0.66, "edit in place B"), (0.73, "swap A"), (0.80, "swap B"),
                (0.87, "swap A"), (0.95, "SIGTERM")]
        for fraction, fault in plan:
            while load.next < fraction * total and any(t.is_alive() for t in threads):
                time.sleep(0.005)
            if not any(t.is_alive() for t in threads):
                fig.problems.append(f"the load ended before the fault {fault!r}")
                break
            if fault.startswith("swap "):
                policies.swap(fault.split()[1])
                fig.faults["policy swap" + (" (invalid)" if fault.endswith("invalid") else "")] += 1
            elif fault.startswith("edit in place "):
                policies.edit_in_place(fault.split()[-1])
                fig.faults["policy edited in place"] += 1
            elif fault == "rotate certificate":
                leaf = write_cert(ca, cert, key)
                fig.faults["certificate rotation"] += 1
                fig.shutdown.setdefault("rotated_serials", []).append(
                    x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number)
            elif fault == "kill worker":
                before = workers(master)
                victim = sorted(before)[0]
                load.kill_time = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                fig.faults["worker SIGKILL"] += 1
                while time.monotonic() - load.kill_time < 10:
                    now = workers(master)
                    if len(now) == len(before) and victim not in now:
                        fig.shutdown["worker_replaced_after"] = round(time.monotonic() - load.kill_time, 2)
                        break
                    time.sleep(0.02)
            elif fault == "SIGTERM":
                _sigterm(server.process, load, context, server.port)
                fig.faults["SIGTERM"] += 1
        for t in threads:
            t.join(seconds + 30)
        load.judge()
        fig.edits = policies.edits
        if load.sigterm_time is not None:
            try:
                code = server.process.wait(DRAIN + 30)
            except Exception:  # noqa: BLE001  (a hung shutdown is a finding, reported below)
                code = None
            fig.shutdown["exit_code"] = code
            fig.shutdown["exit_after"] = round(time.monotonic() - load.sigterm_time, 2)
            fig.shutdown["refused_after"] = _refused_after(server.port, context, load.sigterm_time)
        log = server.output()
    fig.seconds = round(time.monotonic() - started, 1)
    _check(fig, log)
    return fig


def _sigterm(process: Any, load: Load, context: ssl.SSLContext, port: int) -> None:
    """SIGTERM the master, then watch /readyz; the clients stop sending once it says 503."""
    load.sigterm_time = time.monotonic()
    process.send_signal(signal.SIGTERM)
    while time.monotonic() - load.sigterm_time < DRAIN + 5:
        status = readiness(port, context)
        if status == 503:
            load.figures.shutdown["unready_after"] = round(time.monotonic() - load.sigterm_time, 2)
            break
        if status is None:
            load.figures.problems.append("the listener closed before /readyz reported 503")
            break
        time.sleep(0.02)
    load.stop_sending.set()


def _refused_after(port: int, context: ssl.SSLContext, since: float) -> float | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return None
    except OSError:
        return round(time.monotonic() - since, 2)


def _check(fig: Figures, log: str) -> None:
    if fig.failed_other:
        fig.problems.insert(0, f"{fig.failed_other} requests failed outside the killed worker")
    invalid = fig.faults["policy swap (invalid)"]
    if log.count("policy reload failed") < invalid:  # each worker logs each rejection
        fig.problems.append("the server did not report every invalid policy version")
    rotations = fig.faults["certificate rotation"]
    if not set(fig.shutdown.get("rotated_serials", [])) <= fig.serials:
        fig.problems.append(f"a rotated certificate was never served ({rotations} rotations, "
                            f"{len(fig.serials)} certificates seen)")
    if not {"A", "B"} <= set(fig.versions):
        fig.problems.append(f"the answers did not follow the policy versions: {dict(fig.versions)}")
    if fig.faults["worker SIGKILL"] and "worker_replaced_after" not in fig.shutdown:
        fig.problems.append("the killed worker was not replaced within 10 s")
    if "failed to boot" in log or "Exception in worker process" in log:
        fig.problems.append("a worker failed to boot: " + log[log.find("Exception in worker process"):][:300])
    if fig.faults["SIGTERM"]:
        if fig.shutdown.get("exit_code") != 0:
            fig.problems.append(f"the server did not exit cleanly after SIGTERM: {fig.shutdown}")
        if "unready_after" not in fig.shutdown:
            fig.problems.append("/readyz never reported 503 after SIGTERM")
    if fig.sent != fig.answered + fig.failed:
        fig.problems.append(f"{fig.sent - fig.answered - fig.failed} requests neither answered nor failed")


def report(fig: Figures) -> str:
    faults = ", ".join(f"{name} {count}" for name, count in sorted(fig.faults.items()))
    lines = [
        f"requests sent      {fig.sent}",
        f"answered           {fig.answered}",
        f"failed             {fig.failed} (in flight on the killed worker: {fig.failed_on_killed_worker}; "
        f"other: {fig.failed_other})",
        f"wrong              {fig.wrong}",
        f"faults injected    {faults}",
        f"policy versions    {dict(sorted(fig.versions.items()))} (answers to the request whose right answer "
        f"differs between A and B, and answers as by a half-written file)",
        f"in-place edits     took {', '.join(f'{t:.2f}s' for t in fig.edits)} (one that took {RELOAD_INTERVAL}s "
        f"or more may have its first half loaded)",
        f"certificates seen  {len(fig.serials)}; killed worker replaced after {fig.shutdown.get('worker_replaced_after')}s",
        f"shutdown           SIGTERM -> /readyz 503 after {fig.shutdown.get('unready_after')}s; "
        f"{fig.sent_after_sigterm} sent after SIGTERM, {fig.answered_after_sigterm} answered; "
        f"exit {fig.shutdown.get('exit_code')} after {fig.shutdown.get('exit_after')}s",
        f"time               {fig.seconds}s",
    ]
    if fig.problems:
        lines.append(f"problems           {len(fig.problems)}:")
        lines += [f"  {p}" for p in fig.problems[:20]]
    return "\n".join(lines)


def ok(fig: Figures) -> bool:
    return not fig.problems and fig.wrong == 0 and fig.failed_other == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests to send (default: 3000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop sending after this long (default: 60)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections (default: 4)")
    parser.add_argument("--pace", type=float, default=12.0, help="spread the requests over this long (default: 12)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    fig = run(args.requests, args.seconds, args.clients, pace=args.pace)
    if args.json:
        out = {k: v for k, v in vars(fig).items() if k not in ("serials",)}
        out.update(failed=fig.failed, certificates_seen=len(fig.serials))
        print(json.dumps(out, default=dict, indent=2))
    else:
        print(report(fig))
    return 0 if ok(fig) else 1


if __name__ == "__main__":
    sys.exit(main())
