"""Served mode: podgate under gunicorn over TLS on 127.0.0.1, against its own baseline endpoint.

One server runs with ``PODGATE_BENCH_BASELINE=1``, so ``/baseline`` (parse the AdmissionReview,
answer "allowed", evaluate nothing) lives in the same processes as ``/validate`` and ``/mutate``.
One client process holds C keep-alive TLS connections, one per thread. Time is cut into short
blocks; in a block every connection sends to the same endpoint, and blocks go A B B A
(baseline, podgate, podgate, baseline) so that drift and neighbours' noise fall on both sides
alike. A block's requests, its latencies and the server's CPU ticks (``/proc/PID/stat`` of the
master and its workers) are charged to the endpoint of that block.
"""

from __future__ import annotations

import os
import signal
import statistics
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import wrk

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the server under test ---------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    return raw[raw.rfind(")") + 2:].split()  # fields from "state" on; comm may contain spaces


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``podgate serve`` (production defaults but for the ones passed in ``args``)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    ca: Path
    log: Path
    workers: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, tmp: Path, *args: str, timeout: float = 30.0) -> Server:
        port = free_port()
        log = tmp / f"{name}.log"
        cmd = [sys.executable, "-m", "webhook.cli", "serve", "--bind", f"127.0.0.1:{port}",
               "--cert-dir", str(tmp / "certs"), *args]
        env = {**os.environ, "PODGATE_BENCH_BASELINE": "1"}
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        server = cls(name, process, port, tmp / "certs" / "ca.crt", log)
        deadline = time.monotonic() + timeout
        expected = _flag(args, "--workers", 2)
        while True:
            if process.poll() is not None:
                raise SystemExit(f"podgate serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                conn = Connection(server)
                status, _ = conn.get("/readyz")
                conn.close()
                server.workers = children(process.pid)
                if status == 200 and len(server.workers) == expected:
                    return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise SystemExit(f"podgate serve not ready after {timeout}s:\n{log.read_text()}")
            time.sleep(0.1)

    @classmethod
    def floor(cls, tmp: Path, certs: Path, timeout: float = 30.0) -> Server:
        """The standard-library floor webhook (``floor.py``) with the same certificate, as its own process."""
        port = free_port()
        log = tmp / "floor.log"
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "floor.py"), "--port", str(port),
               "--cert", str(certs / "tls.crt"), "--key", str(certs / "tls.key")]
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = cls("floor", process, port, certs / "ca.crt", log)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the floor webhook exited with {process.returncode}:\n{log.read_text()}")
            try:
                conn = Connection(server)
                status, _ = conn.get("/healthz")
                conn.close()
                if status == 200:
                    return server
            except OSError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise SystemExit(f"the floor webhook not ready after {timeout}s:\n{log.read_text()}")
            time.sleep(0.05)

    def ticks(self) -> list[int]:
        """CPU ticks of the master, then of each worker."""
        return [cpu_ticks(self.process.pid)] + [cpu_ticks(w) for w in self.workers]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _flag(args: Sequence[str], name: str, default: int) -> int:
    return int(args[args.index(name) + 1]) if name in args else default


# --- the client --------------------------------------------------------------------------------

