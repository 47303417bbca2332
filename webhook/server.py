"""Run the app under gunicorn over TLS: the production server and ``podgate serve``.

gthread workers keep the API server's connections alive (the sync worker would do a TLS
handshake per request); TLS is 1.2+ with the library's modern cipher defaults.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

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


def _ssl_context(client_ca: str) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def ssl_context(conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = default_factory()  # loads certfile/keyfile: picked up anew per connection
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 suites; 1.3 suites are fixed
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    return ssl_context


class PodgateServer(BaseApplication):
    """A gunicorn application configured in code, loading ``create_app`` in each worker."""

    def __init__(self, settings: Settings, options: ServerOptions) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        o = self.options
        values = {
            "bind": [o.bind],
            "workers": o.workers,
            "worker_class": "gthread",
            "threads": o.threads,
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
            "loglevel": "info",
            "proc_name": "podgate",
        }
        for key, value in values.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app(self.settings)
