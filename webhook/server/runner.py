"""Run the app under gunicorn over TLS: the production server and ``podgate serve``.

gthread workers keep the API server's connections alive (the sync worker would do a TLS
handshake per request), balanced so that the API server's few long-lived connections are
spread over every worker (see ``worker.py``); TLS is 1.2+ with ECDHE + AEAD ciphers only.

Shutdown drains: on SIGTERM the master first flags "draining" in memory shared with its
workers, so ``/readyz`` answers 503 while requests are still served, for ``drain_seconds``
(time for the kubelet's readiness probe and the endpoints controller to take the Pod out of
the Service); only then does gunicorn's graceful stop close the listener and let workers finish
what is in flight (``graceful_timeout``). A second SIGTERM, or SIGINT, stops at once.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import multiprocessing
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn import sock
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ..errors import PodgateError, PolicyError
from ..store import PolicyStore
from . import worker
from .logs import GunicornJsonLogger
from .logs import configure as configure_logging
from .metrics_files import MULTIPROC_ENV, Archiver
from .settings import Settings


@dataclass(frozen=True)
class ServerOptions:
    bind: str = "127.0.0.1:8443"
    certfile: str = ""
    keyfile: str = ""
    workers: int = 2
    threads: int = 4
    timeout: int = 30  # a worker silent this long is killed and replaced
    graceful_timeout: int = 20  # in-flight requests get this long on SIGTERM
    keepalive: int = 75  # seconds; the API server reuses connections
    max_requests: int = 0  # recycle workers after this many requests (0: never)
    client_ca: str = ""  # require client certificates signed by this CA (the API server's)
    drain_seconds: float = 5.0  # on SIGTERM: /readyz fails this long before the listener closes
    health_bind: str = ""  # HOST:PORT of a plaintext listener for probes and metrics only (health.py)
    # per worker; at the bound the oldest connection that has not sent a whole request makes room
    max_connections: int = 256
    log_level: str = "info"  # podgate's and gunicorn's: debug, info (decisions), warning, error, critical


class BindError(PodgateError):
    """A listening address that cannot be bound: ``address`` and why, in words."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