class Connection:
    """One keep-alive TLS connection with a minimal HTTP/1.1 client: the client's CPU is shared
    with the server on this machine, so it does as little as it can."""

    def __init__(self, server: Server) -> None:
        context = ssl.create_default_context(cafile=str(server.ca))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        head, rest = buf[:end], buf[end + 4:]
        length = 0
        if (at := head.lower().find(b"content-length:")) >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15:eol if eol >= 0 else len(head)])
        while len(rest) < length:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            rest += chunk
        self.buf = rest[length:]
        return int(head[9:12]), rest[:length]

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def post(path: str, body: bytes) -> bytes:
    """The request as the API server sends it (it appends ?timeout=...)."""
    return (f"POST {path}?timeout=10s HTTP/1.1\r\nHost: podgate.podgate-system.svc:443\r\n"
            f"User-Agent: kube-apiserver-admission\r\nAccept: application/json, */*\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Side:
    """What one endpoint got over the blocks of a scenario."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0
    server_ticks: list[int] = field(default_factory=list)  # master, workers...
    client_seconds: float = 0.0
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def server_cpu_per_request(self) -> float:
        return sum(self.server_ticks) / CLK_TCK / self.requests if self.requests else float("nan")

    @property
    def client_cpu_per_request(self) -> float:
        return self.client_seconds / self.requests if self.requests else float("nan")


@dataclass
class Job:
    target: str  # which server's connections
    requests: list[bytes]
    deadline: float = 0.0


class Load:
    """C threads, each with one keep-alive connection per server, run blocks in lock step."""

    def __init__(self, servers: Sequence[Server], connections: int) -> None:
        self.servers = {s.name: s for s in servers}
        self.n = connections
        self.conns: list[dict[str, Connection]] = [{} for _ in range(connections)]
        self.start = threading.Barrier(connections + 1)
        self.end = threading.Barrier(connections + 1)
        self.job: Job | None = None
        self.failure: Exception | None = None
        self.results: list[tuple[list[float], float, int]] = [([], 0.0, 0)] * connections
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(connections)]
        for t in self.threads:
            t.start()
        self.reconnect()

    def reconnect(self) -> None:
        """Close the connections, then open fresh ones all at once, as a restarted API server would."""
        self._dispatch(Job("__close__", []), 0.0)
        time.sleep(0.2)  # let the workers see the old connections go
        self._dispatch(Job("__connect__", []), 0.0)

    def _run(self, i: int) -> None:
        try:
            self._serve(i)
        except Exception as exc:  # a failed connection: break the barriers, the main thread reports it
            self.failure = exc
            self.start.abort()
            self.end.abort()

    def _serve(self, i: int) -> None:
        while True:
            self.start.wait()
            job = self.job
            if job is None:
                return
            if job.target == "__close__":
                for conn in self.conns[i].values():
                    conn.close()
                self.conns[i] = {}
                self.end.wait()
                continue
            if job.target == "__connect__":
                self.conns[i] = {name: Connection(s) for name, s in self.servers.items()}
                self.end.wait()
                continue
            conn = self.conns[i][job.target]
            reqs = job.requests
            k, lat, errors, last = i, [], 0, 0.0
            append = lat.append
            deadline = job.deadline
            now = time.perf_counter
            while True:
                t0 = now()
                if t0 >= deadline:
                    break
                status, _ = conn.request(reqs[k % len(reqs)])
                last = now()
                append(last - t0)
                errors += status != 200
                k += 1
            self.results[i] = (lat, last, errors)
            self.end.wait()

    def _dispatch(self, job: Job, seconds: float) -> float:
        self.job = job
        start = time.perf_counter()
        job.deadline = start + seconds
        try:
            self.start.wait()
            self.end.wait()
        except threading.BrokenBarrierError:
            raise SystemExit(f"a client connection failed: {self.failure!r}") from self.failure
        return start

    def block(self, job: Job, seconds: float, side: Side | None, server: Server | None) -> None:
        """Run every connection against ``job`` for ``seconds``; add what happened to ``side``."""
        ticks = server.ticks() if server else []
        cpu = sum(os.times()[:2])
        start = self._dispatch(job, seconds)
        if side is None:
            return
        side.client_seconds += sum(os.times()[:2]) - cpu
        after = server.ticks() if server else []
        side.server_ticks = [a + (b - t) for a, b, t in
                             zip(side.server_ticks or [0] * len(after), after, ticks, strict=True)]
        end = max(r[1] for r in self.results)
        side.seconds += end - start
        for lat, _, errors in self.results:
            side.latencies.extend(lat)
            side.requests += len(lat)
            side.errors += errors

    def close(self) -> None:
        self.job = None
        if not self.start.broken:
            self.start.wait()
        for t in self.threads:
            t.join(timeout=5)
        for conns in self.conns:
            for c in conns.values():
                c.close()


def abba(load: Load, a: tuple[Job, Server, Side], b: tuple[Job, Server, Side], rounds: int, seconds: float) -> None:
    """Warm both up, then ``rounds`` of A B B A blocks."""
    for job, server, _ in (a, b):
        load.block(job, seconds, None, server)
    for _ in range(rounds):
        for job, server, side in (a, b, b, a):
            load.block(job, seconds, side, server)


# --- checks and scenarios ----------------------------------------------------------------------

def check_answers(server: Server, expected: Callable[[str, bytes], Any], cases: Sequence[tuple[str, bytes]]) -> None:
    """Every (path, body) the benchmark sends must get the answer podgate gives in process."""
    conn = Connection(server)
    try:
        for path, body in cases:
            status, answer = conn.request(post(path, body))
            got = orjson.loads(answer)
            want = expected(path, body)
            if status != 200 or got != want:
                raise SystemExit(f"{path}: the server answered {status} {answer[:300]!r}, expected {want!r}")
    finally:
        conn.close()


@dataclass
class Pair:
    """A scenario's two sides: podgate's endpoint and the baseline with the same bodies."""

    name: str
    path: str
    podgate: Side
    baseline: Side

    def ratios(self) -> dict[str, float]:
        p, b = self.podgate, self.baseline
        return {
            "rps": p.rps / b.rps,
            "p50": p.percentile(0.50) / b.percentile(0.50),
            "p99": p.percentile(0.99) / b.percentile(0.99),
            "cpu": p.server_cpu_per_request / b.server_cpu_per_request,
        }


def run_pair(load: Load, server: Server, name: str, path: str, bodies: Sequence[bytes], rounds: int,
             seconds: float) -> Pair:
    pair = Pair(name, path, Side(), Side())
    podgate = (Job(server.name, [post(path, b) for b in bodies]), server, pair.podgate)
    baseline = (Job(server.name, [post("/baseline", b) for b in bodies]), server, pair.baseline)
    abba(load, baseline, podgate, rounds, seconds)
    if pair.podgate.errors or pair.baseline.errors:
        raise SystemExit(f"{name} {path}: {pair.podgate.errors} + {pair.baseline.errors} non-200 answers")
    return pair


@dataclass
class Scaling:
    """Throughput of the same load on 2 workers and on 1, per round of fresh connections."""

    rounds: list[tuple[float, float, list[int]]]  # (rps 2 workers, rps 1 worker, ticks per worker)
    client: str = "Python threads"
    client_cpu_per_request: float = 0.0  # on the 2-worker side
    one_cpu_per_request: float = 0.0  # the one worker's
    two_cpu_per_request: float = 0.0  # the two workers'

    @property
    def worst(self) -> float:
        return min(two / one for two, one, _ in self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(two / one for two, one, _ in self.rounds)

    @property
    def most_uneven(self) -> float:
        """The largest share of CPU one worker of the two took in any round (0.5: even)."""
        return max(max(ticks) / max(1, sum(ticks)) for _, _, ticks in self.rounds)


def run_scaling(load: Load, two: Server, one: Server, body: bytes, reconnects: int, rounds: int,
                seconds: float) -> Scaling:
    out, client, one_cpu, two_cpu = [], [], [], []
    for _ in range(reconnects):
        load.reconnect()
        a, b = Side(), Side()
        abba(load, (Job(two.name, [post("/validate", body)]), two, a),
             (Job(one.name, [post("/validate", body)]), one, b), rounds, seconds)
        out.append((a.rps, b.rps, a.server_ticks[1:]))
        client.append(a.client_cpu_per_request)
        one_cpu.append(sum(b.server_ticks[1:]) / CLK_TCK / max(1, b.requests))
        two_cpu.append(sum(a.server_ticks[1:]) / CLK_TCK / max(1, a.requests))
    return Scaling(out, "Python threads", statistics.median(client), statistics.median(one_cpu),
                   statistics.median(two_cpu))


def run_scaling_wrk(exe: str, tmp: Path, two: Server, one: Server, body: bytes, connections: int, groups: int,
                    seconds: int) -> Scaling:
    """``groups`` of A B B A blocks (2 workers, 1, 1, 2), each block a new wrk with fresh connections."""
    lua = wrk.script(tmp, "/validate?timeout=10s", body)
    url = {s.name: f"https://127.0.0.1:{s.port}" for s in (two, one)}
    for server in (two, one):
        wrk.run(exe, lua, url[server.name], connections, 1)  # warm-up
    out: list[tuple[float, float, list[int]]] = []
    every: dict[str, list[wrk.Block]] = {two.name: [], one.name: []}
    ticks = {s.name: [0] * len(s.workers) for s in (two, one)}  # per worker, summed over all groups
    for _ in range(groups):
        blocks: dict[str, list[wrk.Block]] = {two.name: [], one.name: []}
        split = [0] * len(two.workers)  # this group's ticks per worker of the two
        for server in (two, one, one, two):
            before = server.ticks()
            block = wrk.run(exe, lua, url[server.name], connections, seconds)
            spent = [b - a for a, b in zip(before[1:], server.ticks()[1:], strict=True)]
            if block.non_200 or block.socket_errors:
                raise SystemExit(f"{server.name}: {block.non_200} error answers, {block.socket_errors} socket errors")
            blocks[server.name].append(block)
            ticks[server.name] = [t + d for t, d in zip(ticks[server.name], spent, strict=True)]
            if server is two:
                split = [t + d for t, d in zip(split, spent, strict=True)]
        rps = {name: sum(b.requests for b in bs) / sum(b.seconds for b in bs) for name, bs in blocks.items()}
        out.append((rps[two.name], rps[one.name], split))
        for name, bs in blocks.items():
            every[name] += bs
    requests = {name: sum(b.requests for b in bs) for name, bs in every.items()}
    cpu = {name: sum(ticks[name]) / CLK_TCK / max(1, requests[name]) for name in every}
    client = sum(b.client_seconds for b in every[two.name]) / max(1, requests[two.name])
    return Scaling(out, "wrk", client, cpu[one.name], cpu[two.name])


# --- against the floor -------------------------------------------------------------------------

@dataclass
class FloorPattern:
    """One request pattern (serial: a connection waits for each answer; C connections) against
    podgate and the floor, each side over the same bodies."""

    name: str
    connections: int
    podgate: Side
    floor: Side

    def ratios(self) -> dict[str, float]:
        p, f = self.podgate, self.floor
        return {
            "p50": p.percentile(0.50) / f.percentile(0.50),
            "p99": p.percentile(0.99) / f.percentile(0.99),
            "p99.9": p.percentile(0.999) / f.percentile(0.999),
            "cpu": p.server_cpu_per_request / f.server_cpu_per_request,
        }

    def outliers(self, times: float = 10.0) -> tuple[int, int]:
        """Requests slower than ``times`` the floor's p50: podgate's, the floor's own."""
        bound = times * self.floor.percentile(0.5)
        return sum(t > bound for t in self.podgate.latencies), sum(t > bound for t in self.floor.latencies)


def run_floor(loads: Sequence[tuple[str, Load]], podgate: Server, floor: Server, requests: Sequence[tuple[str, bytes]],
              rounds: int, seconds: float) -> list[FloorPattern]:
    """Every pattern's A B B A blocks (floor, podgate, podgate, floor), the patterns taking turns
    round by round, so that both patterns and both servers share the same stretch of time."""
    patterns = [FloorPattern(name, load.n, Side(), Side()) for name, load in loads]
    raw = [post(path, body) for path, body in requests]
    for (_, load), pattern in zip(loads, patterns, strict=True):
        for server in (floor, podgate):
            load.block(Job(server.name, raw), seconds, None, server)  # warm-up
    for _ in range(rounds):
        for (_, load), pattern in zip(loads, patterns, strict=True):
            for server, side in ((floor, pattern.floor), (podgate, pattern.podgate),
                                 (podgate, pattern.podgate), (floor, pattern.floor)):
                load.block(Job(server.name, raw), seconds, side, server)
    for pattern in patterns:
        if pattern.podgate.errors or pattern.floor.errors:
            raise SystemExit(f"{pattern.name}: {pattern.podgate.errors} + {pattern.floor.errors} non-200 answers")
    return patterns
