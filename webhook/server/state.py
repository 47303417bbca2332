"""What the views need from the app, in a module of its own so that the app factory can import
the views and the views can import this without a cycle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from flask import Response

from ..policy import NamespaceLabels
from ..store import PolicyStore
from .nscache import NamespaceCache
from .record import Recorder
from .report import Reporter
from .settings import Settings


@dataclass
class State:
    """What the views need, kept on ``app.extensions["podgate"]``."""

    settings: Settings
    store: PolicyStore
    namespace_labels: NamespaceLabels
    recorder: Recorder | None = None  # podgate serve --record; None: recording is off
    namespace_cache: NamespaceCache | None = None  # labels from the API server (in a cluster)
    # True once the server was told to stop: /readyz fails while requests are still served
    draining: Callable[[], bool] = lambda: False
    reporter: Reporter = field(default_factory=Reporter)  # log line and metrics of each answer

    @property
    def labels_without_waiting(self) -> NamespaceLabels:
        """The namespace labels lookup for a caller that must not block: it raises WouldWait
        where the normal lookup would ask the API server."""
        return self.namespace_labels if self.namespace_cache is None else self.namespace_cache.cached

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        """Ready once policies are loaded and (in a cluster) namespace labels first synced;
        unready again once shutting down, while requests are still served (the drain)."""
        if self.draining():
            return False, "shutting down"
        if self.store.current is None:
            return False, "policies not loaded"
        if self.namespace_cache is not None:
            return self.namespace_cache.status()
        return True, "ready"


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message, "status": status})


def json_error(status: int, message: str) -> Response:
    return Response(error_body(status, message), status=status, mimetype="application/json")