_BIND_REASONS = {
    errno.EADDRINUSE: "the address is in use (another server listens there?)",
    errno.EADDRNOTAVAIL: "not an address of this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def _bind_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return _BIND_REASONS.get(exc.errno or 0, exc.strerror or str(exc))


def probe_bind(address: str, reuse_port: bool = False) -> None:
    """Bind ``address`` once and let it go: raises BindError if it cannot be bound (for a listener
    that the workers open later, such as the health port, which they share with SO_REUSEPORT)."""
    host, _, port = address.rpartition(":")
    try:
        info = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(info[0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(info[4])
    except OSError as exc:
        raise BindError(address, _bind_reason(exc)) from None


def prepare_metrics_dir(environ: Any = os.environ) -> tuple[Path, bool]:
    """Give the workers an empty ``PROMETHEUS_MULTIPROC_DIR`` (a new temp dir when unset).

    Must run before ``prometheus_client`` is imported: it picks its value store at import time.
    Files left by an earlier run would be summed into this one's counters, so the directory is
    emptied. Returns the directory and whether it was made here (and should be removed at exit).
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set up")
    if value := environ.get(MULTIPROC_ENV):
        directory = Path(value)
        directory.mkdir(parents=True, exist_ok=True)
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return directory, False
    directory = Path(tempfile.mkdtemp(prefix="podgate-metrics-"))
    environ[MULTIPROC_ENV] = str(directory)
    return directory, True


def _child_exit(archiver: Archiver | None) -> Callable[[Any, Any], None]:
    def child_exit(server: Any, dead: Any) -> None:
        """gunicorn hook (master), after the worker was reaped: free its connection slot, drop its
        live gauges and fold its counters into the metrics archive (see ``metrics_files``)."""
        worker.child_exit(server, dead)
        if archiver is not None:
            archiver.worker_exited(dead.pid, live=set(server.WORKERS))

    return child_exit


def _load_certificate(factory: Callable[[], ssl.SSLContext], attempts: int = 5,
                      pause: float = 0.02) -> ssl.SSLContext:
    """Build the context, retrying briefly while a rotation has replaced one file but not the other.

    gunicorn reads the certificate and the key in two steps; between a writer's two renames (or
    between the two reads) they may not match, and OpenSSL refuses the pair. The next try, a few
    milliseconds later, sees both new files.
    """
    for attempt in range(attempts):
        try:
            return factory()
        except (ssl.SSLError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def _ssl_context(client_ca: str) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def ssl_context(conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = _load_certificate(default_factory)  # read anew per connection: rotation needs no restart
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 suites; 1.3 suites are fixed
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    return ssl_context


class DrainingArbiter(Arbiter):
    """gunicorn's master, with a readiness drain before the graceful stop (see the module doc)."""

    def __init__(self, app: PodgateServer) -> None:
        super().__init__(app)
        if app.listeners:  # bound by PodgateServer.bind: gunicorn takes them as they are
            self.LISTENERS = app.listeners
        self.draining = app.draining
        self.drain_seconds = app.options.drain_seconds
        self.drain_until: float | None = None
        self.store = app.store

    def handle_term(self) -> None:
        if self.drain_until is not None or self.drain_seconds <= 0:
            raise StopIteration  # second SIGTERM, or no drain: graceful stop now
        self.draining.value = True
        self.drain_until = time.monotonic() + self.drain_seconds
        self.log.info("SIGTERM: /readyz reports unready; still serving for %.1fs, then stopping",
                      self.drain_seconds)

    def manage_workers(self) -> None:
        # the master loop wakes at least once a second and calls this
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            raise StopIteration  # -> halt(): close the listener, SIGTERM workers, wait for in-flight
        try:
            self.store.tick()  # keep the last good set current for the workers forked next
        except Exception:  # noqa: BLE001  (the master must outlive any surprise)
            self.log.exception("policy check in the master failed")
        super().manage_workers()


# Allocations between two collections of the youngest generation (Python's default is 700: a
# Pod's AdmissionReview parsed into dicts is about that, so it was about one collection per request).
GC_YOUNG_THRESHOLD = 10_000

# Each worker logs and counts its decisions in batches this often (see report.Reporter).
REPORT_INTERVAL_SECONDS = 0.1


class PodgateServer(BaseApplication):
    """A gunicorn application configured in code, loading ``create_app`` in each worker."""

    def __init__(self, settings: Settings, options: ServerOptions) -> None:
        self.settings = settings
        self.options = options
        # created before the workers fork, so they all see the master's writes
        self.draining = multiprocessing.RawValue(ctypes.c_bool, False)
        # The master holds the last good policy set too (no thread: it ticks in its own loop),
        # and every worker it forks inherits it; see create_app.
        configure_logging(options.log_level)  # the master's policy messages as JSON lines too
        self.store = PolicyStore(settings.policy_dir)
        if not self.store.load():
            raise PolicyError(self.store.last_error or "policies could not be loaded")
        self.listeners: list[Any] = []
        super().__init__()

    def bind(self) -> list[tuple[str, int]]:
        """Bind the listening socket now, once, and return the addresses bound (port 0 becomes the
        port the kernel picked). A taken port is one BindError here, before anyone announces the
        server, rather than gunicorn's five retries a second apart and exit 1."""
        log = logging.getLogger("podgate.server")
        for address in self.cfg.address:
            try:
                self.listeners.append(sock._sock_type(address)(address, self.cfg, log))
            except OSError as exc:
                for listener in self.listeners:
                    listener.close()
                self.listeners = []
                raise BindError(self.options.bind, _bind_reason(exc)) from None
        if self.options.health_bind:
            probe_bind(self.options.health_bind, reuse_port=True)
        return [listener.sock.getsockname()[:2] for listener in self.listeners]

    def run(self) -> None:
        DrainingArbiter(self).run()

    def load_config(self) -> None:
        o = self.options
        worker.BalancedThreadWorker.table = worker.ConnectionTable(max(64, 4 * o.workers))  # before any fork
        worker.BalancedThreadWorker.limits = worker.Limits(
            request_seconds=self.settings.request_timeout, connections=o.max_connections,
            body_bytes=self.settings.max_body_bytes)
        metrics_dir = os.environ.get(MULTIPROC_ENV)  # set by prepare_metrics_dir when metrics are on
        values = {
            "bind": [o.bind],
            "workers": o.workers,
            "worker_class": worker.BalancedThreadWorker,
            "threads": o.threads,
            "worker_connections": o.max_connections + 1,  # the worker itself keeps to max_connections
            "timeout": o.timeout,
            "graceful_timeout": o.graceful_timeout,
            "keepalive": o.keepalive,
            "max_requests": o.max_requests,
            "max_requests_jitter": max(1, o.max_requests // 10) if o.max_requests else 0,
            "certfile": o.certfile,
            "keyfile": o.keyfile,
            "ssl_context": _ssl_context(o.client_ca),
            "accesslog": None,
            "errorlog": "-",
            "loglevel": o.log_level,
            "logger_class": GunicornJsonLogger,
            "proc_name": "podgate",
            # gunicorn's control socket (~/.gunicorn/gunicorn.ctl) would be one more listener,
            # shared by every server of the user; podgate has no use for it
            "control_socket_disable": True,
            "pre_fork": worker.pre_fork,
            "child_exit": _child_exit(Archiver(metrics_dir) if metrics_dir else None),
        }
        for key, value in values.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app
        from .report import Reporter

        app = create_app(self.settings, store=self.store)
        state = app.extensions["podgate"]
        draining = self.draining
        state.draining = lambda: bool(draining.value)
        state.reporter = Reporter(REPORT_INTERVAL_SECONDS)
        if self.options.health_bind:
            from . import health

            health.serve(app, self.options.health_bind)
        # What the worker holds from here on (modules, the app, the policy set) lives as long as
        # the worker: moved out of the collector's view, a full collection does not walk it again
        # (a pause of milliseconds in the middle of a request otherwise). Requests' own garbage is
        # young and freed by reference counting; the first generation is collected less often, and
        # (worker.collect_garbage) between requests rather than inside one.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        return app
