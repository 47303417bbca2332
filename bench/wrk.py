"""wrk as the load generator where only throughput counts.

The benchmark's own client is Python: about 70 µs of CPU per request, which on a machine with
two cores takes a third of what two podgate workers could use, so "two workers against one"
measured the client. wrk (C, one event loop, TLS through OpenSSL) spends about 30 µs per
request, and it is run as a new process per block, so every block opens fresh connections, as a
restarted API server would, and the workers' share of them is drawn again.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Prints one line the benchmark reads; wrk's own report goes to stdout before it.
_SCRIPT = """\
wrk.method = "POST"
wrk.path = "{path}"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, */*"
wrk.headers["User-Agent"] = "kube-apiserver-admission"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("PODGATE-BENCH %d %d %d %d\\n", summary.requests, summary.duration,
                         e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def available() -> str | None:
    """The wrk executable, or None (the benchmark then falls back to its Python client)."""
    return shutil.which("wrk")


@dataclass
class Block:
    """One wrk run: how many answers in how long, and what the client spent on them."""

    requests: int
    seconds: float
    non_200: int
    socket_errors: int
    client_seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def script(tmp: Path, path: str, body: bytes) -> Path:
    """A wrk Lua script that POSTs ``body`` to ``path`` as the API server does."""
    name = hashlib.sha256(path.encode() + b"\0" + body).hexdigest()[:16]
    body_file = tmp / f"wrk-{name}.json"
    body_file.write_bytes(body)
    lua = tmp / f"wrk-{name}.lua"
    lua.write_text(_SCRIPT.format(path=path, body=body_file))
    return lua


def parse(out: str) -> tuple[int, float, int, int]:
    """requests, seconds, non-2xx/3xx answers, socket errors from the script's line."""
    for line in out.splitlines():
        if line.startswith("PODGATE-BENCH "):
            requests, micros, status, sockets = (int(x) for x in line.split()[1:5])
            return requests, micros / 1e6, status, sockets
    raise ValueError(f"wrk printed no result line:\n{out[-2000:]}")


def run(exe: str, lua: Path, url: str, connections: int, seconds: int) -> Block:
    """``connections`` keep-alive connections from one wrk thread for ``seconds`` (wrk counts whole seconds)."""
    cmd = [exe, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(lua), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the servers still run: only wrk is reaped
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"wrk exited with {proc.returncode}:\n{out[-2000:]}")
    requests, elapsed, non_200, socket_errors = parse(out)
    client = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Block(requests, elapsed, non_200, socket_errors, client)
